"""Face recognition (``method: face``): the face embedding head, CosFace / ArcFace at the published scale and margin
against their formulas, plain shuffled batches, the face configs, the face_folder reader, and a smoke run."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses

from sslsec.config import ConfigError, load_config
from sslsec.data import DatasetError, load_dataset, load_splits
from sslsec.methods import FaceRecognition, build_method
from sslsec.methods.metric import ArcFace, CosFace
from sslsec.models import Embedder, build_backbone, load_backbone, save_backbone
from tests.fixtures import write_jpeg_folder

FACE = ["method=face", "metric.loss=cosface", "model.backbone=small_cnn", "model.embedding_dim=8",
        "model.embedding_head=face"]


def test_the_face_head_is_batchnorm_dropout_linear_and_a_batchnorm_of_fixed_scale():
    embedder = build_backbone("small_cnn", 1, embedding_dim=8, embedding_head="face", embedding_dropout=0.4)
    first, dropout, linear, features = embedder.embedding
    assert isinstance(first, torch.nn.BatchNorm1d) and first.num_features == 384
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.4
    assert (linear.in_features, linear.out_features) == (384, 8)
    assert isinstance(features, torch.nn.BatchNorm1d) and not features.weight.requires_grad
    assert features.bias.requires_grad
    embeddings = embedder(torch.randn(32, 1, 16, 16))  # train mode: each dimension standardized over the batch
    assert torch.allclose(embeddings.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(embeddings.var(0, unbiased=False), torch.ones(8), atol=1e-3)

    optimizer = torch.optim.SGD([p for p in embedder.parameters() if p.requires_grad], lr=1.0, weight_decay=0.5)
    embeddings.square().sum().backward()
    optimizer.step()
    assert torch.equal(features.weight, torch.ones(8)) and features.bias.abs().sum() > 0  # the shift trains


def test_a_saved_face_embedder_loads_back_with_its_head(tmp_path):
    spec = {"name": "small_cnn", "in_channels": 1, "embedding_dim": 8, "embedding_head": "face",
            "embedding_dropout": 0.2}
    embedder = build_backbone(**spec).eval()
    save_backbone(embedder, tmp_path / "backbone.safetensors", spec)
    loaded = load_backbone(tmp_path / "backbone.safetensors").eval()
    images = torch.randn(4, 1, 16, 16)
    assert isinstance(loaded, Embedder) and torch.equal(loaded(images), embedder(images))


@pytest.mark.parametrize("loss, margin", [("cosface", 0.35), ("arcface", 0.5)])
def test_the_face_losses_are_their_formulas_at_scale_64(loss, margin):
    """CosFace: CE of 64 (cos theta - 0.35 at the target); ArcFace: CE of 64 cos(theta + 0.5 rad) at the target
    (``cos theta - m sin m`` past ``theta = pi - m``, insightface's easy-margin-free rule, which keeps it falling)."""
    degrees = math.degrees(margin) if loss == "arcface" else margin
    config = load_config(None, [*FACE, f"metric.loss={loss}", "loss.sec_weight=0", f"metric.margin={degrees}"])
    model = build_method(config, 1, num_classes=5)
    assert isinstance(model, FaceRecognition) and model.images_per_class is None and model.miner is None
    assert model.evaluation == "verification"
    embeddings, labels = torch.randn(40, 8), torch.arange(40) % 5
    value = model.criterion(embeddings, labels).total
    weights = model.criterion.loss.W  # (embedding_dim, classes)
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=0)
    target = cosine.gather(1, labels[:, None])
    if loss == "cosface":
        target = target - margin
    else:
        theta = torch.acos(target.clamp(-1, 1))
        target = torch.where(theta <= math.pi - margin, torch.cos(theta + margin), target - margin * math.sin(margin))
    logits = 64 * cosine.scatter(1, labels[:, None], target)
    assert torch.allclose(value, F.cross_entropy(logits, labels), atol=1e-4)


@pytest.mark.parametrize("ours, pml", [(CosFace, losses.CosFaceLoss), (ArcFace, losses.ArcFaceLoss)])
def test_the_face_losses_are_pmls_bit_for_bit_with_the_target_cosines_gathered_by_label(ours, pml):
    """pml cuts the target cosines out by a boolean mask, which waits for a GPU; a gather gives the same numbers."""
    torch.manual_seed(0)
    loss = ours(5, 8)
    reference = pml(5, 8)
    reference.load_state_dict(loss.state_dict())
    embeddings, labels = torch.randn(40, 8, requires_grad=True), torch.arange(40) % 5
    value, expected = loss(embeddings, labels), reference(embeddings, labels)
    assert torch.equal(value, expected)
    for gradient, reference_gradient in zip(torch.autograd.grad(value, (embeddings, loss.W)),
                                            torch.autograd.grad(expected, (embeddings, reference.W))):
        assert torch.equal(gradient, reference_gradient)


