"""Losses: the Spherical Embedding Constraint, and the ways to add it to an embedding loss.

:class:`WithSEC` adds SEC to any loss module (lightly's contrastive losses, pytorch-metric-learning's
losses, BYOL's and SimSiam's :class:`SymmetricCosine`); :class:`SECInfoNCE` is it around NT-Xent;
:class:`SECRegularizer` is SEC in pytorch-metric-learning's own ``embedding_regularizer`` hook.

SEC (Zhang, Li, Zhang, "Deep Metric Learning with Spherical Embedding", NeurIPS 2020,
arXiv 2011.02785, eq. 5) pulls every embedding's norm towards one common radius ``mu``:

    L_sec = mean_i (||z_i|| - mu)^2,    mu = mean_i ||z_i||   (no gradient flows through mu)

so that the embeddings live near one hypersphere before they are normalized for the
contrastive loss. The paper's L2 baseline, ``mean_i ||z_i||^2``, is :class:`NormPenalty`.

Under ``torch.distributed`` ``mu`` (and the logged norm statistics) are taken over the
global batch by one all-reduce, so every process pulls towards the same sphere. The
returned loss is the mean over this process's rows; with equal per-process batches, the
average of the per-process losses (what DDP's gradient averaging optimizes) is exactly the
single-process loss on the concatenated batch.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from lightly.loss import DCLLoss, DCLWLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils import dist as lightly_dist
from pytorch_metric_learning.regularizers import BaseRegularizer
from torch import Tensor, nn

from sslsec.choices import CONTRASTIVE_LOSSES, SEC_SCHEDULES  # the one list of each (config reads them there)


def scheduled_weight(weight: float, schedule: str, step: int, total_steps: int) -> float:
    """The regulariser weight in force at optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``weight`` at every step. ``linear``: the ramp of the SEC authors' SimCLR code, 0 at the
    first step and ``weight`` at the last, ``weight * step / (total_steps - 1)``.
    """
    if schedule == "constant":
        return float(weight)
    if schedule == "linear":
        return float(weight) * min(max(step, 0), total_steps - 1) / max(total_steps - 1, 1)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SEC_SCHEDULES)}")


class NonFiniteError(ValueError):
    """Embeddings hold NaN or Inf (a diverged model, or bad input)."""


def _check_embeddings(z: Tensor, name: str = "z", finite: bool = True) -> None:
    if not isinstance(z, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (batch, dim), got shape {tuple(z.shape)}; "
            "flatten the projections first"
        )
    if z.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if finite and not torch.isfinite(z).all():  # a host synchronisation: trainers check once per interval instead
        raise NonFiniteError(f"{name} contains NaN or Inf values")


def _check_weight(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _row_norms(z: Tensor) -> Tensor:
    """Euclidean norms of the rows of z (N, D), accumulated in at least float32 (bf16/fp16 safe)."""
    return torch.linalg.vector_norm(z, dim=1, dtype=torch.promote_types(z.dtype, torch.float32))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def norm_moments(norms: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and (population) std of ``norms`` over the global batch; detached.

    One all-reduce of ``[count, sum, sum of squares]`` when torch.distributed is running.
    """
    norms = norms.detach()
    moments = torch.stack([norms.new_full((), norms.numel()), norms.sum(), norms.square().sum()])
    if _distributed():
        dist.all_reduce(moments)
    count, total, total_sq = moments
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean, std


class SphericalEmbeddingConstraint(nn.Module):
    """SEC: ``mean_i (||z_i|| - mu)^2`` with ``mu`` the detached mean norm (paper eq. 5).

    Args:
        momentum: ``None`` (default) uses the batch-mean norm as ``mu``. A value ``rho`` in
            (0, 1] keeps ``mu`` as an exponential moving average in the buffer ``mu``
            (saved in ``state_dict``): ``mu_0 = mean_0``, ``mu_t = (1 - rho) mu_{t-1} + rho mean_t``,
            updated in training mode before the loss is computed; eval mode reads it unchanged.

    Shapes:
        z: (N, D) unnormalized embeddings -> scalar loss.

    Example:
        >>> sec = SphericalEmbeddingConstraint(momentum=0.1)
        >>> loss = sec(torch.randn(8, 128))
    """

    mu: Tensor
    num_updates: Tensor

    def __init__(self, momentum: Optional[float] = None) -> None:
        super().__init__()
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be None or in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def target_norm(self, batch_mean: Tensor) -> Tensor:
        """The radius ``mu`` for this step, given the (global) batch-mean norm; detached."""
        if self.momentum is None:
            return batch_mean
        batch_mean = batch_mean.to(self.mu.dtype)
        if self.training:  # torch.where, not `if`: no host synchronisation in the training loop
            moved = torch.lerp(self.mu, batch_mean, self.momentum)
            self.mu.copy_(torch.where(self.num_updates == 0, batch_mean, moved))
            self.num_updates += 1
        return torch.where(self.num_updates > 0, self.mu, batch_mean)

    def penalty(self, norms: Tensor, batch_mean: Tensor) -> Tensor:
        """``mean_i (norms_i - mu)^2`` for precomputed norms (N,) and their global mean."""
        return (norms - self.target_norm(batch_mean)).square().mean()

    def forward(self, z: Tensor) -> Tensor:
        _check_embeddings(z)
        norms = _row_norms(z)
        return self.penalty(norms, norm_moments(norms)[0])

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


