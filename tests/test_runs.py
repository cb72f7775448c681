"""The run directory read back: saved backbones and their errors."""

import pytest
import torch
from safetensors.torch import save_file

from sslsec.models import save_backbone
from sslsec.runs import RunError, load_saved_backbone
from tests.fixtures import small_cnn

def test_saved_backbone_round_trips(tmp_path):
    backbone, images = small_cnn(), torch.randn(4, 1, 16, 16)
    save_backbone(backbone, tmp_path / "backbone.safetensors", {"name": "small_cnn", "in_channels": 1})
    loaded = load_saved_backbone(tmp_path / "backbone.safetensors")
    with torch.no_grad():
        assert torch.equal(backbone.eval()(images), loaded.eval()(images))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RunError, match="no sslsec backbone metadata"):
        load_saved_backbone(tmp_path / "other.safetensors")
