"""The SEC study: the plain loss (InfoNCE, or a metric loss) against SEC, SEC with an EMA radius and the L2 norm
penalty, over seeds.

Every variant x seed is one training run in ``{output_dir}/{variant}_seed{seed}`` (``trainer.seed=seed``), then
scored as its method is (:attr:`sslsec.methods.Method.evaluation`, :mod:`sslsec.analysis.scoring`): an SSL
backbone by the linear probe and kNN and the norm diagnostics of its projections; a metric-learning embedder
(``method: metric``) by retrieval on the validation and test splits and the norm spread of its test embeddings. All
runs share one base config (a YAML file, then ``key=value`` overrides); each variant then sets only the loss:

- ``none``: the plain loss, ``loss.sec_weight=0``, ``loss.norm_penalty_weight=0``;
- ``sec``: SEC with the batch-mean radius, ``loss.sec_weight=W``, ``loss.sec_momentum=null``;
- ``sec_ema``: SEC with an EMA radius, ``loss.sec_weight=W``, ``loss.sec_momentum=rho``;
- ``l2``: the paper's L2 baseline ``mean_i ||z_i||^2``, ``loss.norm_penalty_weight=W2``.

Defaults: ``W = 1.0`` (``sec_wei 1.0`` in the paper's official code), ``rho = 0.1``, ``W2 = 0.01`` (this
project's choice, not a published value: ``||z||^2`` is unbounded, so its weight stays small).

A finished run leaves ``study_row.json`` (its row, written last; SSL runs also ``projection_norms.safetensors``); a
rerun reuses it, resumes a run that has checkpoints but no backbone, and trains the rest::

    rows = run_study("configs/simclr_fmnist.yaml", ["none", "sec"], seeds=3, overrides=["output_dir=runs/study"])
    print(summarize_study(rows))     # also in runs/study/study.md, with study.json and two PNGs

A metric-learning study is the same call on a ``method: metric`` config (``configs/dml_fmnist.yaml``), the loss
chosen by ``metric.loss=...``; :mod:`sslsec.analysis.metric_study` runs the paper's table over several losses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

from safetensors.torch import load_file

from sslsec.analysis.choices import VARIANTS
from sslsec.analysis.diagnostics import matplotlib_figure
from sslsec.analysis.scoring import NORMS_FILE, scorer
from sslsec.config import Config, ConfigError, LossConfig, load_config, recipe_differences
from sslsec.data import load_splits
from sslsec.engine import make_accelerator, pretrain
from sslsec.methods import method_class
from sslsec.runs import RunPaths, load_saved_backbone

DEFAULT_SEC_MOMENTUM = 0.1  # sec_ema's rho when the config sets none
DEFAULT_L2_WEIGHT = 0.01  # l2's weight when the config sets none (this project's choice, not a published value)
PAPER_CONTRASTIVE_SCALE = 0.07  # the authors' contrastive loss is NT-Xent x T / 0.07
ROW_FILE = "study_row.json"


class Monitor(NamedTuple):
    """A score a method's monitor logs per epoch: its title, its curve's key in a row, the study's plot of it."""

    title: str
    curve: str
    plot: str


MONITORS = {  # key in metrics.jsonl -> Monitor
    "knn_top1": Monitor("kNN top-1 (%)", "knn_per_epoch", "study_knn.png"),  # SSL
    "recall_at_1": Monitor("Recall@1 (%)", "recall_per_epoch", "study_recall.png"),  # metric learning
    "verification_accuracy": Monitor("verification accuracy (%)", "verification_per_epoch",  # face recognition
                                     "study_verification.png"),
}


class StudyError(ConfigError):
    """A study that cannot run as asked: an unknown variant, or a run directory trained with other settings."""


