"""The run directory: where pretraining writes, and how evaluation and analysis read a finished run back.

``output_dir/`` holds ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` (``latest`` names the newest
complete one) and, once pretraining has finished, ``backbone.safetensors``, (a method with a projection head:
SimCLR, MoCo, BYOL, SimSiam) ``projection_head.safetensors`` and (BYOL, SimSiam) ``prediction_head.safetensors``::

    config, backbone = load_run("runs/simclr_fmnist", ["data.test_limit=1000"])
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from sslsec.config import Config, config_keys, format_override, load_config

if TYPE_CHECKING:
    from torch import nn


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
        self.prediction_head = self.root / "prediction_head.safetensors"  # BYOL's and SimSiam's predictor

    def finished(self) -> bool:
        """Pretraining wrote its final weights."""
        return self.backbone.is_file()

    def started(self) -> bool:
        """Pretraining finished or left a checkpoint to resume from."""
        return self.finished() or self.latest_checkpoint.is_file()


def resume_command(config: Config, resume: str = "true", run_dir: Optional[Union[str, Path]] = None,
                   changes: Mapping[str, Any] = ()) -> str:
    """The command line that continues the run of ``config``: ``sslsec-pretrain --config RUN/config.yaml
    resume=true``, with every setting in which ``config`` differs from the run's ``config.yaml`` (settings a resume
    may change, such as ``trainer.max_steps``) and ``changes`` (``{"trainer.max_steps": None}``) as ``key=value``.

    ``run_dir``: where the run is now, when it is not (or no longer) the ``output_dir`` it was started with.
    Quoted for a POSIX shell; :func:`load_config` reads the ``key=value`` words back to ``config``.
    """
    paths = RunPaths(run_dir if run_dir is not None else config.output_dir)
    saved = dict(config_keys(load_config(paths.config))) if paths.config.is_file() else {}
    wanted = dict(changes)
    if Path(config.output_dir).resolve() != paths.root.resolve():
        wanted["output_dir"] = str(paths.root)
    overrides = [format_override(key, wanted.pop(key, value)) for key, value in config_keys(config)
                 if key != "resume" and (key in wanted or saved.get(key) != value)]
    return shlex.join(["sslsec-pretrain", "--config", str(paths.config), *overrides, f"resume={resume}"])


def finished_run(run_dir: Union[str, Path]) -> RunPaths:
    """The files of the finished pretraining run ``run_dir``; a :class:`RunError` that says what is missing and,
    for an unfinished run, the command that finishes it."""
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not paths.config.is_file():
        raise RunError(f"{paths.config} is missing: is {run_dir} a pretraining run directory (its output_dir)?")
    if not paths.finished():
        # resume=auto: also right for a run that stopped before its first checkpoint (it starts again);
        # trainer.max_steps=null: config.yaml keeps the max_steps that stopped the run, which would stop it again
        config = load_config(paths.config)
        changes = {"trainer.max_steps": None} if config.trainer.max_steps is not None else {}
        raise RunError(f"{paths.backbone} is missing: pretraining writes it when it finishes; finish the run with: "
                       f"{resume_command(config, 'auto', run_dir=paths.root, changes=changes)}")
    return paths


# The config keys that set an evaluation's scores; of the data section, all but where and how the images are read.
PROTOCOL_SECTIONS = ("eval.", "data.", "augment.")
PROTOCOL_KEYS = ("method", "trainer.seed")
NOT_PROTOCOL_KEYS = ("data.root", "data.num_workers", "data.skip_corrupt", "data.download")


def scores_protocol(config: Config, backbone: Union[str, Path], **settings: Any) -> Dict[str, Any]:
    """What sets the scores of an evaluation of ``backbone`` (a weights file's ``Path``, or the words of a random
    init) under ``config``: the file's resolved path, the ``eval``, ``data`` and ``augment`` keys (not ``data.root``
    and the other keys of how images are read), ``method``, ``trainer.seed``, the ``model`` keys of random weights,
    and ``settings`` (``n=1024``). An evaluation
    records it beside its scores (``"protocol"``) and replaces a scores file only of the same protocol
    (:func:`check_scores_file`). JSON values, so that it compares equal to the one read back."""
    weights = isinstance(backbone, Path)
    source = str(backbone.resolve()) if weights else backbone
    sections = PROTOCOL_SECTIONS if weights else (*PROTOCOL_SECTIONS, "model.")  # random weights: their network
    keys = {key: value for key, value in config_keys(config) if key not in NOT_PROTOCOL_KEYS
            and (key in PROTOCOL_KEYS or key.startswith(sections))}
    return json.loads(json.dumps({"backbone": source, **settings, **keys}))


def check_scores_file(path: Union[str, Path], protocol: Mapping[str, Any],
                      fix: str = "pass --output-dir DIR to keep both, or --overwrite to replace it") -> None:
    """A :class:`RunError` naming the settings that differ when ``path`` holds the scores of another protocol than
    ``protocol`` (:func:`scores_protocol`): an evaluation never silently replaces another protocol's scores, as
    pretraining never replaces a run. Nothing to say when ``path`` does not exist or records the same protocol."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text()).get("protocol")
    except (ValueError, AttributeError):
        saved = None
    if saved == protocol:
        return
    if not isinstance(saved, dict):
        what = "scores that record no protocol"
    else:
        changed = [f"{key}={saved.get(key)!r} -> {protocol.get(key)!r}"
                   for key in dict.fromkeys([*saved, *protocol]) if saved.get(key) != protocol.get(key)]
        what = f"the scores of another protocol ({', '.join(changed)})"
    raise RunError(f"{path} holds {what}; {fix}")


