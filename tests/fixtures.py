"""Small data sets written in their real on-disk formats, for tests of anything that reads data.

Each writer returns what it wrote (uint8 images ``(N, C, H, W)`` and int64 labels per split) so a test can
compare what :func:`sslsec.data.load_dataset` reads back against it.

CIFAR is read by torchvision's own ``CIFAR10``/``CIFAR100`` classes, which check every file against the md5
of the official release; :func:`patch_cifar_checksums` points those class attributes at the fixture's md5s
(with pytest's ``monkeypatch``, so the change is undone after the test).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sslsec.config import Config, save_config
from sslsec.data import ImageArrays
from sslsec.methods import build_projection_head
from sslsec.models import build_backbone, save_backbone
from torchvision.io import encode_jpeg

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, C, H, W), labels int64 (N,)

CIFAR_LAYOUT = {  # name -> (folder, train files, test files, meta file, meta key, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


def random_split(n: int, channels: int, size: int, num_classes: int, seed: int) -> Split:
    """``n`` random uint8 images with labels cycling through the classes (so every class is present)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    return images, labels


def write_cifar(root: Path, name: str = "cifar10", n_per_file: int = 6, n_test: int = 10) -> dict[str, Split]:
    """Pickled CIFAR batches as in the official ``cifar-*-python.tar.gz``, under ``root/<folder>/``."""
    folder, train_files, test_files, meta_file, meta_key, label_key = CIFAR_LAYOUT[name]
    num_classes = 10 if name == "cifar10" else 100
    base = Path(root) / folder
    base.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, files, n in (("train", train_files, n_per_file), ("test", test_files, n_test)):
        parts = [random_split(n, 3, 32, num_classes, seed=100 * len(split) + i) for i, f in enumerate(files)]
        for file_name, (images, labels) in zip(files, parts):
            entry = {"batch_label": file_name, "data": images.reshape(len(images), -1).numpy(),
                     label_key: labels.tolist(), "filenames": [f"{i}.png" for i in range(len(images))]}
            _pickle(base / file_name, entry)
        written[split] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    _pickle(base / meta_file, {meta_key: [f"class_{c}" for c in range(num_classes)]})
    return written


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def patch_cifar_checksums(monkeypatch, root: Path, name: str = "cifar10") -> None:
    """Make torchvision's CIFAR class accept the fixture files in ``root`` (their md5s replace the official)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    reader = CIFAR10 if name == "cifar10" else CIFAR100
    base = Path(root) / reader.base_folder
    monkeypatch.setattr(reader, "train_list", [[f, _md5(base / f)] for f, _ in reader.train_list])
    monkeypatch.setattr(reader, "test_list", [[f, _md5(base / f)] for f, _ in reader.test_list])
    monkeypatch.setattr(reader, "meta", {**reader.meta, "md5": _md5(base / reader.meta["filename"])})


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """An idx file of unsigned bytes (as in MNIST/Fashion-MNIST), gzip-compressed."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> dict[str, Split]:
    """The four Fashion-MNIST idx ``.gz`` files in the flat layout of Debian's ``dataset-fashion-mnist``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images, labels = random_split(n, 1, 28, 10, seed=len(prefix))
        write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", images[:, 0].numpy())
        write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", labels.numpy().astype(np.uint8))
        written[split] = (images, labels)
    return written


def write_npz(root: Path, channels: int = 3, size: int = 8, n_train: int = 30, n_test: int = 12,
              num_classes: int = 3, classes: list[str] | None = None) -> dict[str, Split]:
    """``root/train.npz`` and ``root/test.npz`` with ``images`` (N x H x W [x C] uint8) and ``labels``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = random_split(n, channels, size, num_classes, seed=n)
        stored = images[:, 0] if channels == 1 else images.permute(0, 2, 3, 1)
        extra = {"classes": np.array(classes)} if classes else {}
        np.savez(root / f"{split}.npz", images=stored.numpy(), labels=labels.numpy(), **extra)
        written[split] = (images, labels)
    return written


def write_jpeg_folder(root: Path, classes: dict[str, int], split_folders: tuple[str, ...] = ("train", "val"),
                      sizes: tuple[tuple[int, int], ...] = ((40, 56), (64, 48))) -> None:
    """``root/<split>/<class>/<i>.JPEG``: ``classes[name]`` JPEGs per class, cycling through ``sizes`` (H, W).

    Each image is one flat colour whose red channel encodes the class index (``20 * index``), so a test can
    check decoded labels against pixels despite JPEG loss.
    """
    for split in split_folders:
        for index, (name, count) in enumerate(sorted(classes.items())):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = sizes[i % len(sizes)]
                image = torch.empty((3, height, width), dtype=torch.uint8)
                image[0], image[1], image[2] = 20 * index, 100, 200
                (folder / f"{name}_{i}.JPEG").write_bytes(_encode_jpeg(image))


def _encode_jpeg(image: torch.Tensor) -> bytes:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(image, quality=95).numpy().tobytes()


# --- backbones, features and runs for the evaluation tests ---------------------------------------------------

def clustered_features(n_per_class, num_classes=10, dim=32, spread=0.3, seed=0):
    """Gaussian clusters around random unit-scale centres: linearly separable for small ``spread``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def template_images(n_per_class, num_classes=10, channels=1, size=16, noise=12, seed=0):
    """uint8 images: one random pattern per class plus small pixel noise, so classes form tight clusters."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randint(40, 216, (num_classes, channels, size, size), generator=torch.Generator().manual_seed(99))
    labels = torch.arange(num_classes).repeat(n_per_class)
    pixels = templates[labels] + torch.randint(-noise, noise + 1, (len(labels), channels, size, size),
                                               generator=generator)
    return pixels.clamp(0, 255).to(torch.uint8), labels


