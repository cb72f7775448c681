"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations")."""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from sslsec.augment import SimCLRAugment
from sslsec.losses import SECLossOutput
from sslsec.methods.base import Method


class SimCLR(Method):
    """NT-Xent over the global batch of 2N projections; no hooks beyond the SEC schedule.

    Shapes:
        view0, view1: (N, C, H, W) normalized views of the same N images -> :class:`SECLossOutput`.
    """

    augment = SimCLRAugment
    projection_head = SimCLRProjectionHead

    def forward(self, view0: Tensor, view1: Tensor, labels: Optional[Tensor] = None) -> SECLossOutput:
        # One pass over both views: BatchNorm sees all 2N images, as in the reference code.
        z0, z1 = self.head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)
