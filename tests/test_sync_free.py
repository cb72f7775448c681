"""A training step never makes the host wait for the GPU: it queues the step's work and goes on to the next batch,
reading nothing back (the logging does, once every ``trainer.log_every`` steps).

CI has no GPU, so :class:`DeviceWaits` watches CPU steps for what would wait on one; ``pytest -m gpu`` runs the same
steps under ``torch.cuda.set_sync_debug_mode("error")`` (tests/test_gpu.py).
"""

import os
import traceback

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from tests.steps import METHOD_CASES, PML_MINING_CASES, TrainerSteps

TORCH = os.path.dirname(torch.__file__)
AUTOGRAD = torch.autograd.__file__  # its backward runs the graph's backward ops, called from the training step
# aten ops whose result the host reads, or whose output size it must know, before it can queue the next op
READ_BACK = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.equal", "aten._unique",
             "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.bincount"}
INDEXING = {"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"}
DATA_FACTORIES = (torch.tensor, torch.as_tensor, torch.asarray)  # Python data, copied to the device


class DeviceWaits(TorchFunctionMode):
    """Records, in :attr:`waits`, every op on the CPU that would make the host wait for a GPU, were the device one.

    Tensors made inside it without a device (``torch.rand(n)``, ``torch.tensor(data)``, Adam's step counts, or with
    ``device="cpu"``), and those computed from them alone, would stay on the host until moved by ``.to(device)``;
    every other tensor (made before it, made with a device, moved: the parameters, the buffers, the batch) is taken to
    be on the device. The host waits for a value read from a device tensor (``item``, ``bool``, ``tolist``), an op
    whose output size depends on device values (``nonzero``, a boolean mask as an index), and a copy between the two:
    ``torch.tensor(data, device=...)``, ``.to(device)`` of a host tensor, a host tensor of several elements given to an
    op on the device (0-d host tensors are passed as scalars: no copy). A device given as a ``torch.device`` is taken to
    be the GPU: on the CPU, ``device=torch.device("cpu")`` cannot be told from ``device=images.device``.
    """

    def __init__(self):
        super().__init__()
        self.host = WeakIdKeyDictionary()
        self.waits = []
        self._aten = _AtenOps(self)

    def __enter__(self):
        self._aten.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self._aten.__exit__(*exc)

    def on_device(self, tensor):
        return isinstance(tensor, Tensor) and tensor not in self.host

    def keep_on_host(self, out):
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                self.host[tensor] = True

    def wait(self, what):
        stack = traceback.extract_stack()
        where = next(frame for frame in reversed(stack)
                     if not frame.filename.startswith(TORCH) and frame.filename != __file__)
        backward = any(frame.name == "backward" and frame.filename == AUTOGRAD for frame in stack)
        self.waits.append(f"{what}{' in the backward pass' if backward else ''} at "
                          f"{where.filename.split('site-packages/')[-1]}:{where.lineno}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        device = kwargs.get("device")
        if func in DATA_FACTORIES and isinstance(args[0], Tensor):
            if args[0] in self.host:  # a copy of a tensor stays where it is
                self.keep_on_host(out)
        elif func in _device_constructors():
            if device is None or device == "cpu":
                self.keep_on_host(out)
            elif func in DATA_FACTORIES and not isinstance(args[0], Tensor):
                self.wait(f"torch.{func.__name__}(data, device=...): a copy from the host")
        elif func is Tensor.new_tensor and self.on_device(args[0]):
            self.wait("Tensor.new_tensor: a copy from the host")
        elif func in (Tensor.tolist, Tensor.numpy, Tensor.cpu) and self.on_device(args[0]):
            self.wait(f"Tensor.{func.__name__}: a copy to the host")
            self.keep_on_host(out)
        elif func in (Tensor.to, Tensor.cuda) and args[0] in self.host and (
                func is Tensor.cuda or device not in (None, "cpu")
                or any(isinstance(a, torch.device) or (isinstance(a, str) and a != "cpu") or self.on_device(a)
                       for a in args[1:])):
            self.wait(f"Tensor.{func.__name__}: a copy from the host")
            self.host.pop(out, None)  # it is on the device now
        elif func in (Tensor.__getitem__, Tensor.__setitem__) and self.on_device(args[0]) and any(
                isinstance(index, list) for index in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.wait("a Python list as an index: copied from the host")
        return out


class _AtenOps(TorchDispatchMode):
    """:class:`DeviceWaits`'s watch on the aten ops, where reads, data-dependent sizes and mixed devices show."""

    def __init__(self, watch):
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        on_host = [t in self.watch.host for t in tensors]
        if not tensors:
            return out
        if all(on_host):
            self.watch.keep_on_host(out)
            return out
        op = str(func.overloadpacket)
        if op in READ_BACK or (op in INDEXING and any(isinstance(i, Tensor) and i.dtype == torch.bool
                                                      for i in args[1] if i is not None)) or (
                op == "aten.repeat_interleave" and str(func) != "aten.repeat_interleave.self_int"
                and kwargs.get("output_size") is None):
            self.watch.wait(f"{op}: the host reads the device")
        if any(host and (tensor.dim() > 0 or op == "aten.copy_") for tensor, host in zip(tensors, on_host)):
            self.watch.wait(f"{op} on host and device tensors: a copy between them")
        return out


def test_device_waits_records_what_would_wait_for_a_gpu_and_nothing_else():
    waiting = [lambda x: x.sum().item(), lambda x: x[x > 2], lambda x: x.tolist(), lambda x: x[:, [0, 2]],
               lambda x: torch.tensor([1.0, 2.0], device=x.device), lambda x: x.new_tensor(3),
               lambda x: torch.rand(3).to(x.device), lambda x: x * torch.rand(3)]
    free = [lambda x: torch.rand(3).sum().item(), lambda x: torch.rand(3).tolist(),  # all on the host
            lambda x: x * torch.tensor(2.0) + torch.rand(3).sum(),  # 0-d host tensors reach the device as scalars
            lambda x: torch.where(x > 1, x, x.new_full((), 0.5)).index_select(0, torch.rand(2, device=x.device)
                                                                              .argsort())]
    on_device = torch.arange(6.0).view(2, 3)
    for function in waiting:
        with DeviceWaits() as watch:
            function(on_device)
        assert len(watch.waits) == 1, watch.waits
    with DeviceWaits() as watch:
        for function in free:
            function(on_device)
    assert watch.waits == []


@pytest.mark.parametrize("case", list(METHOD_CASES))
def test_a_training_step_of_every_method_never_waits_for_the_device(case):
    with DeviceWaits() as watch:
        steps = TrainerSteps(METHOD_CASES[case])  # built inside: what it moves to the device is there, the rest is not
        steps.take()  # the first step puts what the next ones reuse on the device (the views' mean and std)
        watch.waits.clear()
        steps.take(), steps.take()
    waits = watch.waits
    if case in PML_MINING_CASES:  # they wait in pml's code, and in the backward pass of its ops: nowhere else
        assert any("pytorch_metric_learning" in wait for wait in waits), "remove it from PML_MINING_CASES"
        waits = [wait for wait in waits if "pytorch_metric_learning" not in wait and "backward pass" not in wait]
    assert waits == [], "\n".join(waits)
