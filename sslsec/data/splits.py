"""The splits a run trains and is scored on: train, a validation carve-out, test.

Validation is held out of the training split: ``data.val_classes`` (whole classes, the metric-learning protocol of
Musgrave et al., "A Metric Learning Reality Check") or ``data.val_size`` (class-balanced images).
``data.train_classes`` / ``data.test_classes`` keep only those classes in the training / test split (metric
learning: train on some classes, score retrieval on classes never seen), each split relabelled from 0.

Example::

    train, val, test = load_splits(config)     # val is None unless data.val_size or data.val_classes is set
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from sslsec.data.datasets import DatasetError, load_dataset, select_classes, stratified_first

if TYPE_CHECKING:
    from sslsec.config import Config

__all__ = ["Splits", "load_split", "load_splits", "validation_split"]

VAL_SEED = 0  # the validation split is fixed: the same images for every run, seed and process


def validation_split(labels: Tensor, val_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Carve a class-balanced validation set out of a training split: ``(train_indices, val_indices)``.

    Every class gives ``val_size // classes`` samples (the remainder goes to the first classes), drawn at
    random with ``seed``, so the split is the same on every run and process. Both index lists are sorted and
    disjoint, and together cover the split.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    counts = torch.bincount(labels)
    present = (counts > 0).nonzero().flatten()
    if not 0 < val_size < len(labels):
        raise DatasetError(f"data.val_size must be between 1 and {len(labels) - 1} (the training split has "
                           f"{len(labels)} images), got {val_size}")
    share = torch.full((len(present),), val_size // len(present), dtype=torch.int64)
    share[: val_size % len(present)] += 1
    if (share > counts[present]).any():
        raise DatasetError(f"data.val_size={val_size} asks for more images per class than some classes have "
                           f"(smallest class: {int(counts[present].min())})")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val = [order[labels[order] == cls][:take] for cls, take in zip(present.tolist(), share.tolist())]
    val_indices = torch.sort(torch.cat(val)).values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_indices] = False
    return keep.nonzero().flatten(), val_indices


class Splits(NamedTuple):
    """The data a run trains and is scored on; ``val`` is None unless ``data.val_size`` or ``val_classes`` is set."""

    train: Any
    val: Optional[Any]
    test: Any


def load_split(config: Config, split: str) -> Any:
    """The ``split`` ("train", "val" or "test") of the data set described by ``config.data``.

    "train" is the training split's ``data.train_classes`` (default: all) less the validation split, cut to
    ``data.train_limit``. "val" is the training classes ``data.val_classes``, or ``data.val_size`` class-balanced
    training images (:func:`validation_split`, fixed seed). "test" is the test split's ``data.test_classes``, cut
    to ``data.test_limit``. Splits chosen by classes are relabelled from 0 (:func:`select_classes`).
    """
    if split == "test":
        test = _load(config, "test")
        if config.data.test_classes is not None:
            test = select_classes(test, config.data.test_classes)
        if config.data.test_limit is not None:
            test = test.subset(stratified_first(test.labels, config.data.test_limit))
        return test
    train, val = _train_and_val(config)
    if split == "val" and val is None:
        raise DatasetError("there is no validation split: set data.val_size or data.val_classes")
    return train if split == "train" else val


def load_splits(config: Config) -> Splits:
    """Train, validation (None without ``data.val_size`` / ``data.val_classes``) and test data sets."""
    return Splits(*_train_and_val(config), load_split(config, "test"))


def _load(config: Config, split: str) -> Any:
    data = config.data
    return load_dataset(data.name, data.root, split, download=data.download, image_size=data.image_size,
                        class_list=data.class_list, skip_corrupt=data.skip_corrupt)


def _train_and_val(config: Config) -> Tuple[Any, Optional[Any]]:
    data = config.data
    train, val = _load(config, "train"), None
    train_classes = data.train_classes if data.train_classes is not None else list(range(train.num_classes))
    if data.val_classes is not None:
        val_classes = list(data.val_classes)
        if not set(val_classes) <= set(train_classes):
            raise DatasetError(f"data.val_classes {val_classes} must be among the training classes {train_classes}")
        train_classes = [c for c in train_classes if c not in val_classes]
        if not train_classes:
            raise DatasetError("data.val_classes holds every training class: keep some classes for training")
        val = select_classes(train, val_classes)
    if data.train_classes is not None or data.val_classes is not None:
        train = select_classes(train, train_classes)
    if data.val_size is not None:
        train_indices, val_indices = validation_split(train.labels, data.val_size, seed=VAL_SEED)
        train, val = train.subset(train_indices), train.subset(val_indices)
    if data.train_limit is not None:
        train = train.subset(stratified_first(train.labels, data.train_limit))
    return train, val
