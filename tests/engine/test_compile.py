"""``trainer.compile``: the networks are compiled, not the loss or the DDP wrapper, so the SEC schedule's new weight
at every step recompiles nothing. Dynamo's counters are read before every step; its ``eager`` backend stands in for
inductor (recompiles are Dynamo's guards failing, whatever the backend; eager spares the C++ build)."""

import pytest
import torch
from torch._dynamo.utils import counters

from sslsec.config import load_config
from sslsec.engine import pretrain
from sslsec.methods import Method


@pytest.fixture
def eager_dynamo(monkeypatch):
    """``nn.Module.compile`` with Dynamo's eager backend; Dynamo's caches and counters fresh before and after."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **options: compile_module(self, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


@pytest.mark.parametrize("method", ["simclr", pytest.param("moco", marks=pytest.mark.slow)])
def test_twenty_steps_of_the_linear_sec_schedule_compile_the_networks_once(npz_root, tmp_path, monkeypatch,
                                                                          eager_dynamo, method):
    graphs, weights = [], []  # before each step: the graphs Dynamo has compiled so far; the SEC weight of the step
    before_step = Method.before_step

    def record(self, step, total_steps):
        graphs.append(counters["stats"]["unique_graphs"])
        before_step(self, step, total_steps)
        weights.append(self.criterion.weight_scale)

    monkeypatch.setattr(Method, "before_step", record)  # MoCo's before_step calls it too
    run = pretrain(load_config(None, [
        "data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn", "model.projection_hidden_dim=32",
        "model.projection_dim=16", "moco.queue_size=64", "moco.batch_norm=none", "trainer.batch_size=16",
        "trainer.epochs=3", "trainer.max_steps=20", "trainer.log_every=5", "trainer.eval_every=0",
        "trainer.mixed_precision=no", "trainer.compile=true", "loss.sec_weight=0.5", "loss.sec_schedule=linear",
        f"method={method}", f"output_dir={tmp_path / 'run'}"]))

    assert len(graphs) == 20 and graphs[0] == 0 and len(set(weights)) == 20
    compiled_in_step_0 = graphs[1]
    assert compiled_in_step_0 >= (4 if method == "moco" else 2)  # backbone, head (and their momentum copies)
    assert graphs[1:] == [compiled_in_step_0] * 19  # no recompile after the first step
    assert counters["stats"]["unique_graphs"] == compiled_in_step_0
    assert not any("recompile" in key.lower() for key in counters["stats"])
    assert (run / "checkpoints" / "step_00000020").is_dir()
