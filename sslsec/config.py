"""Typed configuration: dataclasses with the published defaults, merged by OmegaConf with YAML and ``key=value``.

The dataclasses are the schema (an OmegaConf structured config): a YAML file, then ``key=value`` overrides, are
merged into it in that order, so every value is typed by the schema and not by YAML's guesses
(``trainer.mixed_precision=no`` is the string "no", ``optim.lr=1e-3`` a float, ``null`` None). A YAML file only
sets values; every key must exist here. Validation happens once, in :func:`load_config`, and every error is one
line that names the key, the bad value and the valid choices::

    config = load_config("configs/simclr_fmnist.yaml", ["loss.sec_weight=1.0", "trainer.epochs=5"])

The names of methods, data sets, backbones and losses come from :mod:`sslsec.choices`, which imports no
implementation: this module loads neither torch nor the methods, so any implementation can import from it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslsec.choices import (BACKBONES, CLASS_WEIGHT_METRIC_LOSSES, CONTRASTIVE_LOSSES, DATASET_NAMES, EMBEDDING_HEADS,
                            IMAGENET_BACKBONES, MARGINLESS_METRIC_LOSSES, METHOD_NAMES, METRIC_LOSS_NAMES,
                            PROBE_SCHEDULES, QUEUE_METHODS, SEC_SCHEDULES, SHARED_SPLIT_DATASETS)
from sslsec.errors import ConfigError  # defined there so that implementations can raise it; re-exported

OPTIMIZERS = ("sgd", "lars", "adam")
PRECISIONS = ("auto", "no", "bf16", "fp16")
MOCO_BATCH_NORMS = ("shuffle", "sync", "none")


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: Optional[str] = None  # None: the data set's default location (Fashion-MNIST: the apt package)
    download: bool = False  # CIFAR only: let torchvision download the archive
    image_size: Optional[int] = None  # JPEG data sets: decoded size; None: 224 (imagenet_folder), 256 (cub200, cars196)
    crop_size: Optional[int] = None  # augmented view size; None: the stored image size
    class_list: Optional[str] = None  # folder data sets: file with the classes to keep
    val_size: Optional[int] = None  # class-balanced validation images carved from the training split (fixed seed)
    # Class-disjoint splits (metric learning): class indices kept in the training / test split (null: all), and
    # whole training classes held out as validation (instead of val_size); each split is relabelled from 0
    train_classes: Optional[List[int]] = None
    test_classes: Optional[List[int]] = None
    val_classes: Optional[List[int]] = None
    train_limit: Optional[int] = None  # use a subset of the (remaining) training split (CPU-scale runs)
    test_limit: Optional[int] = None
    num_workers: Optional[int] = None  # folder data sets only
    skip_corrupt: bool = False  # folder data sets: a file that does not decode is skipped with a warning, not an error


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    cifar_stem: bool = True
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    # BYOL / SimSiam: the prediction head's hidden width; None: the published shape (BYOL: projection_hidden_dim,
    # 4096; SimSiam: a bottleneck of projection_dim / 4, 512 for 2048)
    prediction_hidden_dim: Optional[int] = None
    sync_batchnorm: bool = False  # BatchNorm statistics over all processes (SyncBN; SimCLR's and the SEC authors' choice)
    embedding_dim: int = 512  # metric learning: the linear embedding layer on the backbone (the SEC authors' 512)
    embedding_batchnorm: bool = False  # metric learning: BatchNorm before the embedding layer (the authors' head)
    # linear: [BatchNorm] - Linear; face: insightface's BatchNorm - Dropout - Linear - BatchNorm (scale fixed at 1)
    embedding_head: str = "linear"
    embedding_dropout: float = 0.0  # the face head's dropout before its linear layer (insightface: 0, 0.4 on small sets)
    pretrained: bool = False  # ResNets: start from torchvision's ImageNet weights (IMAGENET1K_V1); cifar_stem false


@dataclass
class LossConfig:
    temperature: float = 0.5
    sec_weight: float = 0.0
    sec_momentum: Optional[float] = None
    norm_penalty_weight: float = 0.0
    sec_schedule: str = "constant"  # or "linear": weight * step / (total_steps - 1), the authors' ramp from 0
    contrastive: str = "ntxent"  # or "dcl", "dclw" (lightly's decoupled losses; no queue, so SimCLR only)


@dataclass
class AugmentConfig:
    """The view recipe (kornia, :class:`sslsec.augment.ContrastiveAugment`); defaults are the published presets."""

    crop_scale: Optional[Tuple[float, float]] = None  # None: the method's preset (SimCLR 0.08-1, MoCo v2 0.2-1)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # colour only: not applied to grayscale images
    hue: float = 0.1  # colour only
    jitter_prob: Optional[float] = None  # None: the method's preset (SimCLR / MoCo 0.8; metric learning 0, none)
    grayscale_prob: Optional[float] = None  # colour only; None: the preset (SimCLR / MoCo 0.2; metric learning 0)
    blur_prob: Optional[float] = None  # None: 0.5 for views of 96 px and more, off below (SimCLR B.9)
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: Optional[int] = None  # None: about 10 % of the view size, odd

    def __post_init__(self) -> None:
        for key in ("crop_scale", "crop_ratio", "blur_sigma"):  # OmegaConf hands lists back; the schema says tuples
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, tuple(value))


@dataclass
class MoCoConfig:
    momentum: float = 0.99  # momentum-encoder EMA; 0.999 for ImageNet
    cosine_momentum: bool = False  # raise the momentum to 1 along a cosine schedule
    queue_size: int = 4096  # 65536 for ImageNet
    # shuffle-BN across processes (one process has none to shuffle with: plain BN, silently), SyncBN, or plain BN
    batch_norm: str = "shuffle"


@dataclass
class BYOLConfig:
    # the target network's EMA factor at the first step, raised to 1 along BYOL's cosine over the run
    # (0.996 for ImageNet, the paper's; 0.99 for CIFAR, solo-learn's and lightly's benchmarks)
    momentum: float = 0.996


@dataclass
class MetricConfig:
    """Deep metric learning (``method: metric``): the pytorch-metric-learning loss and its class-balanced batches."""

    loss: str = "triplet"  # one of sslsec.methods.metric.METRIC_LOSSES
    images_per_class: int = 3  # K of the P x K batches (the SEC authors: 3 triplet / semihard, 2 N-pair, 5 MS)
    margin: Optional[float] = None  # the loss's margin; None: its published default (docs/METRIC_LEARNING.md)
    # class-weight losses: the logits' scale s; None: the published one (CosFace, ArcFace 64; NormFace 20 = 1 / 0.05)
    scale: Optional[float] = None
    backbone_lr_scale: float = 1.0  # the backbone's lr relative to the embedding layer's and class weights'


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd, lars, or adam (metric learning; its lr is not scaled with the batch)
    lr: float = 0.06  # per 256 images; scaled linearly with the global batch (sgd, lars)
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 10.0


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 512  # global batch, split over processes
    mixed_precision: str = "auto"  # bf16 where the CPU or GPU computes it, else fp32 (CPU) or fp16 (GPU)
    channels_last: bool = True  # conv backbones: NHWC memory layout (faster under bf16 on CPUs and GPUs)
    compile: bool = False  # torch.compile the backbone and head, not the loss (pays on GPUs; no gain on CPUs)
    gradient_accumulation_steps: int = 1
    log_every: int = 50  # steps
    eval_every: int = 10  # epochs between kNN monitors; 0 turns it off
    checkpoint_every: int = 10  # epochs between checkpoints (one is always written at the end)
    checkpoint_every_steps: Optional[int] = None  # also every this many optimizer steps (long epochs, pre-emption)
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
    probe_schedule: str = "cosine"  # or "step": x0.2 at 60/75/90 % of the epochs (the SEC authors' protocol)
    probe_standardize: bool = True  # False: a plain linear layer on raw features (published protocols, lr ~5)
    # Views smaller than the stored images (data.crop_size): score their center crop (true: resize 256 / crop 224)
    # or the whole stored image (false: views trained as zoomed-in crops at a lower resolution, as FixRes)
    center_crop: bool = True
    # Face verification (docs/FACE.md): embeddings f(x) + f(hflip x) (insightface's) or f(x) alone; pairs drawn
    # from a class-labelled split; insightface .bin files or LFW-style folders with a pairs.txt, scored as well
    verification_flip: bool = True
    verification_pairs: int = 6000
    verification_sets: List[str] = field(default_factory=list)
    verification_folds: int = 10
    verification_far: float = 1e-3


@dataclass
class Config:
    method: str = "simclr"
    output_dir: str = "runs/default"
    # true: the latest checkpoint in output_dir (one must exist); auto: resume if there is one, else start; or a
    # checkpoint path (bool or str, checked below)
    resume: Any = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    byol: BYOLConfig = field(default_factory=BYOLConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(config: Config) -> Dict[str, Any]:
    """The config as plain nested dicts and lists (what ``config.yaml`` holds)."""
    return OmegaConf.to_container(OmegaConf.structured(config))


def save_config(config: Config, path: Union[str, Path]) -> None:
    """Write ``config`` as plain YAML that :func:`load_config` reads back to an equal config."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config), sort_keys=False))


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """The schema's defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    merged = OmegaConf.structured(Config)
    if path is not None:
        merged = _merge(merged, _typed_tree(_read_yaml(Path(path)), Config, ""))
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like key=value, e.g. trainer.epochs=5")
        tree: Dict[str, Any] = {}
        _set_dotted(tree, key.strip(), text.strip())
        merged = _merge(merged, _typed_tree(tree, Config, ""))
    config = OmegaConf.to_object(merged)
    validate(config)
    return config


# Settings a run may change when it is resumed (or a study reuses it): where it lives, how it was started, when it
# logs, evaluates, checkpoints or stops early, how many loader workers it uses, and how it is evaluated. None of
# them changes the trained weights; every other key is the recipe and must stay as the run was started.
# data.skip_corrupt is among them: without it a corrupt file stops the run, so a run that went past one had it on
# (and turning it on is how a run stopped by a corrupt file goes on).
RESULT_FREE_KEYS = ("output_dir", "resume", "trainer.max_steps", "trainer.log_every", "trainer.eval_every",
                    "trainer.checkpoint_every", "trainer.checkpoint_every_steps", "data.num_workers",
                    "data.skip_corrupt")
RESULT_FREE_SECTIONS = ("eval.",)


def recipe_differences(saved: Config, config: Config) -> List[Tuple[str, Any, Any]]:
    """``(key, saved value, new value)`` for every recipe key (not :data:`RESULT_FREE_KEYS`) that differs."""
    before = dict(config_keys(saved))
    return [(key, before.get(key), value) for key, value in config_keys(config)
            if key not in RESULT_FREE_KEYS and not key.startswith(RESULT_FREE_SECTIONS) and before.get(key) != value]


def config_keys(config: Optional[Config] = None) -> Iterator[Tuple[str, Any]]:
    """Every ``(dotted key, value)`` of ``config`` (default: the schema's defaults), in schema order."""
    def walk(values: Dict[str, Any], prefix: str) -> Iterator[Tuple[str, Any]]:
        for key, value in values.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield prefix + key, value

    return walk(to_dict(config or Config()), "")


def format_override(key: str, value: Any) -> str:
    """``key=value`` as :func:`load_config` reads it back: ``null``, ``true`` / ``false``, lists as ``[a, b]``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = json.dumps(list(value))
    else:
        text = str(value)
    return f"{key}={text}"


def _read_yaml(path: Path) -> Dict[str, Any]:
    """The file's mapping with every scalar left as text: the schema, not YAML 1.1, decides the types."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.load(path.read_text(), Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return values


def _set_dotted(values: Dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _typed_tree(values: Any, cls: type, prefix: str) -> Dict[str, Any]:
    """Check the keys of ``values`` against the dataclass ``cls`` and turn YAML text into what the schema takes.

    Text stays text where the schema names a scalar type (OmegaConf converts it: "no" to the string "no",
    "1e-3" to a float); ``null`` and ``~`` become None; fields typed ``Any`` and lists are parsed as YAML.
    """
    where = prefix.rstrip(".")
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    typed = {}
    for name, value in values.items():
        if name not in hints:
            raise ConfigError(f"unknown key {prefix}{name}; valid keys under {where or 'the top level'}: "
                              + ", ".join(names))
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            typed[name] = _typed_tree({} if value == "" else value, hint, f"{prefix}{name}.")
        else:
            typed[name] = _typed_value(value, hint)
    return typed


def _typed_value(value: Any, hint: Any) -> Any:
    if isinstance(value, list):
        return [_null_or(item) if isinstance(item, str) else item for item in value]
    if not isinstance(value, str):
        return value
    text = _null_or(value)
    if text is None or hint in (str, int, float, bool) or _options(hint) & {str, int, float, bool}:
        return text
    parsed = yaml.safe_load(text)  # Any-typed fields and lists given on the command line ("[0.2, 1.0]")
    return _typed_value(parsed, hint) if isinstance(parsed, list) else parsed


def _null_or(text: str) -> Optional[str]:
    return None if text.strip() in ("null", "~", "") else text


def _options(hint: Any) -> set:
    return set(typing.get_args(hint)) if typing.get_origin(hint) in (Union, types.UnionType) else {hint}


def _merge(base: DictConfig, values: Dict[str, Any]) -> DictConfig:
    """OmegaConf's merge, with its multi-line errors turned into one line that names the key and the value."""
    try:
        return OmegaConf.merge(base, values)
    except OmegaConfBaseException as error:
        key = error.full_key or "config"
        hint = _hint(key)
        if error.value is None:
            raise ConfigError(f"{key} must be set (expected {_type_names(_options(hint))})") from None
        raise ConfigError(f"{key} must be {_type_names(_options(hint))}, got {error.value!r}") from None


def _hint(key: str) -> Any:
    """The schema's annotation of the dotted ``key`` (list items ``a.b[0]`` take their element type)."""
    node: Any = Config
    index = key.endswith("]")
    for part in key.split("[")[0].split("."):
        node = typing.get_type_hints(node)[part]
    if index:
        node = next(iter(typing.get_args(next(o for o in _options(node) if typing.get_origin(o) in (tuple, list)))))
    return node


def _type_names(options: Any) -> str:
    return " or ".join(sorted(_type_name(o) for o in options))


def _type_name(option: Any) -> str:
    if option is type(None):
        return "null"
    if typing.get_origin(option) is tuple:
        return f"a list of {len(typing.get_args(option))} numbers"
    return getattr(option, "__name__", str(option))


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(config: Config) -> None:
    """Range and choice checks that types alone cannot express."""
    _choice("method", config.method, METHOD_NAMES)
    _choice("data.name", config.data.name, DATASET_NAMES)
    _choice("model.backbone", config.model.backbone, BACKBONES)
    if not isinstance(config.resume, (bool, str)):
        raise ConfigError(f"resume must be true, false, auto or a checkpoint path, got {config.resume!r}")
    _choice("optim.name", config.optim.name, OPTIMIZERS)
    _choice("trainer.mixed_precision", config.trainer.mixed_precision, PRECISIONS)
    _choice("moco.batch_norm", config.moco.batch_norm, MOCO_BATCH_NORMS)
    _choice("loss.sec_schedule", config.loss.sec_schedule, SEC_SCHEDULES)
    _check_contrastive(config)
    _choice("eval.probe_schedule", config.eval.probe_schedule, PROBE_SCHEDULES)
    _check_augment(config.augment)
    values = OmegaConf.structured(config)
    for key in ("loss.temperature", "optim.lr", "trainer.epochs", "trainer.batch_size",
                "trainer.gradient_accumulation_steps", "trainer.log_every", "eval.knn_k",
                "eval.knn_temperature", "eval.probe_epochs", "eval.probe_batch_size",
                "eval.probe_lr", "model.projection_dim", "model.projection_hidden_dim", "model.prediction_hidden_dim",
                "moco.queue_size", "model.embedding_dim", "metric.images_per_class", "metric.backbone_lr_scale",
                "data.val_size", "data.train_limit", "data.test_limit", "data.image_size",
                "data.crop_size", "trainer.max_steps", "trainer.checkpoint_every_steps"):
        _positive(key, OmegaConf.select(values, key, throw_on_missing=True))
    for key in ("loss.sec_weight", "loss.norm_penalty_weight", "optim.weight_decay",
                "optim.warmup_epochs", "trainer.eval_every", "trainer.checkpoint_every",
                "eval.probe_weight_decay"):
        _positive(key, OmegaConf.select(values, key, throw_on_missing=True), allow_zero=True)
    if config.loss.sec_momentum is not None and not 0 < config.loss.sec_momentum <= 1:
        raise ConfigError(f"loss.sec_momentum must be null or in (0, 1], got {config.loss.sec_momentum}")
    _check_classes(config.data)
    _check_pretrained(config.model)
    _check_verification(config.eval)
    _choice("metric.loss", config.metric.loss, METRIC_LOSS_NAMES)
    _positive("metric.margin", config.metric.margin, allow_zero=True)
    if config.metric.margin is not None and config.metric.loss in MARGINLESS_METRIC_LOSSES:
        raise ConfigError(f"metric.loss={config.metric.loss} has no margin; leave metric.margin null")
    _check_face(config)
    if not 0 <= config.moco.momentum < 1:
        raise ConfigError(f"moco.momentum must be in [0, 1), got {config.moco.momentum}")
    if not 0 <= config.byol.momentum < 1:
        raise ConfigError(f"byol.momentum must be in [0, 1), got {config.byol.momentum}")


def _check_classes(data: DataConfig) -> None:
    """Class-disjoint splits: no class in two of train / validation / test, and no test image trained on."""
    if data.val_classes is not None and data.val_size is not None:
        raise ConfigError("set data.val_classes (whole classes) or data.val_size (images) for validation, not both")
    if data.name in SHARED_SPLIT_DATASETS and (data.train_classes is None or data.test_classes is None):
        raise ConfigError(f"data.name={data.name} reads the same images for training and testing: set both "
                          "data.train_classes and data.test_classes (disjoint, e.g. configs/dml_cub200.yaml)")
    if data.name == "face_folder":
        return  # its train/ and test/ folders hold different identities, each numbered from 0
    if data.test_classes is not None and data.train_classes is None:
        raise ConfigError("data.test_classes without data.train_classes trains on every class, the test classes "
                          "among them: set data.train_classes to the other classes")
    if data.test_classes is None and (data.train_classes is not None or data.val_classes is not None):
        key = "data.train_classes" if data.train_classes is not None else "data.val_classes"
        raise ConfigError(f"{key} without data.test_classes tests on every class, those trained on among them: set "
                          "data.test_classes to the classes never trained on")
    named = {"data.train_classes": data.train_classes, "data.val_classes": data.val_classes,
             "data.test_classes": data.test_classes}
    for (key, classes), (other, other_classes) in itertools.combinations(named.items(), 2):
        shared = sorted(set(classes or ()) & set(other_classes or ()))
        if shared and other == "data.test_classes":
            raise ConfigError(f"{key} and {other} share classes {shared}: metric learning scores retrieval on "
                              "classes never seen in training; remove them from one of the two")


def _check_face(config: Config) -> None:
    _choice("model.embedding_head", config.model.embedding_head, EMBEDDING_HEADS)
    if not 0 <= config.model.embedding_dropout < 1:
        raise ConfigError(f"model.embedding_dropout must be in [0, 1), got {config.model.embedding_dropout}")
    if config.model.embedding_head == "face" and config.model.embedding_batchnorm:
        raise ConfigError("model.embedding_head=face has its own BatchNorm before the linear layer; set "
                          "model.embedding_batchnorm=false")
    _positive("metric.scale", config.metric.scale)
    if config.metric.scale is not None and config.metric.loss not in CLASS_WEIGHT_METRIC_LOSSES:
        raise ConfigError(f"metric.scale applies to {', '.join(CLASS_WEIGHT_METRIC_LOSSES)}, not "
                          f"metric.loss={config.metric.loss}; leave it null")
    if config.method == "face" and config.metric.loss not in CLASS_WEIGHT_METRIC_LOSSES:
        raise ConfigError(f"method=face trains class weights over plain batches: metric.loss must be one of "
                          f"{', '.join(CLASS_WEIGHT_METRIC_LOSSES)}, got {config.metric.loss} (pair losses: method=metric)")


def _check_contrastive(config: Config) -> None:
    _choice("loss.contrastive", config.loss.contrastive, CONTRASTIVE_LOSSES)
    if config.loss.contrastive != "ntxent" and config.method in QUEUE_METHODS:
        raise ConfigError(f"loss.contrastive={config.loss.contrastive} has no queue of negatives, which "
                          f"method={config.method} needs; use loss.contrastive=ntxent")


def _check_verification(settings: EvalConfig) -> None:
    if settings.verification_folds < 2:
        raise ConfigError(f"eval.verification_folds must be at least 2, got {settings.verification_folds}")
    if settings.verification_pairs < 2 * settings.verification_folds:
        raise ConfigError(f"eval.verification_pairs must be at least 2 x eval.verification_folds "
                          f"({2 * settings.verification_folds}: a same and a different pair per fold), got "
                          f"{settings.verification_pairs}")
    if not 0 < settings.verification_far < 1:
        raise ConfigError(f"eval.verification_far must be in (0, 1) (a false-accept rate; 1e-3 is insightface's), "
                          f"got {settings.verification_far}")


def _check_pretrained(model: ModelConfig) -> None:
    if model.pretrained and model.backbone not in IMAGENET_BACKBONES:
        raise ConfigError(f"model.pretrained=true needs ImageNet weights, which {model.backbone} has not; use "
                          f"model.backbone={' or '.join(IMAGENET_BACKBONES)}, or model.pretrained=false")
    if model.pretrained and model.cifar_stem:
        raise ConfigError("model.pretrained=true loads ImageNet weights into torchvision's 7x7 stem; set "
                          "model.cifar_stem=false")


def _check_augment(augment: AugmentConfig) -> None:
    for key in ("crop_scale", "crop_ratio", "blur_sigma"):
        value = getattr(augment, key)
        if value is not None and (len(value) != 2 or not 0 < value[0] <= value[1]):
            raise ConfigError(f"augment.{key} must be [low, high] with 0 < low <= high, got {list(value)}")
    if augment.crop_scale is not None and augment.crop_scale[1] > 1:
        raise ConfigError(f"augment.crop_scale is a fraction of the image area, at most 1; got {list(augment.crop_scale)}")
    for key in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
        value = getattr(augment, key)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"augment.{key} is a probability in [0, 1], got {value}")
    for key in ("brightness", "contrast", "saturation"):
        _positive(f"augment.{key}", getattr(augment, key), allow_zero=True)
    if not 0 <= augment.hue <= 0.5:
        raise ConfigError(f"augment.hue must be in [0, 0.5], got {augment.hue}")
    if augment.blur_kernel_size is not None and (augment.blur_kernel_size < 1 or augment.blur_kernel_size % 2 == 0):
        raise ConfigError(f"augment.blur_kernel_size must be an odd number >= 1 (or null), got {augment.blur_kernel_size}")

