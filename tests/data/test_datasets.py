"""Data sets read back from fixtures in their real on-disk formats, and clear errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsec.config import load_config
from sslsec.data import (DATASET_NAMES, BatchLoader, DatasetError, ImageArrays, ImageFolderDataset, load_dataset,
                         load_splits)
from sslsec.data.folders import FOLDER_READERS
from tests.fixtures import (patch_cifar_checksums, write_cars196, write_cifar, write_cub200, write_fashion_mnist,
                            write_jpeg_folder, write_npz)


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


def test_a_cifar_download_without_a_network_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", tmp_path / "data" / "cifar10", download=True)
    message = str(error.value)
    assert "cannot download cifar10" in message and "no network?" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "data.download=false" in message
    assert "data.download=true" not in message  # it was already set
    assert list(tmp_path.iterdir()) == []  # the folders the download made are gone
    (tmp_path / "mine").mkdir()  # a folder of the user's is kept, empty as it was
    with pytest.raises(DatasetError, match="cannot download cifar100"):
        load_dataset("cifar100", tmp_path / "mine", download=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"] and list((tmp_path / "mine").iterdir()) == []


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


# --- CUB-200-2011 and Stanford Cars: every image of both official halves, split by class ---------------------

def _red_is_label(data, indices) -> bool:
    """The fixtures paint class c with red 40 * c: each decoded image must show its label's colour."""
    return all(abs(int(data[i][0][0, 4, 4]) - 40 * int(data.labels[i])) <= 4 for i in indices)


def test_cub200_reads_every_image_labelled_in_classes_txt_order(tmp_path):
    counts = (3, 2, 4, 3, 2, 3)
    classes = write_cub200(tmp_path, counts)
    train, test = load_dataset("cub200", tmp_path, "train"), load_dataset("cub200", tmp_path, "test", image_size=24)
    assert isinstance(train, ImageFolderDataset) and train.paths == test.paths and len(train) == sum(counts)
    assert train.labels.tolist() == [c for c, n in enumerate(counts) for _ in range(n)] and train.classes == classes
    assert (train.name, train.image_size, test.image_size, train.mean) == ("cub200", 256, 24, (0.485, 0.456, 0.406))
    assert all(Path(path).parent.name == classes[label] for path, label in zip(train.paths, train.labels.tolist()))
    image, label = test[7]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and label == 2
    assert _red_is_label(test, range(len(test)))
    inside = load_dataset("cub200", tmp_path / "CUB_200_2011")  # root at CUB_200_2011/ itself
    assert inside.paths == train.paths and torch.equal(inside.labels, train.labels)


def test_cars196_reads_both_halves_labelled_in_cars_meta_order(tmp_path):
    train_counts, test_counts = (2, 1, 2, 2), (1, 2, 1, 2)
    classes = write_cars196(tmp_path, train_counts, test_counts)
    data = load_dataset("cars196", tmp_path, "test", image_size=20)
    assert data.classes == classes and data.name == "cars196" and data.image_size == 20
    assert len(data) == sum(train_counts) + sum(test_counts) == len(load_dataset("cars196", tmp_path, "train"))
    assert torch.bincount(data.labels).tolist() == [a + b for a, b in zip(train_counts, test_counts)]
    assert [Path(path).parent.name for path in data.paths] == ["cars_train"] * 7 + ["cars_test"] * 6
    assert data.labels[:4].tolist() == [0, 1, 2, 3]  # the fixture lists its classes interleaved
    assert _red_is_label(data, range(len(data)))
    inside = load_dataset("cars196", tmp_path / "stanford_cars", image_size=20)
    assert inside.paths == data.paths and torch.equal(inside.labels, data.labels)
    assert set(FOLDER_READERS) <= set(DATASET_NAMES)


