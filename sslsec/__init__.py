"""sslsec: contrastive self-supervised learning (MoCo v2, SimCLR) with the Spherical Embedding Constraint.

The losses are exported lazily (PEP 562), so that importing a light submodule (``sslsec.config``,
``sslsec.choices``) does not load torch and lightly.
"""

from typing import Any

__all__ = ["NormPenalty", "SECInfoNCE", "SECLossOutput", "SECRegularizer", "SphericalEmbeddingConstraint", "WithSEC"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sslsec import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'sslsec' has no attribute {name!r}")
