"""sslsec: contrastive self-supervised learning (MoCo v2, SimCLR) with the Spherical Embedding Constraint."""

from sslsec.losses import (
    NormPenalty,
    SECInfoNCE,
    SECLossOutput,
    SECRegularizer,
    SphericalEmbeddingConstraint,
    WithSEC,
)

__all__ = ["NormPenalty", "SECInfoNCE", "SECLossOutput", "SECRegularizer", "SphericalEmbeddingConstraint", "WithSEC"]
__version__ = "0.1.0"
