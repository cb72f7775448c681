"""Metric-learning image sets that list their own JPEG files: CUB-200-2011 (``cub200``) and Stanford Cars (``cars196``);
and face identities in folders (``face_folder``).

Metric learning splits these by class, not by the official train/test file lists (CUB-200: classes 1-100 train,
101-200 test; Cars196: 1-98 / 99-196, chosen with ``data.train_classes`` / ``data.test_classes``), so both splits
``"train"`` and ``"test"`` hold every image: CUB 11 788 images of 200 classes, Cars 16 185 of 196. Each reader
returns an :class:`~sslsec.data.datasets.ImageFolderDataset` (JPEG paths and labels, decoded batch by batch to
``image_size`` px squares). Nothing is downloaded: the errors say where to get the files.

``face_folder`` is aligned face crops (insightface's 112 x 112) in one folder per identity:
``root/train/<identity>/*.jpg`` for training and ``root/test/<identity>/*.jpg`` for identities never trained on
(verification pairs are drawn among them); each split lists its own identities, relabelled from 0, and no
identity may be in both.

Example::

    data = load_dataset("cub200", "data/cub200")     # the folder holding CUB_200_2011/
    train = select_classes(data, list(range(100)))    # 5 864 images, labels 0-99
"""

from __future__ import annotations

import os
from pathlib import Path

from scipy.io.matlab import MatReadError

from sslsec.data.datasets import DatasetError, ImageFolderDataset, _ClassListFolder, _class_folders, _some

__all__ = ["CARS196_LAYOUT", "CUB200_LAYOUT", "FACE_FOLDER_LAYOUT", "FOLDER_READERS", "load_cars196", "load_cub200",
           "load_face_folder"]

CUB200_LAYOUT = ("CUB_200_2011/ holding classes.txt, images.txt, image_class_labels.txt and "
                 "images/<001.Black_footed_Albatross>/*.jpg")
CUB200_SOURCE = ("download CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vzc91 and extract it there "
                 "(set data.root to the folder holding CUB_200_2011/, or to CUB_200_2011/ itself)")
_CARS_FILES = ("cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
               "cars_test_annos_withlabels.mat")
CARS196_LAYOUT = f"stanford_cars/ holding {', '.join(_CARS_FILES)} (torchvision's StanfordCars layout)"
CARS196_SOURCE = ("the official download is gone: get the images and the devkit .mat files as described in "
                  "https://github.com/pytorch/vision/issues/7545 (set data.root to the folder holding stanford_cars/, "
                  "or to stanford_cars/ itself)")


def load_cub200(root: str | os.PathLike, split: str = "train", image_size: int = 256) -> ImageFolderDataset:
    """CUB-200-2011 as distributed: all 11 788 images, labels 0-199 in ``classes.txt`` order (either split)."""
    base = _base_folder(root, "CUB_200_2011", "images.txt", "cub200", CUB200_LAYOUT, CUB200_SOURCE)
    class_lines = _numbered_lines(base / "classes.txt")
    classes = [name for _, name in class_lines]
    label_of_class = {class_id: label for label, (class_id, _) in enumerate(class_lines)}
    class_of_image = dict(_numbered_lines(base / "image_class_labels.txt"))
    samples = []
    for image_id, relative in _numbered_lines(base / "images.txt"):
        if class_of_image.get(image_id) not in label_of_class:
            raise DatasetError(f"{base / 'image_class_labels.txt'} gives image {image_id} ({relative}) no class of "
                               f"classes.txt (got {class_of_image.get(image_id)!r}); re-extract CUB_200_2011.tgz")
        samples.append((str(base / "images" / relative), label_of_class[class_of_image[image_id]]))
    _check_files(samples, str(base / "images.txt"), CUB200_SOURCE)
    return ImageFolderDataset.from_samples(samples, classes, root=base, split=split, image_size=image_size,
                                           name="cub200")


