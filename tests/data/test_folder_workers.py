"""Folder data at GPU speed: ``data.num_workers`` reaches every loader, and in-memory splits stay resident."""

import pytest
import torch

import sslsec.data.loader as loader_module
from sslsec.analysis.diagnostics import diagnose_run
from sslsec.cli import linear_probe_main
from sslsec.config import load_config
from sslsec.data import BatchLoader, ImageArrays, load_dataset
from sslsec.engine import pretrain
from tests.fixtures import write_jpeg_folder


def test_data_num_workers_reaches_training_the_monitor_the_probe_and_the_diagnostics(tmp_path, monkeypatch):
    write_jpeg_folder(tmp_path / "data", {"a": 4, "b": 4})
    workers = []
    real = loader_module._folder_loader
    monkeypatch.setattr(loader_module, "_folder_loader",
                        lambda folder, loader, n, *args: workers.append(n) or real(folder, loader, n, *args))
    run = pretrain(load_config(None, [
        "data.name=imagenet_folder", f"data.root={tmp_path / 'data'}", "data.image_size=16", "data.num_workers=1",
        "model.backbone=small_cnn", "model.projection_hidden_dim=16", "model.projection_dim=8",
        "trainer.batch_size=4", "trainer.epochs=1", "trainer.eval_every=1", "trainer.mixed_precision=no",
        "eval.knn_k=2", f"output_dir={tmp_path / 'run'}"]))
    assert workers == [1, 1, 1]  # the training loader, the monitor's bank (train) and its split (test)
    folder = load_dataset("imagenet_folder", tmp_path / "data", "train", image_size=16)
    decoded = [images for images, _ in BatchLoader(folder, 4, shuffle=False, drop_last=False, num_workers=1)]
    assert [(batch.dtype, batch.shape) for batch in decoded] == [(torch.uint8, (4, 3, 16, 16))] * 2  # by the worker

    workers.clear()
    linear_probe_main(["--run", str(run), "data.num_workers=2", "eval.probe_epochs=1"])
    assert workers == [2, 2]  # the probe's train and test features, extracted once and shared with kNN
    pytest.importorskip("matplotlib")
    workers.clear()
    diagnose_run(run, ["data.num_workers=2"], n=4)
    assert workers == [2]


def test_a_resident_split_is_not_copied_again_by_the_loaders_built_on_it():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    data = ImageArrays(images, torch.arange(10) % 2, ["a", "b"], (0.5,), (0.25,), "toy")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    resident = data.to(device)
    assert resident.to(device) is resident and resident.images.device.type == device
    loaders = [BatchLoader(resident, 4, shuffle=False, drop_last=False, device=device) for _ in range(2)]
    assert all(loader._images.data_ptr() == resident.images.data_ptr() for loader in loaders)
    cut = torch.cat([batch for batch, _ in loaders[0]])
    assert torch.equal(cut.cpu(), images)
    subset = resident.subset(torch.tensor([3, 1]))  # CPU indices into a resident split
    assert torch.equal(subset.images.cpu(), images[[3, 1]])
