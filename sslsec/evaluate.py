"""Frozen-backbone evaluation: features, the linear probe and kNN.

The linear probe is the standard protocol (MoCo, SimCLR, MAE): the backbone is frozen in eval mode, the
features of both splits are computed once, and a linear classifier is trained on them with SGD (momentum
0.9, cosine schedule) and scored by top-1/top-5 accuracy on the test split. ``augment=True`` is the
random-crop + flip variant that recomputes the training features every epoch. kNN is the weighted
vote over cosine neighbours of Wu et al. 2018 (lightly's ``knn_predict``).

Feature extraction runs under an optional :class:`accelerate.Accelerator`: each process embeds its shard
of every batch (:class:`sslsec.data.BatchLoader`'s sharding) under ``accelerator.autocast()``, and the
shards are gathered back into data-set order on every process. Accuracies are percentages::

    train, test = load_splits(config)
    scores = linear_probe(backbone, train, test, epochs=100)      # {"top1": 91.2, "top5": 99.8, ...}
    knn = knn_accuracy(backbone, train, test, k=200, temperature=0.1)
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from lightly.utils.benchmarking import knn_predict
from torch import Tensor, nn
from tqdm.auto import tqdm

from sslsec.augment import EvalTransform, ProbeAugment
from sslsec.config import Config, EvalConfig, load_config
from sslsec.data import BatchLoader, load_dataset, stratified_first, validation_split
from sslsec.models import build_backbone, load_backbone

Features = Tuple[Tensor, Tensor]  # features float32 (N, F), labels int64 (N,), both on CPU


class EvaluationError(ValueError):
    """A backbone, a run directory or a data set that cannot be evaluated as asked."""


VAL_SEED = 0  # the validation split is fixed: the same images for every run, seed and process


class Splits(NamedTuple):
    """The data a run trains and is scored on; ``val`` is None unless ``data.val_size`` is set."""

    train: Any
    val: Optional[Any]
    test: Any


def load_split(config: Config, split: str) -> Any:
    """The ``split`` ("train", "val" or "test") of the data set described by ``config.data``.

    "val" is ``data.val_size`` class-balanced training images (:func:`sslsec.data.validation_split`, fixed
    seed); "train" is the rest of the training split, cut to ``data.train_limit``; "test" is cut to
    ``data.test_limit``.
    """
    if split == "test":
        data = config.data
        return load_dataset(data.name, data.root, "test", download=data.download, image_size=data.image_size,
                            class_list=data.class_list, limit=data.test_limit)
    train, val = _train_and_val(config)
    if split == "val" and val is None:
        raise EvaluationError("there is no validation split: set data.val_size")
    return train if split == "train" else val


def load_splits(config: Config) -> Splits:
    """Train, validation (None without ``data.val_size``) and test data sets from ``config.data``."""
    return Splits(*_train_and_val(config), load_split(config, "test"))


def _train_and_val(config: Config) -> Tuple[Any, Optional[Any]]:
    data = config.data
    train = load_dataset(data.name, data.root, "train", download=data.download, image_size=data.image_size,
                         class_list=data.class_list)
    val = None
    if data.val_size is not None:
        train_indices, val_indices = validation_split(train.labels, data.val_size, seed=VAL_SEED)
        train, val = train.subset(train_indices), train.subset(val_indices)
    if data.train_limit is not None:
        train = train.subset(stratified_first(train.labels, data.train_limit))
    return train, val


def backbone_in_channels(backbone: nn.Module) -> int:
    """The number of image channels the backbone's first convolution takes."""
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise EvaluationError(f"{type(backbone).__name__} has no Conv2d; cannot tell its input channels")
    return conv.in_channels


