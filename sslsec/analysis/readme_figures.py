"""The README's figure blocks, written from the files the main jobs leave in their run directories.

Each block sits between ``<!-- BEGIN figures: NAME ... -->`` and ``<!-- END figures: NAME -->`` and is rewritten
whole, prose included, from the run's ``metrics.jsonl`` (precision, training time, images/s, the per-epoch monitor),
``config.yaml`` and score JSON (``linear_probe.json`` or ``retrieval.json``, the run's and its ``random_init/``
baseline's), so that no figure in it can drift from the runs::

    text = update_readme(Path("README.md").read_text(), "runs", machine="a 2-core AMD EPYC")
    stale = changed_blocks(Path("README.md").read_text(), text)   # [] when the README is up to date
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from sslsec.runs import RunPaths

# The targets the SSL main job is held to on the test split (percent): linear top-1, kNN top-1.
SSL_TARGETS = {"top1": 90.0, "knn_top1": 85.5}
BLOCK = re.compile(r"(<!-- BEGIN figures: (?P<name>[\w-]+)[^\n]*-->\n)(?P<body>.*?)(<!-- END figures: (?P=name) -->)",
                   flags=re.DOTALL)


class FiguresError(ValueError):
    """A run file the README's figures need is missing or unreadable."""


def read_json(path: Path, command: str) -> Dict[str, Any]:
    """The JSON file ``path``; a :class:`FiguresError` naming ``command``, which writes it, when it is missing."""
    if not path.is_file():
        raise FiguresError(f"{path} is missing: run `{command}` first")
    return json.loads(path.read_text())


def training_summary(run_dir: Path, command: str) -> Dict[str, Any]:
    """From ``metrics.jsonl`` and ``config.yaml``: precision, training seconds, median images/s, epochs, batch size
    and the monitor per epoch (``[(epoch, value), ...]``, the last row of an epoch winning after a resume)."""
    paths = RunPaths(run_dir)
    if not paths.metrics.is_file() or not paths.config.is_file():
        raise FiguresError(f"{paths.metrics} or {paths.config} is missing: run `{command}` first")
    rows = [json.loads(line) for line in paths.metrics.read_text().splitlines() if line.strip()]
    config = yaml.safe_load(paths.config.read_text())
    steps = [row for row in rows if "images_per_s" in row]
    monitor_key = "knn_top1" if config["method"] != "metric" else "recall_at_1"
    monitor = {row["epoch"]: row for row in rows if monitor_key in row}
    return {"precision": next(row["mixed_precision"] for row in reversed(rows) if "mixed_precision" in row),
            "seconds": steps[-1]["time"], "images_per_s": statistics.median(row["images_per_s"] for row in steps),
            "epochs": config["trainer"]["epochs"], "batch_size": config["trainer"]["batch_size"],
            "monitor": sorted(monitor.items())}


def main_job_files(runs: Path, name: str, evaluation: str) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """The main job ``configs/NAME.yaml``'s :func:`training_summary`, its scores (``runs/NAME/EVALUATION.json``)
    and those of its random-weights baseline (``runs/NAME/random_init/``), each error naming the command to run."""
    config, run = f"configs/{name}.yaml", runs / name
    pretrain = f"python scripts/pretrain.py --config {config} --probe"
    return (training_summary(run, pretrain), read_json(run / f"{evaluation}.json", pretrain),
            read_json(run / "random_init" / f"{evaluation}.json",
                      f"python scripts/{evaluation}.py --random-init --config {config}"))


