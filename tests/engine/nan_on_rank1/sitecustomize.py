"""Test hook, imported at interpreter start when this folder is on PYTHONPATH: from the optimizer step named by
SSLSEC_TEST_NAN_STEP on, the loss of rank 1 only is NaN, as if one process's batch had diverged."""

import os

if "SSLSEC_TEST_NAN_STEP" in os.environ and os.environ.get("RANK") == "1":
    import torch

    from sslsec.losses import WithSEC

    first_bad, calls, original = int(os.environ["SSLSEC_TEST_NAN_STEP"]), [0], WithSEC.forward

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] > first_bad:
            return out._replace(total=out.total * torch.tensor(float("nan")))
        return out

    WithSEC.forward = forward
