"""uint8 image data sets and the batch loader that shards them over processes.

Two kinds of data set share one interface (``classes``, ``num_classes``, ``channels``, ``image_size``,
``mean``, ``std``, ``name``, ``labels``, ``len()``, ``subset()``):

- :class:`ImageArrays`: a whole data set in memory as one uint8 tensor (CIFAR-10/100, Fashion-MNIST, npz).
- :class:`ImageFolderDataset`: an ImageNet-style JPEG folder, decoded batch by batch.

:class:`BatchLoader` yields ``(images uint8 (B, C, H, W), labels int64 (B,))`` on the training device;
augmentation (:mod:`sslsec.augment`) then runs on the whole batch there.

Example::

    train = load_dataset("cifar10", "data/cifar10", download=True)
    loader = BatchLoader(train, 256, shuffle=True, drop_last=True, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader: ...
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASET_NAMES", "DatasetError", "ImageArrays", "ImageFolderDataset", "BatchLoader", "load_dataset",
    "stratified_first", "validation_split",
]

DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "npz", "imagenet_folder")
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


class DatasetError(ValueError):
    """A data set is missing or malformed; the message names the path and how to get or fix the data."""


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
        return ImageArrays(self.images[indices], self.labels[indices], self.classes, self.mean, self.std, self.name)


class ImageFolderDataset:
    """ImageNet-style JPEG folder ``root/{train,val}/<class>/*.JPEG`` served as uint8 ``(3, S, S)`` images.

    Every image is decoded as RGB, resized so its shorter side is ``image_size`` and center-cropped to
    ``image_size x image_size``, so batches stack. ``class_list`` (a text file, one class folder name per line,
    e.g. the ImageNet-100 list, or a list of names) keeps only those classes; labels follow sorted class names.
    Split ``"test"`` reads the ``val`` folder.
    """

    channels = 3
    mean, std = STATS["imagenet_folder"]

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 224,
                 class_list: str | os.PathLike | list[str] | None = None, name: str = "imagenet_folder") -> None:
        folder = Path(root) / {"train": "train", "test": "val"}[split]
        layout = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"
        if not folder.is_dir():
            raise DatasetError(f"image folder {folder} not found; expected the layout {layout}")
        classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        if class_list is not None:
            wanted = _read_class_list(class_list)
            missing = sorted(set(wanted) - set(classes))
            if missing:
                raise DatasetError(f"{len(missing)} classes of the class list are not folders in {folder}: "
                                   f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
            classes = sorted(set(wanted))
        paths, labels = [], []
        for label, class_name in enumerate(classes):
            files = sorted(p for p in (folder / class_name).iterdir() if p.suffix.lower() in _JPEG_SUFFIXES)
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        if not paths:
            raise DatasetError(f"no .JPEG/.jpg files under {folder}; expected the layout {layout}")
        self.root, self.split, self.image_size, self.name = Path(root), split, int(image_size), name
        self.classes, self.paths = classes, paths
        self.labels = torch.tensor(labels, dtype=torch.int64)

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

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Decoded uint8 ``(3, S, S)`` image and its label."""
        try:
            image = self.decode([self.read_encoded(index)])[0]
        except RuntimeError as err:
            raise DatasetError(f"cannot decode {self.paths[index]} as JPEG: {err}") from None
        return image, int(self.labels[index])


@contextlib.contextmanager
def _torchvision_io() -> Iterator[None]:
    """Silence the DeprecationWarning torchvision 0.29 raises on every call of its image codecs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _read_class_list(class_list: str | os.PathLike | list[str]) -> list[str]:
    if isinstance(class_list, (list, tuple)):
        return [str(name) for name in class_list]
    path = Path(class_list)
    if not path.is_file():
        raise DatasetError(f"class list {path} not found; it is a text file with one class folder name per line")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", *,
                 download: bool = False, image_size: int | None = None,
                 class_list: str | os.PathLike | list[str] | None = None,
                 limit: int | None = None) -> ImageArrays | ImageFolderDataset:
    """Load data set ``name`` (one of :data:`DATASET_NAMES`) from ``root``, split ``"train"`` or ``"test"``.

    Default roots: ``data/cifar10``, ``data/cifar100`` (torchvision's layout inside), and
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``); ``npz`` and
    ``imagenet_folder`` need ``root``. ``download`` fetches CIFAR through torchvision. ``image_size`` and
    ``class_list`` apply to ``imagenet_folder`` (default 224 px). ``limit`` keeps a class-balanced subset of
    that many samples (:func:`stratified_first`), for CPU-scale runs.

    Raises:
        DatasetError: the files are missing or malformed; the message says how to get them.
    """
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of samples (or None for all), got {limit}")
    if name == "imagenet_folder":
        if root is None:
            raise DatasetError("imagenet_folder needs root: the folder holding train/<class>/*.JPEG and val/")
        dataset = ImageFolderDataset(root, split, image_size or 224, class_list)
    else:
        if class_list is not None:
            raise DatasetError(f"class_list applies to imagenet_folder only, not {name}")
        dataset = _IN_MEMORY_LOADERS[name](name, root, split, download)
        if image_size is not None and image_size != dataset.image_size:
            raise DatasetError(f"{name} images are {dataset.image_size} px, got image_size={image_size}; leave it "
                             "unset (the augmentation's crop size sets the view size)")
    if limit is not None:
        dataset = dataset.subset(stratified_first(dataset.labels, limit))
    return dataset


def _load_cifar(name: str, root, split: str, download: bool) -> ImageArrays:
    """CIFAR-10/100 through torchvision's own reader (pickled batches in ``root/cifar-10-batches-py``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    reader = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(root if root is not None else f"data/{name}")
    try:
        data = reader(str(root), train=split == "train", download=download)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise DatasetError(
            f"cannot read {name} from {root / reader.base_folder} ({type(err).__name__}: {err}). Download it with "
            f"data.download=true (load_dataset(..., download=True)) or set data.root to the folder that holds "
            f"{reader.base_folder}/") from None
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


_IN_MEMORY_LOADERS = {"cifar10": _load_cifar, "cifar100": _load_cifar, "fashion_mnist": _load_fashion_mnist,
                      "npz": _load_npz}


class BatchLoader:
    """Batches of one process's shard of a data set, as uint8 images and int64 labels on ``device``.

    Sharding rule (every process computes the same global order, no communication): for epoch ``e`` the order
    is ``torch.randperm(N, generator seeded with seed + e)`` if ``shuffle`` else ``arange(N)``; global batch
    ``b`` is ``order[b*B*W:(b+1)*B*W]`` with ``B = batch_size`` (per process) and ``W = world_size``; rank ``r``
    takes chunk ``r`` of ``torch.tensor_split(global_batch, W)``. With ``drop_last`` an incomplete global batch
    is dropped; without it the ranks together see every sample exactly once per epoch (a rank's last batch may
    then be smaller, even empty ``(0, C, H, W)``, so that every rank yields ``len(loader)`` batches and
    collective ops stay in step).

    In-memory data (:class:`ImageArrays`) is moved to ``device`` once and batches are cut there by index:
    no DataLoader, no workers. Folder data (:class:`ImageFolderDataset`) goes through a torch DataLoader with
    ``num_workers`` workers (default ``min(8, cpu count)``) fed the same index lists; on CUDA the workers only
    read bytes and JPEGs are decoded on the GPU (nvJPEG), on CPU the workers decode (``decode_on_device``
    overrides this choice).

    Resume: ``set_epoch(epoch, start_batch=k)`` makes the next iteration yield batches ``k, k+1, ...`` of
    ``epoch``, exactly those an uninterrupted run would have yielded.

    Shapes:
        yields ``images`` uint8 ``(B, C, H, W)`` and ``labels`` int64 ``(B,)``, both on ``device``.
    """

    def __init__(self, dataset: ImageArrays | ImageFolderDataset, batch_size: int, *, shuffle: bool,
                 drop_last: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", num_workers: int | None = None,
                 decode_on_device: bool | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.epoch, self.start_batch = 0, 0
        if isinstance(dataset, ImageArrays):
            self._images = _to_device(dataset.images, self.device)
            self._labels = _to_device(dataset.labels, self.device)
        else:
            workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
            on_device = self.device.type == "cuda" if decode_on_device is None else decode_on_device
            self._folder_loader = _folder_loader(dataset, self, workers, self.device, not on_device)

    def __len__(self) -> int:
        """Batches per epoch (for every rank)."""
        global_batch = self.batch_size * self.world_size
        return len(self.dataset) // global_batch if self.drop_last else math.ceil(len(self.dataset) / global_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` next, starting at batch ``start_batch`` (to resume mid-epoch)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def shard_indices(self, epoch: int) -> list[Tensor]:
        """This rank's sample indices for every batch of ``epoch`` (the sharding rule above)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        global_batch = self.batch_size * self.world_size
        return [torch.tensor_split(order[b * global_batch:(b + 1) * global_batch], self.world_size)[self.rank]
                for b in range(len(self))]

    def __iter__(self):
        if isinstance(self.dataset, ImageArrays):
            for indices in self.shard_indices(self.epoch)[self.start_batch:]:
                indices = indices.to(self.device, non_blocking=True)
                yield self._images[indices], self._labels[indices]
            return
        for images, labels in self._folder_loader:
            if isinstance(images, list):  # encoded JPEG bytes: decode on the device
                images = self.dataset.decode(images, self.device)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class _ShardBatches:
    """The batch sampler of a folder DataLoader: the loader's current epoch, from its start batch."""

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader

    def __iter__(self):
        for indices in self.loader.shard_indices(self.loader.epoch)[self.loader.start_batch:]:
            yield indices.tolist()

    def __len__(self) -> int:
        return len(self.loader) - self.loader.start_batch


class _FolderItems(torch.utils.data.Dataset):
    """Worker-side view of a folder: decoded images on CPU, or encoded bytes for GPU decoding."""

    def __init__(self, folder: ImageFolderDataset, decode: bool) -> None:
        self.folder, self.decode = folder, decode

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.folder[index] if self.decode else (self.folder.read_encoded(index), int(self.folder.labels[index]))


def _collate(items: list[tuple[Tensor, int]], decode: bool, image_size: int):
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    if not decode:
        return [image for image, _ in items], labels
    if not items:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8), labels
    return torch.stack([image for image, _ in items]), labels


def _folder_loader(folder: ImageFolderDataset, loader: BatchLoader, workers: int, device: torch.device,
                   decode_in_workers: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _FolderItems(folder, decode_in_workers), batch_sampler=_ShardBatches(loader), num_workers=workers,
        collate_fn=functools.partial(_collate, decode=decode_in_workers, image_size=folder.image_size),
        # Not persistent: workers forked later (by another loader) would inherit a live iterator and trip on it.
        pin_memory=device.type == "cuda")
