"""One place that creates the :class:`accelerate.Accelerator` for sslsec's entry points.

``torchrun`` and ``accelerate launch --multi_gpu`` start one process per rank; on a machine
without a GPU the processes must then talk over gloo, which accelerate does only when told
to use the CPU. :func:`make_accelerator` tells it so whenever no accelerator device exists or
``ACCELERATE_USE_CPU`` is set (``accelerate launch --cpu``; tests set it), and splits the CPU cores
between the processes instead of oversubscribing them. It also resolves ``mixed_precision="auto"``
(and refuses fp16 on a CPU) against the device it picks, by
:func:`sslsec.engine.precision.resolve_precision`: each process on its own device (a launcher's
``LOCAL_RANK`` GPU), then all of them in the lowest precision common to them
(:func:`~sslsec.engine.precision.lowest_common_precision`), decided before the Accelerator exists, so that
every process's Accelerator is built with the same one.

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
from typing import Any, Tuple

import torch
import torch.distributed as dist
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

from sslsec.engine.precision import lowest_common_precision, resolve_precision

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
        kwargs["mixed_precision"], reason = _resolve_precision(kwargs["mixed_precision"], bool(kwargs.get("cpu")))
    accelerator = Accelerator(**kwargs)
    accelerator.precision_reason = reason
    if accelerator.num_processes == 1 and "MASTER_ADDR" in os.environ and \
            not any(name in os.environ for name in WORLD_SIZE_VARIABLES):
        warnings.warn(ALONE)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if accelerator.device.type == "cpu" and local_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))
    return accelerator


def _resolve_precision(requested: str, cpu: bool) -> Tuple[str, str]:
    """``(precision, reason)`` for ``requested`` on this process's device, the same on every process.

    accelerate's process state (which the Accelerator takes over) joins the process group first and names the local
    device (``cuda:LOCAL_RANK`` under a launcher). ``auto`` is resolved there, then every process takes the lowest
    choice of all (one ``all_gather`` of the choices); an explicit precision is the same config everywhere.
    """
    state = PartialState(cpu=cpu)
    choice = resolve_precision(requested, state.device)
    if requested != "auto" or state.num_processes == 1 or not dist.is_initialized():
        return choice
    choices = [None] * state.num_processes
    dist.all_gather_object(choices, choice)
    return lowest_common_precision(choices)


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
