from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torchvision.models import WeightsEnum

from sslsec.models import IMAGENET_WEIGHTS, PretrainedWeightsError, build_backbone, load_backbone, save_backbone


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


# --- ImageNet weights (model.pretrained), read from torch.hub's cache; no test touches the network -------------

def _imagenet_like(name="resnet18", value=0.5):
    """A state dict with torchvision's keys (classifier included), conv1 filled with ``value`` to recognize it."""
    state = getattr(torchvision.models, name)().state_dict()
    state["conv1.weight"].fill_(value)
    return state


def _cached_weights_file(tmp_path, monkeypatch, name="resnet18"):
    """Where torch.hub looks for the weights, under a private TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.get_weight(IMAGENET_WEIGHTS[name]).url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    assert path == tmp_path / "hub" / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_pretrained_resnet_loads_imagenet_weights_placed_by_hand_in_the_hub_cache(tmp_path, monkeypatch):
    state = _imagenet_like()
    torch.save(state, _cached_weights_file(tmp_path, monkeypatch))  # what the error message tells a user to do
    backbone = build_backbone("resnet18", cifar_stem=False, pretrained=True).eval()
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"]) and isinstance(backbone.fc, torch.nn.Identity)
    assert torch.equal(backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    embedder = build_backbone("resnet18", embedding_dim=8, embedding_batchnorm=True, pretrained=True)
    assert torch.equal(embedder.trunk.conv1.weight, state["conv1.weight"]) and embedder.feature_dim == 8
    assert not torch.equal(build_backbone("resnet18").conv1.weight, state["conv1.weight"])


def test_pretrained_weights_ask_torchvision_for_the_v1_weights_with_the_hash_checked(monkeypatch):
    asked = []

    def fake(weights, **kwargs):
        asked.append((str(weights), kwargs))
        return _imagenet_like("resnet50", 0.25)

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake)
    backbone = build_backbone("resnet50", pretrained=True)
    assert asked == [("ResNet50_Weights.IMAGENET1K_V1", {"progress": False, "check_hash": True})]
    assert bool((backbone.conv1.weight == 0.25).all()) and backbone.feature_dim == 2048


def test_weights_that_cannot_be_downloaded_or_read_are_one_line_naming_the_file_and_the_cache(tmp_path, monkeypatch):
    path = _cached_weights_file(tmp_path, monkeypatch)

    def offline(weights, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsError) as error:
        build_backbone("resnet18", pretrained=True)
    message = str(error.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message and "URLError" in message and "\n" not in message
    assert f"download https://download.pytorch.org/models/{path.name} elsewhere and place it as {path}" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path.write_bytes(b"half a download")  # a cached file is loaded without a hash check
    with pytest.raises(PretrainedWeightsError, match=r"cannot load the ImageNet weights .*replacing any corrupt file"):
        build_backbone("resnet18", pretrained=True)


@pytest.mark.parametrize("name, in_channels, cifar_stem", [("small_cnn", 3, False), ("resnet18", 1, False),
                                                           ("resnet50", 3, True)])
def test_pretrained_is_refused_where_the_imagenet_weights_do_not_fit(monkeypatch, name, in_channels, cifar_stem):
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda *args, **kwargs: pytest.fail("no weights to load"))
    with pytest.raises(PretrainedWeightsError, match=f"got backbone {name}, {in_channels} channel"):
        build_backbone(name, in_channels, cifar_stem, pretrained=True)
