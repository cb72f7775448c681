"""Deep metric learning, the SEC paper's main setting: backbone -> embedding layer -> a metric loss with SEC.

One augmented view per image, batches of P classes x K images (:func:`sslsec.data.loader.class_balanced_batches`),
the embedding scored by retrieval on classes never seen in training (:mod:`sslsec.eval.retrieval`). The losses
are pytorch-metric-learning's, each wrapped in :class:`~sslsec.losses.WithSEC`; the SEC authors' semi-hard
triplet rule, which that library does not have, is :class:`SemihardTripletLoss`. ``METRIC_LOSSES`` maps each
name to its default margin (None: the loss takes no margin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers
from pytorch_metric_learning.utils import common_functions, loss_and_miner_utils
from torch import Tensor, nn

from sslsec.augment import MetricAugment
from sslsec.choices import CLASS_WEIGHT_METRIC_LOSSES
from sslsec.eval.features import extract_features
from sslsec.eval.features import eval_crop_size
from sslsec.eval.retrieval import retrieval_metrics
from sslsec.losses import SECLossOutput, WithSEC, gather_batch
from sslsec.methods.base import Method

if TYPE_CHECKING:
    from sslsec.config import Config

METRIC_LOSSES: Dict[str, Optional[float]] = {
    "contrastive": 1.0,  # pml ContrastiveLoss: negatives pushed beyond this distance of normalized embeddings
    "triplet": 0.05,  # pml TripletMarginLoss over all triplets of the batch, mean over the non-zero ones
    "triplet_squared": 1.0,  # the SEC authors' triplet: squared distances, margin 1, mean over all triplets
    "semihard_triplet": 0.2,  # the SEC authors' (FaceNet / TensorFlow) semi-hard rule, squared distances
    "npair": None,  # normalized N-pair: one pair per class, logits 25 x cosine (the authors' scale)
    "supcon": None,  # pml SupConLoss, temperature 0.1 (N-pair over every positive pair)
    "multi_similarity": 0.1,  # pml MultiSimilarityLoss (alpha 2, beta 40, base 0.5) and its miner's epsilon
    "normface": None,  # pml NormalizedSoftmaxLoss, temperature 0.05 (scale 20): class weights
    "cosface": 0.35,  # pml CosFaceLoss, scale 64: class weights
    "arcface": 28.6,  # pml ArcFaceLoss (margin in degrees: 0.5 rad), scale 64: class weights
}

CLASS_WEIGHT_LOSSES = CLASS_WEIGHT_METRIC_LOSSES
SCALES = {"normface": 20.0, "cosface": 64.0, "arcface": 64.0}  # the published logit scales s (NormFace: 1 / 0.05)


class SemihardTripletLoss(nn.Module):
    """FaceNet's semi-hard triplet loss with TensorFlow's rule, as the SEC authors ran it.

    On L2-normalized embeddings with squared distances ``d``, each positive pair ``(a, p)`` takes the closest
    negative farther than ``p`` (``d_an > d_ap``, semi-hard); where no negative is, the farthest negative. The
    loss is ``mean over positive pairs of max(0, margin + d_ap - d_an)`` (0 for a batch of one class, or with no
    positive pair). pytorch-metric-learning's ``TripletMarginMiner("semihard")`` keeps every triplet with
    ``0 < d_an - d_ap <= margin`` instead. The mean is a masked sum, with no boolean index and no test on the batch:
    on a GPU, nothing waits for it.

    Shapes:
        embeddings (N, D), labels (N,) -> scalar.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor, indices_tuple: Any = None) -> Tensor:
        x = F.normalize(embeddings, dim=1)
        d = (2 - 2 * x @ x.t()).clamp_min(0)
        same = labels[:, None] == labels[None, :]
        positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        negative = ~same
        farther = negative[:, None, :] & (d[:, None, :] > d[:, :, None])  # [a, p, n]: n semi-hard for (a, p)
        closest_farther = torch.where(farther, d[:, None, :], torch.inf).amin(2)
        farthest = torch.where(negative, d, -torch.inf).amax(1, keepdim=True)
        d_an = torch.where(farther.any(2), closest_farther, farthest)
        triplets = positive & negative.any(1, keepdim=True)  # a batch of two classes has a negative for every anchor
        losses = torch.where(triplets, self.margin + d - d_an, 0).clamp_min(0)
        return losses.sum() / triplets.sum().clamp_min(1)


