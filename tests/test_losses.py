import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.loss import DCLLoss, DCLWLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.loss.hypersphere_loss import HypersphereLoss
from pytorch_metric_learning.losses import ArcFaceLoss, MultiSimilarityLoss, TripletMarginLoss
from pytorch_metric_learning.regularizers import LpRegularizer

from sslsec.losses import (
    DCL,
    DCLW,
    NormPenalty,
    NTXent,
    SECInfoNCE,
    SECRegularizer,
    SphericalEmbeddingConstraint,
    SymmetricCosine,
    WithSEC,
    contrastive_loss,
)


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
    NTXent(temperature=0.5)(z0, z1).backward()
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


def _sec_by_hand(*embeddings, mu=None):
    norms = torch.cat([z.detach().norm(dim=1) for z in embeddings]).double()
    mu = norms.mean() if mu is None else mu
    return ((norms - mu) ** 2).mean(), (norms**2).mean()


def _labels(n=16, classes=4):
    return torch.arange(classes).repeat_interleave(n // classes)


def test_secinfonce_numbers_are_lightly_ntxent_plus_sec_by_hand_with_the_ema():
    rho, eta, l2 = 0.4, 0.7, 0.01
    loss_fn = SECInfoNCE(temperature=0.3, sec_weight=eta, sec_momentum=rho, norm_penalty_weight=l2)
    loss_fn.weight_scale = 0.5
    mu = None
    for seed in range(3):
        z0, z1 = _embeddings(seed=2 * seed).requires_grad_(), _embeddings(seed=2 * seed + 1).requires_grad_()
        norms = torch.cat([z0, z1]).detach().norm(dim=1)
        mu = norms.mean() if mu is None else (1 - rho) * mu + rho * norms.mean()
        sec, penalty = _sec_by_hand(z0, z1, mu=mu)
        out = loss_fn(z0, z1)
        ntxent = NTXentLoss(temperature=0.3)(z0, z1)
        assert torch.allclose(out.contrastive, ntxent.detach())
        assert torch.allclose(out.sec, sec, atol=1e-6)
        assert torch.allclose(out.total, ntxent + 0.5 * (eta * sec + l2 * penalty), atol=1e-6)
        assert torch.allclose(out.norm_mean.double(), norms.mean())


def test_secinfonce_keeps_its_state_dict_keys():
    # a checkpoint written before SECInfoNCE became a WithSEC loads unchanged
    assert set(SECInfoNCE(memory_bank_size=(32, 8)).state_dict()) == {"_extra_state", "sec.mu", "sec.num_updates"}
    loss_fn = SECInfoNCE(temperature=0.2)
    assert loss_fn.contrastive is loss_fn.loss and loss_fn.contrastive.temperature == 0.2


def test_weight_zero_is_exactly_the_wrapped_lightly_loss_value_and_gradient():
    z0, z1 = _embeddings(seed=1).requires_grad_(), _embeddings(seed=2).requires_grad_()
    out = WithSEC(DCLLoss(temperature=0.5))(z0, z1)
    out.total.backward()
    grads = z0.grad.clone(), z1.grad.clone()
    z0.grad = z1.grad = None
    plain = DCLLoss(temperature=0.5)(z0, z1)
    plain.backward()
    assert torch.equal(out.total, plain) and torch.equal(out.contrastive, plain.detach())
    assert torch.equal(grads[0], z0.grad) and torch.equal(grads[1], z1.grad)


def test_weight_zero_is_exactly_the_wrapped_pml_loss_value_and_gradient():
    embeddings, labels = _embeddings().requires_grad_(), _labels()
    out = WithSEC(TripletMarginLoss(margin=0.2))(embeddings, labels)
    out.total.backward()
    grad = embeddings.grad.clone()
    embeddings.grad = None
    plain = TripletMarginLoss(margin=0.2)(embeddings, labels)
    plain.backward()
    assert torch.equal(out.total, plain) and torch.equal(grad, embeddings.grad)


def test_sec_term_of_a_two_view_lightly_loss_is_its_formula():
    z0, z1 = _embeddings(seed=3).requires_grad_(), _embeddings(seed=4).requires_grad_()
    out = WithSEC(NTXentLoss(temperature=0.5), sec_weight=0.6, norm_penalty_weight=0.02, embedding_args=(0, 1))(z0, z1)
    sec, penalty = _sec_by_hand(z0, z1)
    assert torch.allclose(out.sec, sec)
    assert torch.allclose(out.total, NTXentLoss(temperature=0.5)(z0, z1) + 0.6 * sec + 0.02 * penalty)


def test_sec_term_of_a_pml_loss_with_labels_is_its_formula():
    embeddings, labels = _embeddings(n=20, seed=5).requires_grad_(), _labels(n=20, classes=5)
    out = WithSEC(MultiSimilarityLoss(), sec_weight=1.5)(embeddings, labels)
    sec, _ = _sec_by_hand(embeddings)
    norms = embeddings.detach().norm(dim=1)
    assert torch.allclose(out.sec, sec)
    assert torch.allclose(out.norm_mean.double(), norms.mean())
    assert torch.allclose(out.norm_std.double(), norms.std(unbiased=False), atol=1e-6)
    assert torch.allclose(out.total, MultiSimilarityLoss()(embeddings, labels) + 1.5 * sec)


def test_the_sec_gradient_is_radial_it_moves_norms_not_directions():
    embeddings, labels = _embeddings(seed=6).requires_grad_(), _labels()

    def grad(sec_weight):
        embeddings.grad = None
        WithSEC(TripletMarginLoss(), sec_weight=sec_weight)(embeddings, labels).total.backward()
        return embeddings.grad.clone()

    sec_grad = grad(2.0) - grad(0.0)
    unit = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    radial = (sec_grad * unit).sum(dim=1, keepdim=True)
    tangential = sec_grad - radial * unit
    assert tangential.abs().max() < 1e-12 < radial.abs().max()
    norms = embeddings.detach().norm(dim=1)
    assert torch.allclose(radial.squeeze(1), 2.0 * 2 / len(norms) * (norms - norms.mean()))


def test_sec_is_taken_over_the_arguments_that_carry_gradient_else_all():
    x0, x1 = _embeddings(seed=7).requires_grad_(), _embeddings(seed=8) * 10
    loss_fn = WithSEC(NegativeCosineSimilarity(), sec_weight=1.0, embedding_args=(0, 1))
    assert torch.allclose(loss_fn(x0, x1).sec, _sec_by_hand(x0)[0])
    assert torch.allclose(loss_fn(x1, x0).sec, _sec_by_hand(x0)[0])
    assert torch.allclose(loss_fn(x0.detach(), x1).sec, _sec_by_hand(x0, x1)[0])  # e.g. under no_grad


def test_arcface_class_weights_are_parameters_and_state_of_the_wrapper():
    loss_fn = WithSEC(ArcFaceLoss(num_classes=4, embedding_size=8), sec_weight=1.0)
    assert [name for name, _ in loss_fn.named_parameters()] == ["loss.W"]
    assert "loss.W" in loss_fn.state_dict()
    embeddings = _embeddings().float().requires_grad_()
    loss_fn(embeddings, _labels()).total.backward()
    assert loss_fn.loss.W.grad.abs().sum() > 0

    restored = WithSEC(ArcFaceLoss(num_classes=4, embedding_size=8))
    restored.load_state_dict(loss_fn.state_dict())
    assert torch.equal(restored.loss.W, loss_fn.loss.W)


@pytest.mark.parametrize("by_keyword", [False, True], ids=["positional", "keyword"])
@pytest.mark.parametrize("embedding_args", [(0, "embeddings"), (0, "embeddings", 3, "ref_emb")],
                         ids=["embeddings", "and_ref_emb"])
def test_pml_ref_emb_is_regularized_only_when_named_by_position_or_keyword(by_keyword, embedding_args):
    """pml's ``ref_emb`` (4th argument) carries gradient; SEC takes it only if ``embedding_args`` names it."""
    embeddings, labels = _embeddings(n=12, seed=21).requires_grad_(), _labels(n=12, classes=4)
    ref_emb, ref_labels = (_embeddings(n=8, seed=22) * 3).requires_grad_(), _labels(n=8, classes=4)
    loss_fn = WithSEC(TripletMarginLoss(margin=0.2), sec_weight=1.0, embedding_args=embedding_args)
    if by_keyword:
        out = loss_fn(embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels)
    else:
        out = loss_fn(embeddings, labels, None, ref_emb, ref_labels)
    regularized = (embeddings, ref_emb) if len(embedding_args) > 2 else (embeddings,)
    assert torch.allclose(out.sec, _sec_by_hand(*regularized)[0])
    assert torch.allclose(out.total, TripletMarginLoss(margin=0.2)(embeddings, labels, None, ref_emb, ref_labels)
                          + _sec_by_hand(*regularized)[0])


@pytest.mark.parametrize(
    "loss", [NTXentLoss(temperature=0.5), DCLLoss(temperature=0.5), DCLWLoss(temperature=0.5),
             NegativeCosineSimilarity(), HypersphereLoss()],
    ids=lambda loss: type(loss).__name__,
)
def test_every_lightly_two_view_loss_trains_inside_withsec(loss):
    z0, z1 = _embeddings(seed=9).requires_grad_(), _embeddings(seed=10).requires_grad_()
    out = WithSEC(loss, sec_weight=0.5, embedding_args=(0, 1))(z0, z1)
    out.total.backward()
    assert torch.allclose(out.total - out.contrastive, 0.5 * _sec_by_hand(z0, z1)[0])
    assert torch.isfinite(z0.grad).all() and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_a_loss_without_a_scalar_or_without_embeddings_is_a_clear_error():
    with pytest.raises(TypeError, match="returns a scalar tensor; CosineSimilarity returned shape \\(16,\\)"):
        WithSEC(torch.nn.CosineSimilarity())(_embeddings(seed=1), _embeddings(seed=2))
    with pytest.raises(ValueError, match="regularizes the arguments \\(0, 'embeddings'\\), none of which was given"):
        WithSEC(TripletMarginLoss())(ref_emb=_embeddings(), labels=_labels())
    with pytest.raises(ValueError, match="argument 1 \\(embedding_args\\) must be a floating-point tensor"):
        WithSEC(TripletMarginLoss(), embedding_args=(0, 1))(_embeddings(), _labels())
    with pytest.raises(ValueError, match="embedding_args must name"):
        WithSEC(TripletMarginLoss(), embedding_args=())
    with pytest.raises(ValueError, match="NaN or Inf"):
        WithSEC(TripletMarginLoss())(torch.full((4, 2), float("nan")), _labels(4, 2))


@pytest.mark.parametrize("loss_class", [TripletMarginLoss, MultiSimilarityLoss])
def test_sec_regularizer_in_pml_equals_withsec(loss_class):
    embeddings, labels = _embeddings(seed=11).requires_grad_(), _labels()
    regularized = loss_class(embedding_regularizer=SECRegularizer(), embedding_reg_weight=0.8)(embeddings, labels)
    regularized.backward()
    grad = embeddings.grad.clone()
    embeddings.grad = None
    wrapped = WithSEC(loss_class(), sec_weight=0.8)(embeddings, labels).total
    wrapped.backward()
    assert torch.allclose(regularized, wrapped) and torch.allclose(grad, embeddings.grad)


def test_sec_regularizer_keeps_the_ema_and_pml_lp_regularizer_relates_to_norm_penalty():
    regularizer = SECRegularizer(sec_momentum=0.5)
    first, second = _embeddings(seed=12), _embeddings(seed=13)
    regularizer(first)
    mu = 0.5 * first.norm(dim=1).mean() + 0.5 * second.norm(dim=1).mean()
    assert torch.allclose(regularizer(second), _sec_by_hand(second, mu=mu)[0])
    assert torch.allclose(regularizer.sec.mu.double(), mu)

    z = _embeddings(seed=14)
    assert torch.allclose(LpRegularizer(power=2)(z), NormPenalty()(z))  # the paper's L2 baseline
    assert torch.allclose(LpRegularizer()(z), z.norm(dim=1).mean())  # pml's default: the mean norm


def test_contrastive_loss_names_build_lightly_losses_and_refuse_a_queue_without_one():
    assert isinstance(contrastive_loss("ntxent", 0.2, (64, 8)), NTXentLoss)
    dcl = contrastive_loss("dcl", 0.2, gather_distributed=True)
    assert isinstance(dcl, DCLLoss) and dcl.temperature == 0.2 and dcl.gather_distributed
    assert isinstance(contrastive_loss("dclw", 0.2), DCLWLoss)
    with pytest.raises(ValueError, match="dcl has no memory bank"):
        contrastive_loss("dcl", 0.2, (64, 8))
    with pytest.raises(ValueError, match="unknown contrastive loss 'infonce'; choose one of ntxent, dcl, dclw"):
        contrastive_loss("infonce")


@pytest.mark.parametrize("ours, lightlys", [(NTXent, NTXentLoss), (DCL, DCLLoss), (DCLW, DCLWLoss)])
@pytest.mark.parametrize("gathered", [False, True])
def test_the_contrastive_losses_without_boolean_indices_are_lightlys(ours, lightlys, gathered, monkeypatch):
    """The value and the gradients of lightly's losses, which cut each embedding's own image out of the negatives by
    boolean indices; gathered: as rank 1 of 3 processes, the others' embeddings standing in by a flip and a roll."""
    import lightly.utils.dist

    if gathered:
        monkeypatch.setattr(lightly.utils.dist, "world_size", lambda: 3)
        monkeypatch.setattr(lightly.utils.dist, "rank", lambda: 1)
        monkeypatch.setattr(lightly.utils.dist, "gather", lambda z: [z.flip(0), z, z.roll(1, 0)])
    z0, z1 = _embeddings(seed=1).requires_grad_(), _embeddings(seed=2).requires_grad_()
    value = ours(temperature=0.3, gather_distributed=gathered)(z0, z1)
    gradients = torch.autograd.grad(value, (z0, z1))
    expected = lightlys(temperature=0.3, gather_distributed=gathered)(z0, z1)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    for gradient, reference in zip(gradients, torch.autograd.grad(expected, (z0, z1))):
        torch.testing.assert_close(gradient, reference, rtol=1e-12, atol=1e-14)


def _distributed_pml_worker(rank, world_size, port, embeddings, labels, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = torch.tensor_split(torch.arange(len(labels)), world_size)[rank]
        loss_fn = WithSEC(TripletMarginLoss(), sec_weight=1.0, sec_momentum=0.5)
        regularizer = SECRegularizer(sec_momentum=0.5)
        for step in range(2):  # the second step exercises the EMA update
            z = embeddings[step][rows].clone().requires_grad_()
            out = loss_fn(z, labels[rows])
            reg = regularizer(z).detach()
        results[rank] = (float(loss_fn.sec.mu), float(out.sec), float(out.norm_std), float(regularizer.sec.mu),
                         float(reg))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_mu_of_a_wrapped_pml_loss_is_the_global_one():
    embeddings, labels = [_embeddings(n=8, seed=s).float() for s in (3, 4)], _labels(8, 2)
    mu = embeddings[0].norm(dim=1).mean() * 0.5 + embeddings[1].norm(dim=1).mean() * 0.5
    sec, _ = _sec_by_hand(embeddings[1], mu=mu)

    results = mp.Manager().dict()
    mp.spawn(_distributed_pml_worker, args=(2, _free_port(), embeddings, labels, results), nprocs=2)
    for rank in range(2):
        assert results[rank][0] == pytest.approx(float(mu), rel=1e-6)
        assert results[rank][3] == pytest.approx(float(mu), rel=1e-6)
        assert results[rank][2] == pytest.approx(float(embeddings[1].norm(dim=1).std(unbiased=False)), rel=1e-5)
    # each process's SEC is its rows' mean about the common mu: their average is the global SEC
    assert (results[0][1] + results[1][1]) / 2 == pytest.approx(float(sec), rel=1e-5)
    assert (results[0][4] + results[1][4]) / 2 == pytest.approx(float(sec), rel=1e-5)


@pytest.mark.parametrize("weight, offset", [(0.5, 0.0), (2.0, 4.0)])
def test_symmetric_cosine_is_simsiams_and_byols_loss(weight, offset):
    p0, p1, z0, z1 = (_embeddings(seed=seed) for seed in range(4))
    unit = torch.nn.functional.normalize
    if offset == 0:  # SimSiam, eq. 2: -cos(p0, z1) / 2 - cos(p1, z0) / 2, the mean over the batch
        expected = -0.5 * ((unit(p0) * unit(z1)).sum(1).mean() + (unit(p1) * unit(z0)).sum(1).mean())
    else:  # BYOL, eq. 2 symmetrized: the sum over both directions of ||p/|p| - z/|z| ||^2, the mean over the batch
        expected = ((unit(p0) - unit(z1)).square().sum(1) + (unit(p1) - unit(z0)).square().sum(1)).mean()
    assert torch.allclose(SymmetricCosine(weight, offset)(p0, p1, z0, z1), expected, atol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        SymmetricCosine()(p0, p1, z0, z1[:, :4])


def test_sec_around_the_symmetric_cosine_regularizes_both_predictions_and_not_the_targets():
    p0, p1 = (_embeddings(seed=seed).requires_grad_() for seed in (0, 1))
    z0, z1 = _embeddings(seed=2), _embeddings(seed=3)
    loss_fn = WithSEC(SymmetricCosine(), sec_weight=1.0, norm_penalty_weight=0.5, embedding_args=(0, 1))
    out = loss_fn(p0, p1, z0, z1)
    norms = torch.cat([p0, p1]).detach().norm(dim=1)  # both views' predictions, each once
    assert torch.allclose(out.norm_mean, norms.mean())
    assert torch.allclose(out.sec, (norms - norms.mean()).square().mean())
    plain = SymmetricCosine()(p0, p1, z0, z1)
    assert torch.allclose(out.total, plain + out.sec + 0.5 * norms.square().mean())
    rescaled = loss_fn(p0, p1, 10 * z0, 0.1 * z1)  # the targets' norms play no part
    assert torch.allclose(rescaled.total, out.total) and torch.equal(rescaled.norm_mean, out.norm_mean)
