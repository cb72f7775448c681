"""What ``sslsec-verification`` leaves behind: ``verification.json`` (one entry per verification set, beside the
protocol that scored them), a ROC plot per set, and the table it prints.

A ``verification.json`` records its protocol (the ``eval.verification_*`` keys, the data keys and the seed that
drew the pairs); :func:`check_output` refuses to replace one of another protocol unless told to, so a
rerun with ``eval.verification_flip=false`` cannot silently overwrite the flip-summed scores of a run::

    result = score_verification(config, backbone)
    check_output(path, verification_protocol(config))
    write_verification(result, path, verification_protocol(config), label)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from sslsec.config import RESULT_FREE_KEYS, Config, config_keys
from sslsec.eval.features import EvaluationError

__all__ = ["check_output", "format_verification", "roc_plot_path", "save_roc_plot", "verification_protocol",
           "write_verification"]

PROTOCOL_KEYS = ("eval.verification_", "eval.center_crop", "data.", "trainer.seed")


def verification_protocol(config: Config) -> Dict[str, Any]:
    """The config keys that decide the scores of a backbone: the verification settings, the data (which splits,
    sizes, crops) and ``trainer.seed`` (which pairs are drawn)."""
    return {key: value for key, value in config_keys(config)
            if key.startswith(PROTOCOL_KEYS) and key not in (*RESULT_FREE_KEYS, "data.download")}


def check_output(path: Path, protocol: Mapping[str, Any], overwrite: bool = False) -> None:
    """Refuse (:class:`EvaluationError`, one line) to replace ``path`` if it holds the scores of another protocol,
    unless ``overwrite``; the same protocol gives the same scores of a backbone, so those are replaced."""
    if overwrite or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
        saved_protocol = dict(saved["protocol"])
    except (ValueError, KeyError, TypeError):
        raise EvaluationError(f"{path} exists and is not a verification.json of sslsec-verification; give "
                              "--output FILE to write elsewhere, or --overwrite to replace it") from None
    changed = [f"{key}: {saved_protocol.get(key)!r} -> {value!r}" for key, value in protocol.items()
               if saved_protocol.get(key) != value]
    if changed:
        raise EvaluationError(f"{path} holds scores of another protocol ({'; '.join(changed[:3])}"
                              f"{' ...' if len(changed) > 3 else ''}); give --output FILE to keep both, or "
                              "--overwrite to replace it")


def write_verification(result: Mapping[str, Mapping[str, Any]], path: Path, protocol: Mapping[str, Any],
                       backbone: str, extra: Optional[Mapping[str, Any]] = None) -> List[Path]:
    """Write ``path`` (``{"backbone", "protocol", **extra, "sets": {name: scores}}``, without the ROC curves) and,
    where matplotlib is installed, each set's ROC plot (:func:`roc_plot_path`). Returns the plots written."""
    sets = {name: {key: value for key, value in scores.items() if key != "roc"} for name, scores in result.items()}
    content = {"backbone": backbone, "protocol": dict(protocol), **(extra or {}), "sets": sets}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
    try:
        from matplotlib.figure import Figure  # noqa: F401  (the plots are optional: pip install 'sslsec[plots]')
    except ImportError:
        return []
    far = protocol.get("eval.verification_far")
    return [save_roc_plot(scores, roc_plot_path(path, name), f"{name}: {backbone}", far)
            for name, scores in result.items()]


def roc_plot_path(path: Path, name: str) -> Path:
    """``verification_roc_lfw.png`` beside ``verification.json`` (``FILE_roc_NAME.png`` beside ``FILE.json``)."""
    return path.with_name(f"{path.stem}_roc_{name}.png")


def save_roc_plot(scores: Mapping[str, Any], path: Path, title: str, far: Optional[float] = None) -> Path:
    """TAR against FAR (log x) of one set's ``scores["roc"]``, the threshold sweep averaged over the test folds,
    with the set's VAL at the target FAR marked."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves the user's backend alone

    roc = scores["roc"]
    order = np.argsort(roc.fpr, kind="stable")
    fpr, tpr = roc.fpr[order], roc.tpr[order]
    shown = fpr > 0  # a log axis has no 0
    figure = Figure(figsize=(5, 3.8), layout="constrained")
    axes = figure.subplots()
    axes.plot(fpr[shown], tpr[shown], ".-", color="tab:blue", markersize=3,
              label=f"accuracy {scores['accuracy']:.2f} %, {scores['pairs']} pairs")
    if far is not None:
        axes.plot([far], [scores["val_at_far"] / 100], "o", color="tab:red",
                  label=f"VAL@FAR={far:g}: {scores['val_at_far']:.2f} %")
    axes.set_xscale("log")
    axes.set(xlabel="false accept rate (FAR)", ylabel="true accept rate (TAR)", ylim=(0, 1.02), title=title)
    axes.title.set_fontsize(9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=120)
    return path


def format_verification(result: Mapping[str, Mapping[str, Any]], far: float) -> str:
    """The table ``sslsec-verification`` prints: set, pairs, accuracy +- std, VAL@FAR, threshold, xnorm."""
    lines = [f"  {'set':<12} {'pairs':>6}  {'accuracy (%)':>14}  {f'VAL@FAR={far:g} (%)':>17}  {'threshold':>9}  "
             f"{'xnorm':>8}"]
    for name, scores in result.items():
        lines.append(f"  {name:<12} {scores['pairs']:>6}  {scores['accuracy']:>7.2f} ± {scores['accuracy_std']:<5.2f}"
                     f"  {scores['val_at_far']:>8.2f} ± {scores['val_std']:<6.2f}  {scores['threshold']:>9.3f}  "
                     f"{scores['xnorm']:>8.3f}")
    return "\n".join(lines)
