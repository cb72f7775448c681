"""The methods: their registry, their forward passes and the step hooks the trainer calls."""

import math

import pytest
import torch
import torchvision
from lightly.loss import DCLLoss, NTXentLoss
from torchvision.models import WeightsEnum

from sslsec.augment import MoCoV2Augment, SimCLRAugment
import sslsec.config
from sslsec.config import load_config
from sslsec.engine import pretrain
from sslsec.eval import random_backbone
from sslsec.methods import BYOL, METHODS, MoCo, SimCLR, SimSiam, build_method, build_projection_head, method_class
from sslsec.models import load_backbone, save_backbone


def _config(method, *overrides):
    return load_config(None, [f"method={method}", "model.backbone=small_cnn",
                              "model.projection_hidden_dim=32", "model.projection_dim=16",
                              "moco.queue_size=64", *overrides])


def _views(n=8, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, 16, 16, generator=g), torch.randn(n, channels, 16, 16, generator=g)


def test_build_method_picks_the_method_and_its_loss_settings():
    simclr = build_method(_config("simclr", "loss.sec_weight=0.5"), in_channels=1, distributed=True)
    assert isinstance(simclr, SimCLR)
    assert simclr.criterion.sec_weight == 0.5 and simclr.criterion.loss.gather_distributed
    moco = build_method(_config("moco", "loss.temperature=0.2"), in_channels=3)
    assert isinstance(moco, MoCo)
    assert moco.criterion.loss.memory_bank.size == (64, 16)
    assert moco.criterion.loss.temperature == 0.2


def test_loss_contrastive_picks_simclrs_lightly_loss():
    simclr = build_method(_config("simclr", "loss.contrastive=dcl", "loss.temperature=0.2", "loss.sec_weight=0.5"),
                          in_channels=1, distributed=True)
    assert isinstance(simclr.criterion.loss, DCLLoss)
    assert simclr.criterion.loss.temperature == 0.2 and simclr.criterion.loss.gather_distributed
    assert simclr.criterion.sec_weight == 0.5
    assert isinstance(build_method(_config("simclr"), in_channels=1).criterion.loss, NTXentLoss)


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "simsiam"])
def test_sync_batchnorm_is_available_to_every_method_under_several_processes(method):
    def sync_layers(model):
        return sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())

    assert sync_layers(build_method(_config(method, "model.sync_batchnorm=true"), 1, distributed=True)) > 0
    assert sync_layers(build_method(_config(method, "model.sync_batchnorm=true"), 1, distributed=False)) == 0
    assert sync_layers(build_method(_config(method), 1, distributed=True)) == 0


def test_moco_shuffle_bn_of_the_shipped_configs_is_silent_in_one_process_and_shuffles_only_across_several():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every single-process run of configs/moco_*.yaml would print it
        single = build_method(_config("moco", "moco.batch_norm=shuffle"), 1)
        build_method(_config("moco", "moco.batch_norm=none"), 1)
        build_method(_config("moco", "moco.batch_norm=shuffle"), 1, distributed=True)
    torch.manual_seed(0)
    views = torch.rand(8, 1, 16, 16)  # in one process the keys are plain BN's: the same as without shuffling
    plain = build_method(_config("moco", "moco.batch_norm=none"), 1)
    plain.load_state_dict(single.state_dict())
    assert torch.allclose(single.keys(views), plain.keys(views), atol=1e-6)


def test_simclr_embeds_both_views_in_one_batch_norm_pass():
    torch.manual_seed(0)
    model = build_method(_config("simclr"), in_channels=1)
    v0, v1 = _views()
    out = model(v0, v1)
    joint = model.head(model.backbone(torch.cat([v0, v1]))).chunk(2)
    separate = model.head(model.backbone(v0)), model.head(model.backbone(v1))
    assert torch.equal(out.total, model.criterion(*joint).total)
    # BatchNorm in train mode: statistics over all 2N images differ from those of each view's N
    assert not torch.allclose(out.total, model.criterion(*separate).total)


def test_the_registry_ties_each_name_to_its_views_and_head():
    from sslsec.augment import MetricAugment

    assert list(METHODS) == ["simclr", "moco", "byol", "simsiam", "metric", "face"]
    assert [METHODS[name].augment for name in METHODS] == [SimCLRAugment, MoCoV2Augment, SimCLRAugment, MoCoV2Augment,
                                                           MetricAugment, MetricAugment]
    assert [METHODS[name].n_views for name in METHODS] == [2, 2, 2, 2, 1, 1]
    with pytest.raises(ValueError, match="unknown method 'swav'; choose one of simclr, moco, byol, simsiam, metric, "
                                         "face"):
        build_projection_head("swav", 8)


