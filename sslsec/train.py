"""Pretraining under accelerate: ``pretrain(config)`` runs on one CPU, one GPU or many.

The same function serves ``python scripts/pretrain.py`` and ``accelerate launch
[--cpu] [--num_processes N] scripts/pretrain.py``. One :class:`accelerate.Accelerator`
owns devices, mixed precision, gradient accumulation and the process group; views are
made on its device from uint8 batches by the kornia presets.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` (``latest``
names the newest complete one) and, at the end, ``backbone.safetensors`` and
``projection_head.safetensors``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn
from tqdm.auto import tqdm

from sslsec.augment import PRESETS, MultiView
from sslsec.config import Config, ConfigError, save_config
from sslsec.data import BatchLoader
from sslsec.distributed import make_accelerator
from sslsec.evaluate import knn_accuracy, load_splits
from sslsec.losses import NonFiniteError, scheduled_weight
from sslsec.methods import build_method, moco_momentum
from sslsec.models import save_backbone, save_module

KEEP_CHECKPOINTS = 2


class TrainingError(RuntimeError):
    """Pretraining cannot go on (a diverged loss, a run directory that is not resumable)."""


@dataclasses.dataclass
class Progress:
    """Where the run stands; checkpointed with the model so that a resume continues exactly."""

    epoch: int = 0  # current epoch
    batch: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # wall-clock training time before this process started (earlier invocations)

    def state_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.seconds = state.get("seconds", 0.0)


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """SGD or LARS on the trainable parameters; no weight decay on norms and biases."""
    decay, no_decay = get_weight_decay_parameters([model.backbone, model.head])
    optim = config.optim
    lr = optim.lr * config.trainer.batch_size / 256
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if optim.name == "lars":
        return LARS(groups, lr=lr, momentum=optim.momentum)
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)


def build_augment(config: Config, dataset, **kwargs) -> nn.Module:
    """The method's view preset (SimCLR or MoCo v2) with the ``augment`` section, at ``data.crop_size``."""
    size = config.data.crop_size or dataset.image_size
    recipe = dataclasses.asdict(config.augment)
    if recipe["crop_scale"] is None:
        del recipe["crop_scale"]  # the method's published crop scale
    return PRESETS[config.method](size, dataset.mean, dataset.std, **recipe, **kwargs)


def _micro_batch(config: Config, num_processes: int) -> int:
    trainer = config.trainer
    parts = num_processes * trainer.gradient_accumulation_steps
    if trainer.batch_size % parts:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} must be divisible by processes x "
            f"gradient_accumulation_steps = {parts}"
        )
    return trainer.batch_size // parts


