import pytest
import torch
import torchvision
from safetensors.torch import load_file

from sslsec.models import build_backbone, load_backbone, save_backbone


def test_saved_resnet_loads_into_a_plain_torchvision_resnet(tmp_path):
    spec = {"name": "resnet18", "in_channels": 3, "cifar_stem": False}
    backbone = build_backbone(**spec).eval()
    save_backbone(backbone, tmp_path / "b.safetensors", spec)

    plain = torchvision.models.resnet18()
    result = plain.load_state_dict(load_file(tmp_path / "b.safetensors"), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
    plain.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(plain.eval()(x), backbone(x), atol=1e-6)
    assert torch.equal(load_backbone(tmp_path / "b.safetensors").eval()(x), backbone(x))


def test_cifar_stem_backbone_loads_into_torchvision_with_the_stem_swapped_and_is_world_readable(tmp_path):
    import os

    spec = {"name": "resnet18", "in_channels": 3, "cifar_stem": True}
    backbone = build_backbone(**spec).eval()
    previous = os.umask(0o022)
    try:
        save_backbone(backbone, tmp_path / "b.safetensors", spec)
    finally:
        os.umask(previous)
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o644  # like config.yaml, not safetensors' 0600

    plain = torchvision.models.resnet18()  # the README's recipe: the 3x3 stride-1 conv1 and no max-pool
    plain.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    plain.maxpool, plain.fc = torch.nn.Identity(), torch.nn.Identity()
    plain.load_state_dict(load_file(tmp_path / "b.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain.eval()(x), backbone(x), atol=1e-5)


@pytest.mark.parametrize("name, cifar_stem, in_channels, size", [
    ("resnet18", True, 3, 32), ("resnet18", False, 1, 64), ("small_cnn", False, 1, 28),
])
def test_backbones_give_flat_features_of_their_declared_width(name, cifar_stem, in_channels, size):
    backbone = build_backbone(name, in_channels, cifar_stem)
    features = backbone(torch.randn(2, in_channels, size, size))
    assert features.shape == (2, backbone.feature_dim)
    if name == "resnet18":
        assert backbone.conv1.kernel_size == ((3, 3) if cifar_stem else (7, 7))


def test_small_cnn_keeps_the_edge_of_a_7px_map_and_reads_the_third_stage_too():
    backbone = build_backbone("small_cnn", 1).eval()
    maps = []
    for stage in backbone.stages:
        stage.register_forward_hook(lambda module, inputs, output: maps.append(output))
    features = backbone(torch.randn(2, 1, 28, 28))
    assert [m.shape[-1] for m in maps] == [28, 14, 7, 4]  # a floor pool would drop the 7 px map's last row
    assert backbone.feature_dim == 128 + 256
    assert torch.allclose(features, torch.cat([maps[2].mean((2, 3)), maps[3].mean((2, 3))], dim=1))


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vit'; choose one of resnet18, resnet50, small_cnn"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        build_backbone("small_cnn", in_channels=4)
