"""Gradient accumulation and LARS, trained: the update they make against an independent computation."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from safetensors.torch import load_file
from torch import nn

from sslsec.config import load_config
from sslsec.engine import build_optimizer, make_accelerator, pretrain
from sslsec.engine.trainer import train_step
from sslsec.eval import random_backbone
from sslsec.methods import build_method


class Regression(nn.Module):
    """BatchNorm-free, with a loss that is a mean over samples: the gradient of a batch of 2B is the mean of the
    gradients of its two halves, so accumulating two halves must make the same update as the whole batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 1)

    def forward(self, inputs, targets, labels=None):
        return SimpleNamespace(total=(self.linear(inputs).squeeze(1) - targets).square().mean())


def test_two_accumulated_halves_make_the_update_of_the_whole_batch():
    torch.manual_seed(0)
    reference = Regression()
    model = copy.deepcopy(reference)
    batches = [(torch.randn(8, 6), torch.randn(8)) for _ in range(2)]
    sgd = lambda module: torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)  # noqa: E731
    expected = sgd(reference)
    after_steps = []
    for inputs, targets in batches:  # accumulation 1, batch 2B = 8
        expected.zero_grad()
        reference(inputs, targets).total.backward()
        expected.step()
        after_steps.append(copy.deepcopy(reference.state_dict()))

    accelerator = make_accelerator(mixed_precision="no", gradient_accumulation_steps=2, cpu=True)
    model, optimizer = accelerator.prepare(model, sgd(model))
    for step, (inputs, targets) in enumerate(batches):  # accumulation 2, micro-batches of B = 4
        before = copy.deepcopy(model.state_dict())
        for half in range(2):
            with accelerator.accumulate(model):
                part = slice(4 * half, 4 * half + 4)
                train_step(accelerator, model, optimizer, (inputs[part], targets[part]))
            if half == 0:  # no step while accumulating
                assert not accelerator.sync_gradients
                assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
        assert accelerator.sync_gradients
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, after_steps[step][key], rtol=1e-5, atol=1e-6)


def _small_config(*extra):
    return load_config(None, ["model.backbone=small_cnn", "model.projection_hidden_dim=32", "model.projection_dim=16",
                              "trainer.mixed_precision=no", *extra])


def test_lars_scales_each_decayed_layer_by_its_trust_ratio_and_steps_norms_and_biases_plainly():
    """lightly's LARS (You et al. 2017) on build_optimizer's groups: a weight w with gradient g moves by
    lr * eta * ||w|| / (||g|| + wd ||w||) * (g + wd w) at the first step (eta = 0.001); biases and norms, out of
    weight decay, by lr * g."""
    config = _small_config("optim.name=lars", "optim.lr=0.4", "optim.weight_decay=1e-4", "trainer.batch_size=256")
    torch.manual_seed(0)
    model = build_method(config, in_channels=1)
    optimizer = build_optimizer(model, config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)).total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    lr, decay, checked = 0.4, 1e-4, {"decayed": 0, "plain": 0}  # lr per 256 images, batch 256
    for name, p in model.named_parameters():
        if name not in grads or grads[name].norm() == 0:
            continue
        w, g = before[name], grads[name]
        if w.ndim > 1:  # conv and linear weights: weight decay and the trust ratio
            ratio = 0.001 * w.norm() / (g.norm() + decay * w.norm() + 1e-8)
            expected = w - lr * ratio * (g + decay * w)
            checked["decayed"] += 1
        else:
            expected = w - lr * g
            checked["plain"] += 1
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-7, msg=name)
    assert checked["decayed"] >= 4 and checked["plain"] >= 4


def test_lars_makes_lightlys_updates_without_reading_the_norms_back():
    """Bit for bit lightly's LARS, momentum and Nesterov included, where the trust ratio applies and where it does not:
    a weight of zeros, a gradient of zeros, a parameter out of weight decay."""
    from lightly.utils.lars import LARS as LightlyLARS

    from sslsec.engine.lars import LARS

    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.zeros(5), torch.randn(2, 2), torch.randn(3)]
    gradients = [[torch.randn_like(p) for p in start] for _ in range(3)]
    for step in gradients:
        step[2].zero_()
    for nesterov in (False, True):
        params = [[p.clone().requires_grad_() for p in start] for _ in range(2)]
        optimizers = [optimizer_class([{"params": group[:3], "weight_decay": 1e-2},
                                       {"params": group[3:], "weight_decay": 0.0}],
                                      lr=0.3, momentum=0.9, nesterov=nesterov, trust_coefficient=0.01)
                      for optimizer_class, group in zip((LARS, LightlyLARS), params)]
        for step in gradients:
            for group, optimizer in zip(params, optimizers):
                for p, g in zip(group, step):
                    p.grad = g.clone()
                optimizer.step()
        assert all(torch.equal(ours, lightlys) for ours, lightlys in zip(*params))


def test_lars_with_accumulation_trains_and_steps_the_schedule_once_per_optimizer_step(npz_root, tmp_path):
    """128 images in global batches of 32 as 2 micro-batches of 16: 4 optimizer steps per epoch, each stepping the
    cosine-warmup schedule once; the weights move, and no more than LARS lets them (lr x eta per step, x 10 for
    momentum 0.9)."""
    config = _small_config(
        "data.name=npz", f"data.root={npz_root}", "moco.queue_size=64", "trainer.batch_size=32", "trainer.epochs=2",
        "trainer.gradient_accumulation_steps=2", "optim.name=lars", "optim.warmup_epochs=1", "trainer.log_every=1",
        "trainer.eval_every=0", "trainer.checkpoint_every=0", f"output_dir={tmp_path / 'run'}")
    run = pretrain(config)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "total" in row]
    assert [row["step"] for row in rows] == list(range(1, 9))
    lr = config.optim.lr * 32 / 256
    stand_in = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = CosineWarmupScheduler(stand_in, warmup_epochs=4, max_epochs=8)
    expected = []
    for _ in range(8):
        stand_in.step()
        schedule.step()
        expected.append(schedule.get_last_lr()[0])
    assert [row["lr"] for row in rows] == pytest.approx(expected)
    assert all(torch.isfinite(torch.tensor(row["total"])) for row in rows)

    initial, trained = random_backbone(config, 1).state_dict(), load_file(run / "backbone.safetensors")
    weights = [key for key in trained if trained[key].ndim > 1]
    moved = [((trained[key] - initial[key]).norm() / initial[key].norm()).item() for key in weights]
    assert all(0 < change <= 8 * lr * 0.001 * 10 for change in moved), moved
