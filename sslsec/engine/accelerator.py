"""One place that creates the :class:`accelerate.Accelerator` for sslsec's entry points.

``torchrun`` and ``accelerate launch --multi_gpu`` start one process per rank; on a machine
without a GPU the processes must then talk over gloo, which accelerate does only when told
to use the CPU. :func:`make_accelerator` tells it so whenever no accelerator device exists,
and splits the CPU cores between the processes instead of oversubscribing them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator


def make_accelerator(**kwargs: Any) -> Accelerator:
    """An ``Accelerator(**kwargs)``, on the CPU (gloo across processes) when there is no GPU."""
    if not torch.accelerator.is_available():
        kwargs.setdefault("cpu", True)
    accelerator = Accelerator(**kwargs)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if accelerator.device.type == "cpu" and local_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))
    return accelerator
