"""The batch loader: one process's shard of a data set, as uint8 batches cut on the training device.

In-memory data is moved to the device once and batches are cut there by index (airbench's data path); folder
data goes through DataLoader workers. :class:`BatchLoader` yields ``(images uint8 (B, C, H, W), labels int64
(B,))``; augmentation (:mod:`sslsec.augment`) then runs on the whole batch there.

Example::

    train = load_dataset("cifar10", "data/cifar10", download=True)
    loader = BatchLoader(train, 256, shuffle=True, drop_last=True, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader: ...
"""

from __future__ import annotations

import functools
import math
import os
import sys

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sslsec.data.datasets import CorruptImageError, DatasetError, ImageArrays, ImageFolderDataset, decoder_reason

__all__ = ["BatchLoader", "class_balanced_batches"]


def class_balanced_batches(labels: Tensor, classes_per_batch: int, images_per_class: int, num_batches: int,
                           generator: torch.Generator) -> Tensor:
    """``num_batches`` batches of ``classes_per_batch`` (P) classes x ``images_per_class`` (K) images: ``(B, P * K)``.

    Each batch holds K images of each of P distinct classes, class after class. Every class's images are
    shuffled once and dealt out K at a time, and the P classes of a batch are drawn without replacement with
    probability proportional to the images each has left, so an epoch of ``N // (P * K)`` batches covers the
    images about once. A class with fewer than K images left (or in all) starts its shuffled list over, i.e. is
    drawn with replacement, as the SEC authors' sampler does.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    present = labels.unique()
    if len(present) < classes_per_batch:
        raise ValueError(f"a batch needs {classes_per_batch} classes ({classes_per_batch * images_per_class} images "
                         f"of {images_per_class} per class) but the data has {len(present)}; lower the batch size "
                         "or raise images_per_class")
    pools = [torch.nonzero(labels == c).flatten() for c in present.tolist()]
    pools = [pool[torch.randperm(len(pool), generator=generator)] for pool in pools]
    dealt = [0] * len(pools)
    left = torch.tensor([len(pool) for pool in pools], dtype=torch.float64)
    batches = torch.empty(num_batches, classes_per_batch * images_per_class, dtype=torch.int64)
    for b in range(num_batches):
        # A tiny floor keeps exhausted classes drawable when fewer than P classes have images left.
        chosen = torch.multinomial(left.clamp_min(0) + 1e-6, classes_per_batch, replacement=False,
                                   generator=generator)
        for slot, c in enumerate(chosen.tolist()):
            pool = pools[c]
            take = torch.arange(dealt[c], dealt[c] + images_per_class) % len(pool)
            batches[b, slot * images_per_class:(slot + 1) * images_per_class] = pool[take]
            dealt[c] += images_per_class
            left[c] -= images_per_class
    return batches


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
    overrides this choice). A file that does not decode raises :class:`CorruptImageError` naming it, in the main
    process whatever the workers; with the data set's ``skip_corrupt`` it is skipped instead, with one warning per
    file, and the next good image of its class takes its place (so every rank's batch keeps its size).

    With ``images_per_class`` (K, metric learning) every global batch is ``B * W / K`` classes x K images
    (:func:`class_balanced_batches`, seeded with ``seed + epoch``; each rank takes ``B / K`` whole classes) and
    ``drop_last`` is implied.

    Resume: ``set_epoch(epoch, start_batch=k)`` makes the next iteration yield batches ``k, k+1, ...`` of
    ``epoch``, exactly those an uninterrupted run would have yielded.

    Shapes:
        yields ``images`` uint8 ``(B, C, H, W)`` and ``labels`` int64 ``(B,)``, both on ``device``.
    """

    def __init__(self, dataset: ImageArrays | ImageFolderDataset, batch_size: int, *, shuffle: bool,
                 drop_last: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", num_workers: int | None = None,
                 decode_on_device: bool | None = None, images_per_class: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if images_per_class is not None and (images_per_class < 1 or batch_size % images_per_class):
            raise ValueError(f"the batch of {batch_size} images per process must be a multiple of images_per_class="
                             f"{images_per_class} (whole classes per process)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.drop_last, self.images_per_class = drop_last or images_per_class is not None, images_per_class
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.epoch, self.start_batch = 0, 0
        if isinstance(dataset, ImageArrays):
            resident = dataset.to(self.device)  # no copy when the split already lives there (ImageArrays.to)
            self._images, self._labels = resident.images, resident.labels
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
        global_batch = self.batch_size * self.world_size
        if self.images_per_class is not None:
            batches = class_balanced_batches(self.dataset.labels, global_batch // self.images_per_class,
                                             self.images_per_class, len(self),
                                             torch.Generator().manual_seed(self.seed + epoch))
            return [torch.tensor_split(batch, self.world_size)[self.rank] for batch in batches]
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        return [torch.tensor_split(order[b * global_batch:(b + 1) * global_batch], self.world_size)[self.rank]
                for b in range(len(self))]

    def __iter__(self):
        if isinstance(self.dataset, ImageArrays):
            for indices in self.shard_indices(self.epoch)[self.start_batch:]:
                indices = indices.to(self.device, non_blocking=True)
                yield self._images[indices], self._labels[indices]
            return
        for images, labels, indices, failures in self._folder_loader:
            if isinstance(images, list):  # encoded JPEG bytes: decode on the device
                images, failed = self.dataset.decode_checked(images, self.device)
                failures = {**failed, **failures}  # a file that could not be read: its own reason
            if failures:
                images = self._replace_corrupt(images, labels, indices, failures)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _replace_corrupt(self, images: Tensor, labels: Tensor, indices: list[int], failures: dict[int, str]) -> Tensor:
        """The batch with each failing image replaced by the next good image of its class (``skip_corrupt``), or a
        :class:`CorruptImageError` naming the first failing file."""
        folder = self.dataset
        for position, reason in sorted(failures.items()):
            path = folder.paths[indices[position]]
            if not folder.skip_corrupt:
                raise CorruptImageError(path, reason)
            if path not in folder.corrupt:
                folder.corrupt[path] = reason
                # tqdm's write: on a line of its own above a progress bar (the trainer's), as plain print elsewhere
                tqdm.write(f"warning: skipped {path}, which does not decode ({reason}); {len(folder.corrupt)} corrupt "
                           f"file{'s' if len(folder.corrupt) > 1 else ''} skipped so far (data.skip_corrupt=true)",
                           file=sys.stderr)
            images[position] = _next_good_image(folder, indices[position]).to(images.device)
        return images


class _ShardBatches:
    """The batch sampler of a folder DataLoader: the loader's current epoch, from its start batch."""

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader

    def __iter__(self):
        for indices in self.loader.shard_indices(self.loader.epoch)[self.loader.start_batch:]:
            yield indices.tolist()

    def __len__(self) -> int:
        return len(self.loader) - self.loader.start_batch


def _next_good_image(folder: ImageFolderDataset, index: int) -> Tensor:
    """The decoded image of the first file of ``index``'s class after it (in the data set's order) that decodes."""
    label = folder.labels[index]
    same_class = (folder.labels == label).nonzero().flatten().tolist()
    start = same_class.index(index)
    for other in same_class[start + 1:] + same_class[:start]:
        if folder.paths[other] not in folder.corrupt:
            try:
                return folder[other][0]
            except CorruptImageError as error:
                folder.corrupt[error.path] = error.reason
    raise DatasetError(f"no file of class {folder.classes[int(label)]!r} decodes (e.g. {folder.paths[index]}); "
                       "data.skip_corrupt needs at least one good image per class")


class _FolderItems(torch.utils.data.Dataset):
    """Worker-side view of a folder: decoded images on CPU, or encoded bytes for GPU decoding.

    An item is ``(image or bytes, label, index, reason)``: ``reason`` is None, or why the file could not be read or
    decoded (its image then black), so that the main process, not a worker, reports it or skips it.
    """

    def __init__(self, folder: ImageFolderDataset, decode: bool) -> None:
        self.folder, self.decode = folder, decode

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, str | None]:
        label = int(self.folder.labels[index])
        try:
            data = self.folder.read_encoded(index)
        except OSError as error:
            size = self.folder.image_size
            blank = torch.zeros((3, size, size) if self.decode else (0,), dtype=torch.uint8)
            return blank, label, index, decoder_reason(error)
        if not self.decode:
            return data, label, index, None
        images, failures = self.folder.decode_checked([data])
        return images[0], label, index, failures.get(0)


def _collate(items: list[tuple[Tensor, int, int, str | None]], decode: bool, image_size: int):
    """``(images, labels, indices, failures)``: ``failures`` maps a position in the batch to its reason."""
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    indices = [item[2] for item in items]
    failures = {position: item[3] for position, item in enumerate(items) if item[3] is not None}
    if not decode:
        return [item[0] for item in items], labels, indices, failures
    if not items:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8), labels, indices, failures
    return torch.stack([item[0] for item in items]), labels, indices, failures


def _folder_loader(folder: ImageFolderDataset, loader: BatchLoader, workers: int, device: torch.device,
                   decode_in_workers: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _FolderItems(folder, decode_in_workers), batch_sampler=_ShardBatches(loader), num_workers=workers,
        collate_fn=functools.partial(_collate, decode=decode_in_workers, image_size=folder.image_size),
        # Not persistent: workers forked later (by another loader) would inherit a live iterator and trip on it.
        pin_memory=device.type == "cuda")

