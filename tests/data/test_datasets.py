"""Data sets read back from fixtures in their real on-disk formats, and clear errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsec.data import DatasetError, ImageArrays, ImageFolderDataset, load_dataset
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


def test_image_folder_splits_share_the_training_split_class_list(tmp_path):
    write_jpeg_folder(tmp_path, {"n01": 2, "n02": 1, "n03": 2}, split_folders=("train",))
    write_jpeg_folder(tmp_path, {"n01": 1, "n03": 1}, split_folders=("val",))
    (tmp_path / "val" / "n02").mkdir()  # a class without validation images keeps its label
    test = load_dataset("imagenet_folder", tmp_path, "test", image_size=8)
    assert test.classes == ["n01", "n02", "n03"] and test.labels.tolist() == [0, 2]

    (tmp_path / "val" / "n02").rmdir()
    with pytest.raises(DatasetError, match=r"1 classes are not folders in .*val: \['n02'\]") as error:
        load_dataset("imagenet_folder", tmp_path, "test")
    assert "\n" not in str(error.value)

    write_jpeg_folder(tmp_path, {"n02": 1, "n09": 1}, split_folders=("val",))
    with pytest.raises(DatasetError, match=r"val has 1 class folders the training split lacks: \['n09'\]") as error:
        load_dataset("imagenet_folder", tmp_path, "test")
    assert "\n" not in str(error.value)
    # with a class list, folders outside it are left out of every split
    test = load_dataset("imagenet_folder", tmp_path, "test", class_list=["n01", "n03"], image_size=8)
    assert test.classes == ["n01", "n03"] and test.labels.tolist() == [0, 1]
