"""Frozen-backbone features, extracted once per split, on one process or sharded over many.

Under an optional :class:`accelerate.Accelerator` each process embeds its shard of every batch
(:class:`sslsec.data.BatchLoader`'s sharding) under ``accelerator.autocast()``, and the shards are gathered back
into data-set order on every process::

    features, labels = extract_features(backbone, test, accelerator=accelerator)   # (N, F) float32, (N,) int64
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm.auto import tqdm

from sslsec.augment import EvalTransform
from sslsec.data import BatchLoader

if TYPE_CHECKING:
    from sslsec.config import Config

Features = Tuple[Tensor, Tensor]  # features float32 (N, F), labels int64 (N,), both on CPU


class EvaluationError(ValueError):
    """A backbone or a data set that cannot be evaluated as asked."""


def backbone_in_channels(backbone: nn.Module) -> int:
    """The number of image channels the backbone's first convolution takes."""
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise EvaluationError(f"{type(backbone).__name__} has no Conv2d; cannot tell its input channels")
    return conv.in_channels


def check_compatible(backbone: nn.Module, dataset: Any) -> None:
    """Raise :class:`EvaluationError` if ``dataset``'s images have another channel count than ``backbone`` takes."""
    expected = backbone_in_channels(backbone)
    if dataset.channels != expected:
        raise EvaluationError(
            f"the backbone takes {expected}-channel images but data set {dataset.name!r} has "
            f"{dataset.channels}-channel images; evaluate it on the data set it was pretrained on (data.name)")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Any,
    *,
    accelerator: Optional[Accelerator] = None,
    batch_size: int = 512,
    transform: Optional[nn.Module] = None,
    seed: Optional[int] = None,
    progress: bool = True,
    crop_size: Optional[int] = None,
    num_workers: Optional[int] = None,
) -> Features:
    """Backbone features of every image of ``dataset``, in data-set order, on every process.

    The backbone runs in eval mode; its train/eval mode is restored on return. With ``accelerator`` it is
    moved to ``accelerator.device`` (pass the unwrapped module); without, it runs in one process on the
    device of its parameters.

    Args:
        transform: uint8 batch -> normalized float batch; default :func:`eval_transform` of ``crop_size``.
            A random transform is called with a per-batch ``seed=`` when ``seed`` is set.
        crop_size: the view size the backbone was trained at (``data.crop_size``); see :func:`eval_transform`.
        batch_size: images per process and step.
        num_workers: DataLoader workers that decode a JPEG folder (``data.num_workers``; None: the loader's
            default); in-memory data has none.

    Returns:
        features float32 ``(N, F)`` and labels int64 ``(N,)``, both on the CPU.
    """
    check_compatible(backbone, dataset)
    device, rank, world_size = _placement(backbone, accelerator)
    transform = transform or eval_transform(dataset, crop_size)
    loader = BatchLoader(dataset, batch_size, shuffle=False, drop_last=False, rank=rank,
                         world_size=world_size, device=device, num_workers=num_workers)
    show = progress and (accelerator is None or accelerator.is_main_process)
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    batches = tqdm(loader, desc=f"features {dataset.name}", disable=not show, leave=False)
    try:
        for step, (images, targets) in enumerate(batches):
            batch_seed = None if seed is None else derive_seed(seed, step, rank, world_size)
            output = _embed(backbone, transform, images, batch_seed, accelerator)
            if world_size > 1:
                output, targets = _gather_shards(accelerator, output), _gather_shards(accelerator, targets)
            features.append(output.cpu())
            labels.append(targets.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()


def eval_transform(dataset: Any, crop_size: Optional[int] = None) -> EvalTransform:
    """Normalization, and for images stored larger than the training views the center crop of ``crop_size``:
    ImageNet folders stored at 256 px and trained on 224 px crops are scored on the center 224 x 224 (the
    resize-256 / crop-224 protocol), not at 256."""
    if crop_size is None or crop_size >= dataset.image_size:
        return EvalTransform(None, dataset.mean, dataset.std)
    return EvalTransform(crop_size, dataset.mean, dataset.std, resize=dataset.image_size)


def eval_crop_size(config: Config) -> Optional[int]:
    """The view size evaluation scores at: ``data.crop_size``, or None (whole images) if not ``eval.center_crop``.
    Here, beside :func:`eval_transform`, so that the methods' monitors and the protocol read it from one place below
    both."""
    return config.data.crop_size if config.eval.center_crop else None


def _embed(backbone: nn.Module, transform: nn.Module, images: Tensor, seed: Optional[int],
           accelerator: Optional[Accelerator]) -> Tensor:
    """float32 features ``(B, F)`` of one uint8 batch; a rank's empty share of the last batch gives ``(0, F)``."""
    if len(images) == 0:
        return torch.zeros(0, backbone.feature_dim, device=images.device)
    views = transform(images) if seed is None else transform(images, seed=seed)
    with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
        return backbone(views).float()


def _placement(backbone: nn.Module, accelerator: Optional[Accelerator]) -> Tuple[torch.device, int, int]:
    if accelerator is None:
        return next(backbone.parameters()).device, 0, 1
    backbone.to(accelerator.device)
    return accelerator.device, accelerator.process_index, accelerator.num_processes


def _gather_shards(accelerator: Accelerator, shard: Tensor) -> Tensor:
    """Every process's ``shard`` of one batch, concatenated in rank order on the CPU: the batch in data-set order,
    since the loader cuts each global batch into contiguous rank shards. accelerate's ``gather_for_metrics`` of the
    objects, because the shards of the last batch differ in length (even empty); the loader is not accelerate's, so
    it drops nothing."""
    return torch.cat(accelerator.gather_for_metrics([shard.cpu()], use_gather_object=True))


def derive_seed(*numbers: int) -> int:
    """A seed derived from ``numbers`` (seed, epoch, step, rank, ...): distinct tuples give distinct streams."""
    value = 0
    for number in numbers:
        value = (value * 1_000_003 + number) % 2**63
    return value


def extractor(backbone: nn.Module, accelerator: Optional[Accelerator], batch_size: int,
              crop_size: Optional[int] = None, num_workers: Optional[int] = None) -> Callable[..., Features]:
    """``extract(dataset, **kwargs)``: :func:`extract_features` with these settings bound."""
    return lambda dataset, **kwargs: extract_features(backbone, dataset, accelerator=accelerator,
                                                      batch_size=batch_size, crop_size=crop_size,
                                                      num_workers=num_workers, **kwargs)


def device_of(backbone: nn.Module, accelerator: Optional[Accelerator]) -> torch.device:
    """Where evaluation runs: the accelerator's device, else the backbone's."""
    return accelerator.device if accelerator is not None else next(backbone.parameters()).device

