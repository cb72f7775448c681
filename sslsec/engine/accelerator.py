"""One place that creates the :class:`accelerate.Accelerator` for sslsec's entry points.

``torchrun`` and ``accelerate launch --multi_gpu`` start one process per rank; on a machine
without a GPU the processes must then talk over gloo, which accelerate does only when told
to use the CPU. :func:`make_accelerator` tells it so whenever no accelerator device exists or
``ACCELERATE_USE_CPU`` is set (``accelerate launch --cpu``; tests set it), and splits the CPU cores
between the processes instead of oversubscribing them. It also resolves ``mixed_precision="auto"``
(and refuses fp16 on a CPU) against the device it picks, by
:func:`sslsec.engine.precision.resolve_precision`.

DDP is told not to broadcast buffers (``broadcast_buffers=False``): by default it copies every buffer of
rank 0 to the others before each forward, MoCo's 4096 x 128 queue included, although the queue is
already the same on every process (filled with the keys of all of them). BatchNorm's running statistics
are the only buffers that differ between processes; training never reads them (BatchNorm uses the batch's
statistics in training mode), and the trainer gives every process rank 0's before it evaluates
(``_share_batchnorm_statistics``), while checkpoints and the saved backbone are rank 0's.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

from sslsec.engine.precision import resolve_precision

# Where launchers put the number of processes: torchrun and accelerate (WORLD_SIZE), MPI implementations (the others).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
ALONE = ("MASTER_ADDR is set, but this process runs alone: no launcher gave it WORLD_SIZE and RANK. `accelerate launch "
         "--cpu` starts one process per machine and joins them only under mpirun (--mpirun_hostfile); on CPUs, launch "
         "with `accelerate launch --multi_gpu` or torchrun (docs/DISTRIBUTED.md). Machines started this way each "
         "train alone, into the same output_dir")


def make_accelerator(**kwargs: Any) -> Accelerator:
    """An ``Accelerator(**kwargs)``, on the CPU (gloo across processes) when there is no GPU, ``cpu=True`` or
    ``ACCELERATE_USE_CPU`` is set; its DDP wrapper broadcasts no buffers (see the module's docstring).

    ``mixed_precision`` may be ``"auto"`` (see :func:`~sslsec.engine.precision.resolve_precision`); the
    precision in force is ``accelerator.mixed_precision``, and why, in one line, ``accelerator.precision_reason``.
    Without ``mixed_precision``, accelerate's own setting holds (``accelerate launch --mixed_precision``).
    Warns when a launcher meant several processes but this one runs alone (``MASTER_ADDR`` without
    ``WORLD_SIZE``: ``accelerate launch --cpu`` without mpirun).
    """
    if not torch.accelerator.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"):
        kwargs.setdefault("cpu", True)
    kwargs.setdefault("kwargs_handlers", [DistributedDataParallelKwargs(broadcast_buffers=False)])
    reason = "accelerate's setting (accelerate launch --mixed_precision, else no)"
    if kwargs.get("mixed_precision") is not None:
        device = "cpu" if kwargs.get("cpu") else torch.accelerator.current_accelerator()
        kwargs["mixed_precision"], reason = resolve_precision(kwargs["mixed_precision"], device)
    accelerator = Accelerator(**kwargs)
    accelerator.precision_reason = reason
    if accelerator.num_processes == 1 and "MASTER_ADDR" in os.environ and \
            not any(name in os.environ for name in WORLD_SIZE_VARIABLES):
        warnings.warn(ALONE)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if accelerator.device.type == "cpu" and local_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))
    return accelerator


def describe_processes(accelerator: Accelerator) -> str:
    """One line for the log of each node of a run in several processes: the processes in all and their backend, the
    ranks on this node and, on CPUs, the threads of each (``OMP_NUM_THREADS``): CPU kernels sum in another order with
    another thread count, so runs compared bit for bit need the same on every node.

    ``"processes: 2 (gloo); on this node: rank 1, 1 CPU thread each"``, ``"processes: 16 (nccl); on this node:
    ranks 8-15"``.
    """
    first = accelerator.process_index - accelerator.local_process_index
    last = first + int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1
    ranks = f"rank {first}" if first == last else f"ranks {first}-{last}"
    threads = torch.get_num_threads()
    on_cpu = f", {threads} CPU thread{'s' if threads > 1 else ''} each" if accelerator.device.type == "cpu" else ""
    return f"processes: {accelerator.num_processes} ({accelerator.state.backend}); on this node: {ranks}{on_cpu}"
