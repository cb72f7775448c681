"""The CUDA paths: kornia views, nvJPEG decoding, bf16 / fp16 steps, channels_last and torch.compile, NCCL, and
the benchmarks. Marked ``gpu`` and skipped without CUDA; run them with ``pytest -m gpu`` on a GPU machine."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslsec.augment import MultiView, SimCLRAugment
from sslsec.config import load_config
from sslsec.data import ImageFolderDataset
from sslsec.engine.trainer import build_optimizer, pretrain, train_step
from sslsec.methods import build_method
from tests.fixtures import write_jpeg_folder

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _overrides(npz_root, output_dir, *extra):
    return ["data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn", "model.projection_hidden_dim=64",
            "model.projection_dim=32", "moco.queue_size=64", "trainer.batch_size=32", "trainer.epochs=2",
            "trainer.log_every=1", "trainer.eval_every=1", "optim.warmup_epochs=0", "eval.knn_k=10",
            f"output_dir={output_dir}", *extra]


def _fresh_accelerator(**kwargs):
    from accelerate.state import AcceleratorState

    from sslsec.engine.accelerator import make_accelerator

    AcceleratorState._reset_state(reset_partial_state=True)  # each test picks its own precision
    return make_accelerator(**kwargs)


def test_views_on_cuda_match_the_cpu_views_in_shape_dtype_range_and_statistics():
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = MultiView(SimCLRAugment(32, MEAN, STD))
    on_cpu, on_gpu = views(images, seed=0), views(images.cuda(), seed=0)
    for cpu_view, gpu_view in zip(on_cpu, on_gpu):
        assert gpu_view.is_cuda and gpu_view.shape == cpu_view.shape and gpu_view.dtype == cpu_view.dtype
        assert torch.isfinite(gpu_view).all()
        low, high = (0 - max(MEAN)) / min(STD), (1 - min(MEAN)) / min(STD)
        assert low - 1e-3 <= gpu_view.min().item() and gpu_view.max().item() <= high + 1e-3
        # different generators draw different crops, but over 512 images the statistics agree
        assert abs(gpu_view.mean().item() - cpu_view.mean().item()) < 0.1
        assert abs(gpu_view.std().item() - cpu_view.std().item()) < 0.1


def test_jpeg_folder_decoded_on_the_gpu_matches_the_cpu_decode(tmp_path):
    write_jpeg_folder(tmp_path, {"a": 3, "b": 3})
    folder = ImageFolderDataset(tmp_path, "train", image_size=32)
    encoded = [folder.read_encoded(i) for i in range(len(folder))]
    on_cpu, on_gpu = folder.decode(encoded, "cpu"), folder.decode(encoded, "cuda")
    assert on_gpu.is_cuda and on_gpu.shape == on_cpu.shape == (6, 3, 32, 32) and on_gpu.dtype == torch.uint8
    assert (on_gpu.cpu().float() - on_cpu.float()).abs().mean() < 3.0  # nvJPEG and libjpeg round differently


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_steps_under_mixed_precision_stay_finite_and_lower_the_loss(method, precision):
    accelerator = _fresh_accelerator(mixed_precision=precision)
    config = load_config(None, [f"method={method}", "model.backbone=small_cnn", "model.projection_hidden_dim=64",
                                "model.projection_dim=32", "moco.queue_size=64", "loss.sec_weight=0.1",
                                "optim.lr=0.05"])
    torch.manual_seed(0)
    model = build_method(config, 3).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    views = MultiView(SimCLRAugment(32, MEAN, STD, channels_last=True))
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda",
                           generator=torch.Generator("cuda").manual_seed(0))
    fixed = views(images, seed=0)
    losses = []
    for step in range(30):
        accelerator.unwrap_model(model).before_step(step, 30)
        losses.append(train_step(accelerator, model, optimizer, fixed).contrastive.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_run_with_channels_last_and_compile_writes_a_backbone(npz_root, tmp_path, compile_model):
    _fresh_accelerator(mixed_precision="bf16")
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.mixed_precision=bf16",
                                                "trainer.channels_last=true", f"trainer.compile={compile_model}")))
    assert (run / "backbone.safetensors").is_file()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_gpus_gather_negatives_and_fill_the_queue_over_nccl(npz_root, tmp_path, method):
    process = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "scripts" / "pretrain.py"), *_overrides(npz_root, tmp_path / "run", f"method={method}")],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
    assert process.returncode == 0, process.stderr[-3000:]
    assert (tmp_path / "run" / "backbone.safetensors").is_file()


@pytest.mark.parametrize("script", ["bench_augment.py", "bench_train.py"])
def test_benchmarks_run_on_cuda(npz_root, script):
    args = (["--batches", "3", "--repeats", "1", "--workers", "2"] if script == "bench_augment.py" else
            ["--steps", "3", "--repeats", "1", "--workers", "2", "data.name=npz", f"data.root={npz_root}",
             "data.val_size=null", "trainer.batch_size=16"])
    process = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--device", "cuda", *args],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "device cuda" in process.stdout
