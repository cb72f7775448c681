"""The names a config may choose, known without importing what implements them (no torch, no kornia, no lightly).

:mod:`sslsec.config` validates against these tuples, so ``import sslsec.config`` loads neither the models nor the
methods, and every implementation may import from the config module. The plain lists are the implementations'
own (``sslsec.losses``, ``sslsec.models`` and ``sslsec.eval.linear`` import them from here); the names of the
registries that hold classes or readers (:data:`sslsec.methods.METHODS`, :data:`sslsec.data.DATASET_NAMES`,
:data:`sslsec.models.IMAGENET_WEIGHTS`, :data:`sslsec.methods.metric.METRIC_LOSSES`) are repeated here and
checked against them by ``tests/test_choices.py``.
"""

__all__ = ["BACKBONES", "CLASS_WEIGHT_METRIC_LOSSES", "CONTRASTIVE_LOSSES", "DATASET_NAMES", "EMBEDDING_HEADS",
           "IMAGENET_BACKBONES", "MARGINLESS_METRIC_LOSSES", "METHOD_NAMES", "METRIC_LOSS_NAMES", "PROBE_SCHEDULES", "QUEUE_METHODS", "SEC_SCHEDULES",
           "SHARED_SPLIT_DATASETS"]

# Plain lists: their implementations read them from here.
BACKBONES = ("resnet18", "resnet50", "small_cnn")  # sslsec.models.build_backbone
EMBEDDING_HEADS = ("linear", "face")  # sslsec.models.Embedder
SEC_SCHEDULES = ("constant", "linear")  # sslsec.losses.scheduled_weight
CONTRASTIVE_LOSSES = ("ntxent", "dcl", "dclw")  # sslsec.losses.contrastive_loss
PROBE_SCHEDULES = ("cosine", "step")  # sslsec.eval.linear

# The names of registries that hold implementations (kept equal to them by a test).
METHOD_NAMES = ("simclr", "moco", "byol", "simsiam", "metric", "face")  # sslsec.methods.METHODS
QUEUE_METHODS = ("moco",)  # methods whose loss keeps a queue of negatives (Method.memory_bank_size > 0)
SHARED_SPLIT_DATASETS = ("cub200", "cars196")  # "train" and "test" are the same images (sslsec.data.folders)
DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "npz", "imagenet_folder", "cub200", "cars196", "face_folder")
IMAGENET_BACKBONES = ("resnet18", "resnet50")  # backbones with torchvision ImageNet weights (IMAGENET_WEIGHTS)
METRIC_LOSS_NAMES = ("contrastive", "triplet", "triplet_squared", "semihard_triplet", "npair", "supcon",
                     "multi_similarity", "normface", "cosface", "arcface")  # sslsec.methods.metric.METRIC_LOSSES
MARGINLESS_METRIC_LOSSES = ("npair", "supcon", "normface")
CLASS_WEIGHT_METRIC_LOSSES = ("normface", "cosface", "arcface")  # one weight per class (sslsec.methods.metric)  # METRIC_LOSSES[name] is None: no metric.margin
