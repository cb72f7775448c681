"""The training engine: the accelerate loop (:mod:`.trainer`), checkpoints (:mod:`.checkpoint`), metrics
(:mod:`.metrics`) and the one place that creates the :class:`accelerate.Accelerator` (:mod:`.accelerator`)."""

from sslsec.engine.accelerator import make_accelerator
from sslsec.engine.checkpoint import TrainingError
from sslsec.engine.trainer import build_optimizer, pretrain

__all__ = ["TrainingError", "build_optimizer", "make_accelerator", "pretrain"]