class _TargetCosineByLabel:
    """pml's ``LargeMarginSoftmaxLoss.compute_loss`` (CosFace's and ArcFace's), with each embedding's cosine to its
    class weight taken by its label, where pml cuts it out by a boolean mask (``cosine[mask == 1]``, whose size the
    host reads from the device), and the mask of the targets made on the device (pml indexes it by a CPU
    ``torch.arange``, copied to the device): the same values and gradients, with nothing waiting for a GPU."""

    def get_target_mask(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        mask = torch.zeros(len(labels), self.num_classes, dtype=embeddings.dtype, device=embeddings.device)
        return mask.scatter_(1, labels[:, None], 1)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: Any, ref_emb: Any,
                     ref_labels: Any) -> Dict[str, Any]:
        common_functions.labels_required(labels)
        common_functions.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        self.cast_types(embeddings.dtype, embeddings.device)
        miner_weights = loss_and_miner_utils.convert_to_weights(indices_tuple, labels, dtype=embeddings.dtype)
        mask, cosine = self.get_target_mask(embeddings, labels), self.get_cosine(embeddings)
        target = cosine.gather(1, labels[:, None])[:, 0]
        logits = self.scale_logits(cosine + mask * (self.modify_cosine_of_target_classes(target) - target)[:, None],
                                   embeddings)
        loss_dict = {"loss": {"losses": self.cross_entropy(logits, labels) * miner_weights,
                              "indices": common_functions.torch_arange_from_size(embeddings),
                              "reduction_type": "element"}}
        self.add_weight_regularization_to_loss_dict(loss_dict, self.W.t())
        return loss_dict


class CosFace(_TargetCosineByLabel, losses.CosFaceLoss):
    """pml's :class:`~pytorch_metric_learning.losses.CosFaceLoss`, without waiting for a GPU."""


class ArcFace(_TargetCosineByLabel, losses.ArcFaceLoss):
    """pml's :class:`~pytorch_metric_learning.losses.ArcFaceLoss`, without waiting for a GPU."""


class ScaledCosineSimilarity(distances.CosineSimilarity):
    """Cosine similarity times ``scale``: the SEC authors' normalized N-pair logits (features x 5, so 25 x cos)."""

    def __init__(self, scale: float = 25.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return self.scale * super().compute_mat(query_emb, ref_emb)


def metric_loss(name: str, num_classes: int, embedding_dim: int, margin: Optional[float] = None,
                scale: Optional[float] = None) -> Tuple[nn.Module, Optional[nn.Module]]:
    """The loss ``name`` of :data:`METRIC_LOSSES` and its miner (None for most), at ``margin`` or the default;
    class-weight losses at the logit ``scale`` or the published one (:data:`SCALES`)."""
    if name not in METRIC_LOSSES:
        raise ValueError(f"unknown metric loss {name!r}; choose one of {', '.join(METRIC_LOSSES)}")
    m = METRIC_LOSSES[name] if margin is None else margin
    if name in CLASS_WEIGHT_LOSSES and num_classes < 1:
        raise ValueError(f"{name} keeps one weight per class: give the number of training classes")
    if scale is not None and name not in CLASS_WEIGHT_LOSSES:
        raise ValueError(f"scale applies to {', '.join(CLASS_WEIGHT_LOSSES)}, not {name}")
    s = SCALES.get(name) if scale is None else scale
    if name == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=m), None
    if name == "triplet":
        return losses.TripletMarginLoss(margin=m), None
    if name == "triplet_squared":
        return losses.TripletMarginLoss(margin=m, distance=distances.LpDistance(power=2),
                                        reducer=reducers.MeanReducer()), None
    if name == "semihard_triplet":
        return SemihardTripletLoss(m), None
    if name == "npair":
        return losses.NPairsLoss(distance=ScaledCosineSimilarity(25.0)), None
    if name == "supcon":
        return losses.SupConLoss(temperature=0.1), None
    if name == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2, beta=40, base=0.5), metric_miner(name, m)
    if name == "normface":
        return losses.NormalizedSoftmaxLoss(num_classes, embedding_dim, temperature=1 / s), None
    if name == "cosface":
        return CosFace(num_classes, embedding_dim, margin=m, scale=s), None
    return ArcFace(num_classes, embedding_dim, margin=m, scale=s), None


