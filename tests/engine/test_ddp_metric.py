"""Metric and face losses under DDP on two CPU processes (gloo): each process's loss sees the global batch, so the
loss, and the gradients averaged over the processes (what DDP applies), are those of one process on the
concatenated batch: class weights (CosFace, ArcFace) are not scaled by the number of processes, and pairs,
triplets and the multi-similarity miner's pairs are taken across processes."""

import pytest
import torch

from tests.launch import two_process_results

LOSSES = ("cosface", "arcface", "triplet", "semihard_triplet", "multi_similarity")

STEP = """
import sys, torch
import torch.distributed as dist
import sslsec.methods.metric as metric
from sslsec.losses import WithSEC
from sslsec.models import Embedder
from tests.launch import averaged_step, parameter_gradients

dist.init_process_group("gloo")
rank = dist.get_rank()
N = 8  # per process; the global batch holds 4 classes, each process's half holds them unevenly
labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 0, 1, 1, 3, 3, 3, 2, 3])
images = torch.randn(2 * N, 1, 4, 4, generator=torch.Generator().manual_seed(1))

def model(name):
    torch.manual_seed(0)  # the same weights on every process and for the reference
    trunk = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU())
    trunk.feature_dim = 12
    loss, miner = metric.metric_loss(name, 4, 6)
    return metric.MetricLearning(Embedder(trunk, 6), metric.NoHead(), WithSEC(loss, sec_weight=0.5), miner=miner)

results = {}
for name in sys.argv[2:]:
    net = model(name)  # this process's half of the batch; the loss gathers the rest
    out = net(images[rank * N:(rank + 1) * N], labels[rank * N:(rank + 1) * N])
    total, grads = averaged_step(net, out)
    assert grads.keys() == dict(net.named_parameters()).keys()  # every parameter, class weights included, trained
    reference = model(name)  # one process on the concatenated batch: no gathering
    gather, metric.gather_batch = metric.gather_batch, lambda embeddings, labels: (embeddings, labels)
    expected = reference(images, labels)
    metric.gather_batch = gather
    expected.total.backward()
    results[name] = {"loss": out.contrastive, "expected_loss": expected.contrastive, "total": total,
                     "expected_total": expected.total.detach(), "grads": grads,
                     "expected_grads": parameter_gradients(reference)}
torch.save(results, f"{sys.argv[1]}/rank{rank}.pt")
"""


@pytest.mark.slow
def test_a_two_process_step_is_the_one_process_step_on_the_concatenated_batch(tmp_path):
    ranks = two_process_results(tmp_path, STEP, *LOSSES)
    for results in ranks:
        for name in LOSSES:
            result = results[name]
            assert result["loss"] > 0, name
            assert torch.allclose(result["loss"], result["expected_loss"], atol=1e-6), name
            assert torch.allclose(result["total"], result["expected_total"], atol=1e-6), name
            assert result["grads"].keys() == result["expected_grads"].keys()
            for key, grad in result["grads"].items():
                assert grad.abs().sum() > 0, (name, key)
                assert torch.allclose(grad, result["expected_grads"][key], atol=1e-6), (name, key)
    weights = [results["cosface"]["grads"]["criterion.loss.W"] for results in ranks]
    assert torch.equal(weights[0], weights[1])
