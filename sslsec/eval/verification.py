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

Any class-labelled split is scored the same way on pairs drawn from it (:func:`pairs_from_split`), with the
embeddings flip-summed as insightface embeds: ``e = f(x) + f(hflip(x))`` (:func:`pair_embeddings`).

Example::

    scores = verification_metrics(emb0, emb1, issame)   # emb0, emb1 (P, D); issame (P,) bool
    scores["accuracy"], scores["val_at_far"]             # % over the folds
    scores = split_verification(backbone, test_split)    # 6000 pairs drawn from the split's labels
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Union

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from sslsec.eval.features import EvaluationError, eval_transform, extract_features

__all__ = ["ACCURACY_THRESHOLDS", "VAL_THRESHOLDS", "PairEmbeddings", "VerificationROC", "pair_embeddings",
           "pairs_from_split", "score_pairs", "split_verification", "verification_metrics", "verification_roc"]

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


class PairEmbeddings(NamedTuple):
    """The embeddings of a set of pairs, ready for :func:`verification_metrics` and :func:`verification_roc`."""

    emb0: Tensor  # (P, D) float32, the pairs' first images (flip-summed when asked)
    emb1: Tensor  # (P, D) float32, the pairs' second images
    issame: Tensor  # (P,) bool
    xnorm: float  # mean norm of the raw embeddings f(x) (and f(hflip x)) of the pairs' images, before any sum


