"""Feature extraction: order, mode, channel checks, and two processes gathering what one computes."""

import subprocess
from pathlib import Path

import pytest
import torch

from sslsec.augment import EvalTransform
from sslsec.data import load_splits
from sslsec.eval import EvaluationError, extract_features, knn_accuracy, linear_probe
from sslsec.runs import load_run
from tests.fixtures import small_cnn, template_dataset
from tests.launch import cpu_env, torchrun

REPO = Path(__file__).resolve().parents[2]

def test_extract_features_keeps_order_and_restores_train_mode():
    data, backbone = template_dataset(7), small_cnn()
    backbone.train()
    features, labels = extract_features(backbone, data, batch_size=16, progress=False)
    assert backbone.training and torch.equal(labels, data.labels)
    with torch.no_grad():
        expected = backbone.eval()(EvalTransform(None, data.mean, data.std)(data.images))
    assert features.dtype == torch.float32 and torch.allclose(features, expected, atol=1e-5)


def test_features_of_images_stored_larger_than_the_views_come_from_the_center_crop():
    from sslsec.eval.features import eval_transform

    data, backbone = template_dataset(3), small_cnn()
    size = data.image_size
    assert eval_transform(data, None)(data.images).shape[-1] == size  # no crop size: the stored size
    assert eval_transform(data, size)(data.images).shape[-1] == size
    features, _ = extract_features(backbone, data, crop_size=size - 4, progress=False)
    with torch.no_grad():
        center = data.images[..., 2:size - 2, 2:size - 2]
        expected = backbone.eval()(EvalTransform(None, data.mean, data.std)(center))
    assert torch.allclose(features, expected, atol=1e-4)


def test_eval_center_crop_false_scores_whole_images_whatever_the_view_size():
    from sslsec.config import load_config
    from sslsec.eval import eval_crop_size

    assert eval_crop_size(load_config(None, ["data.crop_size=20"])) == 20
    assert eval_crop_size(load_config(None, ["data.crop_size=20", "eval.center_crop=false"])) is None  # whole images


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(EvaluationError, match="3-channel images but data set 'templates' has 1-channel"):
        extract_features(small_cnn(in_channels=3), template_dataset(2))


SHARDED_EVALUATION = """
import sys, torch
from accelerate import Accelerator
from sslsec.data import load_splits
from sslsec.eval import extract_features, knn_accuracy, linear_probe
from sslsec.runs import load_run
config, backbone = load_run(sys.argv[1], ["data.test_limit=99"])  # 99 = 7 steps of 7 x 2 + 1: rank 1's last is empty
train, _, test = load_splits(config)
accelerator = Accelerator(cpu=True)
result = {"world_size": accelerator.num_processes,
          "features": extract_features(backbone, test, accelerator=accelerator, batch_size=7),
          "knn": knn_accuracy(backbone, train, test, k=20, accelerator=accelerator, batch_size=7),
          "probe": linear_probe(backbone, train, test, epochs=5, accelerator=accelerator, feature_batch_size=7)}
if accelerator.is_main_process:
    torch.save(result, sys.argv[2])
"""


@pytest.mark.slow
def test_two_processes_gather_the_same_features_and_scores_as_one(run_dir, tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_EVALUATION)
    process = subprocess.run(torchrun(script, str(run_dir), str(tmp_path / "out.pt")), capture_output=True,
                             text=True, env=cpu_env(OMP_NUM_THREADS="1"), timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    sharded = torch.load(tmp_path / "out.pt")
    config, backbone = load_run(run_dir, ["data.test_limit=99"])
    train, _, test = load_splits(config)
    features, labels = extract_features(backbone, test, batch_size=7, progress=False)
    assert sharded["world_size"] == 2 and torch.equal(sharded["features"][1], labels)
    assert torch.allclose(sharded["features"][0], features, atol=1e-5)
    # differently threaded matmuls may flip a near-tie vote: allow one test image of 99 either way
    assert sharded["knn"] == pytest.approx(knn_accuracy(backbone, train, test, k=20), abs=100 / 99 + 1e-9)
    assert sharded["probe"]["top1"] == pytest.approx(linear_probe(backbone, train, test, epochs=5)["top1"])
