"""Pretraining under accelerate: ``pretrain(config)`` runs on one CPU, one GPU or many.

The same function serves ``python scripts/pretrain.py`` and ``accelerate launch
[--cpu] [--num_processes N] scripts/pretrain.py``. One :class:`accelerate.Accelerator`
owns devices, mixed precision, gradient accumulation and the process group; views are
made on its device from uint8 batches by the kornia presets.

The loop calls the method's hooks (``before_step``) and never asks which method it runs; the
run directory's layout is :class:`sslsec.runs.RunPaths`.
"""

from __future__ import annotations

import signal
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch
from accelerate.utils import broadcast, set_seed
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn
from tqdm.auto import tqdm

from sslsec.augment import MultiView
from sslsec.config import Config, ConfigError, save_config
from sslsec.data import BatchLoader, load_splits
from sslsec.engine.accelerator import describe_processes, make_accelerator
from sslsec.engine.checkpoint import (Checkpoints, Progress, TrainingError, check_same_recipe, resume_path,
                                      truncate_metrics)
from sslsec.engine.lars import LARS
from sslsec.engine.metrics import MetricsLog, finish_trackers, trackers
from sslsec.engine.precision import precision_name
from sslsec.losses import SECLossOutput
from sslsec.methods import build_augment, build_method, view_size
from sslsec.models import save_backbone, save_module
from sslsec.runs import RunPaths, resume_command

MONITOR_NAMES = {"knn_top1": "kNN top-1", "recall_at_1": "Recall@1", "map_at_r": "MAP@R"}

__all__ = ["NonFiniteWatch", "TrainingError", "build_optimizer", "pretrain", "train_step"]


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """SGD, LARS or Adam on the method's parameter groups (each at its lr factor); no weight decay on norms and
    biases. SGD's and LARS's lr is per 256 images, scaled with the global batch; Adam's is taken as it is."""
    optim = config.optim
    lr = optim.lr if optim.name == "adam" else optim.lr * config.trainer.batch_size / 256
    groups = []
    for modules, scale in model.parameter_groups():
        decay, no_decay = get_weight_decay_parameters(modules)
        groups += [{"params": decay, "weight_decay": optim.weight_decay, "lr": lr * scale},
                   {"params": no_decay, "weight_decay": 0.0, "lr": lr * scale}]
    groups = [group for group in groups if group["params"]]
    if optim.name == "lars":
        return LARS(groups, lr=lr, momentum=optim.momentum)
    if optim.name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)


def _micro_batch(config: Config, num_processes: int) -> int:
    trainer = config.trainer
    parts = num_processes * trainer.gradient_accumulation_steps
    if trainer.batch_size % parts:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} must be divisible by processes x "
            f"gradient_accumulation_steps = {parts}"
        )
    return trainer.batch_size // parts


class NonFiniteWatch:
    """The first optimizer step whose loss was NaN or Inf, kept on the device; and the steps fp16 skipped.

    :meth:`record` runs every step without reading anything back from the device; :meth:`check` gathers
    the record of every process (one collective, taken by all of them at the same steps, so a NaN on one
    process never leaves the others waiting) and raises :class:`TrainingError` naming the step. The trainer
    checks at every log interval and before every checkpoint, so no checkpoint is written after a bad step.

    Under fp16 the loss scaler skips a step whose scaled gradients overflowed and halves its scale: that is how
    loss scaling finds its scale, not a diverged run (:meth:`record_skipped_step`). A run has diverged when the
    loss itself is not finite, or when the scaler still skips at a loss scale of 1 or less: then the gradients
    are not finite even unscaled. Every process sees the same skips (the scaler reads the all-reduced gradients).
    """

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.first_bad = torch.full((1,), -1, dtype=torch.long, device=accelerator.device)
        self.skipped_steps = 0
        self.bad_gradients: Optional[Tuple[int, float]] = None  # (step, loss scale) of the first unscaled overflow

    def record(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()).reshape(1)
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def record_skipped_step(self, step: int, loss_scale: Optional[float]) -> None:
        """The fp16 loss scaler skipped optimizer step ``step``, taken at ``loss_scale`` (None: not known)."""
        self.skipped_steps += 1
        if loss_scale is not None and loss_scale <= 1 and self.bad_gradients is None:
            self.bad_gradients = (step, loss_scale)

    def check(self, steps_per_epoch: int, checkpoints: Optional[Checkpoints] = None) -> None:
        firsts = self.accelerator.gather(self.first_bad)
        firsts = firsts[firsts >= 0]
        if len(firsts) == 0 and self.bad_gradients is None:
            return
        latest = checkpoints.latest() if checkpoints is not None else None
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
        if len(firsts) and (self.bad_gradients is None or int(firsts.min()) <= self.bad_gradients[0]):
            step = int(firsts.min())
            what = f"non-finite loss at step {step} (epoch {step // steps_per_epoch + 1})"
        else:
            step, scale = self.bad_gradients
            what = (f"non-finite gradients at step {step} (epoch {step // steps_per_epoch + 1}), skipped by the fp16 "
                    f"loss scaler at a loss scale of {scale:g}, so not from the scaling")
        raise TrainingError(
            f"{what}; {kept}. "
            "Lower optim.lr, raise optim.warmup_epochs, or use trainer.mixed_precision=bf16 or no instead of fp16."
        )