def write_scores(path: Union[str, Path], result: Mapping[str, Any], protocol: Mapping[str, Any]) -> None:
    """``result`` as JSON at ``path``, with the ``protocol`` that :func:`check_scores_file` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "protocol": dict(protocol)}, indent=2) + "\n")


def load_run(run_dir: Union[str, Path], overrides: Sequence[str] = ()) -> Tuple[Config, nn.Module]:
    """The config (``config.yaml`` with ``key=value`` overrides) and trained backbone of a pretraining run."""
    paths = finished_run(run_dir)
    return load_config(paths.config, overrides), load_saved_backbone(paths.backbone)


def load_saved_backbone(path: Union[str, Path]) -> nn.Module:
    """:func:`sslsec.models.load_backbone`, with a :class:`RunError` for a file that is not one."""
    from sslsec.models import load_backbone  # here: the run directory's checks above need no torch

    try:
        return load_backbone(path)
    except (FileNotFoundError, ValueError) as error:
        raise RunError(str(error)) from None


def load_projection_head(run_dir: Union[str, Path], config: Config, feature_dim: int) -> nn.Module:
    """The trained projection head of a pretraining run (``projection_head.safetensors``); a head without weights
    (metric learning's, the identity) is built, as it is saved nowhere."""
    from safetensors.torch import load_model

    from sslsec.methods import build_projection_head

    head = build_projection_head(config.method, feature_dim, config.model.projection_hidden_dim,
                                 config.model.projection_dim)
    if not head.state_dict():
        return head
    path = RunPaths(run_dir).projection_head
    if not path.is_file():
        raise RunError(f"{path} is missing: pretraining writes it with backbone.safetensors when it finishes")
    load_model(head, str(path))
    return head


def load_sec_head(run_dir: Union[str, Path], config: Config, feature_dim: int) -> nn.Module:
    """The trained layers between the backbone and the embeddings that SEC regularizes: the projection head, and
    for BYOL and SimSiam the predictor after it (``prediction_head.safetensors``; their SEC acts on the predictions,
    docs/SEC.md), so that norm diagnostics measure what SEC evens out."""
    from safetensors.torch import load_model
    from torch import nn

    from sslsec.methods import method_class

    head = load_projection_head(run_dir, config, feature_dim)
    predictor = method_class(config.method).options(config).get("predictor")
    if predictor is None:
        return head
    path = RunPaths(run_dir).prediction_head
    if not path.is_file():
        raise RunError(f"{path} is missing: {config.method} runs write it with backbone.safetensors since the norm "
                       "diagnostics measure the predictions; retrain the run to score its norms")
    load_model(predictor, str(path))
    return nn.Sequential(head, predictor)
