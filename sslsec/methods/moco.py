"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning"), read like
facebookresearch/moco's ``builder.py``: a query encoder, its momentum copy, and a queue of keys."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import (batch_shuffle, batch_unshuffle, concat_all_gather, deactivate_requires_grad,
                                  update_momentum)
from lightly.utils.dist import world_size
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from sslsec.augment import MoCoV2Augment
from sslsec.losses import SECLossOutput, WithSEC
from sslsec.methods.base import Method

if TYPE_CHECKING:
    from sslsec.config import Config


class KeyQueue(MemoryBankModule):
    """MoCo's queue of keys: lightly's memory bank, written as a ring on the device.

    lightly's bank reads its pointer back to the host (``int(bank_ptr)``) at every step; here the pointer stays a
    tensor and the keys go to positions ``(ptr + arange(B)) % K``, so a step never waits for the device. With
    ``K % B == 0`` (MoCo's rule, and every recipe here) the queue holds exactly what lightly's would; otherwise the
    keys wrap around instead of being cut at the end. The keys of all processes are gathered first when
    ``gather_distributed``, so every process holds the same queue.

    Args:
        bank: the memory bank to take over (size, options and contents; lightly's ``NTXentLoss.memory_bank``).

    Shapes:
        bank: (K, D) keys; bank_ptr: (1,) int64, the position of the next key.
    """

    def __init__(self, bank: MemoryBankModule) -> None:
        with torch.random.fork_rng(devices=[]):  # lightly fills a new bank at random: leave the global RNG as it was
            super().__init__(bank.size, bank.gather_distributed, bank.feature_dim_first)
        if len(self.size) > 1:
            self.bank.copy_(bank.bank)
            self.bank_ptr.copy_(bank.bank_ptr)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch: Tensor) -> None:
        """Write the keys ``batch`` (B, D) over the oldest ones."""
        if self.gather_distributed and world_size() > 1:
            batch = concat_all_gather(batch)
        if batch.shape[0] > self.size[0]:
            raise ValueError(f"{batch.shape[0]} keys per step do not fit a queue of {self.size[0]}; raise "
                             "moco.queue_size to at least the global batch")
        positions = (self.bank_ptr + torch.arange(batch.shape[0], device=self.bank.device)) % self.size[0]
        self.bank.index_copy_(0, positions, batch.detach().to(self.bank.dtype))
        self.bank_ptr.copy_((self.bank_ptr + batch.shape[0]) % self.size[0])


class MoCo(Method):
    """MoCo v2 with SEC on the queries.

    The queue lives in ``criterion`` (lightly's memory bank, here a :class:`KeyQueue`, checkpointed by
    :class:`WithSEC`) and is updated with the keys of all processes after the loss, with no host synchronisation.

    Args:
        momentum: the momentum encoder's EMA factor at the first step.
        cosine_momentum: raise the momentum from ``momentum`` to 1 along a cosine over the run (BYOL's schedule).
        shuffle_bn: shuffle the keys' batch across processes before the momentum encoder (lightly's
            ``batch_shuffle``) so BatchNorm cannot leak which key is positive; only matters with several processes.

    Shapes:
        view_q, view_k: (N, C, H, W) normalized views; queries come from ``view_q``.
    """

    augment = MoCoV2Augment
    projection_head = MoCoProjectionHead

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: WithSEC, sec_schedule: str = "constant",
                 *, momentum: float = 0.99, cosine_momentum: bool = False, shuffle_bn: bool = True) -> None:
        super().__init__(backbone, head, criterion, sec_schedule)
        if isinstance(getattr(criterion.loss, "memory_bank", None), MemoryBankModule):
            criterion.loss.memory_bank = KeyQueue(criterion.loss.memory_bank)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.momentum, self.cosine_momentum, self.shuffle_bn = momentum, cosine_momentum, shuffle_bn
        self.momentum_step = -1  # the step of the last momentum update (a resumed run updates at its first step)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum at ``step``: constant, or lightly's cosine from ``momentum`` (step 0) to 1 (``total_steps``)."""
        if not self.cosine_momentum:
            return self.momentum
        return cosine_schedule(step, max(total_steps, 1) + 1, self.momentum, 1.0)

    def before_step(self, step: int, total_steps: int) -> None:
        """The SEC schedule, then the momentum update of the key encoder, once per optimizer step: a step that the
        fp16 loss scaler skipped left the query encoder as it was and comes again with the same ``step``."""
        super().before_step(step, total_steps)
        if step != self.momentum_step:
            self.update_momentum_encoder(self.momentum_at(step, total_steps))
            self.momentum_step = step

    def networks(self) -> List[nn.Module]:
        """The query encoder's backbone and head, and their momentum copies."""
        return [self.backbone, self.head, self.backbone_momentum, self.head_momentum]

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

    def forward(self, view_q: Tensor, view_k: Tensor, labels: Optional[Tensor] = None) -> SECLossOutput:
        q = self.head(self.backbone(view_q))
        return self.criterion(q, self.keys(view_k))

    @classmethod
    def memory_bank_size(cls, config: Config) -> Tuple[int, int]:
        """The queue: ``moco.queue_size`` keys of ``model.projection_dim``."""
        return (config.moco.queue_size, config.model.projection_dim)

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        moco = config.moco
        return {"momentum": moco.momentum, "cosine_momentum": moco.cosine_momentum,
                "shuffle_bn": moco.batch_norm == "shuffle"}

    @classmethod
    def sync_batchnorm(cls, config: Config) -> bool:
        """``model.sync_batchnorm``, or ``moco.batch_norm=sync``."""
        return super().sync_batchnorm(config) or config.moco.batch_norm == "sync"
