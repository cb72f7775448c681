"""verification_metrics against a literal, loop-by-loop computation of insightface's definition."""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline
from sklearn.model_selection import KFold

from sslsec.eval.verification import verification_metrics, verification_roc


def reference(emb0, emb1, issame, n_folds=10, far_target=1e-3):
    """insightface's calculate_roc / calculate_val, one threshold and one fold at a time."""
    def normalize(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    dist = np.sum(np.square(normalize(emb0) - normalize(emb1)), 1)
    issame = np.asarray(issame, dtype=bool)
    folds = list(KFold(n_splits=n_folds, shuffle=False).split(np.arange(len(issame))))

    def accuracy_at(threshold, d, same):
        predict = d < threshold
        tp, tn = np.sum(predict & same), np.sum(~predict & ~same)
        return (tp + tn) / d.size

    thresholds = np.arange(0, 4, 0.01)
    accuracy, chosen = [], []
    for train, test in folds:
        train_acc = [accuracy_at(t, dist[train], issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        chosen.append(best)
        accuracy.append(accuracy_at(best, dist[test], issame[test]))

    def val_far(threshold, d, same):
        predict = d < threshold
        return np.sum(predict & same) / np.sum(same), np.sum(predict & ~same) / np.sum(~same)

    thresholds = np.arange(0, 4, 0.001)
    val, far = [], []
    for train, test in folds:
        far_train = np.array([val_far(t, dist[train], issame[train])[1] for t in thresholds])
        threshold = slinear(far_train, thresholds)(far_target) if far_train.max() >= far_target else 0.0
        v, f = val_far(threshold, dist[test], issame[test])
        val.append(v)
        far.append(f)
    return {"accuracy": 100 * np.mean(accuracy), "accuracy_std": 100 * np.std(accuracy),
            "threshold": np.mean(chosen), "val_at_far": 100 * np.mean(val), "far": 100 * np.mean(far)}


def slinear(x, y):
    """interp1d(x, y, "slinear") as scipy < 1.9 built it, repeated x allowed: a degree-1 B-spline whose
    coefficients are the values, knots x with the ends doubled (x sorted, as FAR over thresholds is)."""
    return BSpline.construct_fast(np.r_[x[0], x, x[-1]], np.asarray(y, dtype=float), 1)


def interleaved_labels(pairs):
    """Blocks of same / different pairs in turn, as insightface's .bin sets hold them."""
    return (torch.arange(pairs) // 10 % 2 == 0)


@pytest.mark.parametrize("separation", [0.0, 0.6, 3.0])
def test_matches_the_reference_definition(separation):
    generator = torch.Generator().manual_seed(int(10 * separation))
    pairs, dim = 603, 16  # 603: folds of unequal size, as KFold cuts them
    issame = interleaved_labels(pairs)
    identity = torch.randn(pairs, dim, generator=generator)
    emb0 = identity + 0.5 * torch.randn(pairs, dim, generator=generator)
    other = torch.randn(pairs, dim, generator=generator)
    emb1 = torch.where(issame[:, None], identity, other) * separation + torch.randn(pairs, dim, generator=generator)
    emb1 = emb1 * torch.rand(pairs, 1, generator=generator) * 5  # norms of all sizes: normalized inside
    ours = verification_metrics(emb0, emb1, issame)
    expected = reference(emb0.double().numpy(), emb1.double().numpy(), issame.numpy())
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert ours["pairs"] == pairs
    assert ours["xnorm"] == pytest.approx(torch.cat([emb0, emb1]).norm(dim=1).mean().item(), rel=1e-6)


def test_separable_pairs_score_perfectly_and_random_ones_at_chance():
    generator = torch.Generator().manual_seed(0)
    pairs = 2000
    issame = interleaved_labels(pairs)
    emb0 = torch.randn(pairs, 32, generator=generator)
    emb1 = torch.where(issame[:, None], emb0 + 0.01 * torch.randn(pairs, 32, generator=generator),
                       torch.randn(pairs, 32, generator=generator))
    separable = verification_metrics(emb0, emb1, issame)
    assert separable["accuracy"] == 100 and separable["val_at_far"] == 100 and separable["far"] < 0.2
    chance = verification_metrics(emb0, torch.randn(pairs, 32, generator=generator), issame)
    assert 44 < chance["accuracy"] < 56 and chance["val_at_far"] < 2


def test_roc_runs_from_nothing_accepted_to_everything():
    generator = torch.Generator().manual_seed(1)
    issame = interleaved_labels(400)
    emb0, emb1 = torch.randn(400, 8, generator=generator), torch.randn(400, 8, generator=generator)
    roc = verification_roc(emb0, emb1 + 2 * issame[:, None] * emb0, issame)
    assert roc.tpr[0] == roc.fpr[0] == 0 and roc.tpr[-1] == 1
    assert np.all(np.diff(roc.tpr) >= 0) and np.all(np.diff(roc.fpr) >= 0)
    assert np.trapezoid(roc.tpr, roc.fpr) > 0.5


def test_bad_input_is_one_clear_error():
    emb = torch.randn(20, 4)
    with pytest.raises(ValueError, match="same- and different-identity"):
        verification_metrics(emb, emb, torch.arange(20) < 10)  # sorted: the first folds hold no different pair
    with pytest.raises(ValueError, match="labels for"):
        verification_metrics(emb, emb, torch.ones(19, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        verification_metrics(emb * torch.nan, emb, torch.arange(20) % 2 == 0)
