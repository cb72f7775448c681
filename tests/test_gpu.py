"""The CUDA paths: views drawn on the GPU, nvJPEG decoding, training steps of every method that never wait for the
GPU, bf16 / fp16 steps (a real fp16 overflow), channels_last and torch.compile with SEC, MoCo's queue, NCCL, and the
benchmarks. Marked ``gpu`` and skipped without CUDA; run them
with ``pytest -m gpu`` on a GPU machine."""

import json
import math
import subprocess
import sys

import pytest
import torch
from accelerate.utils import GradScalerKwargs
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils.scheduler import CosineWarmupScheduler
from torch._dynamo.utils import counters

from sslsec.augment import MoCoV2Augment, MultiView, SimCLRAugment
from sslsec.config import load_config
from sslsec.data import ImageFolderDataset
from sslsec.engine.checkpoint import Progress
from sslsec.engine.trainer import NonFiniteWatch, _advance, build_optimizer, pretrain, train_step
from sslsec.methods import Method, build_method
from sslsec.methods.moco import KeyQueue
from tests.fixtures import write_jpeg_folder
from tests.launch import REPO, gpu_env, torchrun
from tests.steps import METHOD_CASES, PML_MINING_CASES, TrainerSteps
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


def assert_same_distribution(first, second, name):
    """Per column of a statistic of n images on each side: the means within 5 standard errors, the standard
    deviations within a factor 1.43 (each about 5 standard errors at n = 256)."""
    first, second = first.reshape(len(first), -1), second.reshape(len(second), -1)
    error = (first.var(dim=0) / len(first) + second.var(dim=0) / len(second)).sqrt()
    assert ((first.mean(dim=0) - second.mean(dim=0)).abs() <= 5 * error + 1e-9).all(), name
    spread = first.std(dim=0) > 1e-6
    ratio = second.std(dim=0)[spread] / first.std(dim=0)[spread]
    assert ((0.7 < ratio) & (ratio < 1.43)).all(), name


@pytest.mark.parametrize("preset, size", [(SimCLRAugment, 32), (MoCoV2Augment, 96)])  # 96 px: with blur
def test_views_made_on_cuda_are_distributed_as_the_cpu_views(preset, size):
    """Every random parameter of the views is drawn on the images' device, by its generator: one seed gives other
    views on CUDA than on the CPU, distributed alike (per image and channel, the mean and the spread)."""
    images = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment = preset(size, MEAN, STD)
    cpu_view, gpu_view = augment(images, seed=0), augment(images.cuda(), seed=0)
    assert gpu_view.is_cuda and gpu_view.shape == cpu_view.shape and gpu_view.dtype == cpu_view.dtype
    assert torch.isfinite(gpu_view).all() and not torch.allclose(gpu_view.cpu(), cpu_view)
    for name, statistic in (("mean", lambda v: v.mean((2, 3))), ("std", lambda v: v.std((2, 3)))):
        assert_same_distribution(statistic(cpu_view), statistic(gpu_view.cpu()), name)
    low, high = (0 - max(MEAN)) / min(STD), (1 - min(MEAN)) / min(STD)
    assert low - 1e-3 <= gpu_view.min().item() and gpu_view.max().item() <= high + 1e-3


def test_two_views_of_one_seed_on_cuda_differ_from_each_other_as_on_the_cpu():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = MultiView(SimCLRAugment(32, MEAN, STD))
    first, second = views(images.cuda(), seed=0)
    assert not torch.allclose(first, second)
    assert all(torch.equal(a, b) for a, b in zip(views(images.cuda(), seed=0), (first, second)))  # reproducible


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


