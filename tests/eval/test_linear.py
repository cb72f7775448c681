"""The linear probe: on features, on a backbone, its scores, and on the real data."""

import json
from pathlib import Path

import pytest
import torch

from sslsec.cli import linear_probe_main
from sslsec.config import Config, save_config
from sslsec.data import load_dataset
from sslsec.eval import (classification_scores, extract_features, fit_linear_classifier, linear_probe,
                         probe_on_features)
from tests.fixtures import clustered_features, small_cnn, template_dataset

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


def test_augmented_probe_trains_on_fresh_crops_each_epoch_reproducibly(monkeypatch):
    """augment=True: every epoch's training features are those of new random crops (not the cached features, not
    last epoch's), drawn again identically from the same seed; augment=False trains on the cached features."""
    import sslsec.eval.linear as linear

    train, test, backbone = template_dataset(10, seed=0), template_dataset(5, seed=1), small_cnn()
    seen, real_fit = [], linear._fit
    monkeypatch.setattr(linear, "_fit", lambda epoch_data, *args, **kwargs: seen.append(
        [epoch_data(epoch)[0] for epoch in range(2)]) or real_fit(epoch_data, *args, **kwargs))
    first, second = (linear_probe(backbone, train, test, epochs=2, augment=True, seed=3) for _ in range(2))
    linear_probe(backbone, train, test, epochs=2, augment=True, seed=4)
    plain = linear_probe(backbone, train, test, epochs=2, augment=False, seed=3)
    cached = extract_features(backbone, train, progress=False)[0]
    (epoch0, epoch1), again, other_seed, not_augmented = seen
    assert first == second and all(torch.equal(a, b) for a, b in zip((epoch0, epoch1), again))
    assert not torch.allclose(epoch0, epoch1) and not torch.allclose(epoch0, cached)
    assert not torch.allclose(other_seed[0], epoch0)
    assert all(torch.equal(features, cached) for features in not_augmented)
    assert first["augment"] and not plain["augment"]


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
    assert json.loads((tmp_path / "baseline" / "random_init" / "linear_probe.json").read_text())["top1"] > 60.0
