"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): SimSiam's predictor and symmetric loss, with targets from
a momentum copy of the encoder whose EMA factor rises from ``byol.momentum`` to 1 along a cosine."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from sslsec.augment import SimCLRAugment
from sslsec.losses import WithSEC
from sslsec.methods.simsiam import SimSiam

if TYPE_CHECKING:
    from sslsec.config import Config


class BYOL(SimSiam):
    """BYOL with SEC on the online network's predictions.

    ``L = (2 - 2 cos(p0, z1')) + (2 - 2 cos(p1, z0'))`` (the paper's eq. 2, both directions), ``p`` the online
    predictions, ``z'`` the target network's projections (no gradient). After optimizer step ``k`` of ``K`` the
    target moves towards the online network, ``xi = tau_k xi + (1 - tau_k) theta`` with
    ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` (the paper's Sec. 3.2); :meth:`before_step` of step
    ``k + 1`` makes that update (step 0 has none to make), so a checkpoint written after step ``k`` holds the
    target before it, and the resumed run's first :meth:`before_step` makes it.

    Args:
        momentum: ``tau_base``, the EMA factor after the first step.

    Shapes:
        view0, view1: (N, C, H, W) normalized views of the same N images -> :class:`SECLossOutput`.
    """

    augment = SimCLRAugment  # BYOL's views are SimCLR's (its asymmetric blur and solarization are not applied)
    projection_head = BYOLProjectionHead
    prediction_head = BYOLPredictionHead
    loss_weight, loss_offset = 2.0, 4.0  # SymmetricCosine: the sum of the two 2 - 2 cos

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: WithSEC, sec_schedule: str = "constant",
                 *, predictor: nn.Module, momentum: float = 0.996) -> None:
        super().__init__(backbone, head, criterion, sec_schedule, predictor=predictor)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.momentum = momentum
        self.momentum_step = 0  # the step whose before_step made the last update (step 0 has none to make)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """``tau_k`` after step ``k = step``: lightly's cosine from ``momentum`` (k = 0) to 1 (k = ``total_steps``)."""
        return cosine_schedule(step, max(total_steps, 1) + 1, self.momentum, 1.0)

    def before_step(self, step: int, total_steps: int) -> None:
        """The SEC schedule, then the target update that follows step ``step - 1``, once: a step the fp16 loss scaler
        skipped comes again with the same ``step`` and finds the update made."""
        super().before_step(step, total_steps)
        if step != self.momentum_step:
            self.update_target(self.momentum_at(step - 1, total_steps))
            self.momentum_step = step

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target_params = momentum * target_params + (1 - momentum) * online_params."""
        update_momentum(self.backbone, self.backbone_momentum, momentum)
        update_momentum(self.head, self.head_momentum, momentum)

    def networks(self) -> List[nn.Module]:
        """The online backbone, projector and predictor, and the target backbone and projector."""
        return [*super().networks(), self.backbone_momentum, self.head_momentum]

    @torch.no_grad()
    def targets(self, view0: Tensor, view1: Tensor, z0: Tensor, z1: Tensor) -> Tuple[Tensor, Tensor]:
        """The target network's projections of both views."""
        return self.head_momentum(self.backbone_momentum(view0)), self.head_momentum(self.backbone_momentum(view1))

    @classmethod
    def prediction_hidden_dim(cls, config: Config) -> int:
        """``model.prediction_hidden_dim``, or BYOL's: the projector's hidden width (4096)."""
        return config.model.prediction_hidden_dim or config.model.projection_hidden_dim

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        return {**super().options(config), "momentum": config.byol.momentum}