class NormPenalty(nn.Module):
    """The paper's L2 baseline regulariser: ``mean_i ||z_i||^2`` for z of shape (N, D)."""

    def forward(self, z: Tensor) -> Tensor:
        _check_embeddings(z)
        return _row_norms(z).square().mean()


class SECLossOutput(NamedTuple):
    """What :class:`WithSEC` (and so :class:`SECInfoNCE`) returns; every field is a scalar tensor.

    ``total`` carries the gradient. ``contrastive`` is the wrapped loss's value, detached (the name is kept from
    when the wrapped loss was always NT-Xent). ``norm_mean``/``norm_std`` are the (global) statistics of the
    embedding norms before normalization, the quantities the SEC paper plots.
    """

    total: Tensor
    contrastive: Tensor
    sec: Tensor
    norm_mean: Tensor
    norm_std: Tensor


def gather_batch(embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """The global batch under ``torch.distributed``: every process's ``embeddings`` (N, D) and ``labels`` (N,),
    concatenated in rank order to (W * N, D) and (W * N,); the inputs themselves with one process.

    The embeddings keep their gradient (lightly's ``GatherLayer``: backward sums the gradients of every process
    and hands each its rows), so a loss computed identically on every process over the global batch, and averaged
    by DDP, gives the gradients of that loss on one process over the concatenated batch: pair and triplet losses
    mine across processes, and class-weight losses (whose weights see every embedding) are not scaled by W, as
    pml's ``DistributedLossWrapper`` scales them (it multiplies the loss by W to restore the embeddings' part).
    Every process must give the same N.
    """
    if not _distributed():
        return embeddings, labels
    from lightly.utils.dist import gather  # lightly's autograd all_gather

    return torch.cat(gather(embeddings.contiguous())), torch.cat(gather(labels.contiguous()))


EmbeddingArgument = Union[int, str]  # a positional index or a keyword name


class WithSEC(nn.Module):
    """Any embedding loss, plus SEC (and optionally the L2 penalty) on the embeddings it is given.

    ``total = loss(*args, **kwargs) + weight_scale * (sec_weight * sec + norm_penalty_weight * mean_i ||z_i||^2)``

    The wrapped loss is called unchanged, so it normalizes the embeddings itself (lightly's contrastive losses
    and pytorch-metric-learning's default distances do). SEC is taken over the **unnormalized** embeddings named
    by ``embedding_args``: positional indices and keyword names (default ``(0, "embeddings")``, pml's first
    argument by position or keyword, not its ``ref_emb``; two views: ``(0, 1)``), each a 2-D floating-point
    tensor; an argument named there but not given (pml's optional ``ref_emb``) is skipped. Of those, the ones that carry
    gradient (SimCLR: both views; MoCo: the queries, not the momentum encoder's keys) are regularized, or all of
    them when none does (evaluation under ``no_grad``). Their row norms are concatenated and ``mu`` is their mean
    over the global batch (:func:`norm_moments`), or its EMA with ``sec_momentum``.

    A weight of 0 leaves its term out, so ``sec_weight=0, norm_penalty_weight=0`` gives exactly the wrapped
    loss's value and gradient. ``weight_scale`` (default 1) is the schedule's factor for the step, set by a
    trainer before each step (``scheduled_weight(1.0, "linear", step, total_steps)`` for the authors' ramp).
    ``check_finite`` (default True) raises :class:`NonFiniteError` on NaN/Inf embeddings; the check reads a value
    back from the device, so a trainer that checks the loss itself turns it off.

    The wrapped loss is the submodule ``loss``: its parameters (pml ArcFace's class weights) are optimized and
    saved with this module. A lightly memory bank (MoCo's queue of negatives), which lightly keeps out of
    ``state_dict``, is saved here as extra state so that a resumed run continues with the same negatives.

    Args:
        loss: a module whose forward returns a scalar tensor.
        sec_weight: weight ``eta`` of SEC.
        sec_momentum: ``None`` for the batch-mean ``mu``, else the EMA momentum ``rho`` in (0, 1].
        norm_penalty_weight: weight of the L2 norm penalty (the paper's baseline).
        embedding_args: the arguments SEC regularizes: positional indices (int) and keyword names (str), e.g.
            ``(0, "ref_emb")`` to regularize pml's reference embeddings too.

    Shapes:
        the wrapped loss's arguments, with the embeddings (N_k, D_k) among ``embedding_args`` ->
        :class:`SECLossOutput`.

    Example:
        >>> from pytorch_metric_learning.losses import TripletMarginLoss
        >>> loss_fn = WithSEC(TripletMarginLoss(margin=0.2), sec_weight=1.0)
        >>> out = loss_fn(model(images), labels)
        >>> out.total.backward()
    """

    def __init__(self, loss: nn.Module, sec_weight: float = 0.0, sec_momentum: Optional[float] = None,
                 norm_penalty_weight: float = 0.0,
                 embedding_args: Sequence[EmbeddingArgument] = (0, "embeddings")) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"WithSEC wraps an nn.Module loss, got {type(loss).__name__}")
        self.embedding_args = tuple(embedding_args)
        if not self.embedding_args or not all(isinstance(a, (int, str)) and not isinstance(a, bool)
                                              and (isinstance(a, str) or a >= 0) for a in self.embedding_args):
            raise ValueError("embedding_args must name the embeddings SEC regularizes: positional indices >= 0 "
                             f"and keyword names, e.g. (0,) or (0, 'ref_emb'); got {embedding_args!r}")
        self.sec_weight = _check_weight(sec_weight, "sec_weight")
        self.norm_penalty_weight = _check_weight(norm_penalty_weight, "norm_penalty_weight")
        self.loss = loss
        self.sec = SphericalEmbeddingConstraint(momentum=sec_momentum)
        self.weight_scale = 1.0
        self.check_finite = True

    def forward(self, *args: object, **kwargs: object) -> SECLossOutput:
        carriers = self.carriers(args, kwargs)
        norms = torch.cat([_row_norms(z) for z in carriers])
        norm_mean, norm_std = norm_moments(norms)

        value = self.loss(*args, **kwargs)
        if not isinstance(value, Tensor) or value.dim() != 0:
            got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"WithSEC needs a loss that returns a scalar tensor; {type(self.loss).__name__} "
                            f"returned {got}: give it a reducing reduction (a mean)")
        sec = self.sec.penalty(norms, norm_mean)
        total = value
        if self.sec_weight > 0:
            total = total + self.weight_scale * self.sec_weight * sec
        if self.norm_penalty_weight > 0:
            total = total + self.weight_scale * self.norm_penalty_weight * norms.square().mean()
        return SECLossOutput(total, value.detach(), sec.detach(), norm_mean, norm_std)

    def carriers(self, args: Sequence[object], kwargs: Optional[Mapping[str, object]] = None) -> Sequence[Tensor]:
        """The embeddings SEC is taken over: those of :attr:`embedding_args` given, with gradient, else all of them."""
        kwargs = kwargs or {}
        given = [(f"argument {a}", args[a]) if isinstance(a, int) else (a, kwargs[a]) for a in self.embedding_args
                 if (a in kwargs if isinstance(a, str) else a < len(args))]
        embeddings = [(name, z) for name, z in given if z is not None]
        if not embeddings:
            raise ValueError(f"WithSEC({type(self.loss).__name__}) regularizes the arguments {self.embedding_args}, "
                             f"none of which was given; pass the unnormalized embeddings (N, D) there, or set "
                             "embedding_args")
        for name, z in embeddings:
            if not isinstance(z, Tensor) or not z.is_floating_point():
                raise ValueError(f"WithSEC({type(self.loss).__name__}): {name} (embedding_args) must be a "
                                 f"floating-point tensor of embeddings (N, D), got {_describe(z)}")
            _check_embeddings(z, "embeddings", self.check_finite)
        embeddings = [z for _, z in embeddings]
        return [z for z in embeddings if z.requires_grad] or embeddings

    def _memory_bank(self) -> Optional[MemoryBankModule]:
        bank = getattr(self.loss, "memory_bank", None)
        return bank if isinstance(bank, MemoryBankModule) and bank.size[0] > 0 else None

    def get_extra_state(self) -> dict:
        bank = self._memory_bank()
        return {} if bank is None else {"bank": bank.bank, "bank_ptr": bank.bank_ptr}

    def set_extra_state(self, state: dict) -> None:
        bank = self._memory_bank()
        if state and bank is not None:
            bank.bank.copy_(state["bank"])
            bank.bank_ptr.copy_(state["bank_ptr"])

    def extra_repr(self) -> str:
        return (f"sec_weight={self.sec_weight}, norm_penalty_weight={self.norm_penalty_weight}, "
                f"embedding_args={self.embedding_args}")


