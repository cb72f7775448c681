"""Data sets read back from fixtures in their real on-disk formats, clear errors, and the sharding rule."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsec.data import BatchLoader, DatasetError, ImageArrays, ImageFolderDataset, load_dataset
from tests.fixtures import (patch_cifar_checksums, write_cifar, write_fashion_mnist, write_jpeg_folder,
                            write_npz)


@pytest.mark.parametrize("name, num_classes, mean", [("cifar10", 10, 0.4914), ("cifar100", 100, 0.5071)])
def test_cifar_is_read_by_torchvision_into_one_uint8_tensor(tmp_path, monkeypatch, name, num_classes, mean):
    written = write_cifar(tmp_path, name)
    patch_cifar_checksums(monkeypatch, tmp_path, name)
    for split in ("train", "test"):
        data = load_dataset(name, tmp_path, split)
        assert isinstance(data, ImageArrays) and data.images.is_contiguous()
        assert torch.equal(data.images, written[split][0]) and torch.equal(data.labels, written[split][1])
        assert (data.num_classes, data.channels, data.image_size, data.name) == (num_classes, 3, 32, name)
        assert data.classes[1] == "class_1" and data.mean[0] == mean and len(data) == len(written[split][0])


def test_missing_cifar_says_how_to_download(tmp_path):
    with pytest.raises(DatasetError, match="data.download=true") as error:
        load_dataset("cifar10", tmp_path / "nowhere")
    assert "nowhere" in str(error.value)


def test_malformed_cifar_pickle_gives_one_clear_error(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    patch_cifar_checksums(monkeypatch, tmp_path, "cifar10")  # the checksum passes; the reader must fail
    with pytest.raises(DatasetError, match="cifar-10-batches-py") as error:
        load_dataset("cifar10", tmp_path)
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_fashion_mnist_idx_files(tmp_path):
    written = write_fashion_mnist(tmp_path)
    for split in ("train", "test"):
        data = load_dataset("fashion_mnist", tmp_path, split)
        assert torch.equal(data.images, written[split][0]) and torch.equal(data.labels, written[split][1])
        assert (data.channels, data.image_size, data.num_classes) == (1, 28, 10)
        assert data.mean == (0.2860,) and data.std == (0.3530,) and data.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_or_truncated_files_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path)
    write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is truncated"):
        load_dataset("fashion_mnist", tmp_path, "test")
    path.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DatasetError, match="not a readable gzip"):
        load_dataset("fashion_mnist", tmp_path, "test")


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_folder_with_stats_from_the_train_split(tmp_path, channels):
    written = write_npz(tmp_path, channels=channels, classes=["cat", "dog", "emu"])
    train, test = load_dataset("npz", tmp_path, "train"), load_dataset("npz", tmp_path, "test")
    assert torch.equal(test.images, written["test"][0]) and torch.equal(test.labels, written["test"][1])
    pixels = written["train"][0].numpy().astype(np.float64) / 255
    np.testing.assert_allclose(test.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(test.std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)
    assert train.mean == test.mean and test.classes == ["cat", "dog", "emu"] and test.channels == channels


def test_npz_missing_key_or_file_names_the_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match="train.npz not found"):
        load_dataset("npz", tmp_path)
    np.savez(tmp_path / "train.npz", pictures=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match=r"lacks 'images' or 'labels'.*uint8"):
        load_dataset("npz", tmp_path)
    (tmp_path / "train.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_dataset("npz", tmp_path)


def test_image_folder_decodes_resizes_and_filters_classes(tmp_path):
    write_jpeg_folder(tmp_path, {"n01": 3, "n02": 2, "n03": 4})
    (tmp_path / "keep.txt").write_text("n03\nn01\n")
    data = load_dataset("imagenet_folder", tmp_path, "test", image_size=24, class_list=tmp_path / "keep.txt")
    assert isinstance(data, ImageFolderDataset) and data.classes == ["n01", "n03"] and len(data) == 7
    assert (data.channels, data.image_size, data.mean) == (3, 24, (0.485, 0.456, 0.406))
    image, label = data[5]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and label == 1
    assert abs(int(image[0, 12, 12]) - 40) <= 3  # red channel encodes the fixture's class index n03 -> 2


def test_image_folder_errors_name_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"root/train/<class>/\*.JPEG"):
        load_dataset("imagenet_folder", tmp_path)
    write_jpeg_folder(tmp_path, {"n01": 1}, split_folders=("train",))
    with pytest.raises(DatasetError, match="n09"):
        load_dataset("imagenet_folder", tmp_path, class_list=["n01", "n09"])


@pytest.mark.parametrize("workers, decode_on_device", [(0, False), (2, False), (2, True)])
def test_folder_batches_through_workers_decoded_there_or_on_the_device(tmp_path, workers, decode_on_device):
    write_jpeg_folder(tmp_path, {"a": 3, "b": 4}, split_folders=("train",))
    data = load_dataset("imagenet_folder", tmp_path, image_size=16)
    loader = BatchLoader(data, 3, shuffle=True, drop_last=False, num_workers=workers,
                         decode_on_device=decode_on_device)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [3, 3, 1] and len(loader) == 3
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert images.shape == (7, 3, 16, 16) and sorted(labels.tolist()) == [0] * 3 + [1] * 4
    assert ((images[:, 0, 8, 8].int() - 20 * labels).abs() <= 3).all()  # each image arrives with its label


def test_validation_split_is_disjoint_class_balanced_and_fixed():
    from sslsec.data import validation_split

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
    from sslsec.config import load_config
    from sslsec.evaluate import load_splits

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


def indexed_dataset(n: int) -> ImageArrays:
    """Sample i has label i and every pixel i, so batches reveal which samples they hold."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageArrays(images, torch.arange(n), [str(i) for i in range(n)], (0.5,), (0.25,), "indexed")


