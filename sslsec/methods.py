"""SimCLR and MoCo v2: two views in, :class:`~sslsec.losses.SECLossOutput` out.

Both pass the **unnormalized** projections to :class:`~sslsec.losses.SECInfoNCE`, which
normalizes them for the contrastive loss and puts SEC on their norms; with
``sec_weight=0`` each is exactly the plain method.
"""

from __future__ import annotations

import copy
import math

import torch
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from torch import Tensor, nn

from sslsec.config import Config
from sslsec.losses import SECInfoNCE, SECLossOutput
from sslsec.models import build_backbone, build_projection_head


class SimCLR(nn.Module):
    """SimCLR (Chen et al. 2020): NT-Xent over the global batch of 2N projections.

    Shapes:
        view0, view1: (N, C, H, W) normalized views of the same N images.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: SECInfoNCE) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.criterion = criterion

    def forward(self, view0: Tensor, view1: Tensor) -> SECLossOutput:
        # One pass over both views: BatchNorm sees all 2N images, as in the reference code.
        z0, z1 = self.head(self.backbone(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)


class MoCo(nn.Module):
    """MoCo v2 (Chen et al. 2020): a query encoder, its momentum copy, and a queue of keys.

    The queue lives in ``criterion`` (lightly's memory bank, checkpointed by
    :class:`SECInfoNCE`) and is updated with the keys of all processes after the loss.

    Args:
        shuffle_bn: shuffle the keys' batch across processes before the momentum encoder
            (lightly's ``batch_shuffle``) so BatchNorm cannot leak which key is positive.
            It only has an effect with more than one process.

    Shapes:
        view_q, view_k: (N, C, H, W) normalized views; queries come from ``view_q``.
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, criterion: SECInfoNCE, shuffle_bn: bool = True
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.criterion = criterion
        self.shuffle_bn = shuffle_bn

    @torch.no_grad()
    def update_momentum_encoder(self, momentum: float) -> None:
        """key_params = momentum * key_params + (1 - momentum) * query_params."""
        update_momentum(self.backbone, self.backbone_momentum, momentum)
        update_momentum(self.head, self.head_momentum, momentum)

    @torch.no_grad()
    def keys(self, view_k: Tensor) -> Tensor:
        """Momentum-encoder projections (N, D) of ``view_k``, with shuffle-BN across processes."""
        distributed = self.shuffle_bn and torch.distributed.is_initialized()
        view_k, shuffle = batch_shuffle(view_k, distributed=distributed)
        k = self.head_momentum(self.backbone_momentum(view_k))
        return batch_unshuffle(k, shuffle, distributed=distributed)

    def forward(self, view_q: Tensor, view_k: Tensor) -> SECLossOutput:
        q = self.head(self.backbone(view_q))
        return self.criterion(q, self.keys(view_k))


def moco_momentum(config: Config, step: int, total_steps: int) -> float:
    """The momentum at ``step``: constant, or raised from ``moco.momentum`` to 1 on a cosine."""
    base = config.moco.momentum
    if not config.moco.cosine_momentum:
        return base
    return 1 - (1 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


def build_method(config: Config, in_channels: int, distributed: bool = False) -> nn.Module:
    """The SimCLR or MoCo module that ``config`` describes, for images of ``in_channels``."""
    backbone = build_backbone(config.model.backbone, in_channels, config.model.cifar_stem)
    head = build_projection_head(
        config.method, backbone.feature_dim, config.model.projection_hidden_dim,
        config.model.projection_dim,
    )
    loss = config.loss
    memory_bank = (config.moco.queue_size, config.model.projection_dim) if config.method == "moco" else 0
    criterion = SECInfoNCE(
        temperature=loss.temperature,
        sec_weight=loss.sec_weight,
        sec_momentum=loss.sec_momentum,
        norm_penalty_weight=loss.norm_penalty_weight,
        memory_bank_size=memory_bank,
        gather_distributed=distributed,
    )
    if config.method == "simclr":
        model = SimCLR(backbone, head, criterion)
    else:
        model = MoCo(backbone, head, criterion, shuffle_bn=config.moco.batch_norm == "shuffle")
    sync = config.model.sync_batchnorm or (config.method == "moco" and config.moco.batch_norm == "sync")
    if distributed and sync:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
