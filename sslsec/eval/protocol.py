"""The evaluation protocol of a run: the linear probe and kNN with the config's ``eval`` section, retrieval on the
validation and test splits (metric learning), face verification (:func:`score_verification`), beside the
random-init baseline every number should be read against."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

import torch
from accelerate import Accelerator
from torch import nn

from sslsec.data import DatasetError, load_splits
from sslsec.eval.features import EvaluationError, device_of, extract_features, extractor
from sslsec.eval.knn import knn_on_features
from sslsec.eval.linear import linear_probe
from sslsec.eval.retrieval import retrieval_metrics
from sslsec.eval.verification import pairs_from_split, score_pairs
from sslsec.models import build_backbone

if TYPE_CHECKING:
    from sslsec.config import Config, EvalConfig


def evaluate_backbone(backbone: nn.Module, train: Any, test: Any, settings: EvalConfig, *,
                      accelerator: Optional[Accelerator] = None, seed: int = 0, val: Any = None,
                      crop_size: Optional[int] = None, num_workers: Optional[int] = None) -> Dict[str, Any]:
    """The linear probe and kNN with the ``eval`` section of a config, extracting the features once.

    With a validation split ``val`` the same probe and kNN bank are also scored on it (``val_top1``,
    ``val_top5``, ``val_knn_top1``): choose settings by those, report ``top1``/``knn_top1`` (test).
    ``crop_size`` (``data.crop_size``): score at the training view size (:func:`~sslsec.eval.features.eval_transform`);
    ``num_workers`` (``data.num_workers``): the workers that decode a JPEG folder.
    """
    extract = extractor(backbone, accelerator, 512, crop_size, num_workers)
    features = extract(train), extract(test)
    val_features = extract(val) if val is not None else None
    result = linear_probe(backbone, train, test, epochs=settings.probe_epochs, batch_size=settings.probe_batch_size,
                          lr=settings.probe_lr, weight_decay=settings.probe_weight_decay,
                          augment=settings.probe_augment, accelerator=accelerator, seed=seed, features=features,
                          val_features=val_features, schedule=settings.probe_schedule,
                          standardize=settings.probe_standardize, crop_size=crop_size, num_workers=num_workers)
    knn = functools.partial(knn_on_features, features[0], num_classes=train.num_classes, k=settings.knn_k,
                            temperature=settings.knn_temperature, device=device_of(backbone, accelerator))
    result["knn_top1"] = knn(features[1])
    if val_features is not None:
        result["val_knn_top1"] = knn(val_features)
        result["val_size"] = len(val)
    return {**result, "knn_k": settings.knn_k, "knn_temperature": settings.knn_temperature}


def retrieval_scores(backbone: nn.Module, splits: Mapping[str, Any], *, accelerator: Optional[Accelerator] = None,
                     seed: int = 0, crop_size: Optional[int] = None,
                     num_workers: Optional[int] = None) -> Dict[str, Dict[str, float]]:
    """Retrieval of ``backbone``'s embeddings on each split of ``splits`` (name -> data set; None is skipped).

    Per split: ``images``, ``classes``, every :func:`~sslsec.eval.retrieval.retrieval_metrics` score (%, k-means
    seeded by ``seed``) and the spread of the embedding norms ``||e||`` before normalization, from the same
    extracted embeddings: ``norm_mean``, ``norm_std`` (sample std) and ``norm_std_over_mean``, the quantity SEC
    shrinks. A metric-learning backbone is its embedder, so its features are the embeddings.
    """
    result = {}
    for name, dataset in splits.items():
        if dataset is None:
            continue
        embeddings, labels = extract_features(backbone, dataset, accelerator=accelerator, crop_size=crop_size,
                                              num_workers=num_workers)
        norms = embeddings.double().norm(dim=1)
        result[name] = {"images": len(dataset), "classes": dataset.num_classes,
                        **retrieval_metrics(embeddings, labels, seed=seed), "norm_mean": norms.mean().item(),
                        "norm_std": norms.std().item(), "norm_std_over_mean": (norms.std() / norms.mean()).item()}
    return result


def score_retrieval(config: Config, backbone: Optional[nn.Module] = None, *,
                    accelerator: Optional[Accelerator] = None) -> Dict[str, Dict[str, float]]:
    """``{"val": {...}, "test": {...}}``: :func:`retrieval_scores` of ``backbone`` (random weights of
    :func:`random_backbone` if None) on the validation (when the config has one) and test splits of ``config``."""
    train, val, test = load_splits(config)
    if backbone is None:
        backbone = random_backbone(config, train.channels)
    return retrieval_scores(backbone, {"val": val, "test": test}, accelerator=accelerator, seed=config.trainer.seed,
                            crop_size=eval_crop_size(config), num_workers=config.data.num_workers)


def score_verification(config: Config, backbone: Optional[nn.Module] = None, *,
                       accelerator: Optional[Accelerator] = None) -> Dict[str, Dict[str, Any]]:
    """Face verification of ``backbone`` (random weights of :func:`random_backbone` if None) by insightface's
    protocol, one entry per set: ``val`` and ``test``, ``eval.verification_pairs`` pairs drawn from the validation
    (when the config has one) and test splits (:func:`~sslsec.eval.verification.pairs_from_split`, seeded by
    ``trainer.seed``), then each of ``eval.verification_sets`` by its name (``lfw``), served at the test split's
    image size and channels and normalized as the training data.

    Each entry: :func:`~sslsec.eval.verification.score_pairs`'s scores (``accuracy``, ``accuracy_std``,
    ``val_at_far``, ``threshold``, ``xnorm``, ..., ``roc``) and ``source`` (the split or the set's path).
    """
    settings = config.eval
    train, val, test = load_splits(config)
    sets = [_verification_set(path, train, test, settings.verification_folds)  # a bad file fails before any work
            for path in settings.verification_sets]
    if backbone is None:
        backbone = random_backbone(config, train.channels)
    score = functools.partial(score_pairs, backbone, flip=settings.verification_flip,
                              n_folds=settings.verification_folds, far=settings.verification_far,
                              accelerator=accelerator, crop_size=eval_crop_size(config),
                              num_workers=config.data.num_workers)
    result: Dict[str, Dict[str, Any]] = {}
    for name, split in (("val", val), ("test", test)):
        if split is not None:
            pairs = pairs_from_split(split.labels, settings.verification_pairs, config.trainer.seed)
            result[name] = {"source": f"{name} split of {split.name}", **score(split, *pairs)}
    for path, pairs in zip(settings.verification_sets, sets):
        name = pairs.name if pairs.name not in result else f"{pairs.name}_{len(result)}"
        try:
            scores = score(pairs.images, pairs.index0, pairs.index1, pairs.issame)
        except ValueError as error:  # a set too small for the folds, or whose folds lack a kind of pair
            if isinstance(error, (EvaluationError, DatasetError)):
                raise
            raise EvaluationError(f"verification set {path}: {error}") from None
        result[name] = {"source": str(path), **scores}
    return result


def _verification_set(path: str, train: Any, test: Any, n_folds: int) -> Any:
    """The verification set at ``path`` as the test split serves its images (size, channels) and normalized as the
    training data; a ``pairs.txt`` of other folds than ``n_folds`` is refused with the fix."""
    from sslsec.data.verification_sets import load_verification_set  # here: only verification reads these

    pairs = load_verification_set(path, test.image_size, test.channels).normalized_as(train.mean, train.std)
    if pairs.folds not in (None, n_folds):
        raise EvaluationError(f"verification set {path} defines {pairs.folds} folds, but eval.verification_folds="
                              f"{n_folds}; set eval.verification_folds={pairs.folds} to score it by its own folds")
    return pairs


def eval_crop_size(config: Config) -> Optional[int]:
    """The view size evaluation scores at: ``data.crop_size``, or None (whole images) if not ``eval.center_crop``."""
    return config.data.crop_size if config.eval.center_crop else None


def random_backbone(config: Config, in_channels: int) -> nn.Module:
    """The untrained backbone a run of ``config`` saves (metric learning: with its embedding layer), initialized from
    ``trainer.seed``: the baseline for every number of a trained one."""
    from sslsec.methods import method_class  # here: the methods import this package (their monitors)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)
        return build_backbone(**method_class(config.method).backbone_spec(config, in_channels))

