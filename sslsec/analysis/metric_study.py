"""The SEC paper's deep-metric-learning and face tables: every loss x none / L2 / SEC over seeds, each regularizer's
weight chosen on the validation split first (retrieval MAP@R for ``method: metric``, verification accuracy for
``method: face``, :data:`CRITERIA`)::

    results = run_metric_study("configs/dml_fmnist.yaml", ["triplet", "npair"], seeds=3,
                               overrides=["output_dir=runs/dml_table", "data.train_limit=2000"])
    print(summarize_metric_study(results))   # also in runs/dml_table/metric_study.md, with .json and a PNG

For each loss (``metric.loss=LOSS``, all runs in ``{output_dir}/{LOSS}``):

1. the weights: the variant ``sec`` at each weight of ``weights["sec"]`` (``loss.sec_weight``) and ``l2`` at each of
   ``weights["l2"]`` (``loss.norm_penalty_weight``), seed 0, each a one-seed :func:`~sslsec.analysis.study.run_study`
   in ``choice/{variant}_{weight}``; the weight with the highest validation score wins (the first on a tie);
2. the table: :func:`~sslsec.analysis.study.run_study` of the variants over ``seeds`` at the chosen weights (``sec_ema``
   takes the SEC weight). A chosen weight's seed-0 run is the table's seed-0 run of that variant (the same
   config): it is linked there, not trained again.

The test split (classes never trained on) only reports. Every finished run is reused on a rerun.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from accelerate import PartialState

from sslsec.analysis.choices import METRIC_DEFAULT_LOSSES, METRIC_DEFAULT_VARIANTS, METRIC_DEFAULT_WEIGHTS
from sslsec.analysis.diagnostics import matplotlib_figure
from sslsec.analysis.scoring import evaluation
from sslsec.analysis.study import (MONITORS, StudyError, by_variant, mean_std, plot_curves, run_study, study_dir,
                                   weight_cell)
from sslsec.config import load_config

DEFAULT_LOSSES, DEFAULT_VARIANTS, DEFAULT_WEIGHTS = METRIC_DEFAULT_LOSSES, METRIC_DEFAULT_VARIANTS, METRIC_DEFAULT_WEIGHTS
WEIGHT_KEYS = {"sec": "loss.sec_weight", "l2": "loss.norm_penalty_weight"}


class Criterion(NamedTuple):
    """How a table of one kind of :attr:`~sslsec.methods.Method.evaluation` chooses and reports: the row key of its
    validation score, that score's title, the table's ``(key, title, digits)`` columns, and what the test scores."""

    choice: str
    title: str
    table: Tuple[Tuple[str, str, int], ...]
    test: str


CRITERIA = {
    "retrieval": Criterion("val_map_at_r", "MAP@R",
                           (("recall_at_1", "test R@1", 2), ("map_at_r", "test MAP@R", 2), ("nmi", "test NMI", 2),
                            ("val_map_at_r", "val MAP@R", 2), ("norm_std_over_mean", "norm std/mean", 3)),
                           "retrieval on the test classes (never trained on) and on the validation split"),
    "verification": Criterion("val_verification_accuracy", "verification accuracy",
                              (("verification_accuracy", "test acc", 2), ("val_at_far", "test VAL@FAR", 2),
                               ("val_verification_accuracy", "val acc", 2), ("val_val_at_far", "val VAL@FAR", 2),
                               ("norm_std_over_mean", "norm std/mean", 3)),
                              "verification of pairs of test identities (never trained on) and of the validation "
                              "split"),
}
CHOICE_SCORE, TABLE = CRITERIA["retrieval"].choice, CRITERIA["retrieval"].table  # metric learning's, as before
PLOT_FILE = "metric_study_recall.png"


def run_metric_study(config_path: Optional[Union[str, Path]], losses: Sequence[str] = DEFAULT_LOSSES,
                     seeds: int = 3, overrides: Sequence[str] = (), *,
                     variants: Sequence[str] = DEFAULT_VARIANTS,
                     weights: Mapping[str, Sequence[float]] = DEFAULT_WEIGHTS,
                     log: Callable[[str], None] = print) -> Dict[str, Dict[str, Any]]:
    """Choose the weights, then run the table, for every loss; write ``metric_study.{json,md}`` and
    ``metric_study_recall.png`` (validation Recall@1 per epoch, one panel per loss) into
    :func:`~sslsec.analysis.study.study_dir`.

    Returns ``{loss: {"weights": {variant: weight}, "choice": rows, "rows": rows}}``: the chosen weights, the
    weight-choice runs' rows and the table's rows (see :func:`~sslsec.analysis.study.run_study`).
    """
    base = load_config(config_path, overrides)
    _check_table(config_path, base, losses, seeds, weights, overrides)
    criterion = CRITERIA[evaluation(base.method)]
    output_dir = study_dir(base, overrides)
    state = PartialState()  # several processes: all train, the main one links and writes
    log = log if state.is_main_process else (lambda message: None)
    results = {}
    for loss in losses:
        loss_dir = output_dir / loss
        loss_overrides = [*overrides, f"metric.loss={loss}"]
        log(f"== {loss}: choosing {', '.join(weights)} weights on validation {criterion.title} (seed 0)")
        chosen, choice = choose_weights(config_path, loss_dir, weights, loss_overrides, log, criterion.choice)
        for variant, weight in chosen.items():
            if variant in variants and state.is_main_process:
                _link_run(loss_dir / f"{variant}_seed0", _choice_dir(loss_dir, variant, weight) / f"{variant}_seed0")
        state.wait_for_everyone()
        log(f"== {loss}: {', '.join(variants)} x {seeds} seeds at {_describe(chosen)}")
        rows = run_study(config_path, variants, seeds, [*loss_overrides, *_weight_overrides(chosen),
                                                        f"output_dir={loss_dir}"], log=log)
        results[loss] = {"weights": chosen, "choice": choice, "rows": rows}
    if state.is_main_process:
        (output_dir / "metric_study.json").write_text(json.dumps(results, indent=2) + "\n")
        (output_dir / "metric_study.md").write_text(summarize_metric_study(results))
        plot_metric_study(results, output_dir / PLOT_FILE)
        log(f"wrote metric_study.md, metric_study.json, {PLOT_FILE} into {output_dir}")
    state.wait_for_everyone()
    return results


def choose_weights(config_path: Optional[Union[str, Path]], loss_dir: Path, weights: Mapping[str, Sequence[float]],
                   overrides: Sequence[str], log: Callable[[str], None] = print, score: str = CHOICE_SCORE
                   ) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """``({variant: the weight of highest validation score (the row key score: MAP@R)}, the rows of every seed-0
    run)``; the run of variant ``v`` at weight ``w`` is a one-seed study in ``loss_dir/choice/{v}_{w}``."""
    chosen, rows = {}, []
    for variant, candidates in weights.items():
        scored = []
        for weight in candidates:
            [row] = run_study(config_path, [variant], 1, [*overrides, *_weight_overrides({variant: weight}),
                                                          f"output_dir={_choice_dir(loss_dir, variant, weight)}"],
                              log=log)
            rows.append(row)
            scored.append((row[score], -len(scored), weight))  # the first weight wins a tie
        chosen[variant] = max(scored)[2]
    return chosen, rows


def _check_table(config_path: Optional[Union[str, Path]], base: Any, losses: Sequence[str], seeds: int,
                 weights: Mapping[str, Sequence[float]], overrides: Sequence[str]) -> None:
    """Refuse, before any work, a table that cannot be chosen on validation or names an unknown loss or weight."""
    kind = evaluation(base.method)
    if kind not in CRITERIA:
        raise StudyError(f"the metric-learning table scores retrieval or verification; method={base.method} is "
                         f"scored by {kind}: use a method: metric or face config (configs/dml_fmnist.yaml, "
                         "configs/face_fmnist.yaml)")
    if base.data.val_size is None and base.data.val_classes is None:
        raise StudyError(f"the weights are chosen on validation {CRITERIA[kind].title}, but the config has no "
                         "validation split: set data.val_size (images) or data.val_classes (whole classes)")
    unknown = [variant for variant in weights if variant not in WEIGHT_KEYS]
    if not losses or seeds < 1 or unknown or not all(weights.values()):
        raise StudyError(f"the table needs losses, seeds >= 1 and candidate weights of {' and '.join(WEIGHT_KEYS)} "
                         f"only; got losses={list(losses)}, seeds={seeds}, weights={dict(weights)}")
    for loss in losses:  # an unknown loss: the config's error, which names the choices
        load_config(config_path, [*overrides, f"metric.loss={loss}"])


def _weight_overrides(chosen: Mapping[str, float]) -> List[str]:
    return [f"{WEIGHT_KEYS[variant]}={weight}" for variant, weight in chosen.items()]


def _choice_dir(loss_dir: Path, variant: str, weight: float) -> Path:
    return loss_dir / "choice" / f"{variant}_{weight:g}"


def _describe(chosen: Mapping[str, float]) -> str:
    return ", ".join(f"{variant} {weight:g}" for variant, weight in chosen.items()) or "the config's weights"


def _link_run(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to the run ``target``; a run trained in ``link`` itself stays."""
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def summarize_metric_study(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: the validation score (MAP@R, or verification accuracy for face recognition) of every candidate
    weight and the chosen ones, then per loss x variant the test and validation scores (%) and the test embeddings'
    norm std/mean, mean ± std over seeds."""
    rows = [row for result in results.values() for row in result["rows"]]
    criterion = CRITERIA[evaluation(rows[0]["method"])]
    candidates = list(dict.fromkeys(_candidate(row) for result in results.values() for row in result["choice"]))
    lines = [f"Weights chosen on validation {criterion.title} (%, seed 0):", "",
             "| loss | " + " | ".join(candidates) + " | chosen |", "|---|" + "---:|" * len(candidates) + "---|"]
    for loss, result in results.items():
        scores = {_candidate(row): f"{row[criterion.choice]:.2f}" for row in result["choice"]}
        lines.append(f"| {loss} | " + " | ".join(scores.get(name, "") for name in candidates)
                     + f" | {_describe(result['weights'])} |")
    seeds = sorted({row["seed"] for row in rows})
    lines += ["", f"{rows[0]['method']} on {rows[0]['dataset']}, seeds {', '.join(map(str, seeds))}: {criterion.test}, "
              "% (mean ± std over seeds), and the norm std/mean of the test embeddings.", "",
              "| loss | variant | weight | " + " | ".join(title for _, title, _ in criterion.table) + " |",
              "|---|---|---:|" + "---:|" * len(criterion.table)]
    for loss, result in results.items():
        for variant, group in by_variant(result["rows"]).items():
            cells = [mean_std([row[key] for row in group], digits) for key, _, digits in criterion.table]
            lines.append(f"| {loss} | {variant} | {weight_cell(group[0])} | {' | '.join(cells)} |")
    seconds = list({row["run_dir"]: row["seconds"]  # a chosen seed-0 run is in both lists: count it once
                    for result in results.values() for row in [*result["choice"], *result["rows"]]}.values())
    lines += ["", f"{len(seconds)} runs, {mean_std(seconds, 0)} s per run (training and scoring; a reused run "
              "counts the invocation that finished it)."]
    return "\n".join(lines) + "\n"


def _candidate(row: Mapping[str, Any]) -> str:
    return f"{row['variant']} {row['norm_penalty_weight'] or row['sec_weight']:g}"


def plot_metric_study(results: Mapping[str, Mapping[str, Any]], path: Union[str, Path],
                      variants: Sequence[str] = DEFAULT_VARIANTS) -> Path:
    """One panel per loss: the monitor per epoch of ``variants`` (validation Recall@1, or verification accuracy for
    face recognition; mean line, min-max band over seeds)."""
    Figure = matplotlib_figure()
    figure = Figure(figsize=(3.2 * len(results), 3.2), layout="constrained")
    for axes, (loss, result) in zip(figure.subplots(1, len(results), squeeze=False, sharey=True)[0], results.items()):
        plot_curves(axes, result["rows"], variants)
        axes.set_title(loss, fontsize="medium")
        if axes is not figure.axes[0]:
            axes.set_ylabel("")
    first = next(iter(results.values()))["rows"][0]
    figure.suptitle(f"validation {MONITORS[first.get('monitor', 'recall_at_1')].title.split(' (')[0]} per epoch (mean, min-max over "
                    "seeds)", fontsize="medium")
    figure.savefig(path, dpi=120)
    return Path(path)
