"""sslsec: contrastive self-supervised learning (MoCo v2, SimCLR) with the Spherical Embedding Constraint.

The losses are imported on first use (``from sslsec import WithSEC`` works as always), so that ``import sslsec.cli``
and ``sslsec-pretrain --help`` start without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["NormPenalty", "SECInfoNCE", "SECLossOutput", "SECRegularizer", "SphericalEmbeddingConstraint", "WithSEC"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("sslsec.losses"), name)
    raise AttributeError(f"module 'sslsec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
