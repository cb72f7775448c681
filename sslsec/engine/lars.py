"""LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"): lightly's, without waiting for a GPU."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from lightly.utils import lars


class LARS(lars.LARS):
    """lightly's :class:`~lightly.utils.lars.LARS`, the same update: each weight-decayed parameter's step is scaled by
    its trust ratio ``trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)``, unless ``||w||`` or ``||g||``
    is 0. lightly decides that by reading both norms back from the device (``if p_norm != 0 and g_norm != 0``), two
    waits per parameter at every step on a GPU; here ``torch.where`` chooses on the device.
    """

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if weight_decay != 0:
                    p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                    trust = p_norm / (g_norm + p_norm * weight_decay + group["eps"]) * group["trust_coefficient"]
                    d_p = torch.where((p_norm != 0) & (g_norm != 0), d_p.add(p, alpha=weight_decay) * trust, d_p)
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
                    d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(d_p, alpha=-group["lr"])
        return loss