def check_compatible(backbone: nn.Module, dataset: Any) -> None:
    """Raise :class:`EvaluationError` if ``dataset``'s images have another channel count than ``backbone`` takes."""
    expected = backbone_in_channels(backbone)
    if dataset.channels != expected:
        raise EvaluationError(
            f"the backbone takes {expected}-channel images but data set {dataset.name!r} has "
            f"{dataset.channels}-channel images; evaluate it on the data set it was pretrained on (data.name)")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Any,
    *,
    accelerator: Optional[Accelerator] = None,
    batch_size: int = 512,
    transform: Optional[nn.Module] = None,
    seed: Optional[int] = None,
    progress: bool = True,
) -> Features:
    """Backbone features of every image of ``dataset``, in data-set order, on every process.

    The backbone runs in eval mode; its train/eval mode is restored on return. With ``accelerator`` it is
    moved to ``accelerator.device`` (pass the unwrapped module); without, it runs in one process on the
    device of its parameters.

    Args:
        transform: uint8 batch -> normalized float batch; default :class:`EvalTransform` with the data
            set's mean and std. A random transform is called with a per-batch ``seed=`` when ``seed`` is set.
        batch_size: images per process and step.

    Returns:
        features float32 ``(N, F)`` and labels int64 ``(N,)``, both on the CPU.
    """
    check_compatible(backbone, dataset)
    device, rank, world_size = _placement(backbone, accelerator)
    transform = transform or EvalTransform(dataset.mean, dataset.std)
    loader = BatchLoader(dataset, batch_size, shuffle=False, drop_last=False, rank=rank,
                         world_size=world_size, device=device)
    show = progress and (accelerator is None or accelerator.is_main_process)
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    batches = tqdm(loader, desc=f"features {dataset.name}", disable=not show, leave=False)
    try:
        for step, (images, targets) in enumerate(batches):
            batch_seed = None if seed is None else _mix(seed, step, rank, world_size)
            output = _embed(backbone, transform, images, batch_seed, accelerator)
            if world_size > 1:
                output, targets = _gather_shards(accelerator, output), _gather_shards(accelerator, targets)
            features.append(output.cpu())
            labels.append(targets.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()


def _embed(backbone: nn.Module, transform: nn.Module, images: Tensor, seed: Optional[int],
           accelerator: Optional[Accelerator]) -> Tensor:
    """float32 features ``(B, F)`` of one uint8 batch; a rank's empty share of the last batch gives ``(0, F)``."""
    if len(images) == 0:
        return torch.zeros(0, backbone.feature_dim, device=images.device)
    views = transform(images) if seed is None else transform(images, seed=seed)
    with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
        return backbone(views).float()


def _placement(backbone: nn.Module, accelerator: Optional[Accelerator]) -> Tuple[torch.device, int, int]:
    if accelerator is None:
        return next(backbone.parameters()).device, 0, 1
    backbone.to(accelerator.device)
    return accelerator.device, accelerator.process_index, accelerator.num_processes


def _gather_shards(accelerator: Accelerator, shard: Tensor) -> Tensor:
    """Concatenate every process's ``shard`` (uneven lengths allowed) in rank order."""
    sizes = accelerator.gather(torch.tensor([len(shard)], device=shard.device)).tolist()
    padded = accelerator.gather(accelerator.pad_across_processes(shard.contiguous(), dim=0))
    per_rank = padded.reshape(len(sizes), -1, *shard.shape[1:])
    return torch.cat([per_rank[rank, :size] for rank, size in enumerate(sizes)])


def _mix(*numbers: int) -> int:
    """A seed derived from ``numbers`` (seed, epoch, step, rank, ...): distinct tuples give distinct streams."""
    value = 0
    for number in numbers:
        value = (value * 1_000_003 + number) % 2**63
    return value


class LinearClassifier(nn.Module):
    """Features standardized with fixed train-split statistics, then one linear layer.

    The standardization is MAE's non-affine BatchNorm before the probe, with the statistics of the whole
    training split frozen instead of batch statistics. It puts every backbone's features on one scale, so
    one learning rate (0.1) serves random-init, SimCLR and MoCo features alike (MoCo's unnormalized probe
    needs lr 30), and being affine it folds into the linear layer: the probe is still linear.

    Shapes:
        features ``(N, F)`` -> logits ``(N, num_classes)``.
    """

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = nn.Linear(len(mean), num_classes)
        nn.init.normal_(self.linear.weight, std=0.01, generator=generator)  # MoCo's probe initialization
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


PROBE_SCHEDULES = ("cosine", "step")
# The linear protocol of the SEC authors' SimCLR code (from SupCon): lr x 0.2 at 60 %, 75 % and 90 % of the epochs.
STEP_MILESTONES, STEP_GAMMA = (0.6, 0.75, 0.9), 0.2


def fit_linear_classifier(
    features: Tensor, labels: Tensor, num_classes: int, *, epochs: int = 100, batch_size: int = 256,
    lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0, schedule: str = "cosine", standardize: bool = True,
) -> LinearClassifier:
    """Train a :class:`LinearClassifier` on cached ``features`` ``(N, F)`` and ``labels`` ``(N,)``, on their device."""
    return _fit(lambda epoch: (features, labels), num_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                weight_decay=weight_decay, seed=seed, device=features.device, schedule=schedule,
                standardize=standardize)


def _fit(epoch_data: Callable[[int], Features], num_classes: int, *, epochs: int, batch_size: int, lr: float,
         weight_decay: float, seed: int, device: torch.device, schedule: str = "cosine", standardize: bool = True,
         on_epoch: Optional[Callable[[LinearClassifier], None]] = None) -> LinearClassifier:
    """SGD (momentum 0.9); ``epoch_data(epoch)`` gives that epoch's features; ``on_epoch`` sees the classifier
    after every epoch.

    ``schedule``: ``cosine`` (per step, to 0) or ``step`` (x0.2 at 60/75/90 % of the epochs, the SEC authors'
    protocol). ``standardize``: divide by the train features' statistics (the fast default); ``False`` is the
    plain linear layer of the published protocols (which then needs their large lr, e.g. 5).
    """
    if schedule not in PROBE_SCHEDULES:
        raise ValueError(f"unknown probe schedule {schedule!r}; choose one of {', '.join(PROBE_SCHEDULES)}")
    generator = torch.Generator().manual_seed(seed)
    features, labels = epoch_data(0)
    var, mean = torch.var_mean(features.float(), dim=0)
    if not standardize:
        var, mean = torch.full_like(var, 1 - 1e-6), torch.zeros_like(mean)
    classifier = LinearClassifier(mean, (var + 1e-6).sqrt(), num_classes, generator).to(device)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    if schedule == "cosine":
        per_step = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    else:
        milestones = sorted({round(fraction * epochs) * steps_per_epoch for fraction in STEP_MILESTONES})
        per_step = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=STEP_GAMMA)
    for epoch in range(epochs):
        if epoch > 0:
            features, labels = epoch_data(epoch)
        features, labels = features.to(device), labels.to(device)
        for batch in torch.randperm(len(labels), generator=generator).to(device).split(batch_size):
            loss = F.cross_entropy(classifier(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            per_step.step()
        if on_epoch is not None:
            on_epoch(classifier)
    return classifier.eval()


@torch.no_grad()
def classification_scores(logits: Tensor, labels: Tensor) -> Dict[str, Optional[float]]:
    """Top-1 and top-5 accuracy in percent of ``logits`` ``(N, C)``.

    With 5 classes or fewer every label is in the top 5, so ``top5`` is ``None`` rather than a trivial 100.
    """
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = ranked == labels.view(-1, 1)
    top5 = 100.0 * hits.any(dim=1).double().mean().item() if logits.shape[1] > 5 else None
    return {"top1": 100.0 * hits[:, 0].double().mean().item(), "top5": top5}


def probe_on_features(train_features: Features, test_features: Features, num_classes: int, *, epochs: int = 100,
                      batch_size: int = 256, lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0,
                      device: Optional[torch.device] = None) -> Dict[str, Optional[float]]:
    """Fit the probe on cached train features and score it on test features: ``{"top1", "top5"}``."""
    device = device or train_features[0].device
    classifier = fit_linear_classifier(train_features[0].to(device), train_features[1].to(device), num_classes,
                                       epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                       seed=seed)
    with torch.no_grad():
        return classification_scores(classifier(test_features[0].to(device)), test_features[1].to(device))


def linear_probe(
    backbone: nn.Module, train: Any, test: Any, *, epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
    weight_decay: float = 0.0, augment: bool = False, accelerator: Optional[Accelerator] = None, seed: int = 0,
    feature_batch_size: int = 512, features: Optional[Tuple[Features, Features]] = None, val: Any = None,
    val_features: Optional[Features] = None, schedule: str = "cosine", standardize: bool = True,
) -> Dict[str, Any]:
    """Linear-probe accuracy of a frozen ``backbone``: train on ``train``, score top-1/top-5 (%) on ``test``.

    Args:
        augment: recompute the training features every epoch through :class:`ProbeAugment` (random resized
            crop + flip at the stored image size) instead of caching them once.
        features: ``(train, test)`` features already extracted with the eval transform (shared with kNN).
        val, val_features: a validation split (or its features) the same classifier is also scored on.
        seed: the classifier's initialization, batch order and augmentation draws.
        schedule, standardize: see :func:`_fit`; ``augment=True, schedule="step", standardize=False, lr=5,
            epochs=100`` is the linear protocol of the SEC authors (and SupCon) on CIFAR.

    Returns:
        ``{"top1", "top5", "best_top1", "best_epoch", "num_classes", "train_size", "test_size", "epochs", ...}``:
        ``top1``/``top5`` after the last epoch (report these), ``best_top1`` the best test top-1 over epochs (what
        the SEC authors' and SupCon's tables report; it selects on the test split); ``top5`` is ``None`` with 5
        classes or fewer; with a validation split also ``val_top1``, ``val_top5``.
    """
    extract = _extractor(backbone, accelerator, feature_batch_size)
    train_features, test_features = features or (None if augment else extract(train), extract(test))
    if val is not None and val_features is None:
        val_features = extract(val)
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                    schedule=schedule, standardize=standardize)
    device = _device(backbone, accelerator)
    if augment:
        probe_augment = ProbeAugment(train.image_size, train.mean, train.std)
        epoch_data = lambda epoch: extract(train, transform=probe_augment, seed=_mix(seed, epoch))  # noqa: E731
    else:
        epoch_data = lambda epoch: train_features  # noqa: E731
    history = []
    classifier = _fit(epoch_data, train.num_classes, device=device,
                      on_epoch=lambda fitted: history.append(_scores(fitted, test_features, device)["top1"]),
                      **settings)
    scores = _scores(classifier, test_features, device)
    scores.update(best_top1=max(history), best_epoch=1 + history.index(max(history)))
    if val_features is not None:
        scores.update({f"val_{key}": value for key, value in _scores(classifier, val_features, device).items()})
    return {**scores, "num_classes": train.num_classes, "train_size": len(train), "test_size": len(test),
            "augment": augment, **settings}


@torch.no_grad()
def _scores(classifier: nn.Module, features: Features, device: torch.device) -> Dict[str, Optional[float]]:
    return classification_scores(classifier(features[0].to(device)), features[1].to(device))


@torch.no_grad()
def knn_on_features(train_features: Features, test_features: Features, num_classes: int, *, k: int = 200,
                    temperature: float = 0.1, batch_size: int = 512, device: Optional[torch.device] = None) -> float:
    """Top-1 accuracy (%) of the weighted kNN vote over cosine neighbours (``k`` capped at the bank size)."""
    device = device or train_features[0].device
    bank = F.normalize(train_features[0].to(device), dim=1).t().contiguous()
    bank_labels = train_features[1].to(device)
    k = min(k, bank.shape[1])
    correct = 0
    for features, labels in zip(test_features[0].split(batch_size), test_features[1].split(batch_size)):
        ranked = knn_predict(F.normalize(features.to(device), dim=1), bank, bank_labels, num_classes, k, temperature)
        correct += (ranked[:, 0] == labels.to(device)).sum().item()
    return 100.0 * correct / len(test_features[1])


def knn_accuracy(backbone: nn.Module, train: Any, test: Any, k: int = 200, temperature: float = 0.1, *,
                 accelerator: Optional[Accelerator] = None, batch_size: int = 512) -> float:
    """kNN top-1 accuracy (%) of ``test`` against the features of ``train`` (Wu et al. 2018).

    Call it on every process with the unwrapped backbone; the backbone's train/eval mode is restored.
    """
    extract = _extractor(backbone, accelerator, batch_size)
    return knn_on_features(extract(train), extract(test), train.num_classes, k=k, temperature=temperature,
                           batch_size=batch_size, device=_device(backbone, accelerator))


def evaluate_backbone(backbone: nn.Module, train: Any, test: Any, settings: EvalConfig, *,
                      accelerator: Optional[Accelerator] = None, seed: int = 0, val: Any = None) -> Dict[str, Any]:
    """The linear probe and kNN with the ``eval`` section of a config, extracting the features once.

    With a validation split ``val`` the same probe and kNN bank are also scored on it (``val_top1``,
    ``val_top5``, ``val_knn_top1``): choose settings by those, report ``top1``/``knn_top1`` (test).
    """
    extract = _extractor(backbone, accelerator, 512)
    features = extract(train), extract(test)
    val_features = extract(val) if val is not None else None
    result = linear_probe(backbone, train, test, epochs=settings.probe_epochs, batch_size=settings.probe_batch_size,
                          lr=settings.probe_lr, weight_decay=settings.probe_weight_decay,
                          augment=settings.probe_augment, accelerator=accelerator, seed=seed, features=features,
                          val_features=val_features, schedule=settings.probe_schedule,
                          standardize=settings.probe_standardize)
    knn = functools.partial(knn_on_features, features[0], num_classes=train.num_classes, k=settings.knn_k,
                            temperature=settings.knn_temperature, device=_device(backbone, accelerator))
    result["knn_top1"] = knn(features[1])
    if val_features is not None:
        result["val_knn_top1"] = knn(val_features)
        result["val_size"] = len(val)
    return {**result, "knn_k": settings.knn_k, "knn_temperature": settings.knn_temperature}


def _extractor(backbone: nn.Module, accelerator: Optional[Accelerator], batch_size: int) -> Callable[..., Features]:
    return lambda dataset, **kwargs: extract_features(backbone, dataset, accelerator=accelerator,
                                                      batch_size=batch_size, **kwargs)


def _device(backbone: nn.Module, accelerator: Optional[Accelerator]) -> torch.device:
    return accelerator.device if accelerator is not None else next(backbone.parameters()).device


def load_run(run_dir: Union[str, Path], overrides: Sequence[str] = ()) -> Tuple[Config, nn.Module]:
    """The config (``config.yaml`` with ``key=value`` overrides) and trained backbone of a pretraining run."""
    run_dir = Path(run_dir)
    config_path, backbone_path = run_dir / "config.yaml", run_dir / "backbone.safetensors"
    if not run_dir.is_dir():
        raise EvaluationError(f"run directory {run_dir} does not exist")
    if not config_path.is_file():
        raise EvaluationError(f"{config_path} is missing: is {run_dir} a pretraining run directory (its output_dir)?")
    if not backbone_path.is_file():
        raise EvaluationError(f"{backbone_path} is missing: pretraining writes it when it finishes; let the run "
                              "finish (or resume it with resume=true), or pass --backbone FILE --config FILE")
    return load_config(config_path, overrides), load_saved_backbone(backbone_path)


def load_saved_backbone(path: Union[str, Path]) -> nn.Module:
    """:func:`sslsec.models.load_backbone`, with an :class:`EvaluationError` for a file that is not one."""
    try:
        return load_backbone(path)
    except (FileNotFoundError, ValueError) as error:
        raise EvaluationError(str(error)) from None


def random_backbone(config: Config, in_channels: int) -> nn.Module:
    """The untrained ``config.model`` backbone, initialized from ``trainer.seed``: the baseline for every SSL number."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)
        return build_backbone(config.model.backbone, in_channels, config.model.cifar_stem)
