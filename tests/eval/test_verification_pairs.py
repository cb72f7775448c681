"""Pairs drawn from a class-labelled split, and the flip-summed embeddings they are scored with."""

import pytest
import torch
from torch import nn

from sslsec.augment import EvalTransform
from sslsec.eval import EvaluationError
from sslsec.eval.verification import (pair_embeddings, pairs_from_split, split_verification,
                                      verification_metrics)
from tests.fixtures import template_dataset


def test_pairs_are_balanced_interleaved_and_true_to_the_labels():
    labels = torch.tensor([3, 3, 3, 7, 7, 9, 5, 5, 5, 5, 1])  # a class of one image (9, 1) never anchors a same pair
    index0, index1, issame = pairs_from_split(labels, 1001, seed=4)
    assert index0.shape == index1.shape == issame.shape == (1001,)
    assert issame.sum() == 501 and torch.equal(issame[0::2], torch.ones(501, dtype=torch.bool))
    assert not issame[1::2].any()
    assert (index0 != index1).all()
    assert torch.equal(labels[index0] == labels[index1], issame)
    folds = torch.arange(1001) * 10 // 1001  # every consecutive fold holds both kinds
    for fold in range(10):
        assert issame[folds == fold].any() and (~issame[folds == fold]).any()


def test_pairs_cover_the_split_uniformly():
    labels = torch.tensor([0] * 4 + [1] * 2 + [2] * 6)
    index0, index1, issame = pairs_from_split(labels, 24000, seed=0)
    # a same pair: each image of a class of two or more equally often as the first image; the second another one
    first = torch.bincount(index0[issame], minlength=12).double() / issame.sum()
    assert torch.allclose(first, torch.full((12,), 1 / 12, dtype=torch.float64), atol=0.01)
    partners_of_0 = torch.bincount(index1[issame & (index0 == 0)], minlength=12).double()
    partners_of_0 /= partners_of_0.sum()
    assert torch.allclose(partners_of_0[:4], torch.tensor([0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64), atol=0.05)
    # a different pair: the second image uniform over the other classes' images
    partners = torch.bincount(index1[~issame & (labels[index0] == 1)], minlength=12).double()
    partners /= partners.sum()
    assert torch.allclose(partners, torch.tensor([0.1] * 4 + [0] * 2 + [0.1] * 6, dtype=torch.float64), atol=0.02)


def test_pairs_are_deterministic_for_a_seed():
    labels = torch.arange(50) % 7
    first, again, other = (pairs_from_split(labels, 300, seed) for seed in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("labels, message", [(torch.zeros(5), "single class"),
                                             (torch.arange(6), "every class of the split has one image")])
def test_splits_that_cannot_give_both_kinds_of_pair_are_refused(labels, message):
    with pytest.raises(EvaluationError, match=message):
        pairs_from_split(labels, 100)


class LinearImage(nn.Module):
    """f(x) = W vec(x): one full-size convolution without bias, whose output is computed by hand below."""

    def __init__(self, size=16, dim=5):
        super().__init__()
        self.conv = nn.Conv2d(1, dim, size, bias=False)
        self.feature_dim = dim
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(dim, 1, size, size, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.conv(x).flatten(1)


@pytest.mark.parametrize("flip", [True, False])
def test_pair_embeddings_sum_the_mirror_image_and_report_the_raw_norms(flip):
    data, backbone = template_dataset(3), LinearImage()
    index0, index1, issame = pairs_from_split(data.labels, 40, seed=0)
    got = pair_embeddings(backbone, data, index0, index1, issame, flip=flip)
    views = EvalTransform(None, data.mean, data.std)(data.images).double()
    weight = backbone.conv.weight.detach().double()
    raw = torch.einsum("nchw,dchw->nd", views, weight)
    mirror = torch.einsum("nchw,dchw->nd", views.flip(-1), weight)
    expected = raw + mirror if flip else raw
    assert torch.allclose(got.emb0.double(), expected[index0], rtol=1e-4, atol=1e-3)
    assert torch.allclose(got.emb1.double(), expected[index1], rtol=1e-4, atol=1e-3)
    norms = (raw.norm(dim=1) + mirror.norm(dim=1)) / 2 if flip else raw.norm(dim=1)
    assert got.xnorm == pytest.approx(torch.cat([norms[index0], norms[index1]]).mean().item(), rel=1e-5)
    assert not flip or got.xnorm < expected.norm(dim=1).mean().item()  # not the norm of the sum
    assert torch.equal(got.issame, issame)


def test_split_verification_scores_the_drawn_pairs():
    data, backbone = template_dataset(6), LinearImage()
    scores = split_verification(backbone, data, n_pairs=200, seed=3, flip=True)
    index0, index1, issame = pairs_from_split(data.labels, 200, seed=3)
    embedded = pair_embeddings(backbone, data, index0, index1, issame, flip=True)
    expected = verification_metrics(embedded.emb0, embedded.emb1, issame)
    assert scores == {**expected, "xnorm": embedded.xnorm}
    assert scores["pairs"] == 200 and scores["accuracy"] > 90  # templates: each class a tight cluster


@pytest.mark.parametrize("override, message", [
    ("eval.verification_folds=1", "eval.verification_folds must be at least 2, got 1"),
    ("eval.verification_pairs=19", "eval.verification_pairs must be at least 2 x eval.verification_folds"),
    ("eval.verification_far=1.5", "eval.verification_far must be in \\(0, 1\\)"),
    ("eval.verification_flip=maybe", "eval.verification_flip must be bool, got 'maybe'"),
])
def test_verification_settings_are_checked_at_load(override, message):
    from sslsec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    settings = load_config(None, ["eval.verification_sets=[lfw.bin, /data/lfw]"]).eval
    assert settings.verification_sets == ["lfw.bin", "/data/lfw"] and settings.verification_flip
