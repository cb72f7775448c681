import pytest
import torch
from safetensors.torch import load_file

from sslsec.config import load_config
from sslsec.engine import pretrain

from tests.engine.test_trainer import _metrics, _overrides


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_the_knn_monitor_does_not_change_the_trained_weights(npz_root, tmp_path, method):
    """Curves of kNN per epoch (``trainer.eval_every=1``) describe the same run as ``eval_every=0``: the monitor
    draws no random numbers from the training stream and leaves BatchNorm statistics and the MoCo queue alone."""
    extra = [f"method={method}", "loss.sec_weight=0.5", "trainer.epochs=2"]
    watched = pretrain(load_config(None, _overrides(npz_root, tmp_path / "watched", *extra, "trainer.eval_every=1")))
    plain = pretrain(load_config(None, _overrides(npz_root, tmp_path / "plain", *extra, "trainer.eval_every=0")))

    assert [row["epoch"] for row in _metrics(watched)[1]] == [1, 2] and not _metrics(plain)[1]
    for name in ("backbone.safetensors", "projection_head.safetensors"):
        expected, got = load_file(plain / name), load_file(watched / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), (name, key)