def minutes(seconds: float) -> str:
    """``"4 min 48 s"`` (or ``"58 s"`` under a minute)."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def simclr_fmnist_block(runs: Path, machine: str) -> str:
    """The SSL main job (``runs/simclr_fmnist``): time, scores against random weights, the targets it met."""
    train, probe, random = main_job_files(runs, "simclr_fmnist", "linear_probe")
    images = train["epochs"] * probe["train_size"]
    epochs = ", ".join(f"{row['knn_top1']:.2f} % after epoch {epoch}" for epoch, row in train["monitor"])
    met = [f"{label} {probe[key]:.2f} % {'>=' if probe[key] >= target else '<'} {target:.1f} % "
           f"({'met' if probe[key] >= target else f'missed by {target - probe[key]:.2f} points'})"
           for key, label, target in (("top1", "linear", SSL_TARGETS["top1"]),
                                      ("knn_top1", "kNN", SSL_TARGETS["knn_top1"]))]
    return (
        f"{train['epochs']} epochs ({images:,} training images). Measured on {machine}: training took "
        f"**{minutes(train['seconds'])}** in {train['precision']} under `auto` "
        f"({train['images_per_s']:,.0f} images/s median), the probe {minutes(probe['seconds'])}. "
        f"Validation kNN top-1 while training: {epochs}.\n\n"
        "| backbone | val linear top-1 | val kNN top-1 | test linear top-1 | test linear top-5 | test kNN top-1 |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        + "".join(f"| {name} | {scores['val_top1']:.2f} | {scores['val_knn_top1']:.2f} | {scores['top1']:.2f} | "
                  f"{scores['top5']:.2f} | {scores['knn_top1']:.2f} |\n"
                  for name, scores in (("SimCLR + SEC (`runs/simclr_fmnist/`)", probe),
                                       ("random weights (`runs/simclr_fmnist/random_init/`)", random)))
        + f"\nPretraining adds {probe['top1'] - random['top1']:.1f} points of linear top-1 and "
        f"{probe['knn_top1'] - random['knn_top1']:.1f} of kNN top-1 on the test split. The targets on the test "
        f"split, on this machine: {met[0]}; {met[1]}. bf16 results differ a little between CPUs (their kernels sum "
        "in other orders): these are one seed on one CPU; [docs/RESULTS.md](docs/RESULTS.md) has other seeds and "
        "CPUs.\n")


RETRIEVAL_COLUMNS = (("recall_at_1", "R@1"), ("recall_at_2", "R@2"), ("recall_at_4", "R@4"), ("recall_at_8", "R@8"),
                     ("map_at_r", "MAP@R"), ("r_precision", "RP"), ("nmi", "NMI"))


def dml_fmnist_block(runs: Path, machine: str) -> str:
    """The metric-learning main job (``runs/dml_fmnist``): time, retrieval against random weights."""
    train, scores, random = main_job_files(runs, "dml_fmnist", "retrieval")
    epochs = ", ".join(f"{row['recall_at_1']:.2f} / {row['map_at_r']:.2f} (epoch {epoch})"
                       for epoch, row in train["monitor"])
    header = "| backbone | split | images | " + " | ".join(label for _, label in RETRIEVAL_COLUMNS) + " | norm std/mean |"
    rows = [(name, split, result[split]) for name, result, splits in (
        ("triplet + SEC (`runs/dml_fmnist/`)", scores, ("val", "test")),
        ("random weights (`runs/dml_fmnist/random_init/`)", random, ("test",))) for split in splits]
    table = "\n".join([header, "|---|---|" + "---:|" * (len(RETRIEVAL_COLUMNS) + 2)] + [
        f"| {name} | {split} | {row['images']} | " + " | ".join(f"{row[key]:.2f}" for key, _ in RETRIEVAL_COLUMNS)
        + f" | {row['norm_std_over_mean']:.3f} |" for name, split, row in rows])
    test, base = scores["test"], random["test"]
    return (
        f"Measured on {machine}: training took **{minutes(train['seconds'])}** in {train['precision']} under "
        f"`auto` ({train['images_per_s']:,.0f} images/s median). Validation Recall@1 / MAP@R after each epoch: "
        f"{epochs}. Then `retrieval.json` (and the baseline's):\n\n{table}\n\n"
        f"On the unseen classes training adds {test['map_at_r'] - base['map_at_r']:.1f} points of MAP@R, "
        f"{test['nmi'] - base['nmi']:.1f} of NMI and {test['recall_at_1'] - base['recall_at_1']:.1f} of Recall@1; "
        "five visually distinct classes make Recall@1 high even at random, so MAP@R is the measure to read.\n")


BLOCKS: Dict[str, Callable[[Path, str], str]] = {"simclr_fmnist": simclr_fmnist_block, "dml_fmnist": dml_fmnist_block}


def update_readme(text: str, runs: Union[str, Path], machine: str) -> str:
    """``text`` with every figure block of :data:`BLOCKS` rewritten from the runs under ``runs``; a block whose
    name is not in :data:`BLOCKS` is a :class:`FiguresError` (a typo would otherwise leave it stale for good)."""
    def body(match: re.Match) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise FiguresError(f"README block 'figures: {name}' has no writer; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](Path(runs), machine) + match.group(4)

    if not BLOCK.search(text):
        raise FiguresError("no <!-- BEGIN figures: NAME --> ... <!-- END figures: NAME --> block in the README")
    return BLOCK.sub(body, text)


def blocks_of(text: str) -> Dict[str, str]:
    """``{name: body}`` of the figure blocks of ``text``."""
    return {match.group("name"): match.group("body") for match in BLOCK.finditer(text)}


def changed_blocks(old: str, new: str) -> List[Tuple[str, str, str]]:
    """``[(name, old body, new body), ...]`` of the blocks that differ between two versions of the README."""
    before, after = blocks_of(old), blocks_of(new)
    return [(name, before.get(name, ""), body) for name, body in after.items() if before.get(name) != body]


def host_description(cpuinfo: Union[str, Path] = "/proc/cpuinfo") -> str:
    """``"a 2-core AMD EPYC (bf16 natively: AVX512-BF16)"``: this machine, as the figure blocks name it."""
    text = Path(cpuinfo).read_text() if Path(cpuinfo).is_file() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.MULTILINE)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, flags=re.MULTILINE).group(1).split()) if model else set()
    native = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    bf16 = f"bf16 natively: {' and '.join(native)}" if native else "no native bf16"
    return f"a {os.cpu_count()}-core {model.group(1).strip() if model else 'CPU'} ({bf16})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scripts/readme_figures.py``: rewrite the README's figure blocks from the runs, or ``--check`` them."""
    parser = argparse.ArgumentParser(description="Rewrite the README's <!-- BEGIN figures: NAME --> blocks from "
                                     "the main jobs' run directories (metrics.jsonl, config.yaml, score JSON).")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the folder holding the run directories")
    parser.add_argument("--machine", default=None,
                        help="the machine the runs were measured on, as the text names it (default: this one, "
                        f"{host_description()!r})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and print the difference when a block is not what the runs give")
    args = parser.parse_args(argv)
    old = args.readme.read_text()
    try:
        new = update_readme(old, args.runs, args.machine or host_description())
    except FiguresError as error:
        print(f"readme_figures: {error}", file=sys.stderr)
        return 2
    changed = changed_blocks(old, new)
    if args.check:
        for name, before, after in changed:
            sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                                       f"README block {name}", f"from {args.runs}"))
        print(f"{len(changed)} figure block(s) of {args.readme} differ from the runs" if changed
              else f"the figure blocks of {args.readme} match the runs")
        return 1 if changed else 0
    args.readme.write_text(new)
    print(f"rewrote {', '.join(name for name, _, _ in changed) or 'no block (all matched)'} in {args.readme}")
    return 0
