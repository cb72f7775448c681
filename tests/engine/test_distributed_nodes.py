"""Many nodes: two torchrun launchers on this machine, acting as two nodes of one process each (a static rendezvous
on 127.0.0.1), train to the same weights, bit for bit, as one node of two processes, sharing one run directory as
nodes share a filesystem. Every process runs one CPU thread: with another count, CPU kernels sum in another order.
docs/DISTRIBUTED.md shows the commands. A process that a launcher meant to join others, but that runs alone
(``accelerate launch --cpu`` across machines without mpirun), says so."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sslsec.engine.accelerator import WORLD_SIZE_VARIABLES, make_accelerator
from tests.engine.test_trainer import _overrides  # the tiny pretraining of the two-process tests
from tests.launch import REPO, cpu_env, torchrun

ENV = cpu_env(OMP_NUM_THREADS="1")
TIMEOUT = 240  # seconds for all three launchers together; they take 15 to 30 s on 2 CPU cores
VOLATILE = {"time", "images_per_s"}  # the only values of metrics.jsonl that depend on the clock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node(node_rank: int, port: int, script: Path, *args: str):
    """The command line of the launcher of node ``node_rank`` of 2, one process each, rendezvous on 127.0.0.1."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
            "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *args]


def _run_together(commands, logs: Path):
    """Start every command at once, each in its own process group (a launcher and its workers) with its output in
    ``logs``, and wait for all; on a timeout, or when one fails, kill every group still running, so that no launcher
    waits for a node that is gone. Returns the standard output of each."""
    processes = []
    for index, command in enumerate(commands):
        with open(logs / f"{index}.out", "w") as out, open(logs / f"{index}.err", "w") as err:
            processes.append(subprocess.Popen(command, stdout=out, stderr=err, env=ENV, cwd=REPO,
                                              start_new_session=True))
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(process.poll() is None for process in processes):
            failed = [index for index, process in enumerate(processes) if process.returncode not in (None, 0)]
            assert not failed, f"launcher {failed} failed: {(logs / f'{failed[0]}.err').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the runs took more than {TIMEOUT} s"
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for index, process in enumerate(processes):
        assert process.returncode == 0, f"launcher {index}: {(logs / f'{index}.err').read_text()[-3000:]}"
    return [(logs / f"{index}.out").read_text() for index in range(len(commands))]


def _rows(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key not in VOLATILE} for row in rows]


@pytest.mark.slow
def test_two_nodes_of_one_process_train_bit_identically_to_one_node_of_two(npz_root, tmp_path):
    script = REPO / "scripts" / "pretrain.py"
    nodes, one_node = tmp_path / "two_nodes", tmp_path / "one_node"
    config = ["method=moco", "moco.queue_size=512", "trainer.eval_every=2"]  # kNN once; a checkpoint per epoch
    port = _free_port()
    node0, node1, reference = _run_together([_node(0, port, script, *_overrides(npz_root, nodes, *config)),
                                             _node(1, port, script, *_overrides(npz_root, nodes, *config)),
                                             torchrun(script, *_overrides(npz_root, one_node, *config))], tmp_path)

    # both nodes joined one run of two processes; each node's log says so, with the thread count
    assert "processes: 2 (gloo); on this node: rank 0, 1 CPU thread each" in node0
    assert "processes: 2 (gloo); on this node: rank 1, 1 CPU thread each" in node1
    assert "processes: 2 (gloo); on this node: ranks 0-1, 1 CPU thread each" in reference
    assert f"wrote {nodes / 'backbone.safetensors'}" in node0 and "wrote" not in node1  # rank 0 writes

    for name in ("backbone.safetensors", "projection_head.safetensors"):
        expected, got = load_file(one_node / name), load_file(nodes / name)
        assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected), name
    final = [run / "checkpoints" / "step_00000008" for run in (one_node, nodes)]
    expected, got = (torch.load(path / "pytorch_model.bin", weights_only=False) for path in final)
    assert all(torch.equal(expected[key], got[key]) for key in expected if isinstance(expected[key], torch.Tensor))
    queue, expected_queue = got["criterion._extra_state"], expected["criterion._extra_state"]
    assert torch.equal(queue["bank"], expected_queue["bank"])  # MoCo's queue, written with the keys of both nodes
    assert int(queue["bank_ptr"]) == int(expected_queue["bank_ptr"]) == 8 * 32

    # one writer: the same files, and each row once (a second writer would repeat them), with the same values
    assert sorted(p.relative_to(nodes) for p in nodes.rglob("*")) == sorted(
        p.relative_to(one_node) for p in one_node.rglob("*"))
    assert {p.name for p in final[1].iterdir()} >= {"random_states_0.pkl", "random_states_1.pkl"}  # one per rank
    assert _rows(nodes) == _rows(one_node)
    assert [row["step"] for row in _rows(nodes) if "total" in row] == list(range(1, 9))


def test_a_process_meant_to_join_others_that_runs_alone_says_so(monkeypatch):
    for name in WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what `accelerate launch --cpu --num_machines 2` gives each machine
    with pytest.warns(UserWarning, match=r"runs alone.*accelerate launch --multi_gpu` or torchrun"):
        assert make_accelerator(mixed_precision="no").num_processes == 1


@pytest.mark.parametrize("variables", [{}, {"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "1"}],
                         ids=["plain_python", "world_size_1"])
def test_a_process_meant_to_run_alone_does_not_warn(monkeypatch, variables):
    for name in ("MASTER_ADDR", *WORLD_SIZE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_accelerator(mixed_precision="no")
