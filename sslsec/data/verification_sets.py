"""Face verification sets: lists of image pairs labelled "same identity" or not, in the formats face toolkits ship.

- insightface's ``.bin`` files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...): a pickle of
  ``(bins, issame_list)``; ``bins`` are the encoded JPEG/PNG files of ``2 P`` images, images ``2i`` and ``2i + 1``
  forming pair ``i``, ``issame_list`` ``P`` booleans. Written by Python 2, so read with ``encoding="bytes"`` as
  insightface reads them; decoded by torchvision (no mxnet). :func:`load_bin`.
- LFW's ``pairs.txt`` over a folder of ``<name>/<name>_<nnnn>.jpg`` images: a header (``folds pairs_per_fold``, or
  one count), then ``name n1 n2`` (same identity) and ``name1 n1 name2 n2`` (different) lines. :func:`load_pairs_txt`.

Either gives a :class:`VerificationSet`: the images as a data set :func:`~sslsec.eval.features.extract_features`
takes, and the pairs as indices into it::

    lfw = load_verification_set("data/faces_webface_112x112/lfw.bin", image_size=112)
    lfw.images, lfw.index0, lfw.index1, lfw.issame    # ImageArrays (2P, 3, 112, 112); (P,) (P,) (P,) bool
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from sslsec.data.datasets import (DatasetError, ImageArrays, ImageFolderDataset, _torchvision_io, decoder_reason)

__all__ = ["VerificationSet", "load_bin", "load_pairs_txt", "load_verification_set"]

FACE_MEAN = FACE_STD = (0.5, 0.5, 0.5)  # insightface's normalization, ((x / 255) - 0.5) / 0.5


@dataclass
class VerificationSet:
    """Pairs of images to verify.

    Attributes:
        name: the set's name (the file's or folder's stem: ``"lfw"``).
        images: the images the pairs index, an :class:`ImageArrays` (``.bin``) or :class:`ImageFolderDataset`
            (folder); each image once, labelled by identity where the format names identities.
        index0, index1: int64 ``(P,)`` indices into ``images`` of each pair's two images.
        issame: bool ``(P,)``, whether pair ``i`` shows one identity.
        folds: the consecutive folds the file defines (LFW's ``pairs.txt`` header ``10 300``), None where it
            defines none (score with any number of folds).
    """

    name: str
    images: Any
    index0: Tensor
    index1: Tensor
    issame: Tensor
    folds: int | None = None

    def __len__(self) -> int:
        return len(self.issame)

    def normalized_as(self, mean: Sequence[float], std: Sequence[float]) -> VerificationSet:
        """The same pairs with the images normalized by ``mean`` and ``std`` (those of the data a backbone was
        trained on, which it expects) rather than the face toolkits' 0.5 / 0.5."""
        images = copy.copy(self.images)  # shares the pixels
        images.mean, images.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        return dataclasses.replace(self, images=images)


def load_verification_set(path: str | os.PathLike, image_size: int | None = None,
                          channels: int = 3) -> VerificationSet:
    """:func:`load_bin` for a file, :func:`load_pairs_txt` for a folder (``image_size`` 112 if None)."""
    path = Path(path)
    if path.is_file():
        return load_bin(path, image_size, channels)
    if path.is_dir():
        return load_pairs_txt(path, image_size or 112)
    raise DatasetError(f"verification set {path} not found; give an insightface .bin file or a folder with a "
                       "pairs.txt (eval.verification_sets)")


def load_bin(path: str | os.PathLike, image_size: int | None = None, channels: int = 3) -> VerificationSet:
    """An insightface ``.bin`` verification set, decoded to uint8 ``(2P, channels, S, S)`` in memory.

    Args:
        path: the ``.bin`` file.
        image_size: ``S``; images of another size are resized (shorter side) and center-cropped to it.
            None: the first image's size (112 for insightface's sets).
        channels: 3 (RGB) or 1 (grayscale, for a backbone trained on one channel).
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import center_crop, resize

    path = Path(path)
    bins, issame = _read_pickle(path)
    mode = {3: ImageReadMode.RGB, 1: ImageReadMode.GRAY}[channels]
    images = []
    for entry in range(2 * len(issame)):  # as insightface: 2P images, any extra entries unused
        data = torch.frombuffer(bytearray(_entry_bytes(bins[entry], path, entry)), dtype=torch.uint8)
        try:
            with _torchvision_io():
                image = decode_image(data, mode=mode)
        except RuntimeError as err:
            raise DatasetError(f"{path}: entry {entry} (pair {entry // 2}) does not decode: {decoder_reason(err)}; "
                               "the file is damaged, download it again") from None
        size = image_size or (images[0].shape[-1] if images else min(image.shape[-2:]))
        if tuple(image.shape[-2:]) != (size, size):
            image = center_crop(resize(image, [size], antialias=True), [size, size])
        images.append(image)
    pairs = len(issame)
    data = ImageArrays(torch.stack(images), torch.arange(2 * pairs) // 2, [f"pair {i}" for i in range(pairs)],
                       FACE_MEAN[:channels], FACE_STD[:channels], path.stem)
    return VerificationSet(path.stem, data, torch.arange(0, 2 * pairs, 2), torch.arange(1, 2 * pairs, 2),
                           torch.as_tensor(issame, dtype=torch.bool))


def _read_pickle(path: Path) -> tuple[Any, list[bool]]:
    try:
        with open(path, "rb") as file:
            content = pickle.load(file, encoding="bytes")  # Python 2's str -> bytes, as insightface reads them
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise DatasetError(f"{path} is not an insightface .bin verification set (a pickled (images, issame) "
                           f"pair): {type(err).__name__}: {err}") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise DatasetError(f"{path} holds a {type(content).__name__}, not the pair (encoded images, issame list) "
                           "of an insightface .bin verification set")
    bins, issame = content
    issame = [bool(value) for value in np.asarray(issame).reshape(-1)]
    if not issame or len(bins) < 2 * len(issame):
        raise DatasetError(f"{path} holds {len(bins)} images for {len(issame)} pairs; an insightface .bin set "
                           "holds two images per pair")
    return bins, issame


def _entry_bytes(entry: Any, path: Path, index: int) -> bytes:
    """An encoded image as bytes: Python 2's str (read as bytes), bytes, or a numpy array or scalar of them."""
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return bytes(entry)
    if isinstance(entry, (np.ndarray, np.generic)):
        return np.asarray(entry).tobytes()
    raise DatasetError(f"{path}: entry {index} (pair {index // 2}) is a {type(entry).__name__}, not the bytes "
                       "of an encoded image")


def load_pairs_txt(folder: str | os.PathLike, image_size: int = 112,
                   pairs_file: str | os.PathLike | None = None) -> VerificationSet:
    """LFW's ``pairs.txt`` (``folder/pairs.txt`` unless ``pairs_file``) over ``folder/<name>/<name>_<nnnn>.jpg``.

    The header is ``folds pairs_per_fold`` (``pairs.txt``: each fold its same pairs, then its different
    ones, kept in file order, so 10 folds of :func:`~sslsec.eval.verification.verification_metrics` are the
    file's) or one count ``N`` (``pairsDevTest.txt``: ``N`` same pairs, then ``N`` different ones, interleaved
    here so that consecutive folds hold both kinds). Images are decoded batch by batch, resized (shorter side)
    and center-cropped to ``image_size``; each file once, labelled by its name's index.
    """
    folder = Path(folder)
    pairs_file = Path(pairs_file) if pairs_file is not None else folder / "pairs.txt"
    if not pairs_file.is_file():
        raise DatasetError(f"{pairs_file} not found; an LFW-style verification folder holds a pairs.txt beside "
                           "its <name>/<name>_<nnnn>.jpg images")
    lines = [(number, line.split()) for number, line in enumerate(pairs_file.read_text().splitlines(), 1)
             if line.strip()]
    if not lines:
        raise DatasetError(f"{pairs_file} is empty; it starts with 'folds pairs_per_fold' or a count of pairs")
    pairs = [_parse_pair(pairs_file, number, fields, folder) for number, fields in lines[1:]]
    expected, blocks = _header(pairs_file, lines[0])
    if len(pairs) != expected:
        raise DatasetError(f"{pairs_file}: its header ({' '.join(lines[0][1])}) announces {expected} pairs, but "
                           f"{len(pairs)} follow")
    if blocks == 1:
        half = len(pairs) // 2
        pairs = [pair for both in zip(pairs[:half], pairs[half:]) for pair in both]
    paths = sorted({path for first, second, _ in pairs for path in (first, second)})
    position = {path: i for i, path in enumerate(paths)}
    names = sorted({Path(path).parent.name for path in paths})
    label = {name: i for i, name in enumerate(names)}
    samples = [(path, label[Path(path).parent.name]) for path in paths]
    images = ImageFolderDataset.from_samples(samples, names, root=folder, split="test", image_size=image_size,
                                             name=folder.name)
    images.mean, images.std = FACE_MEAN, FACE_STD
    index0 = torch.tensor([position[first] for first, _, _ in pairs])
    index1 = torch.tensor([position[second] for _, second, _ in pairs])
    issame = torch.tensor([same for _, _, same in pairs])
    return VerificationSet(folder.name, images, index0, index1, issame, folds=None if blocks == 1 else blocks)


def _header(pairs_file: Path, line: tuple[int, list[str]]) -> tuple[int, int]:
    """``(pairs expected, folds)`` from the first line: ``folds pairs_per_fold`` or a count of same pairs."""
    number, fields = line
    try:
        values = [int(value) for value in fields]
    except ValueError:
        values = []
    if len(values) == 2 and min(values) > 0:
        return 2 * values[0] * values[1], values[0]
    if len(values) == 1 and values[0] > 0:
        return 2 * values[0], 1
    raise DatasetError(f"{pairs_file}:{number}: the header {' '.join(fields)!r} is neither 'folds pairs_per_fold' "
                       "nor a count of pairs")


def _parse_pair(pairs_file: Path, number: int, fields: list[str], folder: Path) -> tuple[str, str, bool]:
    """``(path0, path1, issame)`` of one line ``name n1 n2`` or ``name1 n1 name2 n2``."""
    try:
        if len(fields) == 3:
            name, first, second = fields
            entries, same = [(name, int(first)), (name, int(second))], True
        elif len(fields) == 4:
            entries, same = [(fields[0], int(fields[1])), (fields[2], int(fields[3]))], False
        else:
            raise ValueError
    except ValueError:
        raise DatasetError(f"{pairs_file}:{number}: {' '.join(fields)!r} is not a pair ('name n1 n2' for one "
                           "identity, 'name1 n1 name2 n2' for two)") from None
    paths = [folder / name / f"{name}_{index:04d}.jpg" for name, index in entries]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{pairs_file}:{number}: {' '.join(fields)!r} names {missing[0]}, which does not "
                           "exist; the images lie at <folder>/<name>/<name>_<nnnn>.jpg")
    return str(paths[0]), str(paths[1]), same
