"""uint8 image data sets: the readers behind :func:`load_dataset`.

Two kinds of data set share one interface (``classes``, ``num_classes``, ``channels``, ``image_size``,
``mean``, ``std``, ``name``, ``labels``, ``len()``, ``subset()``, ``to(device)``):

- :class:`ImageArrays`: a whole data set in memory as one uint8 tensor (CIFAR-10/100, Fashion-MNIST, npz).
- :class:`ImageFolderDataset`: JPEG files decoded batch by batch: an ImageNet-style folder (listed by
  torchvision's ``ImageFolder``), or the files CUB-200-2011 and Stanford Cars list (:mod:`sslsec.data.folders`).

Example::

    train = load_dataset("cifar10", "data/cifar10", download=True)
    images, labels = train.images, train.labels      # uint8 (N, 3, 32, 32), int64 (N,)
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import math
import os
import pickle
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import ImageFolder

from sslsec.data.folders import FOLDER_READERS
from sslsec.errors import DatasetError
from sslsec.errors import some as _some

__all__ = ["DATASET_NAMES", "CorruptImageError", "DatasetError", "ImageArrays", "ImageFolderDataset", "load_dataset",
           "select_classes", "stratified_first"]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
STATS = {  # per-channel mean and std of the training images, in [0, 1] units
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "imagenet_folder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_JPEG_SUFFIXES = (".jpeg", ".jpg")
_LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


class CorruptImageError(DatasetError):
    """A file of a folder data set that cannot be read or decoded (``path``, ``reason``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}; replace or remove the file, or set data.skip_corrupt=true "
                         "to skip such files with a warning")
        self.path, self.reason = path, reason

    def __reduce__(self):  # picklable with its two arguments
        return type(self), (self.path, self.reason)