def shard_lists(n, batch, world, epoch, **kwargs):
    """Per rank, the list of label batches (= sample indices) for ``epoch``."""
    shards = []
    for rank in range(world):
        loader = BatchLoader(indexed_dataset(n), batch, rank=rank, world_size=world, seed=5, **kwargs)
        loader.set_epoch(epoch)
        shards.append([labels.tolist() for _, labels in loader])
    return shards


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_split_each_global_batch_of_one_seeded_permutation(drop_last):
    n, batch, world, epoch = 23, 4, 2, 3
    rank_0, rank_1 = shard_lists(n, batch, world, epoch, shuffle=True, drop_last=drop_last)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
    expected_batches = n // (batch * world) if drop_last else math.ceil(n / (batch * world))
    assert len(rank_0) == len(rank_1) == expected_batches
    for b, (part_0, part_1) in enumerate(zip(rank_0, rank_1)):
        assert part_0 + part_1 == order[b * batch * world:(b + 1) * batch * world]
    seen = sorted(i for shard in (rank_0, rank_1) for part in shard for i in part)
    assert seen == (sorted(order[:16]) if drop_last else list(range(n)))


def test_images_and_labels_stay_paired_and_epochs_reshuffle():
    loader = BatchLoader(indexed_dataset(20), 8, shuffle=True, drop_last=False)
    epoch_0 = [(images, labels) for images, labels in loader]
    assert all(torch.equal(images[:, 0, 0, 0].long(), labels) for images, labels in epoch_0)
    assert epoch_0[0][0].dtype == torch.uint8 and epoch_0[0][1].dtype == torch.int64
    loader.set_epoch(1)
    assert [lab.tolist() for _, lab in loader] != [lab.tolist() for _, lab in epoch_0]
    assert shard_lists(20, 8, 1, 0, shuffle=False, drop_last=False)[0][0] == list(range(8))


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    loader = BatchLoader(indexed_dataset(50), 4, shuffle=True, drop_last=True, rank=1, world_size=2)
    loader.set_epoch(2)
    full = [labels.tolist() for _, labels in loader]
    loader.set_epoch(2, start_batch=4)
    assert [labels.tolist() for _, labels in loader] == full[4:] and len(loader) == len(full) == 6


def test_loader_rejects_impossible_settings():
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(indexed_dataset(8), 2, shuffle=False, drop_last=False, rank=2, world_size=2)
    with pytest.raises(ValueError, match="start_batch"):
        BatchLoader(indexed_dataset(8), 2, shuffle=False, drop_last=False).set_epoch(0, start_batch=5)
    too_few = BatchLoader(indexed_dataset(8), 8, shuffle=False, drop_last=True, world_size=2)
    assert len(too_few) == 0 and list(too_few) == []  # the caller decides whether an empty epoch is an error


REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(),
                    reason=f"{REAL_FASHION_MNIST} missing: apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    train = load_dataset("fashion_mnist", split="train")
    test = load_dataset("fashion_mnist", split="test", limit=5000)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 5000
    assert train.labels.min() == 0 and train.labels.max() == 9 and train.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [500] * 10
    assert abs(train.images[:5000].float().mean().item() - 0.286 * 255) < 0.01 * 255