def test_a_real_fp16_overflow_skips_the_step_and_moves_neither_the_lr_nor_the_step_count():
    # a loss scale of 2^127 makes the scaled loss overflow float32: the scaler must skip the step
    accelerator = _fresh_accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=2.0 ** 127)])
    config = load_config(None, ["model.backbone=small_cnn", "model.projection_hidden_dim=64",
                                "model.projection_dim=32", "loss.sec_weight=0.1", "optim.lr=0.05"])
    torch.manual_seed(0)
    model = build_method(config, 3)
    optimizer = build_optimizer(model, config)
    scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=2, max_epochs=10)
    model, optimizer = accelerator.prepare(model, optimizer)
    progress, watch = Progress(), NonFiniteWatch(accelerator)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, device="cuda")
    views = MultiView(SimCLRAugment(32, MEAN, STD))(images, seed=0)
    weights, lr = [p.detach().clone() for p in model.parameters()], scheduler.get_last_lr()

    out = train_step(accelerator, model, optimizer, views)
    assert torch.isfinite(out.total) and accelerator.optimizer_step_was_skipped
    assert not _advance(accelerator, scheduler, progress, watch)
    assert progress.step == 0 and scheduler.last_epoch == 0 and scheduler.get_last_lr() == lr
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert watch.skipped_steps == 1 and accelerator.scaler.get_scale() == 2.0 ** 126
    watch.check(steps_per_epoch=5)  # an overflow at a scale far above 1: the scaler's business, not an error

    accelerator.scaler.update(new_scale=2.0 ** 10)
    train_step(accelerator, model, optimizer, views)
    assert not accelerator.optimizer_step_was_skipped and _advance(accelerator, scheduler, progress, watch)
    assert progress.step == 1 and scheduler.last_epoch == 1 and scheduler.get_last_lr() != lr
    assert not all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_run_with_sec_channels_last_and_compile_writes_a_backbone_and_compiles_once(npz_root, tmp_path,
                                                                                           monkeypatch, compile_model):
    graphs, before_step = [], Method.before_step
    monkeypatch.setattr(Method, "before_step", lambda self, step, total: (
        graphs.append(counters["stats"]["unique_graphs"]), before_step(self, step, total)))
    torch._dynamo.reset()
    counters.clear()
    _fresh_accelerator(mixed_precision="bf16")
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.mixed_precision=bf16",
                                                "trainer.channels_last=true", f"trainer.compile={compile_model}",
                                                "trainer.eval_every=0", "loss.sec_weight=0.5",
                                                "loss.sec_schedule=linear")))
    assert (run / "backbone.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len({row["sec_weight"] for row in rows if "total" in row}) == len(graphs) == 8
    if compile_model:  # inductor compiles the networks in the first step, and never again
        assert graphs[1] >= 2 and graphs[1:] == [graphs[1]] * 7
    torch._dynamo.reset()


@pytest.mark.parametrize("case", [case for case in METHOD_CASES if case not in PML_MINING_CASES])
def test_training_steps_of_every_method_never_wait_for_the_gpu(case):
    """tests/test_sync_free.py's check on CUDA itself, in bf16: under sync debug mode "error" whatever makes the host
    wait for the GPU raises (a value read back, a size that depends on the data, a blocking copy). The first step,
    outside it, puts on the GPU what the next ones reuse (the views' mean and std, the colour ops' samplers)."""
    steps = TrainerSteps(METHOD_CASES[case], mixed_precision="bf16")
    steps.take()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [steps.take().total for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss) for loss in losses)


def test_the_moco_queue_is_written_without_waiting_for_the_gpu():
    queue = KeyQueue(MemoryBankModule((64, 16))).cuda()
    keys = torch.randn(5, 16, 16, device="cuda")
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host read raises
    try:
        for batch in keys:
            queue(batch, update=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(queue.bank_ptr) == 5 * 16 % 64
    assert torch.equal(queue.bank[torch.arange(64, 80) % 64], keys[4])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_gpus_gather_negatives_and_fill_the_queue_over_nccl(npz_root, tmp_path, method):
    """As tests/engine/test_trainer.py's two CPU processes, over NCCL."""
    run = tmp_path / "run"
    process = subprocess.run(
        torchrun(REPO / "scripts" / "pretrain.py", *_overrides(npz_root, run, f"method={method}",
                                                               "trainer.checkpoint_every=0", "moco.queue_size=512")),
        capture_output=True, text=True, timeout=600, cwd=REPO, env=gpu_env())
    assert process.returncode == 0, process.stderr[-3000:]
    assert (run / "backbone.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "total" in row]
    assert len(steps) == 8 and all(math.isfinite(row["total"]) for row in steps)
    if method == "simclr":
        # 16 images per process, 32 per step: with the negatives of both processes the first loss is
        # near log(2 * 32 - 1) = 4.14; with this process's alone it would be near log(2 * 16 - 1) = 3.43.
        assert steps[0]["contrastive"] > math.log(47)
    if method == "moco":
        checkpoint = torch.load(next((run / "checkpoints").glob("step_*")) / "pytorch_model.bin", weights_only=False,
                                map_location="cpu")
        assert int(checkpoint["criterion._extra_state"]["bank_ptr"]) == 8 * 32  # keys of both processes


@pytest.mark.parametrize("script", ["bench_augment.py", "bench_train.py"])
def test_benchmarks_run_on_cuda(npz_root, script):
    args = (["--batches", "3", "--repeats", "1", "--workers", "2"] if script == "bench_augment.py" else
            ["--steps", "3", "--repeats", "1", "--workers", "2", "data.name=npz", f"data.root={npz_root}",
             "data.val_size=null", "trainer.batch_size=16"])
    process = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--device", "cuda", *args],
                             capture_output=True, text=True, timeout=600, cwd=REPO, env=gpu_env())
    assert process.returncode == 0, process.stderr[-3000:]
    assert "device cuda" in process.stdout
