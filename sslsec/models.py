"""Backbones: torchvision ResNets and a small CNN, saved and loaded as safetensors.

A backbone maps normalized images (N, C, H, W) to features (N, F) and exposes
``feature_dim``. ResNets keep torchvision's module names (``fc`` is an ``nn.Identity``),
so a saved backbone loads into a plain ``torchvision.models.resnet18()``, and can start from torchvision's
ImageNet weights (``pretrained``, :data:`IMAGENET_WEIGHTS`), as metric learning does.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from sslsec.choices import BACKBONES, EMBEDDING_HEADS  # the one list of backbone names (config reads it there)

# torchvision's original ImageNet-1k weights (top-1 69.8 / 76.1 %), the usual start of metric learning with ResNets;
# not ResNet50's IMAGENET1K_V2 (80.9 %, trained with a heavier recipe)
IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1", "resnet50": "ResNet50_Weights.IMAGENET1K_V1"}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for (``model.pretrained``) but cannot be loaded, or do not fit the backbone."""


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages (32-64-128-256 channels) max-pooled in between; for CPU-scale runs.

    The features are the global averages of the last two stages side by side (128 + 256 = 384): the third
    stage's finer map reaches the head and the probe at no extra cost. The last pool rounds up, so a 7 px map
    becomes 4 px and keeps its edge row and column (28 -> 14 -> 7 -> 4; 20 px views: 20 -> 10 -> 5 -> 3).
    Both choices raised Fashion-MNIST's validation accuracy (docs/RESULTS.md).
    """

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        channels = in_channels
        for stage in range(4):
            out = width * 2**stage
            pool = [nn.MaxPool2d(2, ceil_mode=stage == 3)] if stage else []
            conv = [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            self.stages.append(nn.Sequential(*pool, *conv))
            channels = out
        self.feature_dim = channels // 2 + channels  # the third and the fourth stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        third = self.stages[2](self.stages[1](self.stages[0](x)))
        return torch.cat([third.mean((2, 3)), self.stages[3](third).mean((2, 3))], dim=1)


class Embedder(nn.Module):
    """A backbone followed by the metric-learning embedding layer (``head``):

    - ``"linear"``: features -> [BatchNorm] -> Linear. The SEC authors' head is global pooling, BatchNorm and a
      linear layer to 512 dimensions; our backbones pool already, so the BatchNorm is a ``BatchNorm1d`` on the
      pooled features (``batchnorm``).
    - ``"face"``: the face-recognition head of insightface's ``iresnet`` (ArcFace, CosFace): features ->
      BatchNorm -> Dropout(``dropout``) -> Linear -> BatchNorm1d of the embedding, whose scale is fixed at 1
      and not trained (only its shift is). insightface flattens the last 7 x 7 x 512 map into the linear layer;
      here the pooled features go in (one 512- or 2048-wide vector), as for every backbone of sslsec.

    ``feature_dim`` is ``embedding_dim``, so every evaluation tool takes an ``Embedder`` as it takes a backbone.

    Shapes:
        (N, C, H, W) -> (N, embedding_dim), unnormalized.
    """

    def __init__(self, trunk: nn.Module, embedding_dim: int, batchnorm: bool = False, head: str = "linear",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if head not in EMBEDDING_HEADS:
            raise ValueError(f"unknown embedding head {head!r}; choose one of {', '.join(EMBEDDING_HEADS)}")
        self.trunk = trunk
        if head == "face":
            features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
            nn.init.constant_(features.weight, 1.0)
            features.weight.requires_grad = False  # insightface's `features` BatchNorm: the scale stays 1
            self.embedding = nn.Sequential(nn.BatchNorm1d(trunk.feature_dim, eps=1e-5), nn.Dropout(dropout),
                                           nn.Linear(trunk.feature_dim, embedding_dim), features)
        else:
            self.embedding = nn.Sequential(*([nn.BatchNorm1d(trunk.feature_dim)] if batchnorm else []),
                                           nn.Linear(trunk.feature_dim, embedding_dim))
        self.feature_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.trunk(x))


def build_backbone(
    name: str = "resnet18", in_channels: int = 3, cifar_stem: bool = False,
    embedding_dim: Optional[int] = None, embedding_batchnorm: bool = False, pretrained: bool = False,
    embedding_head: str = "linear", embedding_dropout: float = 0.0,
) -> nn.Module:
    """A backbone without its classifier; ``backbone.feature_dim`` is its output width.

    Args:
        name: one of ``resnet18``, ``resnet50``, ``small_cnn``.
        in_channels: 1 (grayscale) or 3.
        cifar_stem: ResNets only: a 3x3 stride-1 first convolution and no max-pool, the usual
            stem for 32 px images (SimCLR appendix B.9).
        embedding_dim: metric learning: an :class:`Embedder` with a linear embedding layer of this width on top
            (``embedding_batchnorm``: a BatchNorm before it, as the SEC authors' head), or with insightface's face
            head (``embedding_head="face"``: BatchNorm, Dropout(``embedding_dropout``), Linear, BatchNorm).
        pretrained: ResNets with torchvision's stem and 3 channels: start from the ImageNet weights
            (:func:`imagenet_state_dict`); the embedding layer stays randomly initialized. Not part of a saved
            backbone's spec: a saved file holds its trained weights, and rebuilding it downloads nothing.

    Raises:
        PretrainedWeightsError: ``pretrained`` for a backbone the weights do not fit, or they cannot be loaded.
    """
    if embedding_dim is not None:
        trunk = build_backbone(name, in_channels, cifar_stem, pretrained=pretrained)
        return Embedder(trunk, embedding_dim, embedding_batchnorm, embedding_head, embedding_dropout)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if pretrained and (name not in IMAGENET_WEIGHTS or in_channels != 3 or cifar_stem):
        raise PretrainedWeightsError(
            f"model.pretrained loads ImageNet weights into {', '.join(IMAGENET_WEIGHTS)} with torchvision's stem "
            f"and RGB images; got backbone {name}, {in_channels} channel(s), cifar_stem={cifar_stem}")
    if name == "small_cnn":
        return SmallCNN(in_channels)

    resnet = getattr(torchvision.models, name)()
    if pretrained:
        resnet.load_state_dict(imagenet_state_dict(name))
    if cifar_stem:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    elif in_channels != 3:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    resnet.feature_dim = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet


def imagenet_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of ResNet ``name`` (:data:`IMAGENET_WEIGHTS`, classifier included), read
    from torch.hub's cache (``torch.hub.get_dir()/checkpoints``) or downloaded into it, hash checked.

    Raises:
        PretrainedWeightsError: no network and no cached file (or a corrupt one); the message names the file, its
            URL and the folder to place it in by hand.
    """
    weights = torchvision.models.get_weight(IMAGENET_WEIGHTS[name])
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:  # URLError is an OSError
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise PretrainedWeightsError(
            f"cannot load the ImageNet weights {IMAGENET_WEIGHTS[name]} for model.pretrained "
            f"({type(error).__name__}: {' '.join(str(error).split())}); without network, download {weights.url} "
            f"elsewhere and place it as {cached} (torch.hub.get_dir()/checkpoints; TORCH_HOME moves it), "
            "replacing any corrupt file there, or set model.pretrained=false") from None


def save_module(module: nn.Module, path: Union[str, Path], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``module``'s state dict as a safetensors file (``safetensors.torch.save_model``)."""
    save_model(module, str(path), metadata=metadata, force_contiguous=True)  # channels_last weights are strided
    readable_like_other_files(path)


def readable_like_other_files(path: Union[str, Path]) -> None:
    """Give ``path`` the permissions a plain ``open()`` would (0644 under the usual umask): safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_backbone(backbone: nn.Module, path: Union[str, Path], spec: Dict[str, Any]) -> None:
    """Write ``backbone`` as safetensors, with ``spec`` (the build_backbone arguments) as metadata."""
    save_module(backbone, path, metadata={"sslsec_backbone": json.dumps(spec)})


def load_backbone(path: Union[str, Path], spec: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Rebuild a backbone saved by :func:`save_backbone` (``spec`` read from the file if omitted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no backbone file at {path}")
    if spec is None:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if "sslsec_backbone" not in metadata:
            raise ValueError(f"{path} has no sslsec backbone metadata; pass the backbone spec")
        spec = json.loads(metadata["sslsec_backbone"])
    backbone = build_backbone(**spec)
    load_model(backbone, str(path))
    return backbone
