"""BYOL and SimSiam under two CPU processes (gloo): SEC's radius is the global batch's, so the loss and the gradients
averaged over the processes (what DDP applies) are those of one process on the concatenated batch. BatchNorm is in
eval mode, the same in both (per-process batch statistics would differ from the concatenated batch's by design)."""

import pytest
import torch

from tests.launch import two_process_results

METHODS = ("byol", "simsiam")

STEP = """
import sys, torch
import torch.distributed as dist
from sslsec.config import load_config
from sslsec.methods import build_method
from tests.launch import averaged_step, parameter_gradients

dist.init_process_group("gloo")
rank = dist.get_rank()
N = 8  # per process
views = torch.randn(2, 2 * N, 1, 16, 16, generator=torch.Generator().manual_seed(1))

def model(method):
    torch.manual_seed(0)  # the same weights on every process and for the reference
    config = load_config(None, [f"method={method}", "model.backbone=small_cnn", "model.projection_hidden_dim=32",
                                "model.projection_dim=16", "loss.sec_weight=0.5", "loss.norm_penalty_weight=0.1"])
    net = build_method(config, 1).eval()  # BatchNorm's running statistics: the same on both processes
    if method == "byol":  # a target network apart from the online one
        with torch.no_grad():
            for p in net.backbone_momentum.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return net

results = {}
for method in sys.argv[2:]:
    net = model(method)
    out = net(*(v[rank * N:(rank + 1) * N] for v in views))
    total, grads = averaged_step(net, out)
    reference = model(method)
    # Both processes compute the reference on the whole batch: the all-reduced norm statistics of two equal batches
    # are those of one, so this is the one-process step on the concatenated batch.
    expected = reference(*views)
    expected.total.backward()
    results[method] = {"total": total, "expected_total": expected.total.detach(),
                       "norm_mean": out.norm_mean, "expected_norm_mean": expected.norm_mean,
                       "grads": grads, "expected_grads": parameter_gradients(reference)}
torch.save(results, f"{sys.argv[1]}/rank{rank}.pt")
"""


@pytest.mark.slow
def test_a_two_process_step_is_the_one_process_step_on_the_concatenated_batch(tmp_path):
    for results in two_process_results(tmp_path, STEP, *METHODS):
        for method in METHODS:
            result = results[method]
            assert torch.allclose(result["norm_mean"], result["expected_norm_mean"], atol=1e-6), method
            assert torch.allclose(result["total"], result["expected_total"], atol=1e-6), method
            assert result["grads"].keys() == result["expected_grads"].keys()
            assert any(key.startswith("predictor.") for key in result["grads"])
            assert not any("momentum" in key for key in result["grads"])  # BYOL's target network is not trained
            for key, grad in result["grads"].items():
                assert torch.allclose(grad, result["expected_grads"][key], atol=1e-6), (method, key)