def paper_sec_weight(temperature: float, eta: float = 1.0, method: str = "simclr") -> float:
    """The SEC authors' weight ``eta`` in sslsec's units: their contrastive loss is NT-Xent x T / 0.07, so
    ``eta`` against it is ``eta * 0.07 / T`` against plain NT-Xent (0.14 for eta = 1 at T = 0.5).

    BYOL and SimSiam have no temperature: ``eta`` is carried over by the ratio of their gradient per unit of
    cosine to the authors' ``1 / 0.07`` (0.14 for BYOL, 0.035 for SimSiam at eta = 1; docs/SEC.md)."""
    cosine_gradient = getattr(method_class(method), "loss_weight", None)  # SymmetricCosine's weight per cosine
    if cosine_gradient is not None:
        return eta * PAPER_CONTRASTIVE_SCALE * cosine_gradient
    return eta * PAPER_CONTRASTIVE_SCALE / temperature


def variant_overrides(name: str, loss: LossConfig, method: str = "simclr") -> List[str]:
    """The ``key=value`` loss settings of variant ``name`` on top of the base config's ``loss`` section (of a
    ``method`` run: it sets ``sec_paper``'s weight).

    Weights and schedule come from ``loss`` (set them as ``loss.sec_weight=...`` overrides of the study). Every loss key is set, so nothing of the base config leaks into a variant it does not belong to:

    - ``none``: plain InfoNCE; ``sec``: SEC at the config's weight and schedule (batch-mean radius);
    - ``sec_constant`` / ``sec_linear``: ``sec`` with the schedule forced;
    - ``sec_paper``: the authors' recipe, their eta = 1 in sslsec's units (:func:`paper_sec_weight`), linear;
    - ``sec_ema``: ``sec`` with the EMA radius (``loss.sec_momentum``, else 0.1);
    - ``l2``: the L2 penalty at ``loss.norm_penalty_weight`` (else 0.01) and the config's schedule.
    """
    weight = loss.sec_weight
    momentum = loss.sec_momentum or DEFAULT_SEC_MOMENTUM
    l2 = loss.norm_penalty_weight or DEFAULT_L2_WEIGHT
    schedule = loss.sec_schedule
    settings = {  # (sec_weight, sec_schedule, sec_momentum, norm_penalty_weight)
        "none": (0.0, schedule, None, 0.0),
        "sec": (weight, schedule, None, 0.0),
        "sec_constant": (weight, "constant", None, 0.0),
        "sec_linear": (weight, "linear", None, 0.0),
        "sec_paper": (paper_sec_weight(loss.temperature, method=method), "linear", None, 0.0),
        "sec_ema": (weight, schedule, momentum, 0.0),
        "l2": (0.0, schedule, None, l2),
    }
    if name not in settings:
        raise StudyError(f"unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    weight, schedule, momentum, penalty = settings[name]
    if name.startswith("sec") and weight == 0:
        raise StudyError(f"variant {name} needs an SEC weight: the config has loss.sec_weight=0; set it, e.g. "
                         "loss.sec_weight=1.0")
    return [f"loss.sec_weight={weight}", f"loss.sec_schedule={schedule}",
            f"loss.sec_momentum={'null' if momentum is None else momentum}", f"loss.norm_penalty_weight={penalty}"]


def study_dir(base: Config, overrides: Sequence[str]) -> Path:
    """``output_dir`` when given as an override, else ``{output_dir}_study``: a study never writes into the run
    directory that its base config names (the main job's)."""
    given = any(override.partition("=")[0].strip() == "output_dir" for override in overrides)
    return Path(base.output_dir) if given else Path(f"{base.output_dir}_study")


def run_study(config_path: Optional[Union[str, Path]], variants: Sequence[str], seeds: int,
              overrides: Sequence[str] = (), *, diagnostics_n: int = 1024,
              log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Train and score every variant x seed; write ``study.{json,md}`` and the PNGs into :func:`study_dir`
    (``output_dir`` if given as an override, else ``{output_dir}_study``).

    Call it on every process of a distributed launch: all run the same loop, only the main process writes
    study files and logs. Returns one row per run (variant-major), the same on every process: ``variant, seed,
    run_dir, method, dataset``, the loss settings, the scores of the method's
    :class:`~sslsec.analysis.scoring.Scorer`, ``monitor`` (the key its per-epoch monitor logs), ``monitor_split``
    and the curve (``knn_per_epoch`` or ``recall_per_epoch``, see :func:`monitor_per_epoch`), ``eval`` and
    ``seconds`` (the wall time of the invocation that finished the run).
    """
    variants = list(dict.fromkeys(variants))
    if not variants or seeds < 1 or diagnostics_n < 2:
        raise StudyError(f"a study needs at least one variant, seeds >= 1 and diagnostics_n >= 2; got variants="
                         f"{variants}, seeds={seeds}, diagnostics_n={diagnostics_n}")
    base = load_config(config_path, overrides)
    output_dir = study_dir(base, overrides)
    configs = {  # all built (and validated) before any work
        (variant, seed): load_config(config_path, [
            *overrides, *variant_overrides(variant, base.loss, base.method), f"trainer.seed={seed}",
            f"output_dir={output_dir / f'{variant}_seed{seed}'}", "resume=auto"])
        for variant in variants for seed in range(seeds)}
    for config in configs.values():
        _check_same_recipe(config, Path(config.output_dir))
    matplotlib_figure()  # a missing matplotlib fails here too
    accelerator = make_accelerator(mixed_precision=next(iter(configs.values())).trainer.mixed_precision)
    say = log if accelerator.is_main_process else (lambda message: None)
    rows, reused = [], []
    for (variant, seed), config in configs.items():
        run_dir = Path(config.output_dir)
        row = _finished_row(config, run_dir)
        if row is not None:
            reused.append(run_dir.name)
            say(f"reused {run_dir} (finished: {ROW_FILE})")
        else:
            say(f"{_next_step(run_dir)} {run_dir}")
            _run_one(config, variant, run_dir, diagnostics_n, accelerator)
            row = json.loads((run_dir / ROW_FILE).read_text())
        rows.append(row)
    if accelerator.is_main_process:
        (output_dir / "study.json").write_text(json.dumps(rows, indent=2) + "\n")
        (output_dir / "study.md").write_text(summarize_study(rows))
        plots = plot_study(rows, output_dir)
        say(f"reused {len(reused)} of {len(rows)} runs{': ' + ', '.join(reused) if reused else ''}")
        say(f"wrote study.md, study.json, {', '.join(path.name for path in plots)} into {output_dir}")
    accelerator.wait_for_everyone()
    return rows


def _next_step(run_dir: Path) -> str:
    if RunPaths(run_dir).finished():
        return "evaluating"  # pretrained, but with no row for these eval settings
    return "resuming" if RunPaths(run_dir).latest_checkpoint.is_file() else "training"


def _check_same_recipe(config: Config, run_dir: Path) -> None:
    """Refuse to reuse or resume a run that was trained with other settings than the study asks for."""
    saved = RunPaths(run_dir).config
    if not (RunPaths(run_dir).started() and saved.is_file()):
        return
    differences = recipe_differences(load_config(saved), config)
    if differences:
        key, before, now = differences[0]
        raise StudyError(f"{run_dir} was trained with {key}={before!r}, but this study asks for "
                         f"{now!r}; pass the same settings, or another output_dir, or delete {run_dir}")


def _finished_row(config: Config, run_dir: Path) -> Optional[Dict[str, Any]]:
    """The saved row of a finished run evaluated with the same ``eval`` settings, else None."""
    path = run_dir / ROW_FILE
    files = scorer(config.method).files
    if not (path.is_file() and RunPaths(run_dir).finished() and all((run_dir / f).is_file() for f in files)):
        return None
    row = json.loads(path.read_text())
    return row if row.get("eval") == dataclasses.asdict(config.eval) else None


def _run_one(config: Config, variant: str, run_dir: Path, diagnostics_n: int, accelerator) -> None:
    """Train (or finish) one run, score it, and (main process) write its row."""
    start = time.perf_counter()
    if not RunPaths(run_dir).finished():
        pretrain(config)
    if not RunPaths(run_dir).finished():  # trainer.max_steps stopped it early
        raise StudyError(f"{run_dir} stopped before its last epoch (trainer.max_steps); drop max_steps to finish it")
    backbone = load_saved_backbone(RunPaths(run_dir).backbone)
    splits = load_splits(config)
    scores = scorer(config.method).score(config, run_dir, backbone, splits, accelerator, diagnostics_n)
    if accelerator.is_main_process:
        row = {"variant": variant, "seed": config.trainer.seed, "run_dir": str(run_dir), "method": config.method,
               "dataset": splits[2].name, **loss_settings(config.loss), **scores,
               **monitor_per_epoch(run_dir), "seconds": time.perf_counter() - start,
               "eval": dataclasses.asdict(config.eval)}
        partial = run_dir / f".{ROW_FILE}.tmp"
        partial.write_text(json.dumps(row, indent=2) + "\n")
        os.replace(partial, run_dir / ROW_FILE)  # the row appears complete or not at all
    accelerator.wait_for_everyone()


def loss_settings(loss: LossConfig) -> Dict[str, Any]:
    """A run's regularizer settings as its study row records them: ``sec_weight``, ``sec_schedule``,
    ``sec_momentum``, ``norm_penalty_weight``; ``sec_schedule`` is None when neither SEC nor the L2 penalty is on,
    since a schedule of nothing means nothing."""
    regularized = bool(loss.sec_weight or loss.norm_penalty_weight)
    return {"sec_weight": loss.sec_weight, "sec_schedule": loss.sec_schedule if regularized else None,
            "sec_momentum": loss.sec_momentum, "norm_penalty_weight": loss.norm_penalty_weight}


def monitor_per_epoch(run_dir: Union[str, Path]) -> Dict[str, Any]:
    """The per-epoch monitor score a run logged in ``metrics.jsonl``: ``{"monitor": key, "monitor_split": split,
    curve: [[epoch, value], ...]}``, key one of :data:`MONITORS` (``knn_top1`` for SSL, ``recall_at_1`` for metric
    learning), curve its :attr:`Monitor.curve` (``knn_per_epoch``, ``recall_per_epoch``), split ``val`` or
    ``test``; after a resume the last row of an epoch wins. A run that logged none gives ``knn_top1`` and ``[]``."""
    by_epoch: Dict[int, float] = {}
    key, split = None, None
    for line in RunPaths(run_dir).metrics.read_text().splitlines():
        row = json.loads(line)
        key = key or next((name for name in MONITORS if name in row), None)
        if key is not None and key in row:
            by_epoch[row["epoch"]], split = row[key], row.get("monitor_split")
    key = key or "knn_top1"
    return {"monitor": key, "monitor_split": split,
            MONITORS[key].curve: [[epoch, by_epoch[epoch]] for epoch in sorted(by_epoch)]}


def knn_per_epoch(run_dir: Union[str, Path]) -> List[List[float]]:
    """``[[epoch, knn_top1], ...]`` of an SSL run (see :func:`monitor_per_epoch`)."""
    return monitor_per_epoch(run_dir).get("knn_per_epoch", [])


def summarize_study(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown: per variant, its loss settings, the scores of the method's :class:`~sslsec.analysis.scoring.Scorer`
    (validation, when every row has it, and test) and the norm std/mean, as mean ± std over seeds (sample std; a
    single seed shows the value alone), then the monitor per epoch (kNN top-1 or Recall@1 on the monitor's split),
    mean over seeds."""
    groups = by_variant(rows)
    first = rows[0]
    scoring = scorer(first["method"])
    metrics = [column for column in scoring.columns if all(row.get(column[0]) is not None for row in rows)]
    has_val = any(key.startswith("val_") for key, _, _ in metrics)
    lines = [f"SEC study: {first['method']} on {first['dataset']}; {scoring.measures}"
             + (" on the validation split (choose by these) and the test split" if has_val else " on the test split")
             + f", norm std/mean of {scoring.norms} before normalization.", "",
             "| variant | SEC weight | schedule | seeds | " + " | ".join(title for _, title, _ in metrics) + " |",
             "|---|---:|---|---:|" + "---:|" * len(metrics)]
    for variant, group in groups.items():
        cells = [mean_std([row[key] for row in group], digits) for key, _, digits in metrics]
        lines.append(f"| {variant} | {weight_cell(group[0])} | {schedule_cell(group[0])} | "
                     f"{len(group)} | {' | '.join(cells)} |")
    curves = {variant: curve_by_epoch(group) for variant, group in groups.items()}
    lines += ["", f"{MONITORS[_monitor(first)].title} during training, mean over seeds:", "",
              f"| epoch | {' | '.join(groups)} |", "|---:|" + "---:|" * len(groups)]
    for epoch in sorted({epoch for curve in curves.values() for epoch in curve}):
        cells = [f"{statistics.fmean(curve[epoch]):.2f}" if epoch in curve else "" for curve in curves.values()]
        lines.append(f"| {epoch} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def weight_cell(row: Dict[str, Any]) -> str:
    """A row's regularizer in words: ``L2 0.01``, ``1`` (SEC weight), ``1, EMA 0.1``; ``0`` for none."""
    if row.get("norm_penalty_weight"):
        return f"L2 {row['norm_penalty_weight']:g}"
    ema = f", EMA {row['sec_momentum']:g}" if row.get("sec_momentum") is not None else ""
    return f"{row['sec_weight']:g}{ema}"


def schedule_cell(row: Dict[str, Any]) -> str:
    """A row's weight schedule, ``linear`` or ``constant``; ``-`` for a run without SEC or the L2 penalty (rows
    written before :func:`loss_settings` still name a schedule there)."""
    if not (row.get("sec_weight") or row.get("norm_penalty_weight")):
        return "-"
    return row.get("sec_schedule") or "constant"  # rows from before schedules existed ran constant


def by_variant(rows: Sequence[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """variant -> its rows, variants in order of first appearance."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    return groups


def mean_std(values: Sequence[float], digits: int) -> str:
    """``mean ± sample std`` at ``digits`` decimals; one value alone."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _monitor(row: Dict[str, Any]) -> str:
    return row.get("monitor", "knn_top1")  # rows written before metric learning hold knn_per_epoch only


def curve_by_epoch(group: Sequence[Dict[str, Any]]) -> Dict[int, List[float]]:
    """epoch -> the monitor score (its :attr:`Monitor.curve`) of every row of ``group`` that logged it."""
    curve: Dict[int, List[float]] = {}
    for row in group:
        for epoch, value in row[MONITORS[_monitor(row)].curve]:
            curve.setdefault(int(epoch), []).append(value)
    return curve


def plot_curves(axes: Any, rows: Sequence[Dict[str, Any]], variants: Optional[Sequence[str]] = None) -> None:
    """Draw the monitor per epoch of each variant of ``rows`` (all, or ``variants``) on matplotlib ``axes``: the
    mean over seeds as a line, their min-max as a band; epochs are whole numbers on the x axis."""
    from matplotlib.ticker import MaxNLocator

    for variant, group in by_variant(rows).items():
        if variants is not None and variant not in variants:
            continue
        curve = curve_by_epoch(group)
        epochs = sorted(curve)
        (line,) = axes.plot(epochs, [statistics.fmean(curve[e]) for e in epochs], marker="o", label=variant)
        axes.fill_between(epochs, [min(curve[e]) for e in epochs], [max(curve[e]) for e in epochs],
                          color=line.get_color(), alpha=0.2)
    axes.set(xlabel="epoch", ylabel=MONITORS[_monitor(rows[0])].title)
    # min_n_ticks=1: a one-epoch curve gets the tick "1", not 0.96, 0.98, ... (MaxNLocator's fallback)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.legend()


def monitor_figure(rows: Sequence[Dict[str, Any]]) -> Any:
    """The monitor per epoch of every variant (mean line, min-max band over seeds), as a matplotlib ``Figure``."""
    title = MONITORS[_monitor(rows[0])].title
    figure = matplotlib_figure()(figsize=(5.5, 3.5), layout="constrained")
    axes = figure.subplots()
    plot_curves(axes, rows)
    split = {"val": " on the validation split", "test": " on the test split"}.get(rows[0].get("monitor_split"), "")
    axes.set_title(f"{title.split(' (')[0]}{split} (mean, min-max over seeds)", fontsize="medium")
    return figure


def norms_figure(rows: Sequence[Dict[str, Any]], output_dir: Union[str, Path], columns: int = 3) -> Any:
    """Histograms of the projection norms of each variant's first seed, each divided by its run's mean norm, on one
    shared x axis and shared bins, so the spreads (what SEC shrinks) compare by eye; ``columns`` panels a row."""
    groups = by_variant(rows)
    norms = {}
    for variant, group in groups.items():  # run dirs are found under output_dir, so a moved study still plots
        values = load_file(str(Path(output_dir) / f"{variant}_seed{group[0]['seed']}" / NORMS_FILE))["norms"].double()
        norms[variant] = (values / values.mean()).numpy()
    low = min(float(values.min()) for values in norms.values())
    high = max(max(float(values.max()) for values in norms.values()), low + 1e-3)
    edges = [low + (high - low) * i / 60 for i in range(61)]
    columns = min(columns, len(groups))
    lines = -(-len(groups) // columns)
    figure = matplotlib_figure()(figsize=(3.0 * columns, 0.4 + 2.4 * lines), layout="constrained")
    grid = figure.subplots(lines, columns, squeeze=False, sharex=True, sharey=True)
    for axes, (variant, group) in zip(grid.flat, groups.items()):
        axes.hist(norms[variant], bins=edges, color="tab:blue")
        axes.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        axes.set_title(f"{variant}: std/mean {group[0]['norm_std_over_mean']:.3f}", fontsize="medium")
    for index, axes in enumerate(grid.flat):
        if index >= len(groups):
            axes.set_visible(False)
        elif index + columns >= len(groups):  # nothing below it: the bottom of its column
            axes.set_xlabel("||z|| / mean ||z||")
            axes.xaxis.set_tick_params(labelbottom=True)
    for axes in grid[:, 0]:
        axes.set_ylabel("views")
    seeds = sorted({group[0]["seed"] for group in groups.values()})
    figure.suptitle(f"projection norms before normalization, over their mean (seed {', '.join(map(str, seeds))})",
                    fontsize="medium")
    return figure


def plot_study(rows: Sequence[Dict[str, Any]], output_dir: Union[str, Path]) -> List[Path]:
    """Write the monitor per epoch (``study_knn.png`` or ``study_recall.png``, :func:`monitor_figure`) and, for SSL
    studies, ``study_norms.png`` (:func:`norms_figure`) into ``output_dir``; returns the paths written."""
    output_dir = Path(output_dir)
    paths = [output_dir / MONITORS[_monitor(rows[0])].plot]
    monitor_figure(rows).savefig(paths[0], dpi=120)
    if NORMS_FILE in scorer(rows[0]["method"]).files:
        paths.append(output_dir / "study_norms.png")
        norms_figure(rows, output_dir).savefig(paths[1], dpi=120)
    return paths
