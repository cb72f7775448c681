"""What every method shares: a backbone, a projection head, the SEC loss, and the hooks the trainer calls.

A method is an ``nn.Module`` that maps two views to a :class:`~sslsec.losses.SECLossOutput`. It declares its
published view recipe (``augment``) and projection head (``projection_head``) as class attributes, so the
method registry (:data:`sslsec.methods.METHODS`) is the one place that ties a method's name to them. The
trainer only calls :meth:`Method.before_step`; it never asks which method it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from sslsec.augment import ContrastiveAugment
from sslsec.losses import SECLossOutput, WithSEC, contrastive_loss, scheduled_weight
from sslsec.eval.knn import knn_accuracy
from sslsec.eval.features import eval_crop_size
from sslsec.models import build_backbone

if TYPE_CHECKING:
    from sslsec.config import Config


class Method(nn.Module):
    """Backbone, projection head and the loss with SEC (:class:`WithSEC`); subclasses define ``forward(view0, view1)``.

    Args:
        sec_schedule: ``"constant"`` or ``"linear"``: how :meth:`before_step` scales the regularizer weights.
    """

    augment: ClassVar[Type[ContrastiveAugment]]  # the published view recipe
    projection_head: ClassVar[Type[nn.Module]]  # lightly's head: (N, F) -> (N, D)
    n_views: ClassVar[int] = 2  # augmented views of each image per step
    images_per_class: Optional[int] = None  # K of class-balanced P x K batches; None: plain shuffled batches
    # How a trained backbone is scored: "linear_probe" (linear probe and kNN on the training classes, SSL) or
    # "retrieval" (Recall@K, MAP@R, NMI of its embeddings on held-out images and classes, metric learning).
    evaluation: ClassVar[str] = "linear_probe"

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: WithSEC,
                 sec_schedule: str = "constant") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.criterion = criterion
        self.sec_schedule = sec_schedule

    def before_step(self, step: int, total_steps: int) -> None:
        """Called before optimizer step ``step`` (0-based) of ``total_steps``: sets the SEC schedule's factor."""
        self.criterion.weight_scale = scheduled_weight(1.0, self.sec_schedule, step, total_steps)

    def forward(self, view0: Tensor, view1: Tensor, labels: Optional[Tensor] = None) -> SECLossOutput:
        raise NotImplementedError

    @property
    def sec_weight_scale(self) -> float:
        """The SEC schedule's factor in force (set by :meth:`before_step`): this step's weight is ``loss.sec_weight``
        times it."""
        return self.criterion.weight_scale

    def defer_finite_checks(self) -> None:
        """Leave the NaN/Inf check of the embeddings to the caller, which checks the loss instead (the trainer's
        ``NonFiniteWatch``, without reading a value back from the device at every step)."""
        self.criterion.check_finite = False

    def networks(self) -> List[nn.Module]:
        """The networks a step runs through: the backbone and the head (what :meth:`compile_networks` compiles)."""
        return [self.backbone, self.head]

    def compile_networks(self, **options: Any) -> None:
        """``torch.compile`` each of :meth:`networks` in place (``nn.Module.compile(**options)``; parameter names
        and checkpoints stay as they are), and nothing else: the loss stays eager, because the SEC weight changes at
        every step of the linear schedule (a constant in a compiled graph would recompile it) and pml's pair and
        triplet losses list their pairs by data-dependent indices; under DDP, the wrapper stays eager around the
        compiled networks."""
        for network in self.networks():
            network.compile(**options)

    def parameter_groups(self) -> List[Tuple[List[nn.Module], float]]:
        """``(modules, lr factor)`` pairs for the optimizer: everything trained, at the base lr."""
        return [([self.backbone, self.head, self.criterion], 1.0)]

    @torch.no_grad()
    def monitor(self, train: Any, split: Any, config: Config, accelerator: Any) -> Dict[str, float]:
        """The score logged during training: weighted kNN top-1 (%) of ``split`` against ``train``."""
        return {"knn_top1": knn_accuracy(self.backbone, train, split, k=config.eval.knn_k,
                                         temperature=config.eval.knn_temperature, accelerator=accelerator,
                                         crop_size=eval_crop_size(config), num_workers=config.data.num_workers)}

    @classmethod
    def backbone_spec(cls, config: Config, in_channels: int) -> Dict[str, Any]:
        """The :func:`~sslsec.models.build_backbone` arguments of the saved backbone (its safetensors metadata)."""
        return {"name": config.model.backbone, "in_channels": in_channels, "cifar_stem": config.model.cifar_stem}

    @classmethod
    def initial_backbone(cls, config: Config, in_channels: int) -> nn.Module:
        """The backbone training starts from: :meth:`backbone_spec`'s architecture, with torchvision's ImageNet
        weights if ``model.pretrained`` (kept out of the spec: rebuilding a saved backbone downloads nothing)."""
        return build_backbone(**cls.backbone_spec(config, in_channels), pretrained=config.model.pretrained)

    @classmethod
    def memory_bank_size(cls, config: Config) -> Union[int, Sequence[int]]:
        """The loss's queue of negatives: none by default."""
        return 0

    @classmethod
    def options(cls, config: Config) -> Dict[str, Any]:
        """Keyword arguments of the method's own constructor, read from its config section."""
        return {}

    @classmethod
    def build_head(cls, config: Config, backbone: nn.Module) -> nn.Module:
        """The projection head on ``backbone``'s features: ``projection_head`` at the config's widths."""
        return cls.projection_head(input_dim=backbone.feature_dim, hidden_dim=config.model.projection_hidden_dim,
                                   output_dim=config.model.projection_dim)

    @classmethod
    def build_criterion(cls, config: Config, distributed: bool = False, num_classes: Optional[int] = None) -> WithSEC:
        """The loss with SEC: the contrastive loss (negatives gathered over processes if ``distributed``) on the
        projections of both views, SEC on those of them that carry gradient."""
        loss = config.loss
        contrastive = contrastive_loss(loss.contrastive, loss.temperature, cls.memory_bank_size(config),
                                       gather_distributed=distributed)
        return WithSEC(contrastive, sec_weight=loss.sec_weight, sec_momentum=loss.sec_momentum,
                       norm_penalty_weight=loss.norm_penalty_weight, embedding_args=(0, 1))

    @classmethod
    def from_config(cls, config: Config, in_channels: int, distributed: bool = False,
                    num_classes: Optional[int] = None) -> Method:
        """The method that ``config`` describes, for images of ``in_channels``: :meth:`initial_backbone`,
        :meth:`build_head`, :meth:`build_criterion` (``num_classes``: the training classes, for class weights)
        and :meth:`options`; SyncBN if ``distributed`` and :meth:`sync_batchnorm`."""
        backbone = cls.initial_backbone(config, in_channels)
        head = cls.build_head(config, backbone)
        criterion = cls.build_criterion(config, distributed, num_classes)
        model = cls(backbone, head, criterion, sec_schedule=config.loss.sec_schedule, **cls.options(config))
        if distributed and cls.sync_batchnorm(config):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    @classmethod
    def sync_batchnorm(cls, config: Config) -> bool:
        """Whether BatchNorm statistics are taken over all processes (``model.sync_batchnorm``)."""
        return config.model.sync_batchnorm
