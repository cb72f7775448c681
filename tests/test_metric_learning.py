"""Metric learning: the authors' semi-hard rule, every registered loss inside WithSEC, class weights that are
trained and resumed, the retrieval monitor and the retrieval command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file

from sslsec.config import ConfigError, load_config
from sslsec.engine import pretrain
from sslsec.methods import build_method
from sslsec.methods.metric import METRIC_LOSSES, SemihardTripletLoss, metric_loss
from sslsec.models import Embedder, load_backbone
from tests.fixtures import write_cub200, write_npz
from tests.launch import cpu_env

ROOT = Path(__file__).parents[1]


def semihard_by_loops(embeddings, labels, margin):
    """TensorFlow's triplet_semihard_loss rule, one positive pair at a time."""
    x = F.normalize(embeddings, dim=1)
    d = torch.cdist(x, x).square()
    terms = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, n] for n in negatives if d[a, n] > d[a, p]]
            d_an = min(farther) if farther else max(d[a, n] for n in negatives)
            terms.append(torch.clamp(margin + d[a, p] - d_an, min=0))
    return torch.stack(terms).mean()


def test_semihard_triplet_follows_the_authors_rule():
    g = torch.Generator().manual_seed(0)
    embeddings, labels = torch.randn(18, 6, generator=g), torch.arange(18) % 4
    loss = SemihardTripletLoss(margin=0.2)(embeddings, labels)
    assert loss.item() == pytest.approx(semihard_by_loops(embeddings, labels, 0.2).item(), rel=1e-5)
    assert loss > 0
    # pml's "semihard" miner is another rule: its loss on the same batch differs.
    from pytorch_metric_learning import losses, miners
    pml = losses.TripletMarginLoss(margin=0.2)(embeddings, labels,
                                               miners.TripletMarginMiner(0.2, type_of_triplets="semihard")(
                                                   embeddings, labels))
    assert pml.item() != pytest.approx(loss.item(), rel=1e-3)


def test_semihard_triplet_is_zero_with_a_zero_gradient_on_a_batch_without_triplets():
    embeddings = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for labels in (torch.zeros(6, dtype=torch.long), torch.arange(6)):  # no negative; no positive pair
        loss = SemihardTripletLoss(margin=0.2)(embeddings, labels)
        (gradient,) = torch.autograd.grad(loss, embeddings)
        assert loss.item() == 0 and torch.equal(gradient, torch.zeros_like(embeddings))


@pytest.mark.parametrize("name", list(METRIC_LOSSES))
def test_every_metric_loss_trains_inside_with_sec_and_sec_moves_only_the_norms(name):
    from sslsec.losses import WithSEC

    loss, miner = metric_loss(name, num_classes=4, embedding_dim=8)
    criterion = WithSEC(loss, sec_weight=1.0)
    g = torch.Generator().manual_seed(1)
    embeddings = (torch.randn(16, 8, generator=g) * torch.linspace(0.5, 3, 16)[:, None]).requires_grad_()
    labels = torch.arange(16) // 4
    out = criterion(embeddings, labels, miner(embeddings, labels) if miner is not None else None)
    assert torch.isfinite(out.total) and out.sec > 0
    out.total.backward()
    assert embeddings.grad.abs().sum() > 0
    sec_only = WithSEC(torch.nn.Identity(), sec_weight=1.0)  # the SEC term's own gradient is radial
    z = embeddings.detach().clone().requires_grad_()
    sec_only.sec(z).backward()
    tangential = z.grad - (z.grad * F.normalize(z, dim=1)).sum(1, keepdim=True) * F.normalize(z, dim=1)
    assert tangential.abs().max() < 1e-6 and z.grad.abs().max() > 1e-3


def _overrides(root, output_dir, *extra):
    return ["method=metric", "data.name=npz", f"data.root={root}", "data.train_classes=[0,1,2,3]",
            "data.test_classes=[4,5]", "data.val_classes=[3]", "model.backbone=small_cnn", "model.embedding_dim=16",
            "metric.images_per_class=4", "trainer.batch_size=12", "trainer.epochs=2", "trainer.log_every=1",
            "trainer.eval_every=1", "trainer.checkpoint_every=1", "optim.name=adam", "optim.lr=1e-3",
            "optim.warmup_epochs=0", "loss.sec_weight=1.0", "trainer.mixed_precision=no", f"output_dir={output_dir}",
            *extra]


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    write_npz(root, channels=1, size=12, n_train=96, n_test=36, num_classes=6)
    return root


