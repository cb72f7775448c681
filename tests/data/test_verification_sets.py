"""The verification-set readers on fixtures in the exact formats: insightface's .bin and LFW's pairs.txt."""

import pickle

import pytest
import torch

from sslsec.data import DatasetError
from sslsec.data.verification_sets import load_bin, load_pairs_txt, load_verification_set
from sslsec.eval.features import extract_features
from tests.data.verification_fixtures import python2_pickle, write_bin, write_lfw_folder


def test_the_python2_fixture_is_what_python2_writes():
    """Its str items load as bytes only with encoding="bytes" (ASCII text otherwise, as Python 2's str)."""
    content = python2_pickle([b"\xff\xd8" + bytes(300), b"ab"], [True])
    assert pickle.loads(content, encoding="bytes") == ([b"\xff\xd8" + bytes(300), b"ab"], [True])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(content)
    assert pickle.loads(python2_pickle([b"ab"] * 2500, [False] * 1250), encoding="bytes")[0] == [b"ab"] * 2500


@pytest.mark.parametrize("python2, numpy_entries", [(True, False), (False, False), (False, True)])
def test_a_bin_set_decodes_to_its_pairs(tmp_path, python2, numpy_entries):
    images, issame = write_bin(tmp_path / "lfw.bin", pairs=20, python2=python2, numpy_entries=numpy_entries)
    lfw = load_bin(tmp_path / "lfw.bin")
    assert lfw.name == "lfw" and len(lfw) == 20 and torch.equal(lfw.issame, issame)
    assert torch.equal(lfw.images.images, images)  # PNG: lossless
    assert torch.equal(lfw.index0, torch.arange(0, 40, 2)) and torch.equal(lfw.index1, torch.arange(1, 40, 2))
    assert lfw.images.mean == (0.5, 0.5, 0.5) and lfw.images.std == (0.5, 0.5, 0.5)


def test_a_bin_set_of_jpegs_is_resized_and_read_in_grey(tmp_path):
    images, _ = write_bin(tmp_path / "cfp_fp.bin", pairs=10, size=16, fmt="jpeg")
    grey = lambda x, k: torch.nn.functional.avg_pool2d(x.float().mean(1, keepdim=True), k)  # noqa: E731
    colour = load_verification_set(tmp_path / "cfp_fp.bin").images.images
    assert colour.shape == images.shape and (grey(colour, 4) - grey(images, 4)).abs().mean() < 2  # JPEG's loss
    small = load_bin(tmp_path / "cfp_fp.bin", image_size=8, channels=1).images.images
    assert small.shape == (20, 1, 8, 8)  # an antialiased half-size grey image of each, in order
    distance = torch.cdist(grey(small, 2).flatten(1), grey(images, 4).flatten(1)) / 4  # rms over the 16 pixels
    assert distance.diagonal().mean() < 6 and distance.diagonal().mean() < distance.mean() / 1.5


def test_a_corrupt_bin_entry_is_one_line_naming_the_file_and_the_entry(tmp_path):
    write_bin(tmp_path / "agedb_30.bin", pairs=10, corrupt_entry=7)
    with pytest.raises(DatasetError, match=r"agedb_30.bin: entry 7 \(pair 3\) does not decode: .*download it again"
                       ) as caught:
        load_bin(tmp_path / "agedb_30.bin")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content, message", [
    (b"not a pickle", "is not an insightface .bin verification set"),
    (pickle.dumps({"a": 1}), "holds a dict, not the pair"),
    (pickle.dumps(([b"x"] * 3, [True, False])), "holds 3 images for 2 pairs"),
    (pickle.dumps(([5, b"x"], [True])), r"entry 0 \(pair 0\) is a int"),
])
def test_files_that_are_not_bin_sets_are_refused(tmp_path, content, message):
    (tmp_path / "bad.bin").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_bin(tmp_path / "bad.bin")


def test_pairs_txt_lists_its_pairs_over_the_folder(tmp_path):
    written = write_lfw_folder(tmp_path / "lfw", folds=2, per_fold=3)
    lfw = load_pairs_txt(tmp_path / "lfw", image_size=20)
    assert lfw.name == "lfw" and len(lfw) == 12 and lfw.folds == 2
    assert lfw.issame.tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3  # the file's folds
    for (name0, n0, name1, n1), i0, i1 in zip(written, lfw.index0.tolist(), lfw.index1.tolist()):
        assert lfw.images.paths[i0].endswith(f"lfw/{name0}/{name0}_{n0:04d}.jpg")
        assert lfw.images.paths[i1].endswith(f"lfw/{name1}/{name1}_{n1:04d}.jpg")
        assert lfw.images.classes[int(lfw.images.labels[i0])] == name0
    assert len(set(lfw.images.paths)) == len(lfw.images.paths)  # each file once
    features, _ = extract_features(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten()), lfw.images,
                                   progress=False)
    assert features.shape == (len(lfw.images.paths), 2 * 20 * 20)  # the folder decodes at image_size


def test_a_count_header_interleaves_same_and_different_pairs(tmp_path):
    written = write_lfw_folder(tmp_path / "dev", folds=1, per_fold=4, header="4")
    dev = load_pairs_txt(tmp_path / "dev")
    assert dev.issame.tolist() == [True, False] * 4 and dev.folds is None
    first_different = written[4]
    assert dev.images.paths[int(dev.index0[1])].endswith(f"{first_different[0]}_{first_different[1]:04d}.jpg")


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:1] + ["Ada_Lovelace\t1"] + lines[2:], r"pairs.txt:2: 'Ada_Lovelace 1' is not a pair"),
    (lambda lines: lines[:1] + ["Ada_Lovelace\t1\t9"] + lines[2:], r"pairs.txt:2: .* names .*Ada_Lovelace_0009.jpg"),
    (lambda lines: lines[:-1], r"announces 12 pairs, but 11 follow"),
    (lambda lines: ["ten folds"] + lines[1:], r"pairs.txt:1: the header 'ten folds' is neither"),
])
def test_a_corrupt_pairs_line_is_one_line_naming_the_file_and_the_line(tmp_path, edit, message):
    write_lfw_folder(tmp_path / "lfw")
    pairs = tmp_path / "lfw" / "pairs.txt"
    pairs.write_text("\n".join(edit(pairs.read_text().splitlines())) + "\n")
    with pytest.raises(DatasetError, match=message) as caught:
        load_pairs_txt(tmp_path / "lfw")
    assert "\n" not in str(caught.value)


def test_a_missing_set_says_what_it_expects(tmp_path):
    with pytest.raises(DatasetError, match="give an insightface .bin file or a folder with a pairs.txt"):
        load_verification_set(tmp_path / "nowhere.bin")
    with pytest.raises(DatasetError, match="pairs.txt not found"):
        load_verification_set(tmp_path)