def test_projection_heads_follow_the_methods():
    simclr, moco = build_projection_head("simclr", 64, 32, 16), build_projection_head("moco", 64, 32, 16)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in simclr.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in moco.modules())
    assert simclr(torch.randn(4, 64)).shape == moco(torch.randn(4, 64)).shape == (4, 16)


def test_before_step_sets_the_sec_schedule_and_only_moco_moves_its_key_encoder():
    simclr = build_method(_config("simclr", "loss.sec_schedule=linear"), in_channels=1)
    before = {k: v.clone() for k, v in [*simclr.named_parameters(), *simclr.named_buffers()]}
    simclr.before_step(0, 5)
    assert simclr.criterion.weight_scale == 0.0
    simclr.before_step(4, 5)
    assert simclr.criterion.weight_scale == 1.0
    assert all(torch.equal(before[k], v) for k, v in [*simclr.named_parameters(), *simclr.named_buffers()])

    moco = build_method(_config("moco", "moco.momentum=0.9"), in_channels=1)
    with torch.no_grad():
        for p in moco.backbone.parameters():
            p.add_(1.0)
    keys_before = [p.clone() for p in moco.backbone_momentum.parameters()]
    moco.before_step(3, 10)
    assert moco.criterion.weight_scale == 1.0  # constant schedule
    for k_old, q, k_new in zip(keys_before, moco.backbone.parameters(), moco.backbone_momentum.parameters()):
        assert torch.allclose(k_new, 0.9 * k_old + 0.1 * q)


def test_the_trainer_drives_a_method_it_has_never_heard_of_through_its_hooks(npz_root, tmp_path, monkeypatch):
    """MoCo registered under a new name: were the trainer to branch on ``config.method``, the renamed MoCo would
    miss its momentum updates (``before_step``) or its monitor. Each optimizer step calls ``before_step(step,
    total)`` in order, each epoch the monitor (MoCo's momentum update itself: the before_step test above)."""
    calls = []

    class Renamed(MoCo):
        def before_step(self, step, total_steps):
            calls.append((step, total_steps))
            super().before_step(step, total_steps)

        def monitor(self, train, split, config, accelerator):
            calls.append("monitor")
            return super().monitor(train, split, config, accelerator)

    monkeypatch.setitem(METHODS, "renamed", Renamed)
    monkeypatch.setattr(sslsec.config, "METHOD_NAMES", (*sslsec.config.METHOD_NAMES, "renamed"))
    run = pretrain(load_config(None, [
        "method=renamed", "data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn",
        "model.projection_hidden_dim=32", "model.projection_dim=16", "moco.queue_size=64", "moco.batch_norm=none",
        "trainer.batch_size=32", "trainer.epochs=2", "trainer.eval_every=1", "trainer.checkpoint_every=0",
        "trainer.mixed_precision=no", "eval.knn_k=5", f"output_dir={tmp_path}"]))
    assert calls == [(step, 8) for step in range(4)] + ["monitor"] + [(step, 8) for step in range(4, 8)] + ["monitor"]
    assert (run / "backbone.safetensors").is_file()


def test_moco_queue_holds_the_normalized_keys_after_a_step():
    torch.manual_seed(0)
    model = build_method(_config("moco"), in_channels=1)
    vq, vk = _views()
    expected_keys = torch.nn.functional.normalize(model.keys(vk), dim=1)
    bank = model.criterion.loss.memory_bank
    old_queue = bank.bank.clone()

    model(vq, vk).total.backward()
    assert int(bank.bank_ptr) == 8
    assert torch.allclose(bank.bank[:8], expected_keys, atol=1e-5)
    assert torch.equal(bank.bank[8:], old_queue[8:])
    model(*_views(seed=1))
    assert int(bank.bank_ptr) == 16


def test_moco_keys_carry_no_gradient():
    torch.manual_seed(0)
    model = build_method(_config("moco"), in_channels=1)
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    model(*_views()).total.backward()
    assert all(p.grad is None for p in [*model.backbone_momentum.parameters(), *model.head_momentum.parameters()])
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_moco_sec_regularizes_only_the_queries():
    torch.manual_seed(0)
    model = build_method(_config("moco", "loss.sec_weight=1.0"), in_channels=1)
    vq, vk = _views()
    out = model(vq, vk)
    norms = model.head(model.backbone(vq)).detach().norm(dim=1)
    assert torch.allclose(out.norm_mean, norms.mean(), rtol=1e-5)
    assert torch.allclose(out.sec, ((norms - norms.mean()) ** 2).mean(), rtol=1e-4)


