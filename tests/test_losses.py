import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.loss import NTXentLoss

from sslsec.losses import NormPenalty, SECInfoNCE, SphericalEmbeddingConstraint


def _embeddings(n=16, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 + 0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scales


def test_sec_value_and_gradient_match_the_analytic_form():
    z = _embeddings().requires_grad_()
    loss = SphericalEmbeddingConstraint()(z)
    loss.backward()

    norms = z.detach().norm(dim=1)
    mu = norms.mean()
    assert torch.allclose(loss, ((norms - mu) ** 2).mean())
    expected_grad = 2 / len(z) * ((norms - mu) / norms)[:, None] * z.detach()
    assert torch.allclose(z.grad, expected_grad)


def test_sec_is_zero_on_a_common_sphere_and_ignores_directions():
    z = torch.nn.functional.normalize(_embeddings(), dim=1) * 2.5
    assert SphericalEmbeddingConstraint()(z).abs() < 1e-12

    z = _embeddings()
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    sec = SphericalEmbeddingConstraint()
    assert torch.allclose(sec(z), sec(z @ rotation))


def test_sec_ema_follows_its_recurrence_and_survives_state_dict():
    rho = 0.3
    sec = SphericalEmbeddingConstraint(momentum=rho)
    batches = [_embeddings(seed=s) for s in range(4)]
    mu = None
    for z in batches:
        batch_mean = z.norm(dim=1).mean()
        mu = batch_mean if mu is None else (1 - rho) * mu + rho * batch_mean
        loss = sec(z)
        assert torch.allclose(sec.mu.double(), mu, atol=1e-6)
        assert torch.allclose(loss, ((z.norm(dim=1) - sec.mu.double()) ** 2).mean(), atol=1e-6)

    restored = SphericalEmbeddingConstraint(momentum=rho)
    restored.load_state_dict(sec.state_dict())
    assert restored.mu == sec.mu and restored.num_updates == 4
    z = _embeddings(seed=9)
    assert torch.equal(restored(z), sec(z))

    sec.eval()
    frozen = sec.mu.clone()
    sec(_embeddings(seed=10))
    assert torch.equal(sec.mu, frozen)


def test_minimising_sec_alone_equalises_norms_but_keeps_directions():
    z0 = _embeddings(n=64, d=16).float()
    z = z0.clone().requires_grad_()
    sec = SphericalEmbeddingConstraint()
    optimizer = torch.optim.SGD([z], lr=5.0)
    for _ in range(200):
        optimizer.zero_grad()
        sec(z).backward()
        optimizer.step()

    norms_before, norms_after = z0.norm(dim=1), z.detach().norm(dim=1)
    assert norms_after.var() < 1e-3 * norms_before.var()
    cosine = torch.nn.functional.cosine_similarity(z.detach(), z0, dim=1)
    assert cosine.min() > 0.999


def test_norm_penalty_is_mean_squared_norm():
    z = _embeddings()
    assert torch.allclose(NormPenalty()(z), (z.norm(dim=1) ** 2).mean())


def test_contrastive_part_is_lightly_ntxent_and_scale_invariant():
    z0, z1 = _embeddings(seed=1), _embeddings(seed=2)
    out = SECInfoNCE(temperature=0.3, sec_weight=1.0)(z0, z1)
    reference = NTXentLoss(temperature=0.3)(z0, z1)
    assert torch.allclose(out.contrastive, reference)

    scales = torch.rand(len(z0), 1, dtype=torch.float64) * 10 + 0.1
    rescaled = SECInfoNCE(temperature=0.3)(z0 * scales, z1 / scales)
    assert torch.allclose(rescaled.contrastive, reference)


def test_total_combines_the_terms_and_reports_norm_statistics():
    z0, z1 = _embeddings(seed=1).requires_grad_(), _embeddings(seed=2).requires_grad_()
    out = SECInfoNCE(temperature=0.5, sec_weight=0.7, norm_penalty_weight=0.01)(z0, z1)
    norms = torch.cat([z0, z1]).detach().norm(dim=1)
    sec = ((norms - norms.mean()) ** 2).mean()
    expected = out.contrastive + 0.7 * sec + 0.01 * (norms**2).mean()
    assert torch.allclose(out.total, expected)
    assert torch.allclose(out.sec, sec)
    assert torch.allclose(out.norm_mean.double(), norms.mean())
    assert torch.allclose(out.norm_std.double(), norms.std(unbiased=False), atol=1e-5)
    out.total.backward()
    assert z0.grad is not None and torch.isfinite(z0.grad).all()


def test_sec_weight_zero_gives_exactly_the_plain_loss_and_gradient():
    z0, z1 = _embeddings(seed=1).requires_grad_(), _embeddings(seed=2).requires_grad_()
    SECInfoNCE(temperature=0.5, sec_weight=0.0)(z0, z1).total.backward()
    g0 = z0.grad.clone()
    z0.grad = None
    NTXentLoss(temperature=0.5)(z0, z1).backward()
    assert torch.equal(g0, z0.grad)


def test_sec_uses_only_projections_that_carry_gradient():
    # MoCo: the keys z1 come from the momentum encoder and carry no gradient.
    z0, z1 = _embeddings(seed=1).float().requires_grad_(), _embeddings(seed=2).float() * 10
    out = SECInfoNCE(sec_weight=1.0, memory_bank_size=(32, 8))(z0, z1)
    norms = z0.detach().norm(dim=1)
    assert torch.allclose(out.sec, ((norms - norms.mean()) ** 2).mean())
    assert torch.allclose(out.norm_mean, norms.mean())


def test_memory_bank_queue_round_trips_through_state_dict():
    loss = SECInfoNCE(memory_bank_size=(32, 8))
    loss(_embeddings(seed=1).float().requires_grad_(), _embeddings(seed=2).float())
    restored = SECInfoNCE(memory_bank_size=(32, 8))
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.contrastive.memory_bank.bank, loss.contrastive.memory_bank.bank)
    assert int(restored.contrastive.memory_bank.bank_ptr) == 16


