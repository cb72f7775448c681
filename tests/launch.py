"""How tests start subprocesses: on CPUs, with this checkout's code.

A machine with one GPU would otherwise put every subprocess, and under ``torch.distributed.run`` every rank, on
``cuda``: rank 1 on a device that does not exist, and runs that a test compares bit for bit on different kernels.
GPU runs belong to the tests marked ``gpu`` (tests/test_gpu.py), whose subprocesses get :func:`gpu_env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]


def cpu_env(pythonpath: Sequence[str] = (), **variables: str) -> Dict[str, str]:
    """``os.environ`` for a subprocess that must run on CPUs: no GPU visible (``CUDA_VISIBLE_DEVICES=""``, so
    ``make_accelerator`` takes the CPU and gloo), this checkout first on ``PYTHONPATH`` after ``pythonpath``
    (so ``scripts/*.py`` import the code under test, not another install), and ``variables`` on top
    (e.g. ``OMP_NUM_THREADS="1"``: the same threads in every run, so reductions are bit-identical)."""
    paths = [*pythonpath, str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
            "PYTHONPATH": os.pathsep.join(path for path in paths if path), **variables}


def gpu_env() -> Dict[str, str]:
    """``os.environ`` for a subprocess of a test marked ``gpu``: every GPU visible, this checkout first on
    ``PYTHONPATH``, and neither ``CUDA_VISIBLE_DEVICES=""`` nor ``ACCELERATE_USE_CPU`` from :func:`cpu_env`."""
    env = {key: value for key, value in os.environ.items() if key != "ACCELERATE_USE_CPU"}
    if env.get("CUDA_VISIBLE_DEVICES") == "":
        del env["CUDA_VISIBLE_DEVICES"]
    env["PYTHONPATH"] = os.pathsep.join(path for path in (str(REPO), os.environ.get("PYTHONPATH", "")) if path)
    return env


def torchrun(script: Path, *args: str, processes: int = 2) -> List[str]:
    """The command line that runs ``script args`` in ``processes`` processes under ``torch.distributed.run``;
    ``--standalone``: the rendezvous store binds a free port itself (no port picked first and bound later)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            str(script), *args]


def two_process_results(folder: Path, script: str, *args: str) -> List[Any]:
    """Run the Python source ``script`` as ``script FOLDER args`` in two CPU processes (gloo, one thread each, so
    reductions are bit-identical) and return what each rank saved as ``FOLDER/rank{rank}.pt`` (``torch.save``)."""
    import torch

    path = folder / "two_processes.py"
    path.write_text(script)
    process = subprocess.run(torchrun(path, str(folder), *args), capture_output=True, text=True,
                             env=cpu_env(OMP_NUM_THREADS="1"), timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    return [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]


def parameter_gradients(net: Any) -> Dict[str, Any]:
    """``{name: gradient}`` of the parameters of ``net`` that received one (a momentum network's receive none)."""
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def averaged_step(net: Any, out: Any) -> tuple:
    """Inside a two-process script: backward of ``out.total``, then what DDP applies, the loss and ``net``'s
    gradients each averaged over the processes: ``(total, {name: gradient})``."""
    import torch.distributed as dist

    out.total.backward()
    grads = parameter_gradients(net)
    for grad in grads.values():
        dist.all_reduce(grad)
        grad /= dist.get_world_size()
    total = out.total.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size(), grads
