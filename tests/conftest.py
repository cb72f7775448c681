import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState

from tests.fixtures import write_run, write_template_npz


@pytest.fixture(scope="module")
def npz_root(tmp_path_factory):
    """An npz data set of smooth random 16 px images (learnable, unlike pixel noise), 4 brightness classes."""
    root = tmp_path_factory.mktemp("npz")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 128), ("test", 32)):
        coarse = torch.rand(n, 1, 4, 4, generator=g)
        images = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
        labels = (coarse.mean(dim=(1, 2, 3)) * 4).long().clamp(max=3)
        np.savez(root / f"{split}.npz", images=(images[:, 0] * 255).byte().numpy(), labels=labels.numpy())
    return root


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run", write_template_npz(tmp_path / "data"))


@pytest.fixture(autouse=True)
def cpu_unless_marked_gpu(request, monkeypatch):
    """Tests not marked ``gpu`` train on the CPU even where a GPU exists (``make_accelerator`` reads
    ``ACCELERATE_USE_CPU``, as ``accelerate launch --cpu`` sets it): the same kernels as the runs they compare with,
    and GPU runs only where a test asks for them. Subprocesses get the same from :func:`tests.launch.cpu_env`."""
    if "gpu" not in request.keywords:
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each test picks its own precision: accelerate keeps one per process and refuses another, and tests pin
    trainer.mixed_precision=no beside others that take the default auto (bf16 on a CPU that computes it)."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