def _describe(value: object) -> str:
    return f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _own_columns(n: int, gather_distributed: bool, device: torch.device) -> Tensor:
    """The column of each of this process's ``n`` embeddings among the gathered ones: ``rank * n + i`` when
    ``gather_distributed`` (lightly's ``eye_rank`` and labels), else ``i``."""
    return torch.arange(n, device=device) + (lightly_dist.rank() * n if gather_distributed else 0)


def _gathered(out0: Tensor, out1: Tensor, gather_distributed: bool) -> Tuple[Tensor, Tensor]:
    """Both views of the global batch when ``gather_distributed`` and several processes run, else the inputs."""
    if gather_distributed and lightly_dist.world_size() > 1:
        return torch.cat(lightly_dist.gather(out0), 0), torch.cat(lightly_dist.gather(out1), 0)
    return out0, out1


class NTXent(NTXentLoss):
    """lightly's :class:`~lightly.loss.NTXentLoss`, whose in-batch negatives leave out each embedding's similarity
    with itself by a ``-inf`` logit, which the softmax gives no weight, instead of cutting it out by a boolean index
    (``logits_00[~diag_mask]``): the host reads the size of such an index from the device, and so waits for a GPU at
    every step. The same loss and gradients; with a memory bank (MoCo), lightly's forward, which has no such index.

    Shapes: out0, out1 (N, D) -> scalar.
    """

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        if self.memory_bank.size[0] > 0:
            return super().forward(out0, out1)
        out0, out1 = nn.functional.normalize(out0, dim=1), nn.functional.normalize(out1, dim=1)
        out0_all, out1_all = _gathered(out0, out1, self.gather_distributed)
        own = _own_columns(len(out0), self.gather_distributed, out0.device)
        itself = torch.arange(len(out0_all), device=out0.device) == own[:, None]
        logits_00 = torch.einsum("nc,mc->nm", out0, out0_all) / self.temperature
        logits_01 = torch.einsum("nc,mc->nm", out0, out1_all) / self.temperature
        logits_10 = torch.einsum("nc,mc->nm", out1, out0_all) / self.temperature
        logits_11 = torch.einsum("nc,mc->nm", out1, out1_all) / self.temperature
        logits = torch.cat([torch.cat([logits_01, logits_00.masked_fill(itself, -torch.inf)], dim=1),
                            torch.cat([logits_10, logits_11.masked_fill(itself, -torch.inf)], dim=1)])
        return self.cross_entropy(logits, own.repeat(2))


