"""The run directory: where pretraining writes, and how evaluation and analysis read a finished run back.

``output_dir/`` holds ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` (``latest`` names the newest
complete one) and, once pretraining has finished, ``backbone.safetensors`` and ``projection_head.safetensors``::

    config, backbone = load_run("runs/simclr_fmnist", ["data.test_limit=1000"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple, Union

from safetensors.torch import load_model
from torch import nn

from sslsec.config import Config, load_config
from sslsec.methods import build_projection_head
from sslsec.models import load_backbone


class RunError(ValueError):
    """A run directory or saved backbone that cannot be read as asked."""


class RunPaths:
    """The files of the run directory ``root``."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.jsonl"
        self.checkpoints = self.root / "checkpoints"
        self.latest_checkpoint = self.checkpoints / "latest"  # names the newest complete checkpoint directory
        self.backbone = self.root / "backbone.safetensors"
        self.projection_head = self.root / "projection_head.safetensors"

    def finished(self) -> bool:
        """Pretraining wrote its final weights."""
        return self.backbone.is_file()

    def started(self) -> bool:
        """Pretraining finished or left a checkpoint to resume from."""
        return self.finished() or self.latest_checkpoint.is_file()


def load_run(run_dir: Union[str, Path], overrides: Sequence[str] = ()) -> Tuple[Config, nn.Module]:
    """The config (``config.yaml`` with ``key=value`` overrides) and trained backbone of a pretraining run."""
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not paths.config.is_file():
        raise RunError(f"{paths.config} is missing: is {run_dir} a pretraining run directory (its output_dir)?")
    if not paths.finished():
        raise RunError(f"{paths.backbone} is missing: pretraining writes it when it finishes; let the run "
                       "finish (or resume it with resume=true), or pass --backbone FILE --config FILE")
    return load_config(paths.config, overrides), load_saved_backbone(paths.backbone)


def load_saved_backbone(path: Union[str, Path]) -> nn.Module:
    """:func:`sslsec.models.load_backbone`, with a :class:`RunError` for a file that is not one."""
    try:
        return load_backbone(path)
    except (FileNotFoundError, ValueError) as error:
        raise RunError(str(error)) from None


def load_projection_head(run_dir: Union[str, Path], config: Config, feature_dim: int) -> nn.Module:
    """The trained projection head of a pretraining run (``projection_head.safetensors``)."""
    path = RunPaths(run_dir).projection_head
    if not path.is_file():
        raise RunError(f"{path} is missing: pretraining writes it with backbone.safetensors when it finishes")
    head = build_projection_head(config.method, feature_dim, config.model.projection_hidden_dim,
                                 config.model.projection_dim)
    load_model(head, str(path))
    return head
