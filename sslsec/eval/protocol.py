"""The evaluation protocol of a run: the linear probe and kNN with the config's ``eval`` section, beside the
random-init baseline every SSL number should be read against."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch
from accelerate import Accelerator
from torch import nn

from sslsec.eval.features import device_of, extractor
from sslsec.eval.knn import knn_on_features
from sslsec.eval.linear import linear_probe
from sslsec.models import build_backbone

if TYPE_CHECKING:
    from sslsec.config import Config, EvalConfig


def evaluate_backbone(backbone: nn.Module, train: Any, test: Any, settings: EvalConfig, *,
                      accelerator: Optional[Accelerator] = None, seed: int = 0, val: Any = None,
                      crop_size: Optional[int] = None) -> Dict[str, Any]:
    """The linear probe and kNN with the ``eval`` section of a config, extracting the features once.

    With a validation split ``val`` the same probe and kNN bank are also scored on it (``val_top1``,
    ``val_top5``, ``val_knn_top1``): choose settings by those, report ``top1``/``knn_top1`` (test).
    ``crop_size`` (``data.crop_size``): score at the training view size (:func:`~sslsec.eval.features.eval_transform`).
    """
    extract = extractor(backbone, accelerator, 512, crop_size)
    features = extract(train), extract(test)
    val_features = extract(val) if val is not None else None
    result = linear_probe(backbone, train, test, epochs=settings.probe_epochs, batch_size=settings.probe_batch_size,
                          lr=settings.probe_lr, weight_decay=settings.probe_weight_decay,
                          augment=settings.probe_augment, accelerator=accelerator, seed=seed, features=features,
                          val_features=val_features, schedule=settings.probe_schedule,
                          standardize=settings.probe_standardize, crop_size=crop_size)
    knn = functools.partial(knn_on_features, features[0], num_classes=train.num_classes, k=settings.knn_k,
                            temperature=settings.knn_temperature, device=device_of(backbone, accelerator))
    result["knn_top1"] = knn(features[1])
    if val_features is not None:
        result["val_knn_top1"] = knn(val_features)
        result["val_size"] = len(val)
    return {**result, "knn_k": settings.knn_k, "knn_temperature": settings.knn_temperature}


def eval_crop_size(config: Config) -> Optional[int]:
    """The view size evaluation scores at: ``data.crop_size``, or None (whole images) if not ``eval.center_crop``."""
    return config.data.crop_size if config.eval.center_crop else None


def random_backbone(config: Config, in_channels: int) -> nn.Module:
    """The untrained backbone a run of ``config`` saves (metric learning: with its embedding layer), initialized from
    ``trainer.seed``: the baseline for every number of a trained one."""
    from sslsec.methods import method_class  # here: the methods import this package (their monitors)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)
        return build_backbone(**method_class(config.method).backbone_spec(config, in_channels))

