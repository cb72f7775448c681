"""Typed configuration: dataclasses with the published defaults, YAML files, ``key=value`` overrides.

A YAML file only sets values; every key must exist here. Validation happens once, in
:func:`load_config`, and every error names the key, the bad value and the valid choices::

    config = load_config("configs/simclr_fmnist.yaml", ["loss.sec_weight=1.0", "trainer.epochs=5"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import yaml

METHODS = ("simclr", "moco")
DATASETS = ("cifar10", "cifar100", "fashion_mnist", "npz", "imagenet_folder")
BACKBONES = ("resnet18", "resnet50", "small_cnn")
OPTIMIZERS = ("sgd", "lars")
PRECISIONS = ("no", "bf16", "fp16")
MOCO_BATCH_NORMS = ("shuffle", "sync", "none")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: Optional[str] = None  # None: the data set's default location (Fashion-MNIST: the apt package)
    download: bool = False  # CIFAR only: let torchvision download the archive
    image_size: Optional[int] = None  # folder data sets: decoded size; None keeps 224
    crop_size: Optional[int] = None  # augmented view size; None: the stored image size
    class_list: Optional[str] = None  # folder data sets: file with the classes to keep
    train_limit: Optional[int] = None  # use a subset of the training split (CPU-scale runs)
    test_limit: Optional[int] = None
    num_workers: Optional[int] = None  # folder data sets only


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    cifar_stem: bool = True
    projection_hidden_dim: int = 2048
    projection_dim: int = 128


@dataclass
class LossConfig:
    temperature: float = 0.5
    sec_weight: float = 0.0
    sec_momentum: Optional[float] = None
    norm_penalty_weight: float = 0.0


@dataclass
class MoCoConfig:
    momentum: float = 0.99  # momentum-encoder EMA; 0.999 for ImageNet
    cosine_momentum: bool = False  # raise the momentum to 1 along a cosine schedule
    queue_size: int = 4096  # 65536 for ImageNet
    batch_norm: str = "shuffle"  # shuffle-BN across processes, SyncBN, or plain BN


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.06  # per 256 images; scaled linearly with the global batch
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 10.0


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 512  # global batch, split over processes
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    log_every: int = 50  # steps
    eval_every: int = 10  # epochs between kNN monitors; 0 turns it off
    checkpoint_every: int = 10  # epochs between checkpoints (one is always written at the end)
    seed: int = 0
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke tests)


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_temperature: float = 0.1
    probe_epochs: int = 100
    probe_batch_size: int = 256
    probe_lr: float = 0.1
    probe_weight_decay: float = 0.0
    probe_augment: bool = False  # random-crop + flip protocol instead of cached features


@dataclass
class Config:
    method: str = "simclr"
    output_dir: str = "runs/default"
    resume: Union[bool, str] = False  # true: latest checkpoint in output_dir; or a checkpoint path
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(config: Config) -> Dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    values: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of keys to values")
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like key=value, e.g. trainer.epochs=5")
        _set_dotted(values, key.strip(), yaml.safe_load(text) if text.strip() else None)
    config = _build(Config, values, prefix="")
    validate(config)
    return config


def _set_dotted(values: Dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def _build(cls: type, values: Dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys under {prefix.rstrip('.') or 'the top level'}: "
            + ", ".join(fields)
        )
    kwargs = {}
    for name, value in values.items():
        hint, key = hints[name], prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (int, float, bool, str, Optional, Union)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} must be set (expected {_type_names(options)})")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if option is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be {_type_names(options)}, got {value!r}")


def _type_names(options: Sequence[Any]) -> str:
    return " or ".join("null" if o is type(None) else o.__name__ for o in options)


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(config: Config) -> None:
    """Range and choice checks that types alone cannot express."""
    _choice("method", config.method, METHODS)
    _choice("data.name", config.data.name, DATASETS)
    _choice("model.backbone", config.model.backbone, BACKBONES)
    _choice("optim.name", config.optim.name, OPTIMIZERS)
    _choice("trainer.mixed_precision", config.trainer.mixed_precision, PRECISIONS)
    _choice("moco.batch_norm", config.moco.batch_norm, MOCO_BATCH_NORMS)
    for key in ("loss.temperature", "optim.lr", "trainer.epochs", "trainer.batch_size",
                "trainer.gradient_accumulation_steps", "trainer.log_every", "eval.knn_k",
                "eval.knn_temperature", "eval.probe_epochs", "eval.probe_batch_size",
                "eval.probe_lr", "model.projection_dim", "model.projection_hidden_dim",
                "moco.queue_size", "data.train_limit", "data.test_limit", "data.image_size",
                "data.crop_size", "trainer.max_steps"):
        _positive(key, _get(config, key))
    for key in ("loss.sec_weight", "loss.norm_penalty_weight", "optim.weight_decay",
                "optim.warmup_epochs", "trainer.eval_every", "trainer.checkpoint_every",
                "eval.probe_weight_decay"):
        _positive(key, _get(config, key), allow_zero=True)
    if config.loss.sec_momentum is not None and not 0 < config.loss.sec_momentum <= 1:
        raise ConfigError(f"loss.sec_momentum must be null or in (0, 1], got {config.loss.sec_momentum}")
    if not 0 <= config.moco.momentum < 1:
        raise ConfigError(f"moco.momentum must be in [0, 1), got {config.moco.momentum}")


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node
