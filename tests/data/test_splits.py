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


def test_class_choice_gives_disjoint_relabelled_training_validation_and_test_classes(tmp_path):
    write_npz(tmp_path, n_train=40, n_test=20, num_classes=5, classes=[f"c{i}" for i in range(5)])
    overrides = ["data.name=npz", f"data.root={tmp_path}", "data.train_classes=[0,1,3]", "data.val_classes=[3]",
                 "data.test_classes=[4,2]"]
    train, val, test = load_splits(load_config(None, overrides))
    full_train, full_test = load_dataset("npz", tmp_path), load_dataset("npz", tmp_path, "test")
    assert (train.classes, val.classes, test.classes) == (["c0", "c1"], ["c3"], ["c4", "c2"])
    assert torch.bincount(train.labels).tolist() == [8, 8] and val.labels.tolist() == [0] * 8
    assert torch.bincount(test.labels).tolist() == [4, 4]
    for split, source, classes in ((train, full_train, [0, 1]), (val, full_train, [3]), (test, full_test, [4, 2])):
        for label, original in enumerate(classes):  # each relabelled class holds exactly the original's images
            assert torch.equal(split.images[split.labels == label], source.images[source.labels == original])


@pytest.mark.parametrize("overrides, message", [
    (["data.train_classes=[0,1]", "data.test_classes=[1,2]"], "share classes \\[1\\]"),
    (["data.val_classes=[0]", "data.val_size=4"], "not both"),
    (["data.train_classes=[0,1]", "data.val_classes=[2]", "data.test_classes=[2,3]"],
     "data.val_classes and data.test_classes share classes \\[2\\]"),
    (["data.val_classes=[2]", "data.test_classes=[3,4]"], "data.test_classes without data.train_classes trains on"),
    (["data.test_classes=[3,4]"], "data.test_classes without data.train_classes trains on every class"),
    (["data.train_classes=[0,1]"], "data.train_classes without data.test_classes tests on every class"),
    (["data.val_classes=[1]"], "data.val_classes without data.test_classes tests on every class"),
    (["data.name=cub200", "data.train_classes=[0,1]"], "cub200 reads the same images for training and testing"),
    (["data.name=cars196"], "set both data.train_classes and data.test_classes"),
])
def test_overlapping_or_doubled_class_choices_are_refused(overrides, message):
    from sslsec.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides, message", [
    (["data.train_classes=[0]", "data.val_classes=[1]", "data.test_classes=[2]"], "must be among the training classes"),
    (["data.train_classes=[0,7]", "data.test_classes=[1]"], "in \\[0, 3\\)"),
    (["data.train_classes=[0]", "data.test_classes=[1,1]"], "distinct"),
])
def test_class_choices_that_do_not_fit_the_data_are_one_error(npz_root, overrides, message):
    with pytest.raises(DatasetError, match=message):
        load_splits(load_config(None, ["data.name=npz", f"data.root={npz_root}", *overrides]))