class Checkpoints:
    """``output_dir/checkpoints/step_XXXXXXXX`` directories, written atomically.

    ``save_state`` writes into a temporary directory that is renamed into place only when
    complete; the ``latest`` file is then replaced atomically. A killed run therefore never
    leaves a half-written checkpoint as the latest.
    """

    def __init__(self, accelerator: Accelerator, output_dir: Path) -> None:
        self.accelerator = accelerator
        self.root = output_dir / "checkpoints"

    def latest(self) -> Optional[Path]:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def save(self, step: int) -> Path:
        accelerator = self.accelerator
        final = self.root / f"step_{step:08d}"
        partial = self.root / f".partial_step_{step:08d}"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        # safetensors cannot hold the queue's extra state, so the model is pickled.
        accelerator.save_state(str(partial), safe_serialization=False)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            pointer = self.root / ".latest.tmp"
            pointer.write_text(final.name)
            os.replace(pointer, self.root / "latest")
            for old in sorted(self.root.glob("step_*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final


def _resume_path(config: Config, checkpoints: Checkpoints) -> Optional[Path]:
    if config.resume is False:
        if checkpoints.latest() is not None:
            raise TrainingError(
                f"{config.output_dir} already holds a run; pass resume=true to continue it, "
                "or choose another output_dir"
            )
        return None
    if config.resume is True:
        return checkpoints.latest()
    path = Path(config.resume)
    if not path.is_dir():
        raise TrainingError(f"resume={config.resume}: no checkpoint directory there")
    return path


class MetricsLog:
    """Averages step metrics over a window and writes them to metrics.jsonl and the trackers."""

    def __init__(self, accelerator: Accelerator, path: Path, seconds_before: float = 0.0) -> None:
        self.accelerator, self.path = accelerator, path
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0
        self.images = 0
        self.run_started = time.perf_counter() - seconds_before
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, earlier invocations of a resumed run included."""
        return time.perf_counter() - self.run_started

    def add(self, values: Dict[str, torch.Tensor], images: int) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.count += 1
        self.images += images

    def flush(self, step: int, epoch: int, **values: float) -> Dict[str, float]:
        """Reduce the window over processes and write it with ``values`` (lr, ...); returns the logged row."""
        keys = sorted(self.sums)
        means = torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)
        means = self.accelerator.reduce(means, reduction="mean")
        elapsed = time.perf_counter() - self.started
        row = {"step": step, "epoch": epoch, **dict(zip(keys, means.tolist())), **values,
               "time": round(self.elapsed(), 3),
               "images_per_s": self.images * self.accelerator.num_processes / max(elapsed, 1e-9)}
        self.write(row, step)
        self.sums, self.count, self.images, self.started = {}, 0, 0, time.perf_counter()
        return row

    def write(self, row: Dict[str, float], step: int) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        self.accelerator.log({k: v for k, v in row.items() if k not in ("step", "epoch")}, step=step)


def _trackers() -> list:
    """TensorBoard through accelerate's trackers when it is installed (the ``tensorboard`` extra)."""
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []


def pretrain(config: Config) -> Path:
    """Pretrain the method that ``config`` describes; returns the run directory."""
    output_dir = Path(config.output_dir)
    accelerator = make_accelerator(
        mixed_precision=config.trainer.mixed_precision,
        gradient_accumulation_steps=config.trainer.gradient_accumulation_steps,
        log_with=_trackers(),
        project_dir=str(output_dir),
    )
    micro_batch = _micro_batch(config, accelerator.num_processes)
    checkpoints = Checkpoints(accelerator, output_dir)
    resume_from = _resume_path(config, checkpoints)

    train, val, test = load_splits(config)
    monitor = val if val is not None else test  # the kNN monitor never looks at the test split when there is val
    set_seed(config.trainer.seed)  # the same initial weights on every process
    model = build_method(config, train.channels, distributed=accelerator.num_processes > 1)
    if config.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    set_seed(config.trainer.seed, device_specific=True)  # different views on every process
    optimizer = build_optimizer(model, config)
    loader = BatchLoader(
        train, micro_batch, shuffle=True, drop_last=True, seed=config.trainer.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
        device=accelerator.device,
    )
    accumulation = config.trainer.gradient_accumulation_steps
    steps_per_epoch = len(loader) // accumulation
    if steps_per_epoch == 0:
        raise ConfigError(
            f"trainer.batch_size={config.trainer.batch_size} is larger than the training split "
            f"({len(train)} images); lower it"
        )
    total_steps = config.trainer.epochs * steps_per_epoch
    scheduler = CosineWarmupScheduler(
        optimizer, warmup_epochs=min(int(config.optim.warmup_epochs * steps_per_epoch), total_steps),
        max_epochs=total_steps,
    )
    # The scheduler stays unprepared: accelerate would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)
    progress = Progress()
    accelerator.register_for_checkpointing(scheduler, progress)
    views = MultiView(build_augment(config, train, channels_last=config.trainer.channels_last))
    forward = torch.compile(model) if config.trainer.compile else model

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at epoch {progress.epoch}, step {progress.step}")
    accelerator.init_trackers("sslsec", config={"method": config.method, "sec_weight": config.loss.sec_weight})
    log = MetricsLog(accelerator, output_dir / "metrics.jsonl", seconds_before=progress.seconds)
    core = accelerator.unwrap_model(model)
    bar = tqdm(total=total_steps, initial=progress.step, desc="pretrain",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)

    while progress.epoch < config.trainer.epochs:
        loader.set_epoch(progress.epoch, start_batch=progress.batch)  # mid-epoch after a resume
        model.train()
        for images, _ in loader:
            if progress.batch >= steps_per_epoch * accumulation:
                break
            if config.method == "moco" and progress.batch % accumulation == 0:
                core.update_momentum_encoder(moco_momentum(config, progress.step, total_steps))
            core.criterion.weight_scale = scheduled_weight(1.0, config.loss.sec_schedule, progress.step, total_steps)
            with accelerator.accumulate(model):
                out = _train_step(accelerator, forward, optimizer, views(images), progress, checkpoints)
            progress.batch += 1
            log.add(out._asdict(), len(images))
            if accelerator.sync_gradients:
                scheduler.step()
                progress.step += 1
                bar.update(1)
                if progress.step % config.trainer.log_every == 0:
                    row = log.flush(progress.step, progress.epoch + 1, lr=scheduler.get_last_lr()[0],
                                    sec_weight=config.loss.sec_weight * core.criterion.weight_scale)
                    bar.set_postfix(loss=f"{row['total']:.3f}", norm_std=f"{row['norm_std']:.3f}")
                if config.trainer.max_steps and progress.step >= config.trainer.max_steps:
                    progress.seconds = log.elapsed()
                    checkpoints.save(progress.step)
                    bar.close()
                    accelerator.print(f"stopped at trainer.max_steps={config.trainer.max_steps}")
                    _finish_trackers(accelerator)
                    return output_dir
        progress.epoch, progress.batch = progress.epoch + 1, 0
        _end_of_epoch(config, accelerator, core, train, monitor, progress, checkpoints, log)

    bar.close()
    _save_final(accelerator, core, config, train.channels, output_dir)
    _finish_trackers(accelerator)
    return output_dir


def _train_step(accelerator, model, optimizer, views, progress, checkpoints):
    """Forward, finite check (agreed over processes), backward and optimizer step."""
    bad = torch.zeros((), device=accelerator.device)
    try:
        with accelerator.autocast():
            out = model(*views)
        bad = bad + (~torch.isfinite(out.total.detach())).float()
    except NonFiniteError:
        out, bad = None, bad + 1
    if accelerator.reduce(bad, reduction="sum") > 0:
        latest = checkpoints.latest()
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
        raise TrainingError(
            f"non-finite loss at step {progress.step} (epoch {progress.epoch}); {kept}. "
            "Lower optim.lr, raise optim.warmup_epochs, or use trainer.mixed_precision=bf16 instead of fp16."
        )
    accelerator.backward(out.total)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out


def _end_of_epoch(config, accelerator, core, train, monitor, progress, checkpoints, log) -> None:
    """kNN monitor on ``monitor`` (the validation split when there is one) and the epoch's checkpoint."""
    epoch, last = progress.epoch, progress.epoch == config.trainer.epochs
    if config.trainer.eval_every and (epoch % config.trainer.eval_every == 0 or last):
        top1 = knn_accuracy(
            core.backbone, train, monitor, k=config.eval.knn_k,
            temperature=config.eval.knn_temperature, accelerator=accelerator,
        )
        split = "val" if config.data.val_size is not None else "test"
        log.write({"step": progress.step, "epoch": epoch, "knn_top1": top1, "knn_split": split}, progress.step)
        accelerator.print(f"epoch {epoch}: kNN top-1 {top1:.2f}% ({split})")
    if last or (config.trainer.checkpoint_every and epoch % config.trainer.checkpoint_every == 0):
        progress.seconds = log.elapsed()
        checkpoints.save(progress.step)


def _finish_trackers(accelerator: Accelerator) -> None:
    # Not accelerator.end_training(): it also ends the process group, which a linear probe
    # run right after pretraining (sslsec-pretrain --probe) still needs.
    for tracker in accelerator.trackers:
        tracker.finish()


def _save_final(accelerator, core, config, in_channels, output_dir: Path) -> None:
    if accelerator.is_main_process:
        spec = {"name": config.model.backbone, "in_channels": in_channels,
                "cifar_stem": config.model.cifar_stem}
        save_backbone(core.backbone, output_dir / "backbone.safetensors", spec)
        save_module(core.head, output_dir / "projection_head.safetensors")
        accelerator.print(f"wrote {output_dir / 'backbone.safetensors'}")
    accelerator.wait_for_everyone()