def stratified_first(labels: Tensor, k: int) -> Tensor:
    """Indices of a class-balanced subset of size ``min(k, N)``: round-robin over classes in file order.

    The j-th sample of every class comes before the (j+1)-th of any class, so each class gets ``k / classes``
    samples (as far as it has them). Returned sorted, so the subset keeps the data set's order.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.empty_like(labels)
    rank_in_class[order] = torch.arange(len(labels)) - starts[labels[order]]
    key = rank_in_class * len(counts) + labels
    return torch.sort(torch.argsort(key, stable=True)[:k]).values


def select_classes(dataset: ImageArrays | ImageFolderDataset, classes: list[int]) -> ImageArrays | ImageFolderDataset:
    """The images of the classes at indices ``classes``, relabelled ``0 .. len(classes) - 1`` in that order.

    Metric learning trains on some classes and is scored on others (CUB-200: 1-100 / 101-200); each split is
    relabelled on its own, so a label indexes ``dataset.classes`` of that split only.
    """
    classes = list(classes)
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad or not classes or len(set(classes)) != len(classes):
        raise DatasetError(f"class indices must be distinct and in [0, {dataset.num_classes}) for {dataset.name} "
                           f"({dataset.num_classes} classes), got {classes}")
    relabel = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    indices = (relabel[dataset.labels] >= 0).nonzero().flatten()
    chosen = dataset.subset(indices)
    chosen.labels = relabel[chosen.labels]
    chosen.classes = [dataset.classes[c] for c in classes]
    return chosen


@dataclass
class ImageArrays:
    """A whole data set in memory.

    Attributes:
        images: uint8 ``(N, C, H, W)``, contiguous, square (``H == W``).
        labels: int64 ``(N,)`` in ``[0, len(classes))``.
        classes: class names; ``labels`` index into them.
        mean, std: per-channel statistics of the training split in [0, 1] units, for normalization.
        name: the data set's name (``"cifar10"``, ...).
    """

    images: Tensor = field(repr=False)
    labels: Tensor = field(repr=False)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"images must be square uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        if not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"mean {self.mean} and std {self.std} need one value per channel ({self.channels})")
        self.images, self.labels = self.images.contiguous(), self.labels.to(torch.int64)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: Tensor) -> ImageArrays:
        """The samples at ``indices`` (same classes and statistics)."""
        indices = indices.to(self.images.device)
        return ImageArrays(self.images[indices], self.labels[indices], self.classes, self.mean, self.std, self.name)

    def to(self, device: torch.device | str) -> ImageArrays:
        """The same data set held on ``device`` (itself if it is there): move a split once, and every
        :class:`~sslsec.data.BatchLoader` built on it (training, features, the monitor) cuts batches from that copy.
        On CUDA the copy goes through pinned memory."""
        device = torch.device(device)
        if self.images.device == device or (device.index is None and self.images.device.type == device.type):
            return self
        images, labels = self.images, self.labels
        if device.type == "cuda" and images.device.type == "cpu":
            images, labels = images.pin_memory(), labels.pin_memory()
        return ImageArrays(images.to(device, non_blocking=True), labels.to(device, non_blocking=True), self.classes,
                           self.mean, self.std, self.name)


class ImageFolderDataset:
    """ImageNet-style JPEG folder ``root/{train,val}/<class>/*.JPEG`` served as uint8 ``(3, S, S)`` images.

    Every image is decoded as RGB, resized so its shorter side is ``image_size`` and center-cropped to
    ``image_size x image_size``, so batches stack. ``class_list`` (a text file, one class folder name per line,
    e.g. the ImageNet-100 list, or a list of names) keeps only those classes; labels follow sorted class names.
    Split ``"test"`` reads the ``val`` folder. :meth:`from_samples` serves a given list of JPEG files instead.

    A file that does not decode raises :class:`CorruptImageError`, or, with ``skip_corrupt`` (``data.skip_corrupt``),
    is skipped by :class:`~sslsec.data.BatchLoader` with a warning; ``corrupt`` (path -> reason) holds those found,
    shared with the subsets of this data set.
    """

    channels = 3
    mean, std = STATS["imagenet_folder"]
    skip_corrupt = False

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 224,
                 class_list: str | os.PathLike | list[str] | None = None, name: str = "imagenet_folder") -> None:
        folder = _split_folder(root, split)
        # One class list for every split (the training split's, or class_list), so a label means one class.
        classes = _read_class_list(class_list) if class_list is not None else _class_folders(_split_folder(root, "train"))
        found = _class_folders(folder)
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        if missing:
            raise DatasetError(f"{len(missing)} classes are not folders in {folder}: {_some(missing)}; every split "
                               f"needs a folder for each class of the {'class list' if class_list else 'training split'}")
        if extra and class_list is None:
            raise DatasetError(f"{folder} has {len(extra)} class folders the training split lacks: {_some(extra)}; "
                               "remove them, or pick the classes with data.class_list")
        samples = _ClassListFolder(str(folder), classes).samples
        if not samples:
            raise DatasetError(f"no .JPEG/.jpg files under {folder}; expected the layout {_LAYOUT}")
        self._set(root, split, image_size, name, classes, samples)

    @classmethod
    def from_samples(cls, samples: list[tuple[str, int]], classes: list[str], *, root: str | os.PathLike,
                     split: str = "train", image_size: int = 224,
                     name: str = "imagenet_folder") -> ImageFolderDataset:
        """A data set of the JPEG files ``samples`` (``(path, label)`` pairs, labels indexing ``classes``).

        For data sets that list their files themselves (CUB-200-2011's ``images.txt``, Stanford Cars' ``.mat``
        annotations) instead of one folder per class.
        """
        dataset = cls.__new__(cls)
        dataset._set(root, split, image_size, name, classes, samples)
        return dataset

    def _set(self, root: str | os.PathLike, split: str, image_size: int, name: str, classes: list[str],
             samples: list[tuple[str, int]]) -> None:
        self.root, self.split, self.image_size, self.name = Path(root), split, int(image_size), name
        self.classes, self.paths = list(classes), [str(path) for path, _ in samples]
        self.labels = torch.tensor([int(label) for _, label in samples], dtype=torch.int64)
        self.corrupt: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Tensor) -> ImageFolderDataset:
        """The samples at ``indices`` (same classes)."""
        chosen = copy.copy(self)
        chosen.paths = [self.paths[i] for i in indices.tolist()]
        chosen.labels = self.labels[indices]
        return chosen

    def to(self, device: torch.device | str) -> ImageFolderDataset:
        """Itself: a folder stays on disk and its loader decodes it batch by batch (the interface of
        :meth:`ImageArrays.to`, so a caller moves any split the same way)."""
        return self

    def read_encoded(self, index: int) -> Tensor:
        """The file's bytes as a uint8 1-D tensor (decode later with :meth:`decode`)."""
        # Not torchvision.io.read_file: its file-mapped storage cannot be sent back from a DataLoader worker.
        return torch.frombuffer(bytearray(Path(self.paths[index]).read_bytes()), dtype=torch.uint8)

    def decode(self, encoded: list[Tensor], device: torch.device | str = "cpu") -> Tensor:
        """Decode JPEG bytes on ``device`` (nvJPEG on CUDA) to uint8 ``(B, 3, S, S)``."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
        from torchvision.transforms.v2.functional import center_crop, resize

        size = self.image_size
        if not encoded:
            return torch.empty((0, 3, size, size), dtype=torch.uint8, device=device)
        with _torchvision_io():
            try:
                images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # ImageNet holds a few PNG and CMYK files named .JPEG: decode those on the CPU
                images = [decode_image(data, mode=ImageReadMode.RGB).to(device) for data in encoded]
        return torch.stack([center_crop(resize(im, [size], antialias=True), [size, size]) for im in images])

    def decode_checked(self, encoded: list[Tensor], device: torch.device | str = "cpu") -> tuple[Tensor, dict[int, str]]:
        """:meth:`decode` that survives files that do not decode: ``(images (B, 3, S, S), failures)``, where
        ``failures`` maps each failing position to the decoder's reason and its image is black."""
        try:
            return self.decode(encoded, device), {}
        except RuntimeError:
            pass
        images, failures = [], {}
        for position, data in enumerate(encoded):
            try:
                images.append(self.decode([data], device)[0])
            except RuntimeError as err:
                failures[position] = decoder_reason(err)
                images.append(torch.zeros((3, self.image_size, self.image_size), dtype=torch.uint8, device=device))
        return torch.stack(images), failures

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Decoded uint8 ``(3, S, S)`` image and its label; :class:`CorruptImageError` if the file does not decode."""
        try:
            image = self.decode([self.read_encoded(index)])[0]
        except (RuntimeError, OSError) as err:
            raise CorruptImageError(self.paths[index], decoder_reason(err)) from None
        return image, int(self.labels[index])


def decoder_reason(error: Exception) -> str:
    """torchvision's (or the file system's) message, first line, without the C++ source location."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = re.sub(r"^[\w()]+, \S+:\d+, ", "", text)  # "decode_jpeg, /.../decode_jpeg.cpp:171, Image is truncated"
    return text.split(". ")[0].rstrip(".")  # its first sentence: "Unsupported image file"


class _ClassListFolder(ImageFolder):
    """torchvision's ``ImageFolder`` listing of ``root/<class>/*.JPEG`` for a given, sorted class list."""

    def __init__(self, root: str, classes: list[str]) -> None:
        self._classes = classes
        super().__init__(root, is_valid_file=_is_jpeg, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._classes, {name: index for index, name in enumerate(self._classes)}


def _is_jpeg(path: str) -> bool:
    return path.lower().endswith(_JPEG_SUFFIXES)


def _split_folder(root: str | os.PathLike, split: str) -> Path:
    folder = Path(root) / {"train": "train", "test": "val"}[split]
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} not found; expected the layout {_LAYOUT}")
    return folder


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


@contextlib.contextmanager
def _torchvision_io() -> Iterator[None]:
    """Silence the DeprecationWarning torchvision 0.29 raises on every call of its image codecs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _read_class_list(class_list: str | os.PathLike | list[str]) -> list[str]:
    if isinstance(class_list, (list, tuple)):
        return sorted({str(name) for name in class_list})
    path = Path(class_list)
    if not path.is_file():
        raise DatasetError(f"class list {path} not found; it is a text file with one class folder name per line")
    return sorted({line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")})


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", *,
                 download: bool = False, image_size: int | None = None,
                 class_list: str | os.PathLike | list[str] | None = None,
                 limit: int | None = None, skip_corrupt: bool = False) -> ImageArrays | ImageFolderDataset:
    """Load data set ``name`` (one of :data:`DATASET_NAMES`) from ``root``, split ``"train"`` or ``"test"``.

    Default roots: ``data/cifar10``, ``data/cifar100`` (torchvision's layout inside), and
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``); ``npz``,
    ``imagenet_folder``, ``cub200`` and ``cars196`` need ``root``. ``download`` fetches CIFAR through torchvision.
    ``image_size`` applies to the JPEG data sets (default 224 px for ``imagenet_folder``, 256 px for ``cub200``
    and ``cars196``, :mod:`sslsec.data.folders`), ``class_list`` to ``imagenet_folder``. ``limit`` keeps a
    class-balanced subset of that many samples (:func:`stratified_first`), for CPU-scale runs. ``skip_corrupt``:
    the JPEG data sets' files that do not decode are skipped with a warning instead of stopping the loader.

    Raises:
        DatasetError: the files are missing or malformed; the message says how to get them.
    """
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of samples (or None for all), got {limit}")
    if class_list is not None and name != "imagenet_folder":
        raise DatasetError(f"class_list applies to imagenet_folder only, not {name}")
    if name == "imagenet_folder":
        if root is None:
            raise DatasetError("imagenet_folder needs root: the folder holding train/<class>/*.JPEG and val/")
        dataset = ImageFolderDataset(root, split, image_size or 224, class_list)
    elif name == "face_folder":
        dataset = _load_face_folder(root, split, image_size or 112)
    elif name in _LISTED_FOLDERS:
        samples, classes, base = FOLDER_READERS[name](root)
        dataset = ImageFolderDataset.from_samples(samples, classes, root=base, split=split,
                                                  image_size=image_size or 256, name=name)
    else:
        dataset = _IN_MEMORY_LOADERS[name](name, root, split, download)
        if image_size is not None and image_size != dataset.image_size:
            raise DatasetError(f"{name} images are {dataset.image_size} px, got image_size={image_size}; leave it "
                             "unset (the augmentation's crop size sets the view size)")
    if isinstance(dataset, ImageFolderDataset):
        dataset.skip_corrupt = skip_corrupt
    if limit is not None:
        dataset = dataset.subset(stratified_first(dataset.labels, limit))
    return dataset


def _load_cifar(name: str, root, split: str, download: bool) -> ImageArrays:
    """CIFAR-10/100 through torchvision's own reader (pickled batches in ``root/cifar-10-batches-py``). A download
    that fails leaves nothing behind: the folders it made and its partial archive are removed."""
    from urllib.error import URLError

    from torchvision.datasets import CIFAR10, CIFAR100

    reader = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(root if root is not None else f"data/{name}")
    made = next((folder for folder in [*reversed(root.parents), root] if not folder.exists()), None)
    archive = root / reader.filename
    had_archive = archive.exists()
    try:
        data = reader(str(root), train=split == "train", download=download)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        if download and isinstance(err, (URLError, ConnectionError, TimeoutError)):
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            elif not had_archive:
                archive.unlink(missing_ok=True)
            raise DatasetError(
                f"cannot download {name} ({type(err).__name__}: {err}): no network? On a machine with one, fetch "
                f"{reader.url} and extract it into {root} (it holds {reader.base_folder}/), then run with "
                "data.download=false") from None
        fix = (f"delete {root / reader.base_folder} to download it again, or set data.root to the folder that holds "
               f"a good {reader.base_folder}/" if download else
               "download it with data.download=true (load_dataset(..., download=True)) or set data.root to the folder "
               f"that holds {reader.base_folder}/")
        raise DatasetError(f"cannot read {name} from {root / reader.base_folder} ({type(err).__name__}: {err}). "
                           f"{fix[0].upper()}{fix[1:]}") from None
    images = torch.from_numpy(np.ascontiguousarray(data.data)).permute(0, 3, 1, 2)
    mean, std = STATS[name]
    return ImageArrays(images, torch.tensor(data.targets), list(data.classes), mean, std, name)


def _load_fashion_mnist(name: str, root, split: str, download: bool) -> ImageArrays:
    """Fashion-MNIST from the four idx ``.gz`` files (the Debian package's flat layout)."""
    root = Path(root if root is not None else FASHION_MNIST_ROOT)
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
    labels = _read_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
    if len(images) != len(labels):
        raise DatasetError(f"{root}: {len(images)} {prefix} images but {len(labels)} labels")
    mean, std = STATS[name]
    return ImageArrays(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(),
                       list(FASHION_MNIST_CLASSES), mean, std, name)


def _read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (magic 0x0000 0x08 ndim, ndim big-endian uint32 sizes, data)."""
    if not path.is_file():
        raise DatasetError(f"{path} not found. Install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
                           f"(into {FASHION_MNIST_ROOT}) or set data.root to a folder with the four idx .gz files")
    try:
        with gzip.open(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} is not a readable gzip file ({err}); re-install or re-download it") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DatasetError(f"{path} is not an idx file of {ndim}-D unsigned bytes (header {raw[:4].hex()}, "
                           f"expected {bytes([0, 0, 8, ndim]).hex()})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise DatasetError(f"{path} is truncated: header says {shape}, file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_npz(name: str, root, split: str, download: bool) -> ImageArrays:
    """``root/train.npz`` and ``root/test.npz``; mean/std come from the train split."""
    if root is None:
        raise DatasetError("npz needs root: a folder with train.npz and test.npz")
    train_images, train_labels, classes = _read_npz(Path(root) / "train.npz")
    images, labels, _ = (train_images, train_labels, None) if split == "train" else _read_npz(Path(root) / "test.npz")
    if images.shape[1:] != train_images.shape[1:]:
        raise DatasetError(f"{root}: test images are {images.shape[1:]} but train images {train_images.shape[1:]}")
    num_classes = int(train_labels.max()) + 1 if len(train_labels) else 0
    classes = classes or [str(c) for c in range(max(num_classes, int(labels.max()) + 1 if len(labels) else 0))]
    if len(labels) and int(labels.max()) >= len(classes):
        raise DatasetError(f"{root}: label {int(labels.max())} out of range for {len(classes)} classes")
    mean, std = _channel_stats(train_images)
    return ImageArrays(images, labels, classes, mean, std, name)


def _read_npz(path: Path) -> tuple[Tensor, Tensor, list[str] | None]:
    expected = ("an npz data set is a folder with train.npz and test.npz, each holding 'images' (uint8, "
                "N x H x W or N x H x W x C) and 'labels' (N integers), optionally 'classes' (names)")
    if not path.is_file():
        raise DatasetError(f"{path} not found; {expected}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = list(archive.files)
            arrays = {key: archive[key] for key in ("images", "labels", "classes") if key in files}
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile) as err:  # TypeError: a plain .npy
        raise DatasetError(f"{path} is not a readable npz archive ({type(err).__name__}: {err}); {expected}") from None
    if "images" not in arrays or "labels" not in arrays:
        raise DatasetError(f"{path} has keys {files}, lacks 'images' or 'labels'; {expected}")
    images, labels = arrays["images"], arrays["labels"]
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
        raise DatasetError(f"{path}: 'images' is {images.dtype} {images.shape}; {expected}, square images")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: 'labels' is {labels.dtype} {labels.shape} for {len(images)} images; {expected}")
    if len(labels) and labels.min() < 0:
        raise DatasetError(f"{path}: labels must be >= 0, found {labels.min()}")
    images = torch.from_numpy(images)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.from_numpy(labels).long(), classes


def _channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units of uint8 ``(N, C, H, W)``, in float64, chunk by chunk."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].double().div_(255)
        total += block.sum(dim=(0, 2, 3))
        squares += block.square().sum(dim=(0, 2, 3))
    count = max(1, images.numel() // images.shape[1])
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


FACE_FOLDER_LAYOUT = "root/train/<identity>/*.jpg (training identities) and root/test/<identity>/*.jpg (others)"
FACE_FOLDER_SOURCE = ("extract insightface's aligned 112 x 112 faces (CASIA-WebFace, MS1M: the train.rec of "
                      "https://github.com/deepinsight/insightface/tree/master/recognition/_datasets_) to JPEG files, "
                      "one folder per identity, and move the identities kept for testing to test/")


def _load_face_folder(root: str | os.PathLike | None, split: str = "train", image_size: int = 112) -> ImageFolderDataset:
    """Face identities in folders: ``root/train/<identity>/*.jpg`` (``split="train"``) or ``root/test/...``
    (``"test"``), each split's identities in sorted order, labelled from 0. The test identities must differ from
    the training ones (face verification scores identities never trained on)."""
    if root is None:
        raise DatasetError(f"face_folder needs data.root: the folder holding {FACE_FOLDER_LAYOUT}; {FACE_FOLDER_SOURCE}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"face_folder: {folder} not found (data.root={root}); expected {FACE_FOLDER_LAYOUT}; "
                           f"{FACE_FOLDER_SOURCE}")
    identities = _class_folders(folder)
    if split == "test" and (Path(root) / "train").is_dir():
        shared = sorted(set(identities) & set(_class_folders(Path(root) / "train")))
        if shared:
            raise DatasetError(f"face_folder: identities {_some(shared)} are in both {Path(root) / 'train'} and "
                               f"{folder}; the test identities must be unseen in training: move them to one of the two")
    samples = _ClassListFolder(str(folder), identities).samples if identities else []
    if not samples:
        raise DatasetError(f"face_folder: no .jpg files in identity folders under {folder}; expected "
                           f"{FACE_FOLDER_LAYOUT}")
    return ImageFolderDataset.from_samples(samples, identities, root=root, split=split, image_size=image_size,
                                           name="face_folder")


_IN_MEMORY_LOADERS = {"cifar10": _load_cifar, "cifar100": _load_cifar, "fashion_mnist": _load_fashion_mnist,
                      "npz": _load_npz}
_LISTED_FOLDERS = tuple(FOLDER_READERS)  # JPEG sets that list their files (sslsec.data.folders), for metric learning
# the one list of names (config reads it)
DATASET_NAMES = (*_IN_MEMORY_LOADERS, "imagenet_folder", *_LISTED_FOLDERS, "face_folder")
