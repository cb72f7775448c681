"""``trainer.mixed_precision`` against the machine: what ``auto`` means, and which requests to refuse or warn about.

``auto`` (the default) picks bf16 where the hardware computes it and fp32 where it would be emulated:

- a CPU with native bf16 (AVX512-BF16 or AMX): ``bf16``;
- a CPU without (AVX2 only), where bf16 is emulated and about 10x slower than fp32: ``no`` (fp32);
- a CUDA GPU with bf16 (``torch.cuda.is_bf16_supported()``, Ampere and later): ``bf16``;
- a CUDA GPU without: ``fp16``, whose loss accelerate scales.

An explicit ``bf16`` on a CPU without native bf16 is kept, with one warning; an explicit ``fp16`` on a CPU is
refused (accelerate would train in fp32 and record the run as fp16). The capability checks are small functions,
so tests can replace them.

Under several processes every one resolves ``auto`` on its own device (a launcher's ``LOCAL_RANK`` GPU), and all
then train in the lowest choice common to them (:func:`lowest_common_precision`): mixed hardware trains in what each
device computes natively (fp16 on a mix of GPUs with and without bf16, fp32 on a mix of CPUs), and never differently
on two processes (a loss scaler that skips a step on one process and not on another would split the model in two).
Taking rank 0's choice instead would make a process whose device lacks bf16 emulate it (about 10x slower on a CPU),
and so slow the whole run. The precision's name in the logs is :func:`precision_name`: ``fp32``, not
accelerate's ``no``.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch

from sslsec.config import ConfigError

__all__ = ["cpu_description", "cpu_has_native_bf16", "cuda_has_bf16", "lowest_common_precision", "precision_name",
           "resolve_precision"]

EMULATED_BF16 = "this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 is emulated, about 10x slower than fp32"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX512-BF16 or AMX), not by emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# Each precision is computed natively wherever the next one is: fp32 everywhere, fp16 on every CUDA GPU.
PRECISION_ORDER = ("no", "fp16", "bf16")


def cuda_has_bf16(device: Optional[Union[torch.device, str]] = None) -> bool:
    """Whether the CUDA ``device`` (default: the current one) computes bf16 natively (compute capability 8.0 and
    later; ROCm)."""
    with torch.cuda.device(device):  # the process's own GPU (cuda:LOCAL_RANK), not whichever is current
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))  # emulated bf16 would be slow


def precision_name(precision: str) -> str:
    """The precision as the logs print it: ``fp32`` for accelerate's ``no``; ``bf16`` and ``fp16`` as they are."""
    return "fp32" if precision == "no" else precision


def resolve_precision(requested: str, device: Union[torch.device, str]) -> Tuple[str, str]:
    """The accelerate precision (``"no"``, ``"bf16"`` or ``"fp16"``) for ``requested`` on ``device``, and why.

    Args:
        requested: ``trainer.mixed_precision``: ``"auto"``, ``"no"``, ``"bf16"`` or ``"fp16"``.
        device: the device the Accelerator trains on (``"cpu"``, ``"cuda"``, ``torch.device("cuda", 1)``, ...).

    Returns:
        ``(precision, reason)``, the reason one line for the run's log, e.g.
        ``("bf16", "auto: this CPU computes bf16 natively")``.

    Raises:
        ConfigError: ``fp16`` on a CPU.

    Warns:
        UserWarning: ``bf16`` requested on a CPU without native bf16 (once per call).
    """
    device = torch.device(device)
    kind = device.type
    if requested == "auto":
        return _auto(device)
    if kind == "cpu" and requested == "fp16":
        raise ConfigError("trainer.mixed_precision=fp16 needs a GPU: on a CPU the run would train in fp32 and be "
                          "recorded as fp16; use trainer.mixed_precision=auto, bf16 or no")
    if kind == "cpu" and requested == "bf16" and not cpu_has_native_bf16():
        warnings.warn(f"trainer.mixed_precision=bf16: {EMULATED_BF16}; trainer.mixed_precision=auto or no trains "
                      "in fp32", stacklevel=2)
        return requested, f"trainer.mixed_precision=bf16, but {EMULATED_BF16}"
    return requested, f"trainer.mixed_precision={requested}"


def _auto(device: torch.device) -> Tuple[str, str]:
    kind = device.type
    if kind == "cpu":
        if cpu_has_native_bf16():
            return "bf16", "auto: this CPU computes bf16 natively"
        return "no", f"auto: {EMULATED_BF16}"
    if kind == "cuda":
        if cuda_has_bf16(device):
            return "bf16", "auto: this GPU computes bf16"
        return "fp16", "auto: this GPU has no bf16, so fp16 with loss scaling"
    return "no", f"auto: sslsec has no mixed-precision rule for {kind} devices"


def lowest_common_precision(choices: Sequence[Tuple[str, str]]) -> Tuple[str, str]:
    """The precision all processes train in, from each one's ``(precision, reason)`` in rank order: the lowest of
    them in :data:`PRECISION_ORDER`, which every process's device computes natively, and why.

    ``[("bf16", ...), ("no", "auto: this CPU has no native bf16 ...")]`` gives ``("no", "auto: fp32 on all 2
    processes, the precision every one computes natively; process 1: this CPU has no native bf16 ...")``; equal
    choices give process 0's as it is.
    """
    precisions = [precision for precision, _ in choices]
    if len(set(precisions)) == 1:
        return choices[0]
    lowest = min(precisions, key=PRECISION_ORDER.index)
    rank = precisions.index(lowest)
    why = choices[rank][1].removeprefix("auto: ")
    return lowest, (f"auto: {precision_name(lowest)} on all {len(choices)} processes, the precision every one computes "
                    f"natively; process {rank}: {why}")


def cpu_description() -> str:
    """The CPU's model name and whether it computes bf16 natively, e.g. ``"AMD EPYC, native bf16"``."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        name = names[0] if names else name
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16 (bf16 emulated, about 10x slower than fp32)"
    return f"{name or 'unknown CPU'}, {bf16}"
