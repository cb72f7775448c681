"""Weighted kNN accuracy of frozen features (Wu et al. 2018), through lightly's ``knn_predict``.

    top1 = knn_accuracy(backbone, train, test, k=200, temperature=0.1)      # percent
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from lightly.utils.benchmarking import knn_predict
from torch import nn

from sslsec.eval.features import Features, device_of, extractor


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
                 accelerator: Optional[Accelerator] = None, batch_size: int = 512,
                 crop_size: Optional[int] = None, num_workers: Optional[int] = None) -> float:
    """kNN top-1 accuracy (%) of ``test`` against the features of ``train`` (Wu et al. 2018).

    Call it on every process with the unwrapped backbone; the backbone's train/eval mode is restored.
    ``crop_size``: the training view size (see :func:`sslsec.eval.features.eval_transform`); ``num_workers``: the
    workers that decode a JPEG folder (``data.num_workers``).
    """
    extract = extractor(backbone, accelerator, batch_size, crop_size, num_workers)
    return knn_on_features(extract(train), extract(test), train.num_classes, k=k, temperature=temperature,
                           batch_size=batch_size, device=device_of(backbone, accelerator))

