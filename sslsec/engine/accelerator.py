"""One place that creates the :class:`accelerate.Accelerator` for sslsec's entry points.

``torchrun`` and ``accelerate launch --multi_gpu`` start one process per rank; on a machine
without a GPU the processes must then talk over gloo, which accelerate does only when told
to use the CPU. :func:`make_accelerator` tells it so whenever no accelerator device exists,
and splits the CPU cores between the processes instead of oversubscribing them. It also
resolves ``mixed_precision="auto"`` (and refuses fp16 on a CPU) against the device it picks,
by :func:`sslsec.engine.precision.resolve_precision`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import parse_flag_from_env

from sslsec.engine.precision import resolve_precision


def make_accelerator(**kwargs: Any) -> Accelerator:
    """An ``Accelerator(**kwargs)``, on the CPU (gloo across processes) when there is no GPU or ``cpu=True``.

    ``mixed_precision`` may be ``"auto"`` (see :func:`~sslsec.engine.precision.resolve_precision`); the
    precision in force is ``accelerator.mixed_precision``, and why, in one line, ``accelerator.precision_reason``.
    Without ``mixed_precision``, accelerate's own setting holds (``accelerate launch --mixed_precision``).
    """
    if not torch.accelerator.is_available():
        kwargs.setdefault("cpu", True)
    reason = "accelerate's setting (accelerate launch --mixed_precision, else no)"
    if kwargs.get("mixed_precision") is not None:
        on_cpu = kwargs.get("cpu") or parse_flag_from_env("ACCELERATE_USE_CPU")  # accelerate launch --cpu
        device = "cpu" if on_cpu else torch.accelerator.current_accelerator()
        kwargs["mixed_precision"], reason = resolve_precision(kwargs["mixed_precision"], device)
    accelerator = Accelerator(**kwargs)
    accelerator.precision_reason = reason
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if accelerator.device.type == "cpu" and local_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))
    return accelerator
