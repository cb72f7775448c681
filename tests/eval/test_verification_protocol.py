"""score_verification: pairs drawn from the splits and the configured sets, scored as the library's parts score them."""

import numpy as np
import pytest
import torch

from sslsec.config import Config
from sslsec.data import load_splits
from sslsec.data.verification_sets import load_verification_set
from sslsec.eval import EvaluationError, random_backbone, score_verification
from sslsec.eval.verification import VerificationROC, pairs_from_split, score_pairs, split_verification
from tests.data.verification_fixtures import write_bin, write_lfw_folder
from tests.fixtures import small_cnn, write_npz


def rgb_config(tmp_path, *sets, **eval_settings):
    write_npz(tmp_path / "data", channels=3, size=16, n_train=40, n_test=30, num_classes=3)
    config = Config()
    config.data.name, config.data.root, config.data.val_size = "npz", str(tmp_path / "data"), 12
    config.model.backbone, config.trainer.seed = "small_cnn", 5
    config.eval.verification_pairs, config.eval.verification_sets = 40, [str(path) for path in sets]
    for key, value in eval_settings.items():
        setattr(config.eval, key, value)
    return config


def test_every_split_and_set_is_scored_by_the_library_parts(tmp_path):
    write_bin(tmp_path / "sets" / "lfw.bin", pairs=20)
    write_lfw_folder(tmp_path / "sets" / "lfw_folder", folds=10, per_fold=1)
    config = rgb_config(tmp_path, tmp_path / "sets" / "lfw.bin", tmp_path / "sets" / "lfw_folder")
    backbone = small_cnn(in_channels=3)
    result = score_verification(config, backbone)
    assert list(result) == ["val", "test", "lfw", "lfw_folder"]
    assert [result[name]["pairs"] for name in result] == [40, 40, 20, 20]
    assert result["lfw"]["source"].endswith("lfw.bin") and result["test"]["source"] == "test split of npz"

    train, val, test = load_splits(config)
    expected = split_verification(backbone, test, n_pairs=40, seed=5)
    assert {key: result["test"][key] for key in expected} == expected
    assert result["test"]["images"] == len(test) and result["val"]["images"] == len(val) == 12
    folder = load_verification_set(tmp_path / "sets" / "lfw_folder", test.image_size).normalized_as(train.mean,
                                                                                                    train.std)
    assert folder.images.mean == train.mean != (0.5, 0.5, 0.5)  # normalized as the backbone was trained
    expected = score_pairs(backbone, folder.images, folder.index0, folder.index1, folder.issame)
    assert result["lfw_folder"]["accuracy"] == expected["accuracy"]
    assert result["lfw_folder"]["xnorm"] == pytest.approx(expected["xnorm"])
    roc = result["lfw"]["roc"]
    assert isinstance(roc, VerificationROC) and roc.tpr[-1] == roc.fpr[-1] == 1.0  # threshold 3.99: all accepted
    assert np.all(np.diff(roc.tpr) >= 0) and np.all(np.diff(roc.fpr) >= 0)


def test_the_flip_and_fold_settings_reach_the_scores(tmp_path):
    config = rgb_config(tmp_path, verification_flip=False, verification_folds=4, verification_far=0.1)
    result = score_verification(config, small_cnn(in_channels=3))
    _, _, test = load_splits(config)
    expected = split_verification(small_cnn(in_channels=3), test, n_pairs=40, seed=5, flip=False, n_folds=4,
                                  far=0.1)
    assert {key: result["test"][key] for key in expected} == expected
    assert result["test"]["xnorm"] != score_verification(rgb_config(tmp_path / "flip"), small_cnn(3))["test"]["xnorm"]


def test_without_a_backbone_the_random_init_of_the_config_is_scored(tmp_path):
    config = rgb_config(tmp_path)
    config.data.val_size = None
    result = score_verification(config)
    assert list(result) == ["test"]
    again = score_verification(config, random_backbone(config, 3))["test"]
    assert result["test"]["accuracy"] == again["accuracy"] and result["test"]["xnorm"] == pytest.approx(again["xnorm"])


def test_a_set_whose_folds_lack_a_kind_of_pair_is_one_line(tmp_path):
    images, _ = write_bin(tmp_path / "blocks.bin", pairs=20)
    issame = [True] * 10 + [False] * 10  # the first half of the folds hold only same pairs
    import pickle
    from tests.data.verification_fixtures import encode
    (tmp_path / "blocks.bin").write_bytes(pickle.dumps(([encode(image) for image in images], issame)))
    with pytest.raises(EvaluationError, match=r"verification set .*blocks.bin: each of the 10 consecutive folds"):
        score_verification(rgb_config(tmp_path, tmp_path / "blocks.bin"), small_cnn(in_channels=3))


def test_a_pairs_txt_of_other_folds_than_the_config_says_how_to_score_it(tmp_path):
    write_lfw_folder(tmp_path / "lfw", folds=2, per_fold=5)
    with pytest.raises(EvaluationError, match="defines 2 folds, but eval.verification_folds=10; set "
                                              "eval.verification_folds=2"):
        score_verification(rgb_config(tmp_path, tmp_path / "lfw"), small_cnn(in_channels=3))
    result = score_verification(rgb_config(tmp_path, tmp_path / "lfw", verification_folds=2), small_cnn(3))
    assert result["lfw"]["pairs"] == 20


def test_pairs_drawn_for_the_test_split_follow_the_seed(tmp_path):
    config = rgb_config(tmp_path)
    _, _, test = load_splits(config)
    first = score_verification(config, small_cnn(in_channels=3))["test"]
    config.trainer.seed = 6
    other = score_verification(config, small_cnn(in_channels=3))["test"]
    assert torch.equal(pairs_from_split(test.labels, 40, 5)[0], pairs_from_split(test.labels, 40, 5)[0])
    assert first["xnorm"] != other["xnorm"]  # other pairs, other images averaged