class StopRequest:
    """SIGTERM (a cluster pre-empting the job) or SIGINT (Ctrl-C) asks the run to stop at a step boundary.

    The handlers only set a flag. One process decides alone at every step; several agree at every log
    interval (accelerate's ``set_trigger`` / ``check_trigger``: one all-reduce, taken by all of them at the same
    step), so each checkpoints the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, accelerator) -> None:
        self.accelerator, self.signal_name = accelerator, None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def requested(self, step: int, interval: int) -> bool:
        if self.accelerator.num_processes == 1:
            return self.signal_name is not None
        if step % interval:
            return False
        if self.signal_name is not None:
            self.accelerator.set_trigger()  # not in the handler: no device work inside a signal handler
        if self.accelerator.check_trigger():  # one all-reduce of every process's trigger
            self.signal_name = self.signal_name or "a signal to another process"
            return True
        return False

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def pretrain(config: Config) -> Path:
    """Pretrain the method that ``config`` describes; returns the run directory."""
    output_dir = Path(config.output_dir)
    accelerator = make_accelerator(
        mixed_precision=config.trainer.mixed_precision,
        gradient_accumulation_steps=config.trainer.gradient_accumulation_steps,
        log_with=trackers(),
        project_dir=str(output_dir),
    )
    accelerator.print(f"precision: {precision_name(accelerator.mixed_precision)} ({accelerator.precision_reason})")
    if accelerator.num_processes > 1:  # printed on every node: each node's log shows the run it joined
        accelerator.print(describe_processes(accelerator))
    micro_batch = _micro_batch(config, accelerator.num_processes)
    checkpoints = Checkpoints(accelerator, output_dir)
    resume_from = resume_path(config, checkpoints)
    if resume_from is not None:
        check_same_recipe(config)  # config.yaml keeps saying how the weights were trained

    train, val, test = load_splits(config)
    # In-memory splits move to the device once: the training loader and every kNN monitor cut batches from that copy.
    train = train.to(accelerator.device)
    # The monitor never looks at the test split when there is a validation split.
    monitor = ("val", val.to(accelerator.device)) if val is not None else ("test", test.to(accelerator.device))
    set_seed(config.trainer.seed)  # the same initial weights on every process
    model = build_method(config, train.channels, distributed=accelerator.num_processes > 1,
                         num_classes=train.num_classes)
    _check_view_size(model.backbone, train.channels, view_size(config, train), config)
    if config.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.trainer.compile:
        model.compile_networks()  # backbone and head only: the loss and the DDP wrapper stay eager
    set_seed(config.trainer.seed, device_specific=True)  # different views on every process
    optimizer = build_optimizer(model, config)
    loader = BatchLoader(
        train, micro_batch, shuffle=True, drop_last=True, seed=config.trainer.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
        device=accelerator.device, images_per_class=model.images_per_class, num_workers=config.data.num_workers,
    )
    _check_classes_per_batch(model.images_per_class, micro_batch * accelerator.num_processes, train, config)
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
    with warnings.catch_warnings():  # torch 2.14 renames DDP's broadcast_buffers; its successor syncs them at init
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        model, optimizer = accelerator.prepare(model, optimizer)
    progress = Progress(processes=accelerator.num_processes)
    accelerator.register_for_checkpointing(scheduler, progress)
    views = MultiView(build_augment(config, train, channels_last=config.trainer.channels_last),
                      n_views=accelerator.unwrap_model(model).n_views)
    watch = NonFiniteWatch(accelerator)

    paths = RunPaths(output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None or not paths.config.is_file():
            save_config(config, paths.config)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        if accelerator.is_main_process:
            truncate_metrics(paths.metrics, progress.step)  # the steps after the checkpoint are logged again
        accelerator.print(_resumed_message(config, resume_from, progress))
        if progress.processes != accelerator.num_processes:
            if accelerator.is_main_process:
                warnings.warn(f"this run was checkpointed by {progress.processes} process(es) and resumes with "
                              f"{accelerator.num_processes}: it goes on with the same global batch and data order, "
                              "but each rank draws its own views, so it will not be bit-identical to an uninterrupted "
                              f"run; launch {progress.processes} process(es) for that", stacklevel=2)
            progress.processes = accelerator.num_processes  # what the next checkpoint records
    if resume_from is not None and _at_max_steps(config, progress):
        accelerator.print(f"trainer.max_steps={config.trainer.max_steps} is already reached (step {progress.step}); "
                          f"nothing was trained. To finish the run: "
                          f"{resume_command(config, changes={'trainer.max_steps': None})}")
        return output_dir
    accelerator.init_trackers("sslsec", config={"method": config.method, "sec_weight": config.loss.sec_weight,
                                                "mixed_precision": accelerator.mixed_precision})
    log = MetricsLog(accelerator, paths.metrics, seconds_before=progress.seconds, step=progress.step)
    # Per invocation: a run resumed on another machine may train on in another precision under "auto".
    log.note({"step": progress.step, "epoch": progress.epoch + 1, "mixed_precision": accelerator.mixed_precision,
              "precision_reason": accelerator.precision_reason})
    stop = StopRequest(accelerator)
    bar = tqdm(total=total_steps, initial=progress.step, desc="pretrain",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    try:
        core = accelerator.unwrap_model(model)
        core.defer_finite_checks()  # the watch checks the loss instead, without a sync per step

        while progress.epoch < config.trainer.epochs:
            loader.set_epoch(progress.epoch, start_batch=progress.batch)  # mid-epoch after a resume
            model.train()
            for images, labels in loader:
                if progress.batch >= steps_per_epoch * accumulation:
                    break
                if progress.batch % accumulation == 0:
                    core.before_step(progress.step, total_steps)  # the method's hooks: SEC schedule, MoCo momentum
                with accelerator.accumulate(model):
                    out = train_step(accelerator, model, optimizer, views(images), labels)
                watch.record(out.total, progress.step)
                progress.batch += 1
                log.add(out._asdict(), len(images))
                if accelerator.sync_gradients:
                    if not _advance(accelerator, scheduler, progress, watch):
                        continue  # skipped by the fp16 loss scaler: the same step again, with the next batch
                    bar.update(1)
                    if progress.step % config.trainer.log_every == 0:
                        watch.check(steps_per_epoch, checkpoints)
                        row = _flush(log, progress, scheduler, config, core, watch)
                        bar.set_postfix(loss=f"{row['total']:.3f}", norm_std=f"{row['norm_std']:.3f}")
                    every = config.trainer.checkpoint_every_steps
                    if every and progress.step % every == 0 and progress.batch < steps_per_epoch * accumulation:
                        _checked_save(watch, checkpoints, progress, log, steps_per_epoch)  # epoch ends: below
                    limit = _at_max_steps(config, progress)
                    if limit or stop.requested(progress.step, config.trainer.log_every):
                        _flush(log, progress, scheduler, config, core, watch)
                        saved = _checked_save(watch, checkpoints, progress, log, steps_per_epoch)
                        bar.close()
                        accelerator.print(_stop_message(config, accelerator, progress, saved,
                                                        None if limit else stop.signal_name))
                        finish_trackers(accelerator)
                        return output_dir
            _flush(log, progress, scheduler, config, core, watch)  # the epoch's last, partial log interval
            progress.epoch, progress.batch = progress.epoch + 1, 0
            watch.check(steps_per_epoch, checkpoints)  # before the epoch's kNN monitor and checkpoint
            _end_of_epoch(config, accelerator, core, train, monitor, progress, checkpoints, log)

        bar.close()
        _save_final(accelerator, core, config, train.channels, output_dir)
        finish_trackers(accelerator)
        return output_dir
    except BaseException:
        bar.leave = False  # cleared: the error is the line the user reads
        raise
    finally:
        bar.close()
        stop.restore()  # the caller's own signal handlers are back after the run, whatever happened


def _flush(log: MetricsLog, progress: Progress, scheduler, config: Config, core: nn.Module,
           watch: NonFiniteWatch) -> Optional[dict]:
    """Write the steps logged since the last row (a whole ``trainer.log_every`` interval, or the partial one an
    epoch or a stop ends with) as one metrics.jsonl row; None when there are none. Under fp16 the row also counts
    the steps the loss scaler skipped so far."""
    skipped = {} if watch.accelerator.scaler is None else {"skipped_steps": watch.skipped_steps}
    return log.flush(progress.step, progress.epoch + 1, lr=scheduler.get_last_lr()[0],
                     sec_weight=config.loss.sec_weight * core.sec_weight_scale, **skipped)


def _at_max_steps(config: Config, progress: Progress) -> bool:
    """The run has taken ``trainer.max_steps`` optimizer steps (or more) and must train no further step."""
    return config.trainer.max_steps is not None and progress.step >= config.trainer.max_steps


def _resumed_message(config: Config, resume_from: Path, progress: Progress) -> str:
    """Where a resumed run stands: its epoch (1-based, as the rows of metrics.jsonl), or that it is finished."""
    epochs = config.trainer.epochs
    if progress.epoch >= epochs:
        return (f"resumed from {resume_from} at step {progress.step}: the run is finished (all {epochs} epochs "
                "trained); nothing to train, its final weights are written again")
    return f"resumed from {resume_from} at step {progress.step}, in epoch {progress.epoch + 1} of {epochs}"


def _stop_message(config: Config, accelerator, progress: Progress, saved: Path, signal_name: Optional[str]) -> str:
    """Where the run stopped and the command that continues it (with the launcher, when several processes)."""
    where = f"at step {progress.step}, in epoch {progress.epoch + 1} of {config.trainer.epochs}; checkpoint {saved}"
    if signal_name is None:
        why, changes = f"stopped at trainer.max_steps={config.trainer.max_steps}", {"trainer.max_steps": None}
    else:
        why, changes = f"stopped by {signal_name}", {}
    command = resume_command(config, changes=changes)
    if accelerator.num_processes > 1:
        return f"{why} {where}. To resume, start it again with your launcher ({accelerator.num_processes} " \
               f"processes) and: {command}"
    return f"{why} {where}. To resume: {command}"


@torch.no_grad()
def _check_view_size(backbone: nn.Module, channels: int, size: int, config: Config) -> None:
    """One error line, before the run directory exists, for views the backbone cannot take (too small)."""
    was_training = backbone.training
    try:
        backbone.eval()(torch.zeros(1, channels, size, size))
    except RuntimeError:
        raise ConfigError(f"{size} px views are too small for model.backbone={config.model.backbone}"
                          f"{' (cifar_stem=false)' if not config.model.cifar_stem else ''}: its downsampling "
                          "leaves nothing; use larger images or data.crop_size, or another backbone") from None
    finally:
        backbone.train(was_training)


def _checked_save(watch: NonFiniteWatch, checkpoints: Checkpoints, progress: Progress, log: MetricsLog,
                  steps_per_epoch: int) -> Path:
    """A mid-epoch checkpoint: the loss checked first (none is written after a bad step), the time recorded."""
    watch.check(steps_per_epoch, checkpoints)
    progress.seconds = log.elapsed()
    return checkpoints.save(progress.step)


def _advance(accelerator, scheduler, progress: Progress, watch: NonFiniteWatch) -> bool:
    """After an optimizer step: the LR schedule and the step count move on (``True``), unless the fp16 loss scaler
    skipped the step (its scaled gradients overflowed; it lowered its scale instead), which trained nothing: then
    ``progress.step``, and so the LR, the SEC weight and MoCo's momentum, stay for the next batch (``False``)."""
    if accelerator.optimizer_step_was_skipped:
        scaler = accelerator.scaler  # the scale was halved after the skip: the step was taken at twice it
        loss_scale = None if scaler is None else scaler.get_scale() / scaler.get_backoff_factor()
        watch.record_skipped_step(progress.step, loss_scale)
        return False
    scheduler.step()
    progress.step += 1
    return True


