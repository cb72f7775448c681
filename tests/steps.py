"""Trainer steps on one fixed batch, for the tests that watch what a step does: tests/test_sync_free.py on the CPU,
tests/test_gpu.py under CUDA's sync debug mode."""

from types import SimpleNamespace

import torch
from lightly.utils.scheduler import CosineWarmupScheduler

from sslsec.augment import MultiView
from sslsec.config import load_config
from sslsec.engine.accelerator import make_accelerator
from sslsec.engine.checkpoint import Progress
from sslsec.engine.metrics import MetricsLog
from sslsec.engine.trainer import NonFiniteWatch, _advance, build_optimizer, train_step
from sslsec.methods import build_augment, build_method
from sslsec.methods.metric import METRIC_LOSSES

FACE_LOSSES = ("normface", "cosface", "arcface")
# Every method, with every loss it trains with, and the options that add work to a step.
METHOD_CASES = {
    "simclr": ["method=simclr", "augment.blur_prob=0.5", "augment.blur_kernel_size=3"],  # blur: on at 96 px and more
    "simclr-lars-ema-ramp": ["method=simclr", "optim.name=lars", "loss.sec_momentum=0.1", "loss.sec_schedule=linear",
                             "loss.norm_penalty_weight=0.01"],
    "simclr-dcl": ["method=simclr", "loss.contrastive=dcl"],
    "simclr-dclw": ["method=simclr", "loss.contrastive=dclw"],
    "moco": ["method=moco", "moco.cosine_momentum=true"],
    "byol": ["method=byol"],
    "simsiam": ["method=simsiam"],
    **{f"metric-{loss}": ["method=metric", f"metric.loss={loss}", "optim.name=adam"] for loss in METRIC_LOSSES},
    **{f"face-{loss}": ["method=face", f"metric.loss={loss}", "model.embedding_head=face"] for loss in FACE_LOSSES},
}
# pytorch-metric-learning's pair and triplet losses list the pairs or triplets of a batch by torch.where(mask) (nonzero),
# whose length the host reads from the device: their steps wait for a GPU, in pml's code (tests/test_sync_free.py).
PML_MINING_CASES = {"metric-contrastive", "metric-triplet", "metric-triplet_squared", "metric-npair", "metric-supcon",
                    "metric-multi_similarity"}
CLASSES, IMAGES_PER_CLASS, SIZE = 4, 4, 16


class TrainerSteps:
    """What ``pretrain`` does with each batch, on one fixed batch of 16 images of 16 px (4 classes x 4) on the
    accelerator's device: the method's hooks, the views, forward, backward and optimizer step, the NaN watch, the
    metrics window and the LR schedule; tiny ``small_cnn`` models, built as ``pretrain`` builds them."""

    def __init__(self, overrides, mixed_precision="no"):
        config = load_config(None, ["model.backbone=small_cnn", "model.projection_hidden_dim=32",
                                    "model.projection_dim=16", "model.embedding_dim=8", "moco.queue_size=64",
                                    "loss.sec_weight=0.1", "trainer.epochs=10", *overrides])
        self.accelerator = accelerator = make_accelerator(mixed_precision=mixed_precision)
        torch.manual_seed(0)
        model = build_method(config, 3, num_classes=CLASSES).to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config)
        self.scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=2, max_epochs=config.trainer.epochs)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.core = accelerator.unwrap_model(self.model)
        self.core.defer_finite_checks()
        data = SimpleNamespace(image_size=SIZE, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        self.views = MultiView(build_augment(config, data, channels_last=True), n_views=self.core.n_views)
        self.watch, self.log, self.progress = NonFiniteWatch(accelerator), MetricsLog(accelerator, None), Progress()
        self.total_steps = config.trainer.epochs
        batch = CLASSES * IMAGES_PER_CLASS
        images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        self.images, self.labels = images.to(accelerator.device), (torch.arange(batch) % CLASSES).to(accelerator.device)

    def take(self):
        """One optimizer step, as the trainer's loop takes it between two log steps; returns its SECLossOutput."""
        self.core.before_step(self.progress.step, self.total_steps)
        with self.accelerator.accumulate(self.model):
            out = train_step(self.accelerator, self.model, self.optimizer, self.views(self.images), self.labels)
        self.watch.record(out.total, self.progress.step)
        self.log.add(out._asdict(), len(self.images))
        _advance(self.accelerator, self.scheduler, self.progress, self.watch)
        return out
