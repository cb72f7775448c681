"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"), read like
facebookresearch/simsiam's ``builder.py``: an encoder (backbone and projector), a predictor, and a stop-gradient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import Tensor, nn

from sslsec.augment import MoCoV2Augment
from sslsec.losses import SECLossOutput, SymmetricCosine, WithSEC
from sslsec.methods.base import Method

if TYPE_CHECKING:
    from sslsec.config import Config


class SimSiam(Method):
    """SimSiam with SEC on the predictions.

    ``L = D(p0, stopgrad(z1)) / 2 + D(p1, stopgrad(z0)) / 2`` (the paper's eq. 2, :class:`SymmetricCosine`), with
    ``z = head(backbone(view))`` and ``p = predictor(z)``. SEC (and the L2 baseline) act on the predictions
    ``p0, p1`` before the loss normalizes them: they carry the gradient, the targets carry none (docs/SEC.md).
    Each view goes through the networks alone, as in the reference code (BatchNorm statistics per view).

    Args:
        predictor: the prediction head, ``(N, D) -> (N, D)`` (lightly's :class:`SimSiamPredictionHead`).

    Shapes:
        view0, view1: (N, C, H, W) normalized views of the same N images -> :class:`SECLossOutput`.
    """

    augment = MoCoV2Augment  # SimSiam's views are MoCo v2's (crop 0.2-1, jitter 0.8, grayscale 0.2)
    projection_head = SimSiamProjectionHead
    prediction_head = SimSiamPredictionHead
    loss_weight, loss_offset = 0.5, 0.0  # SymmetricCosine: the mean of the two negative cosines

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: WithSEC, sec_schedule: str = "constant",
                 *, predictor: nn.Module) -> None:
        super().__init__(backbone, head, criterion, sec_schedule)
        self.predictor = predictor

    def networks(self) -> List[nn.Module]:
        """The backbone, the projector and the predictor."""
        return [self.backbone, self.head, self.predictor]

    def parameter_groups(self) -> List[Tuple[List[nn.Module], float]]:
        return [([self.backbone, self.head, self.predictor, self.criterion], 1.0)]

    def targets(self, view0: Tensor, view1: Tensor, z0: Tensor, z1: Tensor) -> Tuple[Tensor, Tensor]:
        """What the predictions are pulled to: the projections themselves, with the gradient stopped."""
        return z0.detach(), z1.detach()

    def forward(self, view0: Tensor, view1: Tensor, labels: Optional[Tensor] = None) -> SECLossOutput:
        z0, z1 = self.head(self.backbone(view0)), self.head(self.backbone(view1))
        p0, p1 = self.predictor(z0), self.predictor(z1)
        return self.criterion(p0, p1, *self.targets(view0, view1, z0, z1))

    @classmethod
    def prediction_hidden_dim(cls, config: Config) -> int:
        """``model.prediction_hidden_dim``, or SimSiam's bottleneck: a quarter of the projection (512 of 2048)."""
        return config.model.prediction_hidden_dim or max(config.model.projection_dim // 4, 1)

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        """The predictor, ``projection_dim -> prediction_hidden_dim -> projection_dim``."""
        dim = config.model.projection_dim
        return {"predictor": cls.prediction_head(input_dim=dim, hidden_dim=cls.prediction_hidden_dim(config),
                                                 output_dim=dim)}

    @classmethod
    def build_criterion(cls, config: Config, distributed: bool = False, num_classes: Optional[int] = None) -> WithSEC:
        """:class:`SymmetricCosine` called as ``(p0, p1, z0, z1)``, SEC on both predictions (``embedding_args=(0, 1)``);
        nothing is gathered across processes (the loss pairs each image's own views)."""
        loss = config.loss
        return WithSEC(SymmetricCosine(cls.loss_weight, cls.loss_offset), sec_weight=loss.sec_weight,
                       sec_momentum=loss.sec_momentum, norm_penalty_weight=loss.norm_penalty_weight,
                       embedding_args=(0, 1))