def train_step(accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, views,
               labels: Optional[torch.Tensor] = None) -> SECLossOutput:
    """One micro-batch: forward under autocast, backward, optimizer step (a no-op while accumulating).

    ``labels`` reach the method (metric learning uses them; SimCLR and MoCo ignore them). Nothing is read back
    from the device here: a non-finite loss is caught by :class:`NonFiniteWatch`.
    """
    with accelerator.autocast():
        out = model(*views, labels=labels)
    accelerator.backward(out.total)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out


def _end_of_epoch(config, accelerator, core, train, monitor, progress, checkpoints, log) -> None:
    """The method's monitor (kNN, or retrieval for metric learning) on ``monitor`` (the validation split when there
    is one) and the epoch's checkpoint."""
    epoch, last = progress.epoch, progress.epoch == config.trainer.epochs
    if config.trainer.eval_every and (epoch % config.trainer.eval_every == 0 or last):
        _share_batchnorm_statistics(core.backbone)
        split, dataset = monitor
        scores = core.monitor(train, dataset, config, accelerator)
        log.write({"step": progress.step, "epoch": epoch, **scores, "monitor_split": split}, progress.step)
        accelerator.print(f"epoch {epoch}: " + ", ".join(f"{MONITOR_NAMES.get(key, key)} {value:.2f}%"
                                                         for key, value in scores.items()) + f" ({split})")
    if last or (config.trainer.checkpoint_every and epoch % config.trainer.checkpoint_every == 0):
        progress.seconds = log.elapsed()
        checkpoints.save(progress.step)


