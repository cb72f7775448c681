"""How the SEC study (:mod:`sslsec.analysis.study`) scores a finished run: one :class:`Scorer` per kind of
:attr:`sslsec.methods.Method.evaluation`, so the study never asks which method it runs.

- ``linear_probe`` (SimCLR, MoCo, BYOL, SimSiam): the linear probe and kNN of the backbone on the validation and test splits,
  and the norms of the projections of test views (saved in ``projection_norms.safetensors`` for the histograms);
- ``retrieval`` (metric learning): Recall@K, MAP@R and NMI of the embedder on the validation split (held-out images
  of the training classes) and the test split (classes never trained on), and the norm spread of the test
  embeddings, from the same extracted embeddings;
- ``verification`` (face recognition): verification accuracy and VAL@FAR (insightface's protocol) of pairs drawn
  from the validation split (held-out identities or images) and the test split (identities never trained on), and
  the norm spread of the test embeddings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

from safetensors.torch import save_file

from sslsec.analysis.diagnostics import projection_samples, summarize
from sslsec.config import Config
from sslsec.eval import eval_crop_size, evaluate_backbone, retrieval_scores
from sslsec.eval.features import extract_features
from sslsec.eval.verification import split_verification
from sslsec.methods import build_augment, method_class
from sslsec.models import readable_like_other_files
from sslsec.runs import load_sec_head

NORMS_FILE = "projection_norms.safetensors"


def probe_scores(config: Config, run_dir: Path, backbone: Any, splits: Tuple[Any, Any, Any], accelerator: Any,
                 diagnostics_n: int) -> Dict[str, Any]:
    """An SSL run's scores: validation and test linear / kNN top-1 (%) and (main process; it also writes
    ``projection_norms.safetensors``) the norms of the projections of ``diagnostics_n`` test views."""
    train, val, test = splits
    probe = evaluate_backbone(backbone, train, test, config.eval, accelerator=accelerator, seed=config.trainer.seed,
                              val=val, crop_size=eval_crop_size(config), num_workers=config.data.num_workers)
    scores = {"linear_top1": probe["top1"], "linear_top5": probe["top5"], "knn_top1": probe["knn_top1"],
              "val_linear_top1": probe.get("val_top1"), "val_knn_top1": probe.get("val_knn_top1")}
    if accelerator.is_main_process:
        head = load_sec_head(run_dir, config, backbone.feature_dim).to(accelerator.device)
        samples = projection_samples(backbone.to(accelerator.device), head, test, build_augment(config, test),
                                     diagnostics_n, num_workers=config.data.num_workers)
        norms = summarize(samples)
        save_file({"norms": samples["norms"].contiguous()}, str(run_dir / NORMS_FILE))
        readable_like_other_files(run_dir / NORMS_FILE)
        scores.update({key: norms[key] for key in ("norm_mean", "norm_std", "norm_std_over_mean")})
    return scores


def retrieval_row_scores(config: Config, run_dir: Path, backbone: Any, splits: Tuple[Any, Any, Any],
                         accelerator: Any, diagnostics_n: int) -> Dict[str, Any]:
    """A metric-learning run's scores: :func:`~sslsec.eval.retrieval_scores` of its embedder on the test split
    (``recall_at_1``, ``map_at_r``, ``nmi``, ..., ``norm_std_over_mean`` of the test embeddings) and, prefixed
    ``val_``, on the validation split."""
    _, val, test = splits
    result = retrieval_scores(backbone, {"val": val, "test": test}, accelerator=accelerator,
                              seed=config.trainer.seed, crop_size=eval_crop_size(config),
                              num_workers=config.data.num_workers)
    counts = ("images", "classes")
    scores = {key: value for key, value in result["test"].items() if key not in counts}
    scores.update({f"val_{key}": value for key, value in result.get("val", {}).items() if key not in counts})
    return scores


def verification_row_scores(config: Config, run_dir: Path, backbone: Any, splits: Tuple[Any, Any, Any],
                            accelerator: Any, diagnostics_n: int) -> Dict[str, Any]:
    """A face-recognition run's scores: :func:`~sslsec.eval.verification.split_verification` of its embedder on
    ``eval.verification_pairs`` pairs (drawn with ``trainer.seed``, as ``sslsec-verification``) of the test split
    (``verification_accuracy``, ``val_at_far``, their stds, ``xnorm``) and, prefixed ``val_``, of the validation
    split; ``norm_mean``, ``norm_std`` and ``norm_std_over_mean`` of the test embeddings (unflipped)."""
    _, val, test = splits
    settings = config.eval
    options = dict(n_pairs=settings.verification_pairs, seed=config.trainer.seed, flip=settings.verification_flip,
                   accelerator=accelerator, crop_size=eval_crop_size(config), num_workers=config.data.num_workers,
                   n_folds=settings.verification_folds, far=settings.verification_far)
    scores = {}
    for prefix, split in (("", test), ("val_", val)):
        if split is not None:
            result = split_verification(backbone, split, **options)
            scores.update({f"{prefix}verification_accuracy": result["accuracy"],
                           f"{prefix}verification_accuracy_std": result["accuracy_std"],
                           f"{prefix}val_at_far": result["val_at_far"], f"{prefix}xnorm": result["xnorm"]})
    embeddings, _ = extract_features(backbone, test, accelerator=accelerator, crop_size=eval_crop_size(config),
                                     num_workers=config.data.num_workers)
    norms = embeddings.double().norm(dim=1)
    mean, std = norms.mean().item(), norms.std(unbiased=False).item()
    scores.update(norm_mean=mean, norm_std=std, norm_std_over_mean=std / mean)
    return scores


@dataclasses.dataclass(frozen=True)
class Scorer:
    """How the study scores a finished run of a method whose :attr:`~sslsec.methods.Method.evaluation` names it.

    ``score(config, run_dir, backbone, (train, val, test), accelerator, diagnostics_n)`` returns the row's scores;
    ``measures`` and ``norms`` say in words what they are; ``columns`` are the table's ``(key, title, digits)``
    (a column some row has no value for, e.g. validation without a validation split, is left out); ``files`` are
    what a scored run leaves beside its row.
    """

    score: Callable[..., Dict[str, Any]]
    measures: str
    norms: str
    columns: Tuple[Tuple[str, str, int], ...]
    files: Tuple[str, ...] = ()


SCORERS = {
    "linear_probe": Scorer(probe_scores, "top-1 (%) of the linear probe and kNN", "the projections",
                           (("val_linear_top1", "val linear", 2), ("val_knn_top1", "val kNN", 2),
                            ("linear_top1", "test linear", 2), ("knn_top1", "test kNN", 2),
                            ("norm_std_over_mean", "norm std/mean", 3)), (NORMS_FILE,)),
    "retrieval": Scorer(retrieval_row_scores, "Recall@1, MAP@R and NMI (%) of retrieval by cosine similarity",
                        "the test embeddings",
                        (("val_recall_at_1", "val R@1", 2), ("val_map_at_r", "val MAP@R", 2),
                         ("recall_at_1", "test R@1", 2), ("map_at_r", "test MAP@R", 2), ("nmi", "test NMI", 2),
                         ("norm_std_over_mean", "norm std/mean", 3))),
    "verification": Scorer(verification_row_scores, "verification accuracy and VAL@FAR (%) of image pairs, "
                           "insightface's 10-fold protocol", "the test embeddings",
                           (("val_verification_accuracy", "val acc", 2), ("val_val_at_far", "val VAL@FAR", 2),
                            ("verification_accuracy", "test acc", 2), ("val_at_far", "test VAL@FAR", 2),
                            ("norm_std_over_mean", "norm std/mean", 3))),
}


def evaluation(method: str) -> str:
    """How a run of ``method`` (a name of :data:`sslsec.methods.METHODS`) is scored: its
    :attr:`~sslsec.methods.Method.evaluation` (``"linear_probe"``, ``"retrieval"``, ``"verification"``). The one
    rule the study (:func:`scorer`) and the command line (``sslsec-pretrain --probe``) both follow: a new kind of
    evaluation is a method's ``evaluation``, one :data:`SCORERS` entry and one entry of
    :data:`sslsec.cli.EVALUATIONS`."""
    return method_class(method).evaluation


def scorer(method: str) -> Scorer:
    """The :class:`Scorer` of ``method`` (a name of :data:`sslsec.methods.METHODS`), by :func:`evaluation`."""
    return SCORERS[evaluation(method)]
