"""Face recognition as face models are trained (insightface's ArcFace / CosFace recipe), with SEC.

A backbone and an embedding head (``model.embedding_head: face``, :class:`~sslsec.models.Embedder`) trained by a
margin loss over class weights, one per training identity: NormFace, CosFace (Wang et al. 2018: logits
``s (cos theta_y - m)``, s = 64, m = 0.35) or ArcFace (Deng et al. 2019: ``s cos(theta_y + m)``, s = 64,
m = 0.5 rad = 28.6 degrees, pml's unit), pytorch-metric-learning's (``metric.loss``, ``metric.margin``,
``metric.scale``), plus SEC on the unnormalized embeddings. Unlike ``method: metric``, batches are plain shuffled
images (``images_per_class = None``), not P classes x K images: a softmax over class weights needs no positive pair
in the batch. The embedder is scored by face verification (:func:`~sslsec.eval.verification.split_verification`):
pairs of images of identities never trained on (``data.val_classes`` during training, the Reality-Check protocol;
the test split or insightface's ``.bin`` sets afterwards), same identity or not, by insightface's 10-fold protocol.

Example::

    config = load_config("configs/face_fmnist.yaml")
    model = build_method(config, in_channels=1, num_classes=5)   # FaceRecognition
    out = model(views, labels)                                    # SECLossOutput
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from sslsec.eval.features import eval_crop_size
from sslsec.eval.verification import split_verification
from sslsec.methods.metric import MetricLearning

if TYPE_CHECKING:
    from sslsec.config import Config


class FaceRecognition(MetricLearning):
    """:class:`~sslsec.methods.metric.MetricLearning` with a class-weight margin loss over plain shuffled batches,
    scored by face verification.

    The class weights live in ``criterion`` (optimized at the full lr, checkpointed, resumed); under
    ``torch.distributed`` every process's loss sees the global batch (:func:`~sslsec.losses.gather_batch`).

    Shapes:
        view (N, C, H, W) normalized, labels (N,) int64 in [0, identities) -> :class:`SECLossOutput`.
    """

    evaluation = "verification"

    @torch.no_grad()
    def monitor(self, train: Any, split: Any, config: Config, accelerator: Any) -> Dict[str, float]:
        """Verification on ``split`` (validation identities): accuracy and VAL@FAR (%) of ``eval.verification_pairs``
        pairs drawn from it (a fixed seed: the same pairs at every epoch)."""
        settings = config.eval
        scores = split_verification(self.backbone, split, n_pairs=settings.verification_pairs, seed=0,
                                    flip=settings.verification_flip, accelerator=accelerator,
                                    crop_size=eval_crop_size(config), num_workers=config.data.num_workers,
                                    n_folds=settings.verification_folds, far=settings.verification_far)
        return {"verification_accuracy": scores["accuracy"], "val_at_far": scores["val_at_far"]}

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        """Plain shuffled batches (no P x K), no miner; ``metric.backbone_lr_scale``."""
        return {"images_per_class": None, "miner": None, "backbone_lr_scale": config.metric.backbone_lr_scale}

    @classmethod
    def from_config(cls, config: Config, in_channels: int, distributed: bool = False,
                    num_classes: Optional[int] = None) -> MetricLearning:
        if not num_classes:
            raise ValueError("method=face keeps one class weight per training identity: give num_classes")
        return super().from_config(config, in_channels, distributed, num_classes)