def metric_miner(name: str, margin: Optional[float] = None) -> Optional[nn.Module]:
    """The miner that the loss ``name`` takes its pairs from: multi-similarity's (epsilon ``margin``), else None."""
    if name != "multi_similarity":
        return None
    return miners.MultiSimilarityMiner(epsilon=METRIC_LOSSES[name] if margin is None else margin)


class NoHead(nn.Identity):
    """Metric learning has no projection head: the embedding layer belongs to the saved backbone."""

    def __init__(self, **_: Any) -> None:
        super().__init__()


class MetricLearning(Method):
    """Backbone and embedding layer (:class:`~sslsec.models.Embedder`) trained by a metric loss with SEC.

    SEC and the L2 penalty act on the unnormalized embeddings that the loss normalizes inside. Class-weight losses
    (NormFace, CosFace, ArcFace) keep their weights in ``criterion``: optimized, checkpointed and resumed with
    the model. The loss runs in float32 outside autocast. Under ``torch.distributed`` the loss (and the miner)
    sees the global batch (:func:`~sslsec.losses.gather_batch`): pairs and triplets are mined across processes,
    and the class weights see every embedding, so a step on W processes is the step on one over their batches.

    Shapes:
        view (N, C, H, W) normalized, labels (N,) int64 -> :class:`SECLossOutput`.
    """

    augment = MetricAugment
    projection_head = NoHead
    n_views = 1
    evaluation = "retrieval"

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: WithSEC, sec_schedule: str = "constant", *,
                 miner: Optional[nn.Module] = None, images_per_class: Optional[int] = 3,
                 backbone_lr_scale: float = 1.0) -> None:
        super().__init__(backbone, head, criterion, sec_schedule)
        self.miner, self.images_per_class, self.backbone_lr_scale = miner, images_per_class, backbone_lr_scale

    def forward(self, view: Tensor, labels: Tensor) -> SECLossOutput:
        embeddings = self.backbone(view)
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings, labels = gather_batch(embeddings.float(), labels)
            indices = self.miner(embeddings, labels) if self.miner is not None else None
            return self.criterion(embeddings, labels, indices)

    def parameter_groups(self) -> List[Tuple[List[nn.Module], float]]:
        """The backbone's trunk at ``backbone_lr_scale`` of the lr; the embedding layer and class weights at 1."""
        return [([self.backbone.trunk], self.backbone_lr_scale), ([self.backbone.embedding, self.criterion], 1.0)]

    @torch.no_grad()
    def monitor(self, train: Any, split: Any, config: Config, accelerator: Any) -> Dict[str, float]:
        """Retrieval on ``split`` (validation): Recall@1 and MAP@R (%), each image queried against the others."""
        embeddings, labels = extract_features(self.backbone, split, accelerator=accelerator,
                                              crop_size=eval_crop_size(config), num_workers=config.data.num_workers)
        scores = retrieval_metrics(embeddings, labels, ks=(1,), nmi=False)
        return {"recall_at_1": scores["recall_at_1"], "map_at_r": scores["map_at_r"]}

    @classmethod
    def backbone_spec(cls, config: Config, in_channels: int) -> Dict[str, Any]:
        spec = {**super().backbone_spec(config, in_channels), "embedding_dim": config.model.embedding_dim,
                "embedding_batchnorm": config.model.embedding_batchnorm}
        if config.model.embedding_head != "linear":  # the spec of a linear head stays what it was
            spec.update(embedding_head=config.model.embedding_head, embedding_dropout=config.model.embedding_dropout)
        return spec

    @classmethod
    def build_head(cls, config: Config, backbone: nn.Module) -> nn.Module:
        """None: the embedding layer is part of the backbone (:class:`~sslsec.models.Embedder`)."""
        return NoHead()

    @classmethod
    def build_criterion(cls, config: Config, distributed: bool = False, num_classes: Optional[int] = None) -> WithSEC:
        """``metric.loss`` (class weights for ``num_classes``) with SEC on the embeddings, its first argument."""
        loss, _ = metric_loss(config.metric.loss, num_classes or 0, config.model.embedding_dim,
                              config.metric.margin, config.metric.scale)
        return WithSEC(loss, sec_weight=config.loss.sec_weight, sec_momentum=config.loss.sec_momentum,
                       norm_penalty_weight=config.loss.norm_penalty_weight, embedding_args=(0,))

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        return {"images_per_class": config.metric.images_per_class,
                "miner": metric_miner(config.metric.loss, config.metric.margin),
                "backbone_lr_scale": config.metric.backbone_lr_scale}
