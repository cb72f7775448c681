"""Face verification sets in their exact on-disk formats: insightface's pickled ``.bin`` (as Python 2 wrote it)
and LFW's ``pairs.txt`` over a ``<name>/<name>_<nnnn>.jpg`` folder. Tiny generated faces: one random pattern per
identity plus pixel noise, so a pair of one identity is near and of two far."""

from __future__ import annotations

import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg, encode_png


def identity_images(identities: int, per_identity: int, size: int = 16, channels: int = 3, noise: int = 10,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(identities * per_identity, C, S, S)`` images, identity-major, and their identities."""
    patterns = torch.randint(40, 216, (identities, channels, size, size), generator=torch.Generator().manual_seed(7))
    labels = torch.arange(identities).repeat_interleave(per_identity)
    jitter = torch.randint(-noise, noise + 1, (len(labels), channels, size, size),
                           generator=torch.Generator().manual_seed(seed))
    return (patterns[labels] + jitter).clamp(0, 255).to(torch.uint8), labels


def encode(image: torch.Tensor, fmt: str = "png") -> bytes:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_png(image) if fmt == "png" else encode_jpeg(image, quality=95)
    return encoded.numpy().tobytes()


def python2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """``pickle.dumps((bins, issame), protocol=2)`` as Python 2 writes it, its ``str`` images as (SHORT_)BINSTRING
    opcodes, which Python 3 reads back as bytes only with ``encoding="bytes"`` (insightface's sets are these)."""
    out = [b"\x80\x02"]  # PROTO 2

    def binstring(data: bytes) -> bytes:
        return b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data

    for items in ([binstring(data) for data in bins], [b"\x88" if same else b"\x89" for same in issame]):
        out.append(b"]")  # EMPTY_LIST, then its items in batches of 1000 as Python 2's pickler appends them
        for start in range(0, len(items), 1000):
            out += [b"(", *items[start:start + 1000], b"e"]  # MARK ... APPENDS
    out.append(b"\x86.")  # TUPLE2, STOP
    return b"".join(out)


def write_bin(path: Path, pairs: int = 20, size: int = 16, fmt: str = "png", python2: bool = True,
              numpy_entries: bool = False, corrupt_entry: int | None = None,
              channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """An insightface ``.bin`` set: images ``2i`` and ``2i + 1`` form pair ``i``, same and different pairs in
    alternating blocks of ``pairs / 20`` (lfw.bin: 300 of 6000), so each of 10 consecutive folds holds both. Returns the images written (uint8 ``(2P, C, S, S)``,
    exact in PNG) and ``issame`` ``(P,)``."""
    identities = 6
    pool, labels = identity_images(identities, 4, size, channels)
    issame = (torch.arange(pairs) // max(1, pairs // 20)) % 2 == 0
    generator = torch.Generator().manual_seed(1)
    chosen = []
    for same in issame.tolist():
        first, second = torch.randint(identities, (2,), generator=generator).tolist()
        second = first if same else (first + 1 + second % (identities - 1)) % identities
        shot0, shot1 = torch.randint(4, (2,), generator=generator).tolist()
        if same and shot1 == shot0:  # two photos of one identity, never one photo twice
            shot1 = (shot0 + 1) % 4
        chosen += [first * 4 + shot0, second * 4 + shot1]
    images = pool[torch.tensor(chosen)]
    bins = [encode(image, fmt) for image in images]
    if corrupt_entry is not None:
        bins[corrupt_entry] = bins[corrupt_entry][: len(bins[corrupt_entry]) // 3]  # a truncated file
    entries = [np.frombuffer(data, dtype=np.uint8) for data in bins] if numpy_entries else bins
    content = python2_pickle(bins, issame.tolist()) if python2 else pickle.dumps((entries, issame.numpy()))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(content)
    return images, issame


def write_lfw_folder(root: Path, folds: int = 2, per_fold: int = 3, size: int = 20,
                     header: str | None = None) -> list[tuple[str, int, str, int]]:
    """LFW's layout: ``root/<name>/<name>_<nnnn>.jpg`` (numbered from 1) and ``root/pairs.txt`` with the header
    ``folds per_fold`` and per fold ``per_fold`` same lines ``name n1 n2`` then ``per_fold`` different lines
    ``name1 n1 name2 n2``, tab-separated as LFW's. Returns the pairs in file order as (name0, n0, name1, n1)."""
    names = ["Ada_Lovelace", "Alan_Turing", "Grace_Hopper", "John_von_Neumann"]
    images, labels = identity_images(len(names), 3, size, seed=3)
    for image, label in zip(images, labels.tolist()):
        name = names[label]
        number = 1 + sum(1 for earlier in (root / name).glob("*.jpg")) if (root / name).exists() else 1
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"{name}_{number:04d}.jpg").write_bytes(encode(image, "jpeg"))
    pairs, lines = [], [header or f"{folds}\t{per_fold}"]
    for fold in range(folds):
        for i in range(per_fold):
            name = names[(fold + i) % len(names)]
            first, second = 1 + i % 3, 1 + (i + 1) % 3
            pairs.append((name, first, name, second))
            lines.append(f"{name}\t{first}\t{second}")
        for i in range(per_fold):
            name0, name1 = names[(fold + i) % len(names)], names[(fold + i + 1) % len(names)]
            pairs.append((name0, 1 + i % 3, name1, 1 + (i + 2) % 3))
            lines.append(f"{name0}\t{1 + i % 3}\t{name1}\t{1 + (i + 2) % 3}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return pairs