class _DecoupledNegatives:
    """lightly's ``DCLLoss._loss``, one view's term: the positive pair's similarity taken by its column, and left out
    of the negatives by ``-inf`` with the view's similarity to itself, where lightly cuts both out by boolean indices
    (a wait for a GPU, as in :class:`NTXent`): the same loss and gradients."""

    def _loss(self, out0: Tensor, out1: Tensor, out0_all: Tensor, out1_all: Tensor) -> Tensor:
        own = _own_columns(len(out0), self.gather_distributed, out0.device)
        sim_00 = torch.einsum("nc,mc->nm", out0, out0_all) / self.temperature
        sim_01 = torch.einsum("nc,mc->nm", out0, out1_all) / self.temperature
        positive_loss = -sim_01.gather(1, own[:, None])[:, 0]
        if self.weight_fn:
            positive_loss = positive_loss * self.weight_fn(out0, out1)
        itself = (torch.arange(len(out0_all), device=out0.device) == own[:, None]).repeat(1, 2)
        negative_loss = torch.logsumexp(torch.cat([sim_00, sim_01], dim=1).masked_fill(itself, -torch.inf), dim=1)
        return (positive_loss + negative_loss).mean()


class DCL(_DecoupledNegatives, DCLLoss):
    """lightly's :class:`~lightly.loss.DCLLoss` (Yeh et al. 2022), without waiting for a GPU."""


