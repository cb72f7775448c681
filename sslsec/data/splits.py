"""The splits a run trains and is scored on: train, a class-balanced validation carve-out, test.

Example::

    train, val, test = load_splits(config)     # val is None unless data.val_size is set
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from sslsec.data.datasets import DatasetError, load_dataset, stratified_first

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
    """The data a run trains and is scored on; ``val`` is None unless ``data.val_size`` is set."""

    train: Any
    val: Optional[Any]
    test: Any


def load_split(config: Config, split: str) -> Any:
    """The ``split`` ("train", "val" or "test") of the data set described by ``config.data``.

    "val" is ``data.val_size`` class-balanced training images (:func:`validation_split`, fixed seed); "train" is
    the rest of the training split, cut to ``data.train_limit``; "test" is cut to ``data.test_limit``.
    """
    if split == "test":
        return _load(config, "test", limit=config.data.test_limit)
    train, val = _train_and_val(config)
    if split == "val" and val is None:
        raise DatasetError("there is no validation split: set data.val_size")
    return train if split == "train" else val


def load_splits(config: Config) -> Splits:
    """Train, validation (None without ``data.val_size``) and test data sets from ``config.data``."""
    return Splits(*_train_and_val(config), load_split(config, "test"))


def _load(config: Config, split: str, limit: Optional[int] = None) -> Any:
    data = config.data
    return load_dataset(data.name, data.root, split, download=data.download, image_size=data.image_size,
                        class_list=data.class_list, limit=limit)


def _train_and_val(config: Config) -> Tuple[Any, Optional[Any]]:
    data = config.data
    train, val = _load(config, "train"), None
    if data.val_size is not None:
        train_indices, val_indices = validation_split(train.labels, data.val_size, seed=VAL_SEED)
        train, val = train.subset(train_indices), train.subset(val_indices)
    if data.train_limit is not None:
        train = train.subset(stratified_first(train.labels, data.train_limit))
    return train, val
