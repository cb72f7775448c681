"""Training metrics: windowed step averages into ``metrics.jsonl`` and accelerate's trackers.

metrics.jsonl holds three kinds of rows, each with ``step`` and ``epoch`` (1-based: ``"epoch": 1`` is the first):
step averages (``total``, ``lr``, ..., over the ``steps`` optimizer steps up to ``step``: ``trainer.log_every``, or
fewer for the last interval of an epoch or of a stopped run),
the kNN monitor (``knn_top1``), and at the start of every invocation of a run, fresh or resumed, the precision it
trains in (``mixed_precision``, ``precision_reason``). Readers pick rows by key.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator


class MetricsLog:
    """Averages step metrics over a window and writes them to metrics.jsonl and the trackers."""

    def __init__(self, accelerator: Accelerator, path: Path, seconds_before: float = 0.0, step: int = 0) -> None:
        self.accelerator, self.path = accelerator, path
        self.last_step = step  # the optimizer step the window starts after
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0
        self.images = 0
        self.run_started = time.perf_counter() - seconds_before
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, earlier invocations of a resumed run included."""
        return time.perf_counter() - self.run_started

    def add(self, values: Dict[str, torch.Tensor], images: int) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.count += 1
        self.images += images

    def flush(self, step: int, epoch: int, **values: float) -> Optional[Dict[str, float]]:
        """Reduce the window (the steps after the last row, up to ``step``) over processes and write it with
        ``values`` (lr, ...); returns the logged row, or None (nothing written) when the window is empty or no step
        was taken in it (batches the fp16 loss scaler skipped: they join the next row)."""
        if self.count == 0 or step == self.last_step:  # the same on every process: they all take the same steps
            return None
        keys = sorted(self.sums)
        means = torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)
        means = self.accelerator.reduce(means, reduction="mean")
        elapsed = time.perf_counter() - self.started
        row = {"step": step, "epoch": epoch, "steps": step - self.last_step, **dict(zip(keys, means.tolist())), **values,
               "time": round(self.elapsed(), 3),
               "images_per_s": self.images * self.accelerator.num_processes / max(elapsed, 1e-9)}
        self.write(row, step)
        self.sums, self.count, self.images, self.started = {}, 0, 0, time.perf_counter()
        self.last_step = step
        return row

    def write(self, row: Dict[str, float], step: int) -> None:
        self.note(row)
        self.accelerator.log({k: v for k, v in row.items() if k not in ("step", "epoch")}, step=step)

    def note(self, row: Dict[str, Any]) -> None:
        """Append ``row`` to metrics.jsonl only (main process), not to the trackers: e.g. the precision in force."""
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def trackers() -> Optional[List[str]]:
    """TensorBoard through accelerate's trackers when it is installed (the ``tensorboard`` extra)."""
    # None, not []: accelerate warns that "log_with=[]" names no supported tracker.
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") else None


def finish_trackers(accelerator: Accelerator) -> None:
    """End the trackers, but not the process group."""
    # Not accelerator.end_training(): it also ends the process group, which a linear probe
    # run right after pretraining (sslsec-pretrain --probe) still needs.
    for tracker in accelerator.trackers:
        tracker.finish()

