"""MoCo under DDP on two CPU processes (gloo): no buffer broadcast at every forward, the same training, the same
queue on both processes, and BatchNorm statistics made consistent before evaluation."""

import pytest
import torch
import torch.nn.functional as F

from tests.launch import two_process_results

STEPS, PER_PROCESS, QUEUE = 6, 8, 40  # 6 steps of 2 x 8 keys wrap the queue of 40 once

TRAIN_MOCO = f"""
import sys, torch
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from sslsec.config import load_config
from sslsec.engine.accelerator import make_accelerator
from sslsec.engine.trainer import _share_batchnorm_statistics, build_optimizer, train_step
from sslsec.methods import build_method

def train(**options):
    accelerator = make_accelerator(mixed_precision="no", **options)
    config = load_config(None, ["method=moco", "model.backbone=small_cnn", "model.projection_hidden_dim=32",
                                "model.projection_dim=16", "moco.queue_size={QUEUE}", "trainer.batch_size=16",
                                "loss.sec_weight=0.5", "optim.lr=0.1"])
    set_seed(0)
    model = build_method(config, 1, distributed=True)
    model, optimizer = accelerator.prepare(model, build_optimizer(model, config))
    core = accelerator.unwrap_model(model)
    keys, momentum_keys = [], core.keys
    core.keys = lambda view: keys.append(momentum_keys(view)) or keys[-1]  # record each step's keys
    views = torch.Generator().manual_seed(1 + accelerator.process_index)
    for step in range({STEPS}):
        core.before_step(step, {STEPS})
        train_step(accelerator, model, optimizer, tuple(torch.randn(2, {PER_PROCESS}, 1, 16, 16, generator=views)))
    bank = core.criterion.loss.memory_bank
    running = [buffer.clone() for buffer in core.backbone.buffers() if buffer.is_floating_point()]
    _share_batchnorm_statistics(core.backbone)
    return {{"broadcast_buffers": model.broadcast_buffers, "bank": bank.bank.clone(), "bank_ptr": bank.bank_ptr.clone(),
            "last_keys": keys[-1], "running_before": running,
            "running_after": [buffer.clone() for buffer in core.backbone.buffers() if buffer.is_floating_point()],
            "weights": {{k: v.clone() for k, v in core.state_dict().items() if isinstance(v, torch.Tensor)}}}}

result = {{"default": train(),
          "broadcast": train(kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=True)])}}
torch.save(result, f"{{sys.argv[1]}}/rank{{torch.distributed.get_rank()}}.pt")
"""


@pytest.mark.slow
def test_moco_on_two_processes_broadcasts_no_buffers_trains_the_same_and_keeps_one_queue(tmp_path):
    ranks = two_process_results(tmp_path, TRAIN_MOCO)
    runs = [rank["default"] for rank in ranks]

    assert [run["broadcast_buffers"] for run in runs] == [False, False]
    assert all(rank["broadcast"]["broadcast_buffers"] for rank in ranks)
    for rank in ranks:  # DDP's buffer broadcast changed nothing that training reads
        default, broadcast = rank["default"], rank["broadcast"]
        assert all(torch.equal(default["weights"][key], broadcast["weights"][key]) for key in default["weights"]
                   if "running" not in key and "num_batches" not in key)
        assert torch.equal(default["bank"], broadcast["bank"])
    assert all(torch.equal(runs[0]["weights"][key], runs[1]["weights"][key]) for key in runs[0]["weights"]
               if "running" not in key)  # one model on both processes

    # one queue, written on both processes with the keys of both, in rank order, normalized
    assert torch.equal(runs[0]["bank"], runs[1]["bank"])
    global_batch = 2 * PER_PROCESS
    assert int(runs[0]["bank_ptr"]) == int(runs[1]["bank_ptr"]) == STEPS * global_batch % QUEUE
    newest = (int(runs[0]["bank_ptr"]) - global_batch + torch.arange(global_batch)) % QUEUE
    keys = F.normalize(torch.cat([runs[0]["last_keys"], runs[1]["last_keys"]]), dim=1)
    assert torch.allclose(runs[0]["bank"][newest], keys, atol=1e-6)

    # BatchNorm statistics drift apart without the broadcast, and are rank 0's everywhere before evaluation
    assert any(not torch.equal(a, b) for a, b in zip(runs[0]["running_before"], runs[1]["running_before"]))
    for run in runs:
        assert all(torch.equal(a, b) for a, b in zip(run["running_after"], runs[0]["running_before"]))