def test_metric_scale_and_margin_reach_the_loss():
    config = load_config(None, [*FACE, "metric.loss=cosface", "metric.scale=30", "metric.margin=0.2"])
    loss = build_method(config, 1, num_classes=3).criterion.loss
    assert (loss.scale, loss.margin) == (30, 0.2)
    loss = build_method(load_config(None, [*FACE, "metric.loss=normface", "metric.scale=10"]), 1, num_classes=3)
    assert loss.criterion.loss.temperature == pytest.approx(0.1)


@pytest.mark.parametrize("overrides, message", [
    (["method=face", "metric.loss=triplet"], "method=face trains class weights.*metric.loss must be one of normface"),
    (["metric.loss=triplet", "metric.scale=10"], "metric.scale applies to normface, cosface, arcface"),
    (["model.embedding_head=face", "model.embedding_batchnorm=true"], "has its own BatchNorm"),
    (["model.embedding_head=mlp"], "model.embedding_head must be one of linear, face"),
    (["model.embedding_dropout=1.0"], "embedding_dropout must be in \\[0, 1\\)"),
])
def test_face_settings_that_cannot_work_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("name, loss, margin", [("face_cosface", "cosface", 0.35),
                                                ("face_arcface", "arcface", 28.64789)])
def test_the_published_face_configs_load(name, loss, margin):  # ArcFace: 0.5 rad in pml's degrees
    config = load_config(f"configs/{name}.yaml")
    assert (config.method, config.data.name, config.data.image_size) == ("face", "face_folder", 112)
    assert (config.model.backbone, config.model.cifar_stem, config.model.embedding_dim) == ("resnet50", False, 512)
    assert config.model.embedding_head == "face" and config.metric.margin == margin
    assert loss == "cosface" or math.radians(margin) == pytest.approx(0.5, abs=1e-3)  # pml's ArcFace margin: degrees
    assert (config.metric.loss, config.metric.scale) == (loss, 64.0)
    assert (config.optim.name, config.optim.lr * config.trainer.batch_size / 256) == ("sgd", pytest.approx(0.1))
    assert (config.optim.weight_decay, config.trainer.batch_size) == (5e-4, 512)
    assert config.loss.sec_weight > 0 and config.eval.verification_sets and config.data.val_classes


def _faces(root, train=("ann", "bob", "cy", "dee"), test=("eve", "fay", "gus")):
    write_jpeg_folder(root, {name: 4 for name in train}, split_folders=("train",), sizes=((40, 40),))
    write_jpeg_folder(root, {name: 4 for name in test}, split_folders=("test",), sizes=((40, 40),))


def test_face_folder_reads_its_own_identities_per_split(tmp_path):
    _faces(tmp_path)
    train, test = load_dataset("face_folder", tmp_path), load_dataset("face_folder", tmp_path, "test")
    assert train.classes == ["ann", "bob", "cy", "dee"] and test.classes == ["eve", "fay", "gus"]
    assert train.image_size == 112 and torch.bincount(test.labels).tolist() == [4, 4, 4]
    assert all(path.split("/")[-2] == test.classes[label] for path, label in zip(test.paths, test.labels.tolist()))


def test_face_folder_refuses_an_identity_in_both_splits_and_says_where_the_files_go(tmp_path):
    _faces(tmp_path, test=("bob", "eve"))
    with pytest.raises(DatasetError, match="identities \\['bob'\\] are in both"):
        load_dataset("face_folder", tmp_path, "test")
    with pytest.raises(DatasetError, match="train/<identity>/\\*.jpg"):
        load_dataset("face_folder", tmp_path / "missing")
    with pytest.raises(DatasetError, match=re.escape(f"missing/train not found (data.root={tmp_path / 'missing'})")):
        load_dataset("face_folder", tmp_path / "missing")


@pytest.mark.slow
def test_the_published_face_config_trains_on_fixture_folders(tmp_path):
    """configs/face_cosface.yaml shrunk by overrides: two steps, the verification monitor on held-out identities."""
    from sslsec.engine.trainer import pretrain

    _faces(tmp_path / "faces", train=("a", "b", "c", "d", "e", "f"))
    config = load_config("configs/face_cosface.yaml", [
        f"data.root={tmp_path / 'faces'}", "data.val_classes=[0,1]", "data.image_size=32", "data.num_workers=0",
        "model.backbone=resnet18", "trainer.batch_size=8", "trainer.epochs=1", "trainer.eval_every=1",
        "eval.verification_pairs=20", "eval.verification_folds=2", "trainer.mixed_precision=no",
        f"output_dir={tmp_path / 'run'}"])
    train, val, _ = load_splits(config)
    assert (train.num_classes, val.num_classes) == (4, 2)
    pretrain(config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    monitored = [row for row in rows if "verification_accuracy" in row]
    assert monitored and monitored[-1]["monitor_split"] == "val" and 0 <= monitored[-1]["val_at_far"] <= 100
    assert any(math.isfinite(row.get("total", math.nan)) for row in rows)