def _check_classes_per_batch(images_per_class: Optional[int], global_batch: int, train, config: Config) -> None:
    """Class-balanced batches (metric learning) need as many training classes as a batch has: one line, before any
    work, naming the keys that set both (the split's classes are what data.val_classes / train_classes leave)."""
    if images_per_class is None:
        return
    needed, present = global_batch // images_per_class, len(train.labels.unique())
    if present < needed:
        raise ConfigError(f"a batch of trainer.batch_size={config.trainer.batch_size} images holds {needed} classes of "
                          f"metric.images_per_class={images_per_class}, but the training split has {present} classes "
                          f"(data.train_classes / data.val_classes); lower trainer.batch_size to at most "
                          f"{present * images_per_class} or raise metric.images_per_class")


def _share_batchnorm_statistics(backbone: nn.Module) -> None:
    """Give every process the main process's buffers (BatchNorm running statistics), which drift apart because DDP
    broadcasts no buffers (``make_accelerator``): the kNN monitor then scores, on every process, the backbone that is
    saved. In place; nothing to do in one process."""
    broadcast(list(backbone.buffers()), from_process=0)


def _save_final(accelerator, core, config, in_channels, output_dir: Path) -> None:
    if accelerator.is_main_process:
        spec = type(core).backbone_spec(config, in_channels)
        paths = RunPaths(output_dir)
        save_backbone(core.backbone, paths.backbone, spec)
        if core.head.state_dict():  # metric learning's NoHead has no weights: no empty file
            save_module(core.head, paths.projection_head)
        if getattr(core, "predictor", None) is not None:  # BYOL, SimSiam: the predictions are what SEC regularizes
            save_module(core.predictor, paths.prediction_head)
        accelerator.print(f"wrote {paths.backbone}")
    accelerator.wait_for_everyone()
