"""The run directory read back: what is not a saved backbone, or not there, is a RunError (the round trip of a
saved backbone is tests/test_models.py's)."""

import pytest
import torch
from safetensors.torch import save_file

from sslsec.runs import RunError, load_saved_backbone


def test_a_file_that_is_not_a_saved_backbone_is_a_run_error_naming_it(tmp_path):
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RunError, match="no sslsec backbone metadata"):
        load_saved_backbone(tmp_path / "other.safetensors")
    with pytest.raises(RunError, match="missing.safetensors"):
        load_saved_backbone(tmp_path / "missing.safetensors")