def test_class_choice_makes_disjoint_relabelled_train_val_and_test_splits_of_cub200(tmp_path):
    counts = (3, 2, 4, 3, 2, 3)
    classes = write_cub200(tmp_path, counts)
    config = load_config(None, ["data.name=cub200", f"data.root={tmp_path}", "data.image_size=16",
                                "data.train_classes=[0, 1, 2]", "data.val_classes=[2]", "data.test_classes=[3, 4, 5]"])
    train, val, test = load_splits(config)
    assert (train.classes, val.classes, test.classes) == (classes[:2], classes[2:3], classes[3:])
    assert (len(train), len(val), len(test)) == (5, 4, 8)
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and val.labels.tolist() == [0] * 4
    assert test.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert not (set(train.paths) & set(test.paths) or set(train.paths) & set(val.paths))
    assert all(abs(int(test[i][0][0, 4, 4]) - 40 * (3 + int(test.labels[i]))) <= 4 for i in range(len(test)))
    batches = BatchLoader(train, 4, shuffle=True, drop_last=True, images_per_class=2, num_workers=0)
    images, labels = next(iter(batches))
    assert images.shape == (4, 3, 16, 16) and sorted(labels.tolist()) == [0, 0, 1, 1]


def test_cub200_errors_name_the_layout_and_the_source(tmp_path):
    with pytest.raises(DatasetError, match=r"cub200 needs data.root.*data.caltech.edu"):
        load_dataset("cub200")
    with pytest.raises(DatasetError, match=r"neither .*CUB_200_2011 nor .*images.txt exists; expected CUB_200_2011/"):
        load_dataset("cub200", tmp_path)
    write_cub200(tmp_path)
    base = tmp_path / "CUB_200_2011"
    (base / "classes.txt").write_text("1 001.Bird_A\n2\n")
    with pytest.raises(DatasetError, match=r"classes.txt line 2 is '2', expected '<number> <text>'"):
        load_dataset("cub200", tmp_path)
    (base / "classes.txt").write_text("1 001.Bird_A\n")
    with pytest.raises(DatasetError, match=r"gives image 4 \(002.Bird_B/.*\) no class of classes.txt \(got '2'\)"):
        load_dataset("cub200", tmp_path)
    write_cub200(tmp_path)
    (base / "images" / "003.Bird_C" / "Bird_C_0001_2.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of the 17 images listed in .*images.txt are missing: .*Bird_C_0001_2"):
        load_dataset("cub200", tmp_path)
    (base / "image_class_labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"image_class_labels.txt not found; expected CUB_200_2011/") as error:
        load_dataset("cub200", tmp_path)
    assert "\n" not in str(error.value)


def test_cars196_errors_name_the_layout_and_the_source(tmp_path):
    with pytest.raises(DatasetError, match=r"cars196: neither .*stanford_cars nor .*devkit exists.*issues/7545"):
        load_dataset("cars196", tmp_path)
    write_cars196(tmp_path)
    base = tmp_path / "stanford_cars"
    (base / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetError, match=r"stanford_cars lacks cars_test_annos_withlabels.mat; expected stan"):
        load_dataset("cars196", tmp_path)
    write_cars196(tmp_path)
    (base / "devkit" / "cars_train_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"cannot read the cars196 annotations under .*stanford_cars") as error:
        load_dataset("cars196", tmp_path)
    assert error.value.__cause__ is None and "\n" not in str(error.value)
    write_cars196(tmp_path, train=(1, 1), test=(1, 1))  # two classes in the meta file, four in older annotations
    write_cars196(tmp_path / "other", train=(1, 1, 1, 1), test=(1, 1, 1, 1))
    (base / "devkit" / "cars_train_annos.mat").write_bytes(
        (tmp_path / "other" / "stanford_cars" / "devkit" / "cars_train_annos.mat").read_bytes())
    with pytest.raises(DatasetError, match=r"class numbers \[3, 4\] .* not among the 2 classes"):
        load_dataset("cars196", tmp_path)
    with pytest.raises(DatasetError, match="class_list applies to imagenet_folder only"):
        load_dataset("cars196", tmp_path, class_list=["a"])