def load_cars196(root: str | os.PathLike, split: str = "train", image_size: int = 256) -> ImageFolderDataset:
    """Stanford Cars in torchvision's layout: all 16 185 images of its train and test halves, labels 0-195 in
    ``cars_meta.mat`` order (either split). torchvision's ``StanfordCars`` reads the ``.mat`` annotations."""
    from torchvision.datasets import StanfordCars

    base = _base_folder(root, "stanford_cars", "devkit", "cars196", CARS196_LAYOUT, CARS196_SOURCE)
    missing = [name for name in _CARS_FILES if not (base / name).exists()]
    if missing or base.name != "stanford_cars":
        what = f"lacks {', '.join(missing)}" if missing else "must be named stanford_cars (torchvision reads it so)"
        raise DatasetError(f"cars196: {base} {what}; expected {CARS196_LAYOUT}; {CARS196_SOURCE}")
    samples: list[tuple[str, int]] = []
    try:
        for half in ("train", "test"):
            reader = StanfordCars(str(base.parent), half)
            samples += [(path, int(label)) for path, label in reader._samples]
        classes = [str(name) for name in reader.classes]
    except (RuntimeError, OSError, ValueError, KeyError, TypeError, IndexError, MatReadError) as err:
        raise DatasetError(f"cannot read the cars196 annotations under {base} ({type(err).__name__}: "
                           f"{' '.join(str(err).split())}); "
                           f"expected {CARS196_LAYOUT}; {CARS196_SOURCE}") from None
    bad = sorted({label for _, label in samples if not 0 <= label < len(classes)})
    if bad:
        raise DatasetError(f"cars196: class numbers {_some([b + 1 for b in bad])} in the annotations under {base} are "
                           f"not among the {len(classes)} classes of devkit/cars_meta.mat")
    _check_files(samples, f"the annotations under {base}", CARS196_SOURCE)
    return ImageFolderDataset.from_samples(samples, classes, root=base, split=split, image_size=image_size,
                                           name="cars196")


FACE_FOLDER_LAYOUT = "root/train/<identity>/*.jpg (training identities) and root/test/<identity>/*.jpg (others)"
FACE_FOLDER_SOURCE = ("extract insightface's aligned 112 x 112 faces (CASIA-WebFace, MS1M: the train.rec of "
                      "https://github.com/deepinsight/insightface/tree/master/recognition/_datasets_) to JPEG files, "
                      "one folder per identity, and move the identities kept for testing to test/")


def load_face_folder(root: str | os.PathLike | None, split: str = "train", image_size: int = 112) -> ImageFolderDataset:
    """Face identities in folders: ``root/train/<identity>/*.jpg`` (``split="train"``) or ``root/test/...``
    (``"test"``), each split's identities in sorted order, labelled from 0. The test identities must differ from
    the training ones (face verification scores identities never trained on)."""
    if root is None:
        raise DatasetError(f"face_folder needs data.root: the folder holding {FACE_FOLDER_LAYOUT}; {FACE_FOLDER_SOURCE}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"face_folder: {folder} not found; expected {FACE_FOLDER_LAYOUT}; {FACE_FOLDER_SOURCE}")
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


def _base_folder(root: str | os.PathLike | None, folder: str, marker: str, name: str, layout: str,
                 source: str) -> Path:
    """``root/folder``, or ``root`` itself if it holds ``marker`` (the user pointed at the data set's folder)."""
    if root is None:
        raise DatasetError(f"{name} needs data.root: the folder holding {layout}; {source}")
    root = Path(root)
    if (root / folder).is_dir():
        return root / folder
    if (root / marker).exists():
        return root
    raise DatasetError(f"{name}: neither {root / folder} nor {root / marker} exists; expected {layout}; {source}")


def _numbered_lines(path: Path) -> list[tuple[str, str]]:
    """The ``<number> <text>`` lines of a CUB-200-2011 list file, as ``(number, text)`` pairs in file order."""
    if not path.is_file():
        raise DatasetError(f"{path} not found; expected {CUB200_LAYOUT}; {CUB200_SOURCE}")
    pairs = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        number, _, text = line.strip().partition(" ")
        if not number.isdigit() or not text.strip():
            raise DatasetError(f"{path} line {line_number} is {line!r}, expected '<number> <text>' (e.g. "
                               "'1 001.Black_footed_Albatross'); re-extract CUB_200_2011.tgz")
        pairs.append((number, text.strip()))
    if not pairs:
        raise DatasetError(f"{path} is empty; re-extract CUB_200_2011.tgz")
    return pairs


def _check_files(samples: list[tuple[str, int]], listed_in: str, source: str) -> None:
    missing = [path for path, _ in samples if not os.path.isfile(path)]
    if missing:
        raise DatasetError(f"{len(missing)} of the {len(samples)} images listed in {listed_in} are missing: "
                           f"{_some(missing)}; {source}")


FOLDER_READERS = {"cub200": load_cub200, "cars196": load_cars196,  # name -> reader(root, split, image_size)
                  "face_folder": load_face_folder}