class DCLW(_DecoupledNegatives, DCLWLoss):
    """lightly's :class:`~lightly.loss.DCLWLoss`, without waiting for a GPU."""


def contrastive_loss(name: str = "ntxent", temperature: float = 0.5, memory_bank_size: Union[int, Sequence[int]] = 0,
                     gather_distributed: bool = False) -> nn.Module:
    """lightly's contrastive loss ``name`` (as :class:`NTXent`, :class:`DCL`, :class:`DCLW`: the same losses, computed
    without waiting for a GPU), on two batches of projections (N, D) that it normalizes itself.

    ``ntxent``: NT-Xent / InfoNCE (SimCLR), with an optional queue of ``memory_bank_size=(K, D)`` negatives
    (MoCo). ``dcl`` / ``dclw``: decoupled contrastive learning (Yeh et al. 2022), NT-Xent without the positive
    pair in the denominator (``dclw`` weights the positives by a von Mises-Fisher factor, ``sigma=0.5``); they
    have no queue. ``gather_distributed`` takes the negatives from every process.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if name == "ntxent":
        return NTXent(temperature=temperature, memory_bank_size=memory_bank_size, gather_distributed=gather_distributed)
    if name not in CONTRASTIVE_LOSSES:
        raise ValueError(f"unknown contrastive loss {name!r}; choose one of {', '.join(CONTRASTIVE_LOSSES)}")
    bank = (memory_bank_size,) if isinstance(memory_bank_size, int) else tuple(memory_bank_size)
    if bank[0] != 0:
        raise ValueError(f"{name} has no memory bank (queue of negatives); use 'ntxent' with "
                         f"memory_bank_size={memory_bank_size}, or memory_bank_size=0")
    loss_class = DCL if name == "dcl" else DCLW
    return loss_class(temperature=temperature, gather_distributed=gather_distributed)


class SymmetricCosine(nn.Module):
    """BYOL's and SimSiam's loss: each view's prediction against the other view's target, by cosine, both ways.

    ``value = weight * (D(p0, z1) + D(p1, z0)) + offset`` with ``D(p, z) = -mean_i cos(p_i, z_i)``, lightly's
    :class:`~lightly.loss.NegativeCosineSimilarity`, which normalizes both arguments itself.

    - SimSiam (Chen & He 2021, eq. 2): ``weight=0.5, offset=0``, ``L = D(p0, z1) / 2 + D(p1, z0) / 2``, in [-1, 1].
    - BYOL (Grill et al. 2020, eq. 2 and its symmetrization): ``weight=2, offset=4``, the sum over both directions
      of ``||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``, in [0, 8].

    The targets ``z0, z1`` are taken as given: the caller detaches them (SimSiam's stop-gradient) or computes them
    without gradient (BYOL's momentum network). Around it, ``WithSEC(SymmetricCosine(...), embedding_args=(0, 1))``
    regularizes the norms of both views' predictions, once each.

    Shapes:
        p0, p1: (N, D) unnormalized predictions of views 0 and 1; z0, z1: (N, D) their targets -> scalar.

    Example:
        >>> loss_fn = WithSEC(SymmetricCosine(weight=0.5), sec_weight=0.1, embedding_args=(0, 1))
        >>> out = loss_fn(p0, p1, z0.detach(), z1.detach())
    """

    def __init__(self, weight: float = 0.5, offset: float = 0.0) -> None:
        super().__init__()
        self.weight, self.offset = float(weight), float(offset)
        self.cosine = NegativeCosineSimilarity()

    def forward(self, p0: Tensor, p1: Tensor, z0: Tensor, z1: Tensor) -> Tensor:
        for name, tensor in (("p0", p0), ("p1", p1), ("z0", z0), ("z1", z1)):
            _check_embeddings(tensor, name, finite=False)
        if not p0.shape == p1.shape == z0.shape == z1.shape:
            raise ValueError(f"p0, p1, z0, z1 must have one shape (N, D), got {tuple(p0.shape)}, {tuple(p1.shape)}, "
                             f"{tuple(z0.shape)}, {tuple(z1.shape)}: the predictor's output_dim must be the "
                             "projection's")
        return self.weight * (self.cosine(p0, z1) + self.cosine(p1, z0)) + self.offset

    def extra_repr(self) -> str:
        return f"weight={self.weight}, offset={self.offset}"


class SECInfoNCE(WithSEC):
    """InfoNCE / NT-Xent on normalized projections, plus SEC on their norms: ``WithSEC(NTXentLoss(...))``.

    ``total = contrastive + weight_scale * (sec_weight * sec + norm_penalty_weight * penalty)``

    The contrastive part is lightly's :class:`~lightly.loss.NTXentLoss` with the same ``temperature``,
    ``memory_bank_size`` and ``gather_distributed`` (SimCLR: in-batch negatives, gathered over processes;
    MoCo: a queue of ``memory_bank_size=(K, D)`` negatives, updated with ``z1`` after the loss, and checkpointed
    with this module). SEC and the norm penalty are taken over the projections that carry gradient (both views
    for SimCLR; only the queries ``z0`` for MoCo, whose keys come from the momentum encoder); when none does
    (evaluation under ``no_grad``), over both. See :class:`WithSEC` for ``weight_scale`` and ``check_finite``.

    Args:
        temperature: softmax temperature of NT-Xent.
        sec_weight: weight ``eta`` of SEC; 0 gives exactly the plain loss.
        sec_momentum: ``None`` for the batch-mean ``mu``, else the EMA momentum ``rho``.
        norm_penalty_weight: weight of the L2 norm penalty (the paper's baseline).
        memory_bank_size: 0 (no queue) or ``(K, D)``, as in lightly.
        gather_distributed: gather negatives / queue keys from all processes.

    Shapes:
        z0, z1: (N, D) **unnormalized** projections of two views -> :class:`SECLossOutput`.

    Example:
        >>> loss_fn = SECInfoNCE(temperature=0.5, sec_weight=1.0)
        >>> out = loss_fn(model(view0), model(view1))
        >>> out.total.backward()
    """

    def __init__(
        self,
        temperature: float = 0.5,
        sec_weight: float = 0.0,
        sec_momentum: Optional[float] = None,
        norm_penalty_weight: float = 0.0,
        memory_bank_size: Union[int, Sequence[int]] = 0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(contrastive_loss("ntxent", temperature, memory_bank_size, gather_distributed),
                         sec_weight=sec_weight, sec_momentum=sec_momentum, norm_penalty_weight=norm_penalty_weight,
                         embedding_args=(0, 1))

    @property
    def contrastive(self) -> NTXentLoss:
        """The wrapped :class:`~lightly.loss.NTXentLoss` (``self.loss``)."""
        return self.loss

    def forward(self, z0: Tensor, z1: Tensor) -> SECLossOutput:
        _check_embeddings(z0, "z0", finite=False)  # WithSEC checks the values
        _check_embeddings(z1, "z1", finite=False)
        if z0.shape != z1.shape:
            raise ValueError(
                f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        return super().forward(z0, z1)


class SECRegularizer(BaseRegularizer):
    """SEC as a pytorch-metric-learning embedding regularizer: ``embedding_regularizer=SECRegularizer()``.

    pml calls it on the raw embeddings given to the loss and adds ``embedding_reg_weight`` times its value.
    The per-embedding losses ``(||e_i|| - mu)^2`` (``mu`` detached, global under torch.distributed, or its EMA
    with ``sec_momentum``) are averaged by pml's default :class:`MeanReducer`, so
    ``TripletMarginLoss(embedding_regularizer=SECRegularizer(), embedding_reg_weight=w)(e, labels)`` equals
    ``WithSEC(TripletMarginLoss(), sec_weight=w)(e, labels).total``. pml's own ``LpRegularizer()`` is the mean
    norm ``mean_i ||e_i||``; the paper's L2 baseline (:class:`NormPenalty`) is ``LpRegularizer(power=2)``.

    Example:
        >>> from pytorch_metric_learning.losses import MultiSimilarityLoss
        >>> loss_fn = MultiSimilarityLoss(embedding_regularizer=SECRegularizer(), embedding_reg_weight=1.0)
    """

    def __init__(self, sec_momentum: Optional[float] = None) -> None:
        super().__init__()
        self.sec = SphericalEmbeddingConstraint(momentum=sec_momentum)

    def compute_loss(self, embeddings: Tensor) -> dict:
        norms = _row_norms(embeddings)
        mu = self.sec.target_norm(norm_moments(norms)[0])
        rows = torch.arange(len(norms), device=norms.device)
        return {"loss": {"losses": (norms - mu).square(), "indices": rows, "reduction_type": "element"}}
