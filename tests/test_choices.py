"""The names config validates against (sslsec.choices) are those of the registries that implement them."""

import subprocess
import sys
from pathlib import Path

from sslsec import choices, errors
from sslsec.config import ConfigError, load_config
from sslsec.data import DATASET_NAMES
from sslsec.methods import METHODS
from sslsec.methods.metric import METRIC_LOSSES
from sslsec.models import IMAGENET_WEIGHTS

ROOT = Path(__file__).parents[1]


def test_the_name_lists_are_the_registries_names():
    assert choices.METHOD_NAMES == tuple(METHODS)
    assert choices.DATASET_NAMES == DATASET_NAMES
    assert choices.IMAGENET_BACKBONES == tuple(IMAGENET_WEIGHTS)
    assert choices.METRIC_LOSS_NAMES == tuple(METRIC_LOSSES)
    assert choices.MARGINLESS_METRIC_LOSSES == tuple(name for name, margin in METRIC_LOSSES.items() if margin is None)


def test_queue_methods_are_those_whose_loss_keeps_a_queue():
    def config(name):  # method=face takes a class-weight loss only
        return load_config(None, [f"method={name}", *(["metric.loss=cosface"] if name == "face" else [])])

    queued = tuple(name for name, cls in METHODS.items() if cls.memory_bank_size(config(name)))
    assert choices.QUEUE_METHODS == queued


def test_importing_the_config_and_loading_a_config_load_no_implementation():
    """No torch, kornia, lightly or sslsec implementation behind ``sslsec.config``: every implementation can import
    from it at run time (no cycle), and ``--help`` or a config error costs no torch import."""
    code = ("import sys, sslsec.config; sslsec.config.load_config(None, ['method=moco', 'data.name=imagenet_folder']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kornia', 'lightly', 'torchvision')"
            " or m.startswith(('sslsec.methods', 'sslsec.models', 'sslsec.data', 'sslsec.losses', 'sslsec.eval'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_config_error_is_one_class_wherever_it_is_imported_from():
    assert ConfigError is errors.ConfigError