def template_dataset(n_per_class, seed=0, channels=1):
    images, labels = template_images(n_per_class, channels=channels, seed=seed)
    return ImageArrays(images, labels, [str(c) for c in range(10)], (0.5,) * channels, (0.25,) * channels, "templates")


def small_cnn(in_channels=1, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_backbone("small_cnn", in_channels)


def write_template_npz(root, n_train=20, n_test=10):
    """``root/{train,test}.npz`` (``images`` uint8 N x H x W, ``labels``), the npz data set's format."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = template_images(n, seed=seed)
        np.savez(root / f"{split}.npz", images=images[:, 0].numpy(), labels=labels.numpy())
    return root


def write_run(run_dir, data_root, in_channels=1, backbone=True, method="simclr"):
    """A pretraining run directory as the trainer leaves it: config.yaml, backbone and head safetensors."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = Config(method=method, output_dir=str(run_dir))
    config.data.name, config.data.root = "npz", str(data_root)
    config.model.backbone, config.model.projection_hidden_dim, config.model.projection_dim = "small_cnn", 64, 16
    config.eval.probe_epochs, config.eval.knn_k = 20, 20
    config.trainer.mixed_precision = "no"  # fp32 on any machine
    save_config(config, run_dir / "config.yaml")
    with torch.random.fork_rng(devices=[]):  # the same weights whatever ran before (the diagnostics test needs it)
        torch.manual_seed(0)
        model = small_cnn(in_channels)
        head = build_projection_head(method, model.feature_dim, 64, 16)
    if backbone:
        save_backbone(model, run_dir / "backbone.safetensors", {"name": "small_cnn", "in_channels": in_channels})
        state = {name: value.contiguous() for name, value in head.state_dict().items()}
        save_file(state, str(run_dir / "projection_head.safetensors"))
    return run_dir


def _flat_jpeg(path: Path, index: int, height: int, width: int) -> None:
    """One flat-colour JPEG whose red channel encodes ``index`` (``40 * index``, so up to 6 classes)."""
    image = torch.empty((3, height, width), dtype=torch.uint8)
    image[0], image[1], image[2] = 40 * index, 100, 200
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode_jpeg(image))


def write_cub200(root: Path, counts: tuple[int, ...] = (3, 2, 4, 3, 2, 3), inside: bool = True) -> list[str]:
    """CUB-200-2011 as its ``CUB_200_2011.tgz`` extracts: ``root/CUB_200_2011/`` (``root`` itself if not
    ``inside``) with ``classes.txt``, ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` and
    ``images/<NNN.Name>/<Name>_<i>.jpg``; ``counts[c]`` images of class ``c``. Class numbers start at 1, image ids
    at 1 in class order, as the release. Returns the class folder names; red channel = 40 x class index.
    """
    base = Path(root) / "CUB_200_2011" if inside else Path(root)
    classes = [f"{c + 1:03d}.Bird_{chr(65 + c)}" for c in range(len(counts))]
    images, labels, split = [], [], []
    for c, (folder, count) in enumerate(zip(classes, counts)):
        for i in range(count):
            relative = f"{folder}/{folder[4:]}_{i:04d}_{c}.jpg"
            _flat_jpeg(base / "images" / relative, c, *((30, 44) if i % 2 else (40, 32)))
            images.append(relative)
            labels.append(c + 1)
            split.append(i % 2)
    numbered = lambda values: "".join(f"{i} {v}\n" for i, v in enumerate(values, 1))  # noqa: E731
    (base / "classes.txt").write_text(numbered(classes))
    (base / "images.txt").write_text(numbered(images))
    (base / "image_class_labels.txt").write_text(numbered(labels))
    (base / "train_test_split.txt").write_text(numbered(split))
    return classes


def write_cars196(root: Path, train: tuple[int, ...] = (2, 1, 2, 2), test: tuple[int, ...] = (1, 2, 1, 2)) -> list[str]:
    """Stanford Cars in torchvision's ``StanfordCars`` layout under ``root/stanford_cars/``: ``cars_train/*.jpg``,
    ``cars_test/*.jpg``, ``devkit/cars_meta.mat`` (``class_names``, a 1 x C cell array),
    ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (``annotations``, a 1 x N struct array
    with ``bbox_x1 .. bbox_y2``, ``class`` (uint8, from 1) and ``fname``), as the devkit's files.
    ``train[c]`` / ``test[c]`` images of class ``c``, listed class-interleaved. Returns the class names.
    """
    from scipy.io import savemat

    base = Path(root) / "stanford_cars"
    classes = [f"Make{c} Model {2000 + c}" for c in range(len(train))]
    fields = [(key, "O") for key in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for folder, counts, annotations_file in (("cars_train", train, base / "devkit" / "cars_train_annos.mat"),
                                        ("cars_test", test, base / "cars_test_annos_withlabels.mat")):
        order = [c for i in range(max(counts)) for c in range(len(counts)) if i < counts[c]]  # interleaved
        records = np.zeros((1, len(order)), dtype=fields)
        for n, c in enumerate(order):
            fname = f"{n + 1:05d}.jpg"
            _flat_jpeg(base / folder / fname, c, *((36, 54) if n % 2 else (30, 40)))
            records[0, n] = (np.uint8(1), np.uint8(2), np.uint16(30), np.uint16(20), np.uint8(c + 1), fname)
        annotations_file.parent.mkdir(parents=True, exist_ok=True)
        savemat(annotations_file, {"annotations": records})
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([classes], dtype=object)})
    return classes