def test_cosine_momentum_schedule_goes_from_base_to_one():
    model = build_method(_config("moco", "moco.momentum=0.99", "moco.cosine_momentum=true"), in_channels=1)
    assert model.momentum_at(0, 100) == pytest.approx(0.99)
    assert model.momentum_at(50, 100) == pytest.approx(0.995)
    assert model.momentum_at(100, 100) == pytest.approx(1.0)
    assert model.momentum_at(25, 100) == pytest.approx(1 - 0.01 * (1 + 0.5 ** 0.5) / 2)  # the cosine, not a line
    assert build_method(_config("moco"), in_channels=1).momentum_at(50, 100) == 0.99


@pytest.mark.parametrize("method", ["simclr", "metric"])
def test_pretrained_weights_start_training_but_stay_out_of_the_saved_spec_and_the_random_baseline(
        method, tmp_path, monkeypatch):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"].fill_(0.5)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda weights, **kwargs: state)
    config = load_config(None, [f"method={method}", "model.backbone=resnet18", "model.cifar_stem=false",
                                "model.pretrained=true", "model.embedding_dim=16", "model.projection_dim=16"])
    backbone = build_method(config, in_channels=3, num_classes=4).backbone
    trunk = backbone.trunk if method == "metric" else backbone
    assert torch.equal(trunk.conv1.weight, state["conv1.weight"])
    spec = method_class(method).backbone_spec(config, 3)
    assert "pretrained" not in spec
    save_backbone(backbone, tmp_path / "b.safetensors", spec)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda *args, **kwargs: pytest.fail("downloads weights"))
    assert torch.equal(load_backbone(tmp_path / "b.safetensors").state_dict()["conv1.weight" if method == "simclr"
                                                                              else "trunk.conv1.weight"], state["conv1.weight"])
    baseline = random_backbone(config, 3)
    assert not torch.equal((baseline.trunk if method == "metric" else baseline).conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("queue_size", [32, 20])
def test_moco_queue_is_a_ring_written_on_the_device_as_lightly_writes_it_when_the_batch_divides_it(queue_size):
    from lightly.models.modules.memory_bank import MemoryBankModule

    from sslsec.methods.moco import KeyQueue

    torch.manual_seed(0)
    lightly_bank = MemoryBankModule((queue_size, 4), feature_dim_first=False)
    rng_after_lightly = torch.get_rng_state()
    queue = KeyQueue(lightly_bank)
    assert torch.equal(torch.get_rng_state(), rng_after_lightly)  # taking over draws no random numbers
    assert torch.equal(queue.bank, lightly_bank.bank) and queue.bank_ptr.dtype == torch.long

    keys = torch.randn(6 * 8, 4)
    for step, batch in enumerate(keys.split(8)):
        lightly_bank(batch, update=True)
        _, returned = queue(batch, update=True)
        assert int(queue.bank_ptr) == (step + 1) * 8 % queue_size
        if queue_size % 8 == 0:
            assert torch.equal(queue.bank, lightly_bank.bank) and torch.equal(queue.bank_ptr, lightly_bank.bank_ptr)
    # a ring: the newest queue_size keys, each at its position modulo queue_size (lightly cuts them at the end)
    newest = torch.arange(len(keys) - queue_size, len(keys))
    assert torch.equal(queue.bank[newest % queue_size], keys[newest])
    with pytest.raises(ValueError, match="raise moco.queue_size to at least the global batch"):
        queue(torch.randn(queue_size + 1, 4), update=True)


def test_moco_takes_over_its_loss_memory_bank_as_a_key_queue():
    from sslsec.methods.moco import KeyQueue

    model = build_method(_config("moco"), in_channels=1)
    assert isinstance(model.criterion.loss.memory_bank, KeyQueue) and model.criterion.loss.memory_bank.size == (64, 16)
    assert set(model.criterion.state_dict()["_extra_state"]) == {"bank", "bank_ptr"}  # still checkpointed


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_byol_and_simsiam_losses_are_their_papers_formulas_with_sec_on_the_predictions(method):
    torch.manual_seed(0)
    model = build_method(_config(method, "loss.sec_weight=0.5"), in_channels=1)
    if method == "byol":  # a target network apart from the online one, as after some training
        with torch.no_grad():
            for p in model.backbone_momentum.parameters():
                p.add_(0.1 * torch.randn_like(p))
    v0, v1 = _views()
    out = model(v0, v1)
    with torch.no_grad():  # each view through the networks alone, by hand
        p0, p1 = (model.predictor(model.head(model.backbone(v))) for v in (v0, v1))
        target = (lambda v: model.head_momentum(model.backbone_momentum(v))) if method == "byol" else \
            (lambda v: model.head(model.backbone(v)))
        t0, t1 = target(v0), target(v1)
    if method == "byol":  # eq. 2, both directions: ||p/|p| - z'/|z'| ||^2 = 2 - 2 cos
        expected = (2 - 2 * _cosine(p0, t1)).mean() + (2 - 2 * _cosine(p1, t0)).mean()
    else:  # eq. 2: D(p0, z1) / 2 + D(p1, z0) / 2, D the negative cosine
        expected = -(_cosine(p0, t1).mean() + _cosine(p1, t0).mean()) / 2
    assert torch.allclose(out.contrastive, expected, atol=1e-6)
    norms = torch.cat([p0, p1]).norm(dim=1)  # SEC over both views' predictions, not the targets
    assert torch.allclose(out.norm_mean, norms.mean(), rtol=1e-5)
    assert torch.allclose(out.sec, (norms - norms.mean()).square().mean(), rtol=1e-4)
    assert torch.allclose(out.total, expected + 0.5 * out.sec, atol=1e-5)


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_byol_and_simsiam_targets_carry_no_gradient(method):
    """The gradient is that of the loss with the targets taken as constants (SimSiam's stop-gradient; BYOL's target
    network is not trained), SEC included."""
    torch.manual_seed(0)
    model = build_method(_config(method, "loss.sec_weight=0.5", "loss.norm_penalty_weight=0.1"), in_channels=1)
    v0, v1 = _views()
    model(v0, v1).total.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    z0, z1 = (model.head(model.backbone(v)) for v in (v0, v1))
    if method == "byol":
        with torch.no_grad():
            z0, z1 = (model.head_momentum(model.backbone_momentum(v)) for v in (v0, v1))
    model.criterion(model.predictor(model.head(model.backbone(v0))), model.predictor(model.head(model.backbone(v1))),
                    z0.detach(), z1.detach()).total.backward()
    expected = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and any(key.startswith("predictor.") for key in got)
    assert not any("momentum" in key for key in got)
    for key in got:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key


def test_simsiam_and_byol_build_their_papers_heads():
    simsiam = build_method(_config("simsiam", "model.projection_dim=64"), in_channels=1)
    assert simsiam.predictor.layers[0].out_features == 16  # SimSiam's bottleneck: projection_dim / 4
    byol = build_method(_config("byol", "byol.momentum=0.9"), in_channels=1)
    assert byol.predictor.layers[0].out_features == 32 and byol.predictor.layers[-1].out_features == 16
    assert byol.momentum == 0.9 and not any(p.requires_grad for p in byol.head_momentum.parameters())
    wide = build_method(_config("byol", "model.prediction_hidden_dim=8"), in_channels=1)
    assert wide.predictor.layers[0].out_features == 8
    assert [type(m) for m in (simsiam, byol)] == [SimSiam, BYOL]


def test_byol_target_momentum_follows_the_papers_cosine_and_updates_once_after_each_step():
    model = build_method(_config("byol", "byol.momentum=0.99"), in_channels=1)
    # tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 (BYOL, Sec. 3.2)
    for step in (0, 25, 50, 73, 100):
        assert model.momentum_at(step, 100) == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi * step / 100)) / 2)
    assert model.momentum_at(0, 100) == pytest.approx(0.99) and model.momentum_at(100, 100) == pytest.approx(1.0)

    def shift_online():
        with torch.no_grad():
            for p in model.backbone.parameters():
                p.add_(1.0)

    def target():
        return [p.clone() for p in model.backbone_momentum.parameters()]

    shift_online()
    before = target()
    model.before_step(0, 10)  # before the first step there is no update to make
    assert all(torch.equal(a, b) for a, b in zip(before, target()))
    model.before_step(1, 10)  # the update that follows step 0, with tau_0
    after_first = target()
    for old, online, new in zip(before, model.backbone.parameters(), after_first):
        assert torch.allclose(new, 0.99 * old + 0.01 * online)
    model.before_step(1, 10)  # the same step again (skipped by the fp16 scaler): no second update
    assert all(torch.equal(a, b) for a, b in zip(after_first, target()))
    model.before_step(4, 10)  # the update that follows step 3, with tau_3
    tau = model.momentum_at(3, 10)
    assert 0.99 < tau < 1
    for old, online, new in zip(after_first, model.backbone.parameters(), target()):
        assert torch.allclose(new, tau * old + (1 - tau) * online)