@pytest.mark.parametrize(
    "z0, z1, message",
    [
        (torch.randn(4, 3, 2), torch.randn(4, 3, 2), "2-D"),
        (torch.randn(4, 3), torch.randn(5, 3), "same shape"),
        (torch.tensor([[1.0, float("nan")]] * 2), torch.ones(2, 2), "NaN or Inf"),
    ],
)
def test_bad_input_is_a_clear_value_error(z0, z1, message):
    with pytest.raises(ValueError, match=message):
        SECInfoNCE()(z0, z1)


@pytest.mark.parametrize("kwargs", [{"sec_weight": -1.0}, {"norm_penalty_weight": -0.1}, {"sec_momentum": 1.5}])
def test_bad_weights_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SECInfoNCE(**kwargs)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world_size, port, z0, z1, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = torch.tensor_split(torch.arange(len(z0)), world_size)[rank]
        loss_fn = SECInfoNCE(temperature=0.5, sec_weight=1.0, sec_momentum=0.5, gather_distributed=True)
        for _ in range(2):  # the second step exercises the EMA update
            out = loss_fn(z0[rows].clone().requires_grad_(), z1[rows].clone().requires_grad_())
        total = out.total.detach().clone()
        dist.all_reduce(total)
        results[rank] = (float(loss_fn.sec.mu), float(total) / world_size, float(out.norm_std))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_mu_and_loss_equal_the_single_process_values():
    z0, z1 = _embeddings(n=8, seed=1).float(), _embeddings(n=8, seed=2).float()
    single = SECInfoNCE(temperature=0.5, sec_weight=1.0, sec_momentum=0.5)
    for _ in range(2):
        out = single(z0.clone().requires_grad_(), z1.clone().requires_grad_())

    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(2, _free_port(), z0, z1, results), nprocs=2)
    for rank in range(2):
        mu, total, norm_std = results[rank]
        assert mu == pytest.approx(float(single.sec.mu), rel=1e-6)
        assert total == pytest.approx(float(out.total.detach()), rel=1e-5)
        assert norm_std == pytest.approx(float(out.norm_std), rel=1e-5)


def test_scheduled_weight_is_constant_or_a_linear_ramp_from_zero_to_the_weight():
    from sslsec.losses import scheduled_weight

    assert [scheduled_weight(0.14, "constant", step, 5) for step in range(5)] == [0.14] * 5
    ramp = [scheduled_weight(0.14, "linear", step, 5) for step in range(5)]
    assert ramp == pytest.approx([0.0, 0.035, 0.07, 0.105, 0.14])
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        scheduled_weight(1.0, "cosine", 0, 5)


def test_weight_scale_scales_sec_and_the_norm_penalty():
    z0, z1 = torch.randn(16, 8) * 3, torch.randn(16, 8)
    loss_fn = SECInfoNCE(temperature=0.5, sec_weight=0.8, norm_penalty_weight=0.1)
    full = loss_fn(z0, z1)
    loss_fn.weight_scale = 0.25
    scaled = loss_fn(z0, z1)
    regulariser = full.total - full.contrastive
    assert scaled.total - scaled.contrastive == pytest.approx(0.25 * regulariser.item(), rel=1e-5)
    loss_fn.weight_scale = 0.0
    assert loss_fn(z0, z1).total == pytest.approx(full.contrastive.item())
