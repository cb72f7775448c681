"""The run's splits: a fixed, class-balanced validation carve-out, the train limit, and load_splits(config)."""

import pytest
import torch

from sslsec.config import load_config
from sslsec.data import DatasetError, load_dataset, load_splits, validation_split
from tests.fixtures import write_npz


def test_validation_split_is_disjoint_class_balanced_and_fixed():
    labels = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(1))
    train, val = validation_split(labels, 500)
    assert len(set(train.tolist()) & set(val.tolist())) == 0 and len(train) + len(val) == 3000
    assert torch.bincount(labels[val], minlength=10).tolist() == [50] * 10
    again_train, again_val = validation_split(labels, 500)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, validation_split(labels, 500, seed=1)[1])
    assert torch.equal(val, torch.sort(val).values)
    with pytest.raises(DatasetError, match="data.val_size must be between 1 and 2999"):
        validation_split(labels, 3000)


def test_config_val_size_carves_validation_before_the_train_limit(npz_root):
    config = load_config(None, ["data.name=npz", f"data.root={npz_root}", "data.val_size=32",
                                "data.train_limit=40"])
    train, val, test = load_splits(config)
    assert (len(train), len(val), len(test)) == (40, 32, 32)
    full = load_dataset("npz", npz_root)
    pixels = {bytes(image.numpy()) for image in val.images}
    assert not pixels & {bytes(image.numpy()) for image in train.images}
    assert len(pixels & {bytes(image.numpy()) for image in full.images}) == len(pixels)


def test_limit_keeps_a_class_balanced_subset(tmp_path):
    write_npz(tmp_path, n_train=30, num_classes=3)
    data = load_dataset("npz", tmp_path, limit=9)
    assert len(data) == 9 and torch.bincount(data.labels).tolist() == [3, 3, 3]
