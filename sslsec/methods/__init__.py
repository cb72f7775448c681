"""Methods: SimCLR, MoCo v2, BYOL, SimSiam, metric learning and face recognition, each a module with its hooks,
and the one registry of their names.

:data:`METHODS` maps a method's name to its class; config validation, the view presets (``Method.augment``)
and the projection heads (``Method.projection_head``) are all looked up here::

    model = build_method(config, in_channels=3)          # METHODS[config.method].from_config(...)
    views = build_augment(config, train)                  # the method's preset with the augment section
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

from torch import nn

from sslsec.augment import ContrastiveAugment
from sslsec.methods.base import Method
from sslsec.methods.byol import BYOL
from sslsec.methods.face import FaceRecognition
from sslsec.methods.metric import MetricLearning
from sslsec.methods.moco import MoCo
from sslsec.methods.simclr import SimCLR
from sslsec.methods.simsiam import SimSiam

if TYPE_CHECKING:
    from sslsec.config import Config

METHODS: Dict[str, Type[Method]] = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "simsiam": SimSiam,
                                    "metric": MetricLearning, "face": FaceRecognition}

__all__ = ["BYOL", "FaceRecognition", "METHODS", "Method", "MetricLearning", "MoCo", "SimCLR", "SimSiam",
           "build_augment", "build_method", "build_projection_head",
           "method_class", "view_size"]


def method_class(name: str) -> Type[Method]:
    """The class registered as ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def build_method(config: Config, in_channels: int, distributed: bool = False,
                 num_classes: Optional[int] = None) -> nn.Module:
    """The method module that ``config`` describes, for images of ``in_channels`` and ``num_classes`` training
    classes (class-weight metric losses need it)."""
    return method_class(config.method).from_config(config, in_channels, distributed, num_classes)


def build_projection_head(method: str, input_dim: int, hidden_dim: int = 2048, output_dim: int = 128) -> nn.Module:
    """lightly's projection head for ``method``: SimCLR (2 layers, BN), MoCo v2 (2 layers, no BN), BYOL (2 layers,
    BN), SimSiam (3 layers, BN; the output BN without affine)."""
    return method_class(method).projection_head(input_dim=input_dim, hidden_dim=hidden_dim, output_dim=output_dim)


def build_augment(config: Config, dataset: Any, **kwargs: Any) -> ContrastiveAugment:
    """The method's view preset with the ``augment`` section, at ``data.crop_size`` (default: the image size)."""
    # None: the method's published value (crop scale, jitter and grayscale probabilities, blur by view size)
    recipe = {key: value for key, value in dataclasses.asdict(config.augment).items() if value is not None}
    size = view_size(config, dataset)
    return method_class(config.method).augment(size, dataset.mean, dataset.std, **recipe, **kwargs)


def view_size(config: Config, dataset: Any) -> int:
    """The side of the training views: ``data.crop_size``, or the stored image size."""
    return config.data.crop_size or dataset.image_size