def test_an_arcface_run_resumed_mid_epoch_ends_bit_identical_with_its_class_weights(six_classes, tmp_path):
    extra = ["metric.loss=arcface", "trainer.eval_every=0", "trainer.checkpoint_every_steps=2"]
    straight = pretrain(load_config(None, _overrides(six_classes, tmp_path / "straight", *extra)))
    interrupted = tmp_path / "interrupted"
    pretrain(load_config(None, _overrides(six_classes, interrupted, *extra, "trainer.max_steps=3")))
    pretrain(load_config(None, _overrides(six_classes, interrupted, *extra, "resume=true")))

    for path in (straight, interrupted):
        assert isinstance(load_backbone(path / "backbone.safetensors"), Embedder)
    expected, got = load_file(straight / "backbone.safetensors"), load_file(interrupted / "backbone.safetensors")
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    checkpoints = [torch.load(max((run / "checkpoints").glob("step_*")) / "pytorch_model.bin", weights_only=False)
                   for run in (straight, interrupted)]
    weights = [c["criterion.loss.W"] for c in checkpoints]
    assert weights[0].shape == (16, 3) and torch.equal(*weights)  # 3 training classes, trained and restored
    start = build_method(load_config(None, _overrides(six_classes, tmp_path / "x", *extra)), 1, num_classes=3)
    assert not torch.equal(start.criterion.loss.W, weights[0])


def test_a_metric_run_monitors_retrieval_and_the_retrieval_command_scores_it(six_classes, tmp_path):
    run = pretrain(load_config(None, _overrides(six_classes, tmp_path / "run", "metric.loss=multi_similarity")))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    monitored = [r for r in rows if "recall_at_1" in r]
    assert [r["epoch"] for r in monitored] == [1, 2] and all(r["monitor_split"] == "val" for r in monitored)
    assert all(0 <= r["map_at_r"] <= 100 for r in monitored)

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "retrieval.py"), "--run", str(run)],
                            capture_output=True, text=True, timeout=300, env=cpu_env())
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((run / "retrieval.json").read_text())
    assert set(scores) == {"val", "test", "protocol"}  # the protocol: what sslsec-retrieval checks before a rerun
    assert scores["test"]["classes"] == 2 and scores["test"]["images"] == 12
    assert {"recall_at_1", "recall_at_8", "map_at_r", "r_precision", "nmi"} <= set(scores["test"])
    assert "MAP@R" in result.stdout and "the test split holds classes never seen in training" in result.stdout

    random = subprocess.run([sys.executable, str(ROOT / "scripts" / "retrieval.py"), "--random-init", "--config",
                             str(run / "config.yaml")], capture_output=True, text=True, timeout=300,
                             env=cpu_env())
    assert random.returncode == 0, random.stderr[-2000:]
    assert (run / "random_init" / "retrieval.json").is_file()


def test_a_linear_probe_of_classes_unseen_in_training_is_refused_with_the_tool_to_use(six_classes, tmp_path, capsys):
    from sslsec.cli import linear_probe_main

    config = tmp_path / "config.yaml"
    from sslsec.config import save_config
    save_config(load_config(None, _overrides(six_classes, tmp_path / "run")), config)
    with pytest.raises(SystemExit) as exit_info:
        linear_probe_main(["--random-init", "--config", str(config)])
    assert exit_info.value.code == 2 and "use sslsec-retrieval" in capsys.readouterr().err


def test_the_cub200_recipe_trains_from_imagenet_weights_on_a_cub_fixture(tmp_path, monkeypatch):
    """configs/dml_cub200.yaml shrunk to a CUB fixture: folder data, P x K batches, pretrained trunk, retrieval."""
    write_cub200(tmp_path / "data")
    state = torchvision.models.resnet18().state_dict()  # "ImageNet weights" placed in torch.hub's cache by hand
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    config = load_config(ROOT / "configs" / "dml_cub200.yaml", [
        f"data.root={tmp_path / 'data'}", "data.train_classes=[0,1,2,3]", "data.val_classes=[3]",
        "data.test_classes=[4,5]", "data.image_size=40", "data.crop_size=32", "data.num_workers=0",
        "model.backbone=resnet18", "model.embedding_dim=16", "trainer.batch_size=6", "trainer.epochs=1",
        "trainer.eval_every=1", "trainer.mixed_precision=no", f"output_dir={tmp_path / 'run'}"])
    run = pretrain(config)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["monitor_split"] for r in rows if "recall_at_1" in r] == ["val"]
    trained = load_backbone(run / "backbone.safetensors")
    assert isinstance(trained, Embedder) and trained.feature_dim == 16
    moved = trained.trunk.conv1.weight - state["conv1.weight"]
    assert 0 < moved.abs().max() < 1e-3  # one Adam step at lr 0.5e-5 from the cached weights


def test_a_batch_with_more_classes_than_training_has_is_one_line_before_any_work(six_classes, tmp_path):
    # classes 0-2 train (3 is validation): a batch of 16 = 4 classes x 4 images cannot be drawn
    config = load_config(None, _overrides(six_classes, tmp_path / "run", "trainer.batch_size=16"))
    with pytest.raises(ConfigError) as error:
        pretrain(config)
    message = str(error.value)
    assert "trainer.batch_size=16 images holds 4 classes of metric.images_per_class=4" in message
    assert "the training split has 3 classes" in message and "at most 12" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # nothing written
