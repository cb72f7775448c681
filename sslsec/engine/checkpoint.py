"""Checkpoints of a pretraining run: where it stands (:class:`Progress`) and atomic ``save_state`` directories."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional

from accelerate import Accelerator

from sslsec.config import load_config, recipe_differences
from sslsec.runs import RunPaths

if TYPE_CHECKING:
    from sslsec.config import Config

KEEP_CHECKPOINTS = 2


class TrainingError(RuntimeError):
    """Pretraining cannot go on (a diverged loss, a run directory that is not resumable)."""


@dataclasses.dataclass
class Progress:
    """Where the run stands; checkpointed with the model so that a resume continues exactly."""

    epoch: int = 0  # current epoch
    batch: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # wall-clock training time before this process started (earlier invocations)
    processes: int = 1  # the world size that trained up to here

    def state_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.seconds = state.get("seconds", 0.0)
        self.processes = state.get("processes", self.processes)  # checkpoints before it was kept: the same


MANIFEST = "manifest.json"


def write_manifest(folder: Path) -> None:
    """``folder/manifest.json``: the size and SHA-256 of every file in ``folder``, written last."""
    entries = {str(path.relative_to(folder)): [path.stat().st_size, _sha256(path)]
               for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1) + "\n")


def damage(folder: Path) -> Optional[str]:
    """Why the checkpoint ``folder`` cannot be trusted (a file missing, cut short or changed), or None."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest.json (written last, so the save did not finish)"
    try:
        entries = json.loads(manifest.read_text())
    except ValueError:
        return "manifest.json is unreadable"
    for name, (size, digest) in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size}"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Checkpoints:
    """``output_dir/checkpoints/step_XXXXXXXX`` directories, written atomically and verified when loaded.

    ``save_state`` writes into a temporary directory with a manifest of file sizes and hashes written last;
    the directory is renamed into place only when complete, then the ``latest`` file is replaced atomically.
    A killed run therefore never leaves a half-written checkpoint as the latest, and :meth:`usable` skips one
    damaged afterwards (a truncated file, a full disk) for the previous good one, with a warning.
    """

    def __init__(self, accelerator: Accelerator, output_dir: Path) -> None:
        self.accelerator = accelerator
        self.paths = RunPaths(output_dir)
        self.root = self.paths.checkpoints

    def latest(self) -> Optional[Path]:
        pointer = self.paths.latest_checkpoint
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def usable(self) -> Optional[Path]:
        """The newest checkpoint that passes its manifest check; a warning line for each damaged one skipped.

        Raises :class:`TrainingError` when checkpoints exist but none is usable; None when there are none.
        """
        latest = self.latest()
        candidates = sorted(self.root.glob("step_*"), reverse=True) if self.root.is_dir() else []
        if latest is not None:  # the pointer's choice first
            candidates = [latest] + [path for path in candidates if path != latest]
        problems = []
        for path in candidates:
            reason = damage(path)
            if reason is None:
                return path
            problems.append(f"{path.name}: {reason}")
            if self.accelerator.is_main_process:
                print(f"warning: checkpoint {path} is damaged ({reason}); trying the previous one", file=sys.stderr)
        if problems:
            raise TrainingError(f"no usable checkpoint in {self.root} ({'; '.join(problems)}); start a new run "
                                "in another output_dir")
        return None

    def save(self, step: int) -> Path:
        accelerator = self.accelerator
        final = self.root / f"step_{step:08d}"
        partial = self.root / f".partial_step_{step:08d}"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        # safetensors cannot hold the queue's extra state, so the model is pickled.
        accelerator.save_state(str(partial), safe_serialization=False)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_manifest(partial)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            pointer = self.root / ".latest.tmp"
            pointer.write_text(final.name)
            os.replace(pointer, self.paths.latest_checkpoint)
            for old in sorted(self.root.glob("step_*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final


def resume_path(config: Config, checkpoints: Checkpoints) -> Optional[Path]:
    """The checkpoint that ``config.resume`` asks for, or None for a fresh run.

    ``false``: a fresh run, refused where a run already is. ``true``: the latest checkpoint, which must exist.
    ``auto``: the latest checkpoint if there is one, else a fresh run (for schedulers that requeue jobs).
    A path: that checkpoint directory. Raises :class:`TrainingError` before anything is written.
    """
    resume = config.resume
    exists = checkpoints.latest() is not None or any(checkpoints.root.glob("step_*"))
    if resume is False:
        if exists or RunPaths(config.output_dir).finished():
            raise TrainingError(
                f"{config.output_dir} already holds a run; pass resume=true to continue it, "
                "or choose another output_dir"
            )
        return None
    if resume == "auto":
        return checkpoints.usable()
    if resume is True:
        if not exists:
            raise TrainingError(
                f"resume=true but {config.output_dir} holds no checkpoint to resume (no run there, or its "
                "checkpoints/latest is missing); check output_dir, or use resume=auto to start a run if none exists"
            )
        return checkpoints.usable()
    path = Path(resume)
    if not path.is_dir():
        raise TrainingError(f"resume={resume}: no checkpoint directory there")
    reason = damage(path) if (path / MANIFEST).is_file() else None  # checkpoints older than the manifest pass
    if reason is not None:
        raise TrainingError(f"resume={resume}: the checkpoint is damaged ({reason})")
    return path


def check_same_recipe(config: Config) -> None:
    """On resume, refuse a recipe that differs from the run's ``config.yaml``: one line naming every key."""
    saved = RunPaths(config.output_dir).config
    if not saved.is_file():
        return
    differences = recipe_differences(load_config(saved), config)
    if differences:
        changed = ", ".join(f"{key}={before!r} -> {now!r}" for key, before, now in differences)
        raise TrainingError(
            f"cannot resume {config.output_dir} with another recipe: {changed}; resume with the run's own "
            "settings (see its config.yaml), or start a new run in another output_dir"
        )


def _logged_step(row: str) -> Optional[int]:
    """The step of one metrics.jsonl line; None for a line cut short by a kill."""
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` logged after ``step``: a resumed run logs those steps again."""
    if not path.is_file():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = [row for row in rows if (logged := _logged_step(row)) is not None and logged <= step]
    if len(kept) != len(rows):
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text("".join(kept))
        os.replace(partial, path)
