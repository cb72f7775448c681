import pytest
import torch
from lightly.loss import NTXentLoss

from sslsec.config import load_config
from sslsec.methods import MoCo, SimCLR, build_method, moco_momentum


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
    assert simclr.criterion.sec_weight == 0.5 and simclr.criterion.contrastive.gather_distributed
    moco = build_method(_config("moco", "loss.temperature=0.2"), in_channels=3)
    assert isinstance(moco, MoCo)
    assert moco.criterion.contrastive.memory_bank.size == (64, 16)
    assert moco.criterion.contrastive.temperature == 0.2


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_sync_batchnorm_is_available_to_every_method_under_several_processes(method):
    def sync_layers(model):
        return sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())

    assert sync_layers(build_method(_config(method, "model.sync_batchnorm=true"), 1, distributed=True)) > 0
    assert sync_layers(build_method(_config(method, "model.sync_batchnorm=true"), 1, distributed=False)) == 0
    assert sync_layers(build_method(_config(method), 1, distributed=True)) == 0


def test_simclr_with_sec_off_is_exactly_plain_ntxent():
    torch.manual_seed(0)
    model = build_method(_config("simclr"), in_channels=1)
    v0, v1 = _views()
    out = model(v0, v1)
    z0, z1 = model.head(model.backbone(torch.cat([v0, v1]))).chunk(2)
    assert torch.equal(out.total, NTXentLoss(temperature=0.5)(z0, z1))


def test_moco_queue_holds_the_normalized_keys_after_a_step():
    torch.manual_seed(0)
    model = build_method(_config("moco"), in_channels=1)
    vq, vk = _views()
    expected_keys = torch.nn.functional.normalize(model.keys(vk), dim=1)
    bank = model.criterion.contrastive.memory_bank
    old_queue = bank.bank.clone()

    model(vq, vk).total.backward()
    assert int(bank.bank_ptr) == 8
    assert torch.allclose(bank.bank[:8], expected_keys, atol=1e-5)
    assert torch.equal(bank.bank[8:], old_queue[8:])
    model(*_views(seed=1))
    assert int(bank.bank_ptr) == 16


def test_moco_keys_carry_no_gradient_and_momentum_update_is_an_ema():
    torch.manual_seed(0)
    model = build_method(_config("moco"), in_channels=1)
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.backbone_momentum.parameters()]
    model.update_momentum_encoder(0.9)
    for k_old, q, k_new in zip(before, model.backbone.parameters(), model.backbone_momentum.parameters()):
        assert torch.allclose(k_new, 0.9 * k_old + 0.1 * q)


def test_moco_sec_regularizes_only_the_queries():
    torch.manual_seed(0)
    model = build_method(_config("moco", "loss.sec_weight=1.0"), in_channels=1)
    vq, vk = _views()
    out = model(vq, vk)
    norms = model.head(model.backbone(vq)).detach().norm(dim=1)
    assert torch.allclose(out.norm_mean, norms.mean(), rtol=1e-5)
    assert torch.allclose(out.sec, ((norms - norms.mean()) ** 2).mean(), rtol=1e-4)


def test_cosine_momentum_schedule_goes_from_base_to_one():
    config = _config("moco", "moco.momentum=0.99", "moco.cosine_momentum=true")
    assert moco_momentum(config, 0, 100) == pytest.approx(0.99)
    assert moco_momentum(config, 50, 100) == pytest.approx(0.995)
    assert moco_momentum(config, 100, 100) == pytest.approx(1.0)
    assert moco_momentum(_config("moco"), 50, 100) == 0.99
