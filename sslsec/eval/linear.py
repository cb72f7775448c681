"""The linear probe: a linear classifier on frozen features, scored by top-1/top-5 accuracy.

The standard protocol (MoCo, SimCLR, MAE): the backbone is frozen in eval mode, the features of both splits are
computed once, and a linear classifier is trained on them with SGD (momentum 0.9, cosine schedule).
``augment=True`` is the random-crop + flip variant that recomputes the training features every epoch;
with ``schedule="step", standardize=False`` it is the SEC authors' (SupCon's) protocol for published tables.
Accuracies are percentages::

    scores = linear_probe(backbone, train, test, epochs=100)      # {"top1": 91.2, "top5": 99.8, ...}
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy

from sslsec.augment import ProbeAugment
from sslsec.choices import PROBE_SCHEDULES  # the one list (config reads it there)
from sslsec.eval.features import Features, derive_seed, device_of, extractor


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
    if standardize:
        var, mean = torch.var_mean(features.float(), dim=0)
        std = (var + 1e-6).sqrt()
    else:  # the identity: a plain linear layer on the raw features
        mean, std = torch.zeros(features.shape[1]), torch.ones(features.shape[1])
    classifier = LinearClassifier(mean, std, num_classes, generator).to(device)
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
    """Top-1 and top-5 accuracy in percent of ``logits`` ``(N, C)`` (torchmetrics' ``multiclass_accuracy``).

    With 5 classes or fewer every label is in the top 5, so ``top5`` is ``None`` rather than a trivial 100.
    """
    def top(k: int) -> float:
        accuracy = multiclass_accuracy(logits, labels, num_classes=logits.shape[1], top_k=k, average="micro")
        return 100.0 * accuracy.item()

    return {"top1": top(1), "top5": top(5) if logits.shape[1] > 5 else None}


def probe_on_features(train_features: Features, test_features: Features, num_classes: int, *, epochs: int = 100,
                      batch_size: int = 256, lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0,
                      device: Optional[torch.device] = None) -> Dict[str, Optional[float]]:
    """Fit the probe on cached train features and score it on test features: ``{"top1", "top5"}``."""
    device = device or train_features[0].device
    classifier = fit_linear_classifier(train_features[0].to(device), train_features[1].to(device), num_classes,
                                       epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                       seed=seed)
    return _scores(classifier, test_features, device)


def linear_probe(
    backbone: nn.Module, train: Any, test: Any, *, epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
    weight_decay: float = 0.0, augment: bool = False, accelerator: Optional[Accelerator] = None, seed: int = 0,
    feature_batch_size: int = 512, features: Optional[Tuple[Features, Features]] = None, val: Any = None,
    val_features: Optional[Features] = None, schedule: str = "cosine", standardize: bool = True,
    crop_size: Optional[int] = None, num_workers: Optional[int] = None,
) -> Dict[str, Any]:
    """Linear-probe accuracy of a frozen ``backbone``: train on ``train``, score top-1/top-5 (%) on ``test``.

    Args:
        augment: recompute the training features every epoch through :class:`ProbeAugment` (random resized
            crop + flip at the stored image size) instead of caching them once.
        features: ``(train, test)`` features already extracted with the eval transform (shared with kNN).
        val, val_features: a validation split (or its features) the same classifier is also scored on.
        seed: the classifier's initialization, batch order and augmentation draws.
        crop_size: the training view size: evaluation at its center crop, augmented training crops of it.
        num_workers: the workers that decode a JPEG folder (``data.num_workers``; None: the loader's default).
        schedule, standardize: see :func:`_fit`; ``augment=True, schedule="step", standardize=False, lr=5,
            epochs=100`` is the linear protocol of the SEC authors (and SupCon) on CIFAR.

    Returns:
        ``{"top1", "top5", "best_top1", "best_epoch", "num_classes", "train_size", "test_size", "epochs", ...}``:
        ``top1``/``top5`` after the last epoch (report these), ``best_top1`` the best test top-1 over epochs (what
        the SEC authors' and SupCon's tables report; it selects on the test split); ``top5`` is ``None`` with 5
        classes or fewer; with a validation split also ``val_top1``, ``val_top5``.
    """
    extract = extractor(backbone, accelerator, feature_batch_size, crop_size, num_workers)
    train_features, test_features = features or (None if augment else extract(train), extract(test))
    if val is not None and val_features is None:
        val_features = extract(val)
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                    schedule=schedule, standardize=standardize)
    device = device_of(backbone, accelerator)
    if augment:
        probe_augment = ProbeAugment(crop_size or train.image_size, train.mean, train.std)
        epoch_data = lambda epoch: extract(train, transform=probe_augment, seed=derive_seed(seed, epoch))  # noqa: E731
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


