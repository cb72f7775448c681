"""Face verification as face-recognition toolkits score it (insightface's ``arcface_torch/eval/verification.py``).

A verification set is a list of image pairs, each labelled "same identity" or not. Both embeddings of a pair are
L2-normalized and compared by their squared Euclidean distance ``d = ||e0 - e1||^2`` in ``[0, 4]``; a pair is
called "same" iff ``d < threshold``. The pairs are cut into ``n_folds`` consecutive folds (``KFold`` without
shuffling); for each fold the threshold is chosen on the other folds and the fold is scored with it:

- accuracy: the first threshold of ``arange(0, 4, 0.01)`` with the best training accuracy;
- VAL@FAR: on ``arange(0, 4, 0.001)``, the threshold where the training folds' false-accept rate reaches ``far``
  (``interp1d(far_train, thresholds, "slinear")``; 0 where the largest training FAR stays below ``far``); the fold's
  true-accept rate (VAL) and false-accept rate at that threshold.

The training FAR is flat over runs of thresholds, and scipy >= 1.9 refuses an ``interp1d`` over repeated x values
(insightface's code then stops with "Expect x to not have duplicates"). Before, a linear spline took the values as
its coefficients: between the *last* threshold of the FAR below ``far`` and the *first* of the FAR above, which is
what ``np.interp`` computes, and what is used here.

Example::

    scores = verification_metrics(emb0, emb1, issame)   # emb0, emb1 (P, D); issame (P,) bool
    scores["accuracy"], scores["val_at_far"]             # % over the folds
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["ACCURACY_THRESHOLDS", "VAL_THRESHOLDS", "VerificationROC", "verification_metrics", "verification_roc"]

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)  # squared distances between unit vectors lie in [0, 4]
VAL_THRESHOLDS = np.arange(0, 4, 0.001)

ArrayLike = Union[Tensor, np.ndarray]


class VerificationROC(NamedTuple):
    """True- and false-accept rates at each threshold, averaged over the test folds (the curve insightface plots)."""

    thresholds: np.ndarray  # (T,) squared distances
    tpr: np.ndarray  # (T,) in [0, 1]
    fpr: np.ndarray  # (T,) in [0, 1]


def verification_metrics(emb0: ArrayLike, emb1: ArrayLike, issame: ArrayLike, n_folds: int = 10,
                         far: float = 1e-3) -> Dict[str, float]:
    """Verification accuracy and VAL@FAR of pairs ``(emb0[i], emb1[i])`` by the insightface protocol.

    Args:
        emb0, emb1: (P, D) embeddings of the pairs' first and second images, raw or normalized (they are
            L2-normalized here).
        issame: (P,) bool, whether pair ``i`` shows one identity.
        n_folds: consecutive folds of pairs (``KFold(n_folds, shuffle=False)``).
        far: the false-accept rate at which VAL is read (1e-3: insightface's).

    Returns:
        ``accuracy`` (mean over folds, %), ``accuracy_std`` (population std over folds, %), ``threshold`` (mean
        chosen threshold, squared distance), ``val_at_far`` (%, mean over folds), ``val_std`` (%), ``far`` (the
        folds' mean false-accept rate at their VAL thresholds, %), ``xnorm`` (mean norm of the embeddings as
        given, before normalization: what SEC acts on), ``pairs``.
    """
    x0, x1, same = _check(emb0, emb1, issame, n_folds)
    norms = np.concatenate([np.linalg.norm(x0, axis=1), np.linalg.norm(x1, axis=1)])
    dist = _squared_distances(x0, x1)
    folds = _fold_ids(len(same), n_folds)

    correct = _fold_counts((dist[None, :] < ACCURACY_THRESHOLDS[:, None]) == same[None, :], folds, n_folds)
    fold_sizes = np.bincount(folds, minlength=n_folds)
    train_accuracy = (correct.sum(1, keepdims=True) - correct) / (len(same) - fold_sizes)  # (T, F)
    best = train_accuracy.argmax(0)  # the first threshold with the best training accuracy, per fold
    accuracy = correct[best, np.arange(n_folds)] / fold_sizes
    val, false_accept = _val_at_far(dist, same, folds, n_folds, far)
    return {"accuracy": 100 * float(accuracy.mean()), "accuracy_std": 100 * float(accuracy.std()),
            "threshold": float(ACCURACY_THRESHOLDS[best].mean()),
            "val_at_far": 100 * float(val.mean()), "val_std": 100 * float(val.std()),
            "far": 100 * float(false_accept.mean()), "xnorm": float(norms.mean()), "pairs": int(len(same))}


def verification_roc(emb0: ArrayLike, emb1: ArrayLike, issame: ArrayLike, n_folds: int = 10) -> VerificationROC:
    """The ROC over ``ACCURACY_THRESHOLDS``: each test fold's true- and false-accept rates, averaged over folds."""
    x0, x1, same = _check(emb0, emb1, issame, n_folds)
    dist = _squared_distances(x0, x1)
    folds = _fold_ids(len(same), n_folds)
    accept = dist[None, :] < ACCURACY_THRESHOLDS[:, None]
    true_accept = _fold_counts(accept & same[None, :], folds, n_folds)
    false_accept = _fold_counts(accept & ~same[None, :], folds, n_folds)
    n_same = np.bincount(folds, weights=same, minlength=n_folds)
    n_diff = np.bincount(folds, weights=~same, minlength=n_folds)
    tpr = np.divide(true_accept, n_same, out=np.zeros(true_accept.shape), where=n_same > 0)
    fpr = np.divide(false_accept, n_diff, out=np.zeros(false_accept.shape), where=n_diff > 0)
    return VerificationROC(ACCURACY_THRESHOLDS.copy(), tpr.mean(1), fpr.mean(1))


def _val_at_far(dist: np.ndarray, same: np.ndarray, folds: np.ndarray, n_folds: int,
                far: float) -> tuple[np.ndarray, np.ndarray]:
    """Per fold: the threshold reaching ``far`` on the training folds, and the test fold's (VAL, FAR) at it."""
    false_accept = _fold_counts((dist[None, :] < VAL_THRESHOLDS[:, None]) & ~same[None, :], folds, n_folds)
    n_diff = np.bincount(folds, weights=~same, minlength=n_folds)
    val, far_test = np.zeros(n_folds), np.zeros(n_folds)
    for fold in range(n_folds):
        far_train = (false_accept.sum(1) - false_accept[:, fold]) / (n_diff.sum() - n_diff[fold])
        threshold = np.interp(far, far_train, VAL_THRESHOLDS) if far_train.max() >= far else 0.0
        test = folds == fold
        accept = dist[test] < threshold
        val[fold] = (accept & same[test]).sum() / same[test].sum()
        far_test[fold] = (accept & ~same[test]).sum() / (~same[test]).sum()
    return val, far_test


def _fold_counts(hits: np.ndarray, folds: np.ndarray, n_folds: int) -> np.ndarray:
    """(T, P) booleans -> (T, F) counts of hits within each fold."""
    one_hot = np.zeros((len(folds), n_folds), dtype=np.int64)
    one_hot[np.arange(len(folds)), folds] = 1
    return hits.astype(np.int64) @ one_hot


def _fold_ids(n_pairs: int, n_folds: int) -> np.ndarray:
    """The fold of each pair: consecutive blocks, the first ``n_pairs % n_folds`` one longer (sklearn's KFold)."""
    sizes = np.full(n_folds, n_pairs // n_folds)
    sizes[: n_pairs % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def _squared_distances(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    unit0 = x0 / np.maximum(np.linalg.norm(x0, axis=1, keepdims=True), 1e-12)
    unit1 = x1 / np.maximum(np.linalg.norm(x1, axis=1, keepdims=True), 1e-12)
    return np.square(unit0 - unit1).sum(1)


def _check(emb0: ArrayLike, emb1: ArrayLike, issame: ArrayLike,
           n_folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x0, x1 = (_numpy(e).astype(np.float64) for e in (emb0, emb1))
    same = _numpy(issame).astype(bool).reshape(-1)
    if x0.ndim != 2 or x0.shape != x1.shape:
        raise ValueError(f"emb0 and emb1 must be (pairs, dim) of one shape, got {x0.shape} and {x1.shape}")
    if len(same) != len(x0):
        raise ValueError(f"issame has {len(same)} labels for {len(x0)} pairs")
    if not np.isfinite(x0).all() or not np.isfinite(x1).all():
        raise ValueError("the embeddings hold NaN or Inf: the network diverged or was given bad input")
    if not 2 <= n_folds <= len(same):
        raise ValueError(f"n_folds must be between 2 and the number of pairs ({len(same)}), got {n_folds}")
    folds = _fold_ids(len(same), n_folds)
    n_same = np.bincount(folds, weights=same, minlength=n_folds)
    n_diff = np.bincount(folds, weights=~same, minlength=n_folds)
    if (n_same == 0).any() or (n_diff == 0).any():
        raise ValueError(f"each of the {n_folds} consecutive folds of pairs needs same- and different-identity "
                         "pairs; interleave the pairs (as insightface's sets and pairs_from_split do)")
    return x0, x1, same


def _numpy(value: ArrayLike) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