def pairs_from_split(labels: Tensor, n_pairs: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Verification pairs drawn from class labels: ``(index0, index1, issame)``, each ``(n_pairs,)``.

    Pairs alternate same / different identity (``issame = [True, False, True, ...]``), so every run of two or
    more consecutive pairs, hence every consecutive fold of :func:`verification_metrics`, holds both kinds.
    A same pair is an image drawn uniformly among those whose class has two or more, with another image of its
    class drawn uniformly; a different pair, an image drawn uniformly with one drawn uniformly from the other
    classes. Drawn with replacement (a pair may repeat in a small split), never an image with itself, and the
    same for one ``seed`` on any machine (a CPU ``torch.Generator``).

    Args:
        labels: (N,) int class labels of the split's images.
        n_pairs: pairs to draw (``ceil(n_pairs / 2)`` same ones), at least 2.
        seed: the generator's seed.

    Returns:
        index0, index1: int64 ``(n_pairs,)`` indices into ``labels``; issame: bool ``(n_pairs,)``.
    """
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if n_pairs < 2:
        raise ValueError(f"n_pairs must be at least 2 (one same and one different pair), got {n_pairs}")
    _, labels = torch.unique(labels, return_inverse=True)  # classes 0 .. K-1, whatever the labels were
    counts = torch.bincount(labels)
    if len(counts) < 2:
        raise EvaluationError(f"the split has {len(labels)} images of a single class: verification needs "
                              "different-identity pairs, so at least two classes")
    if counts.max() < 2:
        raise EvaluationError(f"every class of the split has one image ({len(counts)} classes): verification "
                              "needs same-identity pairs, so classes with two or more images")
    order = torch.argsort(labels, stable=True)  # images grouped by class
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts[labels[order]]  # each image's position within its class
    generator = torch.Generator().manual_seed(seed)
    n_same, n_diff = (n_pairs + 1) // 2, n_pairs // 2

    eligible = (counts[labels] >= 2).nonzero().flatten()
    anchor = eligible[torch.randint(len(eligible), (n_same,), generator=generator)]
    size = counts[labels[anchor]]
    # another member of the class, uniformly: its position shifted by 1 .. size - 1, cyclically
    shift = 1 + (torch.rand(n_same, generator=generator) * (size - 1)).long().clamp(max=size - 2)
    same_partner = order[starts[labels[anchor]] + (rank[anchor] + shift) % size]

    other = torch.randint(len(labels), (n_diff,), generator=generator)
    outside = len(labels) - counts[labels[other]]  # images of the other classes
    draw = (torch.rand(n_diff, generator=generator) * outside).long().clamp(max=outside - 1)
    draw = draw + (draw >= starts[labels[other]]) * counts[labels[other]]  # skip the anchor's class block
    diff_partner = order[draw]

    index0, index1 = torch.empty(n_pairs, dtype=torch.int64), torch.empty(n_pairs, dtype=torch.int64)
    index0[0::2], index1[0::2] = anchor, same_partner
    index0[1::2], index1[1::2] = other, diff_partner
    issame = torch.zeros(n_pairs, dtype=torch.bool)
    issame[0::2] = True
    return index0, index1, issame


class FlippedTransform(nn.Module):
    """``transform`` followed by a horizontal flip of the views ``(B, C, H, W)``: the mirror images a face
    toolkit embeds beside the originals."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, images: Tensor, **kwargs: Any) -> Tensor:
        return self.transform(images, **kwargs).flip(-1)


def pair_embeddings(backbone: nn.Module, dataset: Any, index0: Tensor, index1: Tensor, issame: Tensor, *,
                    flip: bool = True, accelerator: Optional[Accelerator] = None, crop_size: Optional[int] = None,
                    num_workers: Optional[int] = None, batch_size: int = 512) -> PairEmbeddings:
    """Embed every image of ``dataset`` once (twice with ``flip``) and gather the pairs ``(index0[i], index1[i])``.

    With ``flip`` an image's embedding is ``f(x) + f(hflip(x))``, insightface's; ``xnorm`` is the mean of
    ``||f(x)||`` and ``||f(hflip(x))||`` over the pairs' images (each time a pair uses one), the raw norms SEC
    acts on, not the norm of the sum. ``dataset``: an :class:`~sslsec.data.ImageArrays` or
    :class:`~sslsec.data.ImageFolderDataset`, as :func:`~sslsec.eval.features.extract_features` takes it.
    """
    index0, index1 = torch.as_tensor(index0).long(), torch.as_tensor(index1).long()
    extract = lambda transform: extract_features(backbone, dataset, accelerator=accelerator, transform=transform,
                                                 num_workers=num_workers, batch_size=batch_size)[0]
    transform = eval_transform(dataset, crop_size)
    embeddings = extract(transform)
    norms = embeddings.double().norm(dim=1)
    if flip:
        flipped = extract(FlippedTransform(transform))
        norms = (norms + flipped.double().norm(dim=1)) / 2
        embeddings = embeddings + flipped
    xnorm = torch.cat([norms[index0], norms[index1]]).mean().item()
    return PairEmbeddings(embeddings[index0], embeddings[index1], torch.as_tensor(issame).bool(), xnorm)


def split_verification(backbone: nn.Module, split: Any, *, n_pairs: int = 6000, seed: int = 0, flip: bool = True,
                       accelerator: Optional[Accelerator] = None, crop_size: Optional[int] = None,
                       num_workers: Optional[int] = None, n_folds: int = 10, far: float = 1e-3) -> Dict[str, float]:
    """:func:`verification_metrics` of ``n_pairs`` pairs drawn from ``split``'s labels (:func:`pairs_from_split`
    with ``seed``), embedded by ``backbone`` (flip-summed with ``flip``; see :func:`pair_embeddings`).

    ``xnorm`` is the mean norm of the raw embeddings; ``crop_size`` and ``num_workers`` as
    :func:`~sslsec.eval.features.extract_features` takes them.
    """
    pairs = pairs_from_split(split.labels, n_pairs, seed)
    embedded = pair_embeddings(backbone, split, *pairs, flip=flip, accelerator=accelerator, crop_size=crop_size,
                               num_workers=num_workers)
    return {**verification_metrics(embedded.emb0, embedded.emb1, embedded.issame, n_folds, far),
            "xnorm": embedded.xnorm}


def score_pairs(backbone: nn.Module, dataset: Any, index0: Tensor, index1: Tensor, issame: Tensor, *,
                flip: bool = True, n_folds: int = 10, far: float = 1e-3, accelerator: Optional[Accelerator] = None,
                crop_size: Optional[int] = None, num_workers: Optional[int] = None) -> Dict[str, Any]:
    """:func:`verification_metrics` of the pairs ``(index0[i], index1[i])`` of ``dataset``'s images, embedded by
    :func:`pair_embeddings`, with ``images`` (the data set's size) and ``roc``, their :func:`verification_roc`."""
    embedded = pair_embeddings(backbone, dataset, index0, index1, issame, flip=flip, accelerator=accelerator,
                               crop_size=crop_size, num_workers=num_workers)
    scores = verification_metrics(embedded.emb0, embedded.emb1, embedded.issame, n_folds, far)
    return {**scores, "xnorm": embedded.xnorm, "images": len(dataset),
            "roc": verification_roc(embedded.emb0, embedded.emb1, embedded.issame, n_folds)}
