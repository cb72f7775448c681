"""Test hook, imported at interpreter start when this folder is on PYTHONPATH: at the loss call named by
SSLSEC_TEST_SIGTERM_CALL, rank 1 alone receives SIGTERM, as when a cluster pre-empts one node of a job."""

import os

if "SSLSEC_TEST_SIGTERM_CALL" in os.environ and os.environ.get("RANK") == "1":
    import signal

    from sslsec.losses import WithSEC

    at, calls, original = int(os.environ["SSLSEC_TEST_SIGTERM_CALL"]), [0], WithSEC.forward

    def forward(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    WithSEC.forward = forward
