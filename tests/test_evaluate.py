"""Linear probe, kNN, feature extraction, norm diagnostics and their CLIs, on data written to disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sslsec.augment import EvalTransform
from sslsec.cli import diagnose_main, linear_probe_main
from sslsec.config import Config, save_config
from sslsec.data import ImageArrays, load_dataset
from sslsec.diagnostics import projection_samples, summarize
from sslsec.evaluate import (EvaluationError, classification_scores, extract_features, fit_linear_classifier,
                             knn_accuracy, knn_on_features, linear_probe, load_run, load_saved_backbone,
                             load_splits, probe_on_features)
from sslsec.models import build_backbone, build_projection_head, save_backbone

REPO = Path(__file__).resolve().parents[1]


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
    save_config(config, run_dir / "config.yaml")
    model = small_cnn(in_channels)
    if backbone:
        save_backbone(model, run_dir / "backbone.safetensors", {"name": "small_cnn", "in_channels": in_channels})
        head = build_projection_head(method, model.feature_dim, 64, 16)
        state = {name: value.contiguous() for name, value in head.state_dict().items()}
        save_file(state, str(run_dir / "projection_head.safetensors"))
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run", write_template_npz(tmp_path / "data"))


# --- the probe and kNN on features ---------------------------------------------------------------------------

def test_probe_separates_linearly_separable_features():
    train, test = clustered_features(50, seed=0), clustered_features(20, seed=0)
    test = (test[0] + 0.3 * torch.randn_like(test[0]), test[1])  # fresh noise around the same centres
    scores = probe_on_features(train, test, 10, epochs=30)
    assert scores["top1"] >= 98.0 and scores["top5"] >= scores["top1"]


def test_probe_on_shuffled_labels_is_at_chance():
    generator = torch.Generator().manual_seed(1)
    train = torch.randn(2000, 32, generator=generator), torch.randint(0, 10, (2000,), generator=generator)
    test = torch.randn(2000, 32, generator=generator), torch.randint(0, 10, (2000,), generator=generator)
    scores = probe_on_features(train, test, 10, epochs=20)
    assert 6.0 <= scores["top1"] <= 14.0  # chance is 10%; 3 sigma of 2000 draws is 2%
    assert 40.0 <= scores["top5"] <= 60.0 and scores["top5"] >= scores["top1"]


def test_classification_scores_match_a_hand_count():
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    scores = classification_scores(logits, torch.tensor([0, 0, 5]))
    # sample 0: top-1 hit; sample 1: label 0 is ranked last; sample 2: label 5 ranked last
    assert scores == {"top1": pytest.approx(100 / 3), "top5": pytest.approx(100 / 3)}
    scores = classification_scores(logits[:, :4], torch.tensor([0, 0, 1]))
    assert scores["top1"] == pytest.approx(100 / 3) and scores["top5"] is None  # 4 classes: top-5 is trivial


def test_fit_is_reproducible_from_its_seed():
    features, labels = clustered_features(10, spread=2.0)
    first, second = (fit_linear_classifier(features, labels, 10, epochs=3, seed=5) for _ in range(2))
    assert torch.equal(first.linear.weight, second.linear.weight)
    # the standardization uses the statistics of the training features
    assert torch.allclose(first.mean, features.mean(0)) and torch.allclose(first.std, features.std(0), atol=1e-4)


def test_step_protocol_drops_the_lr_at_60_75_90_percent_and_keeps_raw_features():
    features, labels = clustered_features(20, spread=2.0)
    lrs = []
    original = torch.optim.SGD.step

    def record(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", record)
        classifier = fit_linear_classifier(features, labels, 10, epochs=20, batch_size=200, lr=5.0,
                                           schedule="step", standardize=False)
    # 200 samples in batches of 200: one step per epoch
    assert lrs == pytest.approx([5.0] * 12 + [1.0] * 3 + [0.2] * 3 + [0.04] * 2)
    assert torch.all(classifier.mean == 0) and torch.allclose(classifier.std, torch.ones_like(classifier.std))


def test_knn_on_clustered_features_is_near_perfect_and_k_is_capped():
    train, test = clustered_features(30, seed=0), clustered_features(10, seed=0)
    assert knn_on_features(train, test, 10, k=200) >= 99.0  # 300 train features < k: capped, no error
    assert knn_on_features(train, test, 10, k=5) >= 99.0


# --- the backbone path: extraction, probe, kNN -------------------------------------------------------------

def test_extract_features_keeps_order_and_restores_train_mode():
    data, backbone = template_dataset(7), small_cnn()
    backbone.train()
    features, labels = extract_features(backbone, data, batch_size=16, progress=False)
    assert backbone.training and torch.equal(labels, data.labels)
    with torch.no_grad():
        expected = backbone.eval()(EvalTransform(data.mean, data.std)(data.images))
    assert features.dtype == torch.float32 and torch.allclose(features, expected, atol=1e-5)


def test_knn_and_probe_on_clustered_images_are_near_perfect():
    train, test, backbone = template_dataset(20, seed=0), template_dataset(5, seed=1), small_cnn()
    assert knn_accuracy(backbone, train, test, k=20, batch_size=64) >= 98.0
    assert backbone.training  # extraction runs in eval mode and restores the mode it found
    result = linear_probe(backbone, train, test, epochs=20, feature_batch_size=64)
    assert result["best_top1"] >= result["top1"] and 1 <= result["best_epoch"] <= 20
    assert result["top1"] >= 98.0 and result["top5"] >= result["top1"]
    assert (result["num_classes"], result["train_size"], result["test_size"]) == (10, 200, 50)


def test_augmented_probe_is_reproducible_from_its_seed():
    train, test, backbone = template_dataset(10, seed=0), template_dataset(5, seed=1), small_cnn()
    first, second = (linear_probe(backbone, train, test, epochs=2, augment=True, seed=3) for _ in range(2))
    assert first["augment"] and first == second and 0.0 <= first["top1"] <= first["top5"] <= 100.0


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(EvaluationError, match="3-channel images but data set 'templates' has 1-channel"):
        extract_features(small_cnn(in_channels=3), template_dataset(2))


def test_saved_backbone_round_trips(tmp_path):
    backbone, images = small_cnn(), torch.randn(4, 1, 16, 16)
    save_backbone(backbone, tmp_path / "backbone.safetensors", {"name": "small_cnn", "in_channels": 1})
    loaded = load_saved_backbone(tmp_path / "backbone.safetensors")
    with torch.no_grad():
        assert torch.equal(backbone.eval()(images), loaded.eval()(images))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(EvaluationError, match="no sslsec backbone metadata"):
        load_saved_backbone(tmp_path / "other.safetensors")


# --- norm diagnostics --------------------------------------------------------------------------------------

def test_identical_views_give_positive_cosine_one_and_summary_matches():
    data, backbone, head = template_dataset(5), small_cnn(), build_projection_head("moco", 256, 64, 16)
    samples = projection_samples(backbone, head, data, EvalTransform(data.mean, data.std), n=40, batch_size=16)
    assert samples["norms"].shape == (80,) and samples["positive_cosines"].shape == (40,)
    assert samples["negative_cosines"].shape == (2 * 16 * 15 + 8 * 7,)
    assert torch.allclose(samples["positive_cosines"], torch.ones(40), atol=1e-5)
    summary, norms = summarize(samples), samples["norms"].double()
    assert summary["norm_std_over_mean"] == pytest.approx((norms.std() / norms.mean()).item())
    gap = samples["positive_cosines"].double().mean() - samples["negative_cosines"].double().mean()
    assert summary["cosine_gap"] == pytest.approx(gap.item())


# --- the command line --------------------------------------------------------------------------------------

def test_linear_probe_cli_writes_json_for_a_run(run_dir, capsys):
    linear_probe_main(["--run", str(run_dir), "eval.probe_epochs=10"])
    result = json.loads((run_dir / "linear_probe.json").read_text())
    assert result["dataset"] == "npz" and "small_cnn" in result["backbone"] and result["epochs"] == 10
    assert result["top1"] >= 90.0 and result["top5"] >= result["top1"] and result["knn_top1"] >= 90.0
    assert "linear top-1" in capsys.readouterr().out


def test_linear_probe_cli_backbone_file_and_random_init(run_dir, tmp_path):
    linear_probe_main(["--backbone", str(run_dir / "backbone.safetensors"), "--config", str(run_dir / "config.yaml"),
                       "--output-dir", str(tmp_path / "file"), "eval.probe_epochs=2"])
    assert json.loads((tmp_path / "file" / "linear_probe.json").read_text())["epochs"] == 2
    linear_probe_main(["--random-init", "--config", str(run_dir / "config.yaml"), "eval.probe_epochs=2",
                       f"output_dir={tmp_path / 'baseline'}"])
    assert "random init" in json.loads((tmp_path / "baseline" / "linear_probe.json").read_text())["backbone"]


def run_cli_expecting_error(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_cli_errors_are_one_line_and_exit_2(run_dir, tmp_path, capsys):
    empty_run = write_run(tmp_path / "unfinished", run_dir.parent / "data", backbone=False)
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(empty_run)], capsys)
    assert "backbone.safetensors is missing" in err and "pretraining writes it when it finishes" in err
    rgb_run = write_run(tmp_path / "rgb", run_dir.parent / "data", in_channels=3)
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(rgb_run)], capsys)
    assert "3-channel images but data set 'npz' has 1-channel" in err
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(run_dir), "eval.probe_epochs=zero"], capsys)
    assert "eval.probe_epochs" in err
    err = run_cli_expecting_error(linear_probe_main, ["--random-init", "--config", str(run_dir / "config.yaml")],
                                  capsys)
    assert "would overwrite" in err  # output_dir is the run itself
    err = run_cli_expecting_error(diagnose_main, ["--run", str(empty_run)], capsys)
    assert "backbone.safetensors is missing" in err


def test_diagnose_cli_writes_histograms_and_json(run_dir, capsys):
    diagnose_main(["--run", str(run_dir), "--n", "64"])
    result = json.loads((run_dir / "diagnostics.json").read_text())
    for name in result["histograms"]:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n_images"] == 64 and result["norm_mean"] > 0 and result["method"] == "simclr"
    # an untrained network maps every view to nearly one direction: both means are high, and neither wins
    assert -1 <= result["negative_cosine_mean"] <= 1 and -1 <= result["positive_cosine_mean"] <= 1
    assert "std/mean" in capsys.readouterr().out


def test_script_reports_a_missing_run_without_traceback(tmp_path):
    process = subprocess.run([sys.executable, str(REPO / "scripts" / "linear_probe.py"), "--run", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO)
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert "config.yaml is missing" in process.stderr


# --- the real data ------------------------------------------------------------------------------------------

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_random_init_probe_on_fashion_mnist(tmp_path, capsys):
    train = load_dataset("fashion_mnist", split="train", limit=5000)
    test = load_dataset("fashion_mnist", split="test", limit=2000)
    result = linear_probe(small_cnn(seed=0), train, test, epochs=100)
    assert 76.0 <= result["top1"] <= 87.0  # measured 82.0, 81.3, 81.8 (init seeds 0-2); chance is 10%
    assert result["top5"] >= 98.0  # measured 99.3-99.7
    augmented = linear_probe(small_cnn(seed=0), train.subset(torch.arange(1000)), test, epochs=3, augment=True)
    assert augmented["top1"] >= 30.0  # measured 45.2 (1000 images, 3 epochs of crops)
    save_config(Config(), tmp_path / "config.yaml")
    linear_probe_main(["--random-init", "--config", str(tmp_path / "config.yaml"), "data.train_limit=2000",
                       "data.test_limit=1000", "model.backbone=small_cnn", "eval.probe_epochs=20",
                       f"output_dir={tmp_path / 'baseline'}"])
    assert "linear top-1" in capsys.readouterr().out
    assert json.loads((tmp_path / "baseline" / "linear_probe.json").read_text())["top1"] > 60.0


SHARDED_EVALUATION = """
import sys, torch
from accelerate import Accelerator
from sslsec.evaluate import extract_features, knn_accuracy, linear_probe, load_run, load_splits
config, backbone = load_run(sys.argv[1], ["data.test_limit=99"])  # 99 = 7 steps of 7 x 2 + 1: rank 1's last is empty
train, test = load_splits(config)
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                              str(run_dir), str(tmp_path / "out.pt")], capture_output=True, text=True, env=env,
                             timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    sharded = torch.load(tmp_path / "out.pt")
    config, backbone = load_run(run_dir, ["data.test_limit=99"])
    train, test = load_splits(config)
    features, labels = extract_features(backbone, test, batch_size=7, progress=False)
    assert sharded["world_size"] == 2 and torch.equal(sharded["features"][1], labels)
    assert torch.allclose(sharded["features"][0], features, atol=1e-5)
    assert sharded["knn"] == knn_accuracy(backbone, train, test, k=20)
    assert sharded["probe"]["top1"] == pytest.approx(linear_probe(backbone, train, test, epochs=5)["top1"])
