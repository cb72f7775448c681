import json
import math
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sslsec.config import ConfigError, load_config
from sslsec.models import load_backbone
from sslsec.engine import TrainingError, pretrain
from sslsec.runs import RunError, load_projection_head, load_sec_head
from tests.launch import cpu_env, torchrun

ROOT = Path(__file__).parents[2]


def _overrides(npz_root, output_dir, *extra):
    return [
        "data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn",
        "model.projection_hidden_dim=64", "model.projection_dim=32", "moco.queue_size=64",
        "trainer.batch_size=32", "trainer.epochs=2", "trainer.log_every=1", "trainer.eval_every=1",
        "trainer.checkpoint_every=1", "optim.warmup_epochs=0", "eval.knn_k=10",
        "trainer.mixed_precision=no",  # fp32 on any machine; auto and bf16 are tests/engine/test_precision.py's
        f"output_dir={output_dir}", *extra,
    ]


def _metrics(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "total" in r], [r for r in rows if "knn_top1" in r]


@pytest.mark.slow
def test_simclr_run_logs_finite_decreasing_loss_and_writes_its_outputs(npz_root, tmp_path):
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.epochs=4",
                                                "optim.lr=0.5", "loss.sec_weight=0.1")))
    steps, knn = _metrics(run)
    losses = [r["total"] for r in steps]
    assert len(steps) == 16 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) < sum(losses[:4])
    assert {"contrastive", "sec", "norm_mean", "norm_std", "lr", "images_per_s"} <= set(steps[0])
    assert [r["epoch"] for r in knn] == [1, 2, 3, 4] and all(0 <= r["knn_top1"] <= 100 for r in knn)

    backbone = load_backbone(run / "backbone.safetensors")
    assert backbone(torch.zeros(2, 1, 16, 16)).shape == (2, backbone.feature_dim)
    assert load_config(run / "config.yaml").loss.sec_weight == 0.1
    assert "layers.0.weight" in load_file(run / "projection_head.safetensors")
    assert not (run / "prediction_head.safetensors").exists()  # SimCLR has no predictor


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_byol_and_simsiam_runs_save_the_predictor_that_the_norm_diagnostics_apply(npz_root, tmp_path, method):
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", f"method={method}", "trainer.epochs=1",
                                                "trainer.eval_every=0")))
    config, backbone = load_config(run / "config.yaml"), load_backbone(run / "backbone.safetensors")
    head = load_sec_head(run, config, backbone.feature_dim).eval()
    projector, predictor = load_projection_head(run, config, backbone.feature_dim).eval(), head[1]
    trained = torch.load(next((run / "checkpoints").glob("step_*/pytorch_model.bin")), weights_only=True)
    predictor_weights = {key.removeprefix("predictor."): value for key, value in trained.items()
                         if key.startswith("predictor.")}
    assert predictor_weights.keys() == predictor.state_dict().keys()  # the last step's predictor, all of it
    assert all(torch.equal(predictor.state_dict()[key], value) for key, value in predictor_weights.items())
    features = torch.randn(4, backbone.feature_dim)
    with torch.no_grad():
        projections, predictions = projector(features), head(features)
    assert predictions.shape == projections.shape and not torch.allclose(predictions, projections)
    (run / "prediction_head.safetensors").unlink()
    with pytest.raises(RunError, match="prediction_head.safetensors is missing"):
        load_sec_head(run, config, backbone.feature_dim)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "simsiam"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(npz_root, tmp_path, method):
    extra = [f"method={method}", "trainer.eval_every=0", "loss.sec_weight=0.5", "loss.sec_momentum=0.1",
             "byol.momentum=0.9"]  # BYOL: a target that moves visibly within the 8 steps
    straight = pretrain(load_config(None, _overrides(npz_root, tmp_path / "straight", *extra)))

    interrupted = tmp_path / "interrupted"
    pretrain(load_config(None, _overrides(npz_root, interrupted, *extra, "trainer.max_steps=6")))
    assert not (interrupted / "backbone.safetensors").exists()
    (interrupted / "checkpoints" / ".partial_step_00000007").mkdir()  # a save killed half-way
    pretrain(load_config(None, _overrides(npz_root, interrupted, *extra, "resume=true")))

    expected, resumed = load_file(straight / "backbone.safetensors"), load_file(interrupted / "backbone.safetensors")
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    last_straight, last_resumed = _metrics(straight)[0][-1], _metrics(interrupted)[0][-1]
    assert (last_straight["step"], last_straight["total"]) == (last_resumed["step"], last_resumed["total"])


def test_linear_sec_schedule_is_logged_per_step_and_exact_across_a_resume(npz_root, tmp_path):
    extra = ["trainer.eval_every=0", "loss.sec_weight=0.7", "loss.sec_schedule=linear", "loss.norm_penalty_weight=0.1"]
    straight = pretrain(load_config(None, _overrides(npz_root, tmp_path / "straight", *extra)))
    interrupted = tmp_path / "interrupted"
    pretrain(load_config(None, _overrides(npz_root, interrupted, *extra, "trainer.max_steps=3")))
    pretrain(load_config(None, _overrides(npz_root, interrupted, *extra, "resume=true")))

    rows = _metrics(straight)[0]
    total = len(rows)  # log_every=1: one row per step; row n holds step n - 1 (0-based) of 8
    assert total == 8
    assert [r["sec_weight"] for r in rows] == pytest.approx([0.7 * (r["step"] - 1) / (total - 1) for r in rows])
    assert rows[0]["sec_weight"] == 0 and rows[-1]["sec_weight"] == pytest.approx(0.7)
    times = [r["time"] for r in rows]
    assert times == sorted(times) and all(r["images_per_s"] > 0 for r in rows)
    resumed = _metrics(interrupted)[0]
    assert [r["sec_weight"] for r in resumed[-5:]] == pytest.approx([r["sec_weight"] for r in rows[-5:]])
    expected, got = load_file(straight / "backbone.safetensors"), load_file(interrupted / "backbone.safetensors")
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_a_finished_run_is_not_overwritten_without_resume(npz_root, tmp_path):
    config = load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.max_steps=1"))
    pretrain(config)
    with pytest.raises(TrainingError, match="already holds a run; pass resume=true"):
        pretrain(config)


def test_a_diverging_run_stops_with_the_step_named(npz_root, tmp_path):
    config = load_config(None, _overrides(npz_root, tmp_path / "run", "optim.lr=1e30", "trainer.eval_every=0"))
    with pytest.raises(TrainingError, match=r"non-finite loss at step \d+ \(epoch \d\); ") as checked_every_step:
        pretrain(config)
    # Checked once per 6 steps (no sync per step), the error still names the first bad step, and no
    # checkpoint is written after it.
    later = load_config(None, _overrides(npz_root, tmp_path / "later", "optim.lr=1e30", "trainer.eval_every=0",
                                         "trainer.log_every=6"))
    with pytest.raises(TrainingError) as checked_later:
        pretrain(later)
    first_bad = int(str(checked_every_step.value).split("step ")[1].split(" ")[0])
    assert str(checked_later.value).startswith(f"non-finite loss at step {first_bad} ")
    saved = sorted((tmp_path / "later" / "checkpoints").glob("step_*"))
    assert all(int(path.name.split("_")[1]) <= first_bad for path in saved)


def test_a_batch_that_does_not_split_over_processes_is_a_config_error(npz_root, tmp_path):
    config = load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.batch_size=30",
                                          "trainer.gradient_accumulation_steps=4"))
    with pytest.raises(ConfigError, match="trainer.batch_size=30 must be divisible"):
        pretrain(config)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "simsiam"])
def test_two_cpu_processes_train_on_the_global_batch(npz_root, tmp_path, method):
    run = tmp_path / "run"
    result = subprocess.run(
        torchrun(ROOT / "scripts" / "pretrain.py", *_overrides(npz_root, run, f"method={method}",
                                                               "trainer.checkpoint_every=0", "moco.queue_size=512")),
        capture_output=True, text=True, env=cpu_env(OMP_NUM_THREADS="1"), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps, knn = _metrics(run)
    assert len(steps) == 8 and all(torch.isfinite(torch.tensor([r["total"] for r in steps])))
    assert len(knn) == 2 and (run / "backbone.safetensors").is_file()
    if method == "simclr":
        # 16 images per process, 32 per step: with the negatives of both processes the first loss is
        # near log(2 * 32 - 1) = 4.14; with this process's alone it would be near log(2 * 16 - 1) = 3.43.
        assert steps[0]["contrastive"] > math.log(47)
    if method == "moco":
        checkpoint = torch.load(next((run / "checkpoints").glob("step_*")) / "pytorch_model.bin", weights_only=False)
        assert int(checkpoint["criterion._extra_state"]["bank_ptr"]) == 8 * 32  # keys of both processes


@pytest.mark.parametrize("center_crop, scored_at", [(True, 12), (False, None)])
def test_knn_monitor_scores_center_crops_or_whole_images_of_views_trained_smaller(npz_root, tmp_path, monkeypatch,
                                                                                  center_crop, scored_at):
    import sslsec.methods.base as base

    seen = []
    real = base.knn_accuracy
    monkeypatch.setattr(base, "knn_accuracy", lambda *args, **kwargs: seen.append(kwargs["crop_size"]) or
                        real(*args, **kwargs))
    pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.epochs=1", "data.crop_size=12",
                                          f"eval.center_crop={str(center_crop).lower()}")))
    assert seen == [scored_at]


def test_a_run_shorter_than_log_every_logs_its_loss_once_per_epoch(npz_root, tmp_path):
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.batch_size=16",
                                                "data.train_limit=80", "trainer.log_every=20", "trainer.epochs=1",
                                                "trainer.eval_every=0")))  # 80 / 16: 5 steps in all
    steps, _ = _metrics(run)
    assert [(row["step"], row["epoch"], row["steps"]) for row in steps] == [(5, 1, 5)]
    assert math.isfinite(steps[0]["total"]) and steps[0]["images_per_s"] > 0


def test_a_resume_stops_exactly_at_max_steps_and_the_suggested_command_finishes_the_run(npz_root, tmp_path, capsys):
    from sslsec.cli import pretrain_main
    from sslsec.runs import RunError, finished_run

    run_dir = tmp_path / "run"
    args = _overrides(npz_root, run_dir, "trainer.batch_size=16", "data.train_limit=80", "trainer.eval_every=0")
    latest = lambda: (run_dir / "checkpoints" / "latest").read_text().strip()  # noqa: E731
    pretrain(load_config(None, [*args, "trainer.max_steps=2"]))
    assert latest() == "step_00000002"

    capsys.readouterr()
    pretrain(load_config(None, [*args, "trainer.max_steps=2", "resume=true"]))  # already there: not one more step
    out = capsys.readouterr().out
    assert "trainer.max_steps=2 is already reached (step 2); nothing was trained" in out
    assert latest() == "step_00000002" and max(row["step"] for row in _metrics(run_dir)[0]) == 2
    pretrain(load_config(None, [*args, "trainer.max_steps=4", "resume=true"]))  # 5 steps an epoch: mid-epoch
    assert latest() == "step_00000004" and max(row["step"] for row in _metrics(run_dir)[0]) == 4

    with pytest.raises(RunError) as error:  # what the probe says of the unfinished run; config.yaml has max_steps=2
        finished_run(run_dir)
    command = shlex.split(str(error.value).split("finish the run with: ")[1])
    assert command[-2:] == ["trainer.max_steps=null", "resume=auto"]
    pretrain_main(command[1:])
    assert (run_dir / "backbone.safetensors").is_file() and latest() == "step_00000010"

    capsys.readouterr()
    pretrain(load_config(None, [*args, "resume=true"]))  # a finished run: said so, not "epoch 3 of 2"
    out = capsys.readouterr().out
    assert "at step 10: the run is finished (all 2 epochs trained)" in out and "epoch 3" not in out
    assert latest() == "step_00000010"


def test_a_stop_logs_its_partial_interval_and_prints_the_command_that_resumes_it(npz_root, tmp_path, capsys):
    from sslsec.cli import pretrain_main

    run_dir = tmp_path / "run"
    pretrain(load_config(None, _overrides(npz_root, run_dir, "trainer.batch_size=16", "data.train_limit=80",
                                          "trainer.log_every=20", "trainer.eval_every=0", "trainer.max_steps=3")))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("stopped at"))
    assert line.startswith("stopped at trainer.max_steps=3 at step 3, in epoch 1 of 2; checkpoint ")
    command = shlex.split(line.split("To resume: ")[1])
    assert command[:3] == ["sslsec-pretrain", "--config", str(run_dir / "config.yaml")]
    assert command[3:] == ["trainer.max_steps=null", "resume=true"]

    pretrain_main(command[1:])  # the printed command, as the console script parses it
    assert "at step 3, in epoch 1 of 2" in capsys.readouterr().out  # the resume line, 1-based as the rows
    assert (run_dir / "backbone.safetensors").is_file()
    steps, _ = _metrics(run_dir)  # the stop's partial interval, then the rest of epoch 1, then epoch 2
    assert [(row["step"], row["epoch"], row["steps"]) for row in steps] == [(3, 1, 3), (5, 1, 2), (10, 2, 5)]
def test_steps_the_fp16_loss_scaler_skips_move_neither_the_schedules_nor_the_step_count(npz_root, tmp_path,
                                                                                        monkeypatch):
    """fp16 needs a GPU, so the scaler's verdict is mocked here (tests/test_gpu.py overflows a real one): the 3rd
    and 4th of 8 batches overflow. The run then takes 6 steps whose LR, SEC weight and MoCo momentum are those of
    the first 6 steps of a run without overflow, and MoCo's key encoder moves once per step taken."""
    from accelerate import Accelerator

    from sslsec.methods import MoCo

    steps, momenta = [], []
    before_step, update = MoCo.before_step, MoCo.update_momentum_encoder
    monkeypatch.setattr(MoCo, "before_step", lambda self, step, total: steps.append(step) or
                        before_step(self, step, total))
    monkeypatch.setattr(MoCo, "update_momentum_encoder", lambda self, m: momenta.append(m) or update(self, m))
    extra = ["method=moco", "moco.batch_norm=none", "moco.cosine_momentum=true", "loss.sec_weight=0.5",
             "loss.sec_schedule=linear", "optim.warmup_epochs=1", "trainer.eval_every=0"]
    reference = _metrics(pretrain(load_config(None, _overrides(npz_root, tmp_path / "reference", *extra))))[0]
    reference_momenta, momenta[:], steps[:] = list(momenta), [], []

    verdicts = iter([False, False, True, True, False, False, False, False])
    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(lambda self: next(verdicts)))
    run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "skipped", *extra)))
    rows = _metrics(run)[0]

    assert steps == [0, 1, 2, 2, 2, 3, 4, 5]  # the method is asked for step 2 until one is taken
    assert [r["step"] for r in rows] == list(range(1, 7)) and [r["epoch"] for r in rows] == [1, 1, 2, 2, 2, 2]
    for key in ("lr", "sec_weight"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in reference[:6]])
    assert len({r["sec_weight"] for r in rows}) == 6 and len({r["lr"] for r in rows}) >= 4  # schedules that move
    assert len(reference_momenta) == 8 and momenta == pytest.approx(reference_momenta[:6])
    assert sorted(path.name for path in (run / "checkpoints").glob("step_*"))[-1] == "step_00000006"


def test_the_watch_tells_a_skipped_fp16_step_from_gradients_that_overflow_unscaled():
    from sslsec.engine.accelerator import make_accelerator
    from sslsec.engine.trainer import NonFiniteWatch

    watch = NonFiniteWatch(make_accelerator(mixed_precision="no"))
    watch.record_skipped_step(2, 65536.0)  # the scaler finding its scale
    watch.record_skipped_step(3, 32768.0)
    watch.check(steps_per_epoch=4)
    assert watch.skipped_steps == 2

    watch.record_skipped_step(5, 1.0)  # overflow without any scaling: a diverged run
    watch.record_skipped_step(6, 0.5)
    watch.record(torch.tensor(float("nan")), 6)
    with pytest.raises(TrainingError, match=r"^non-finite gradients at step 5 \(epoch 2\), skipped by the fp16 loss "
                                            r"scaler at a loss scale of 1, so not from the scaling; no checkpoint"):
        watch.check(steps_per_epoch=4)

    earlier_loss = NonFiniteWatch(make_accelerator(mixed_precision="no"))
    earlier_loss.record(torch.tensor(float("inf")), 4)
    earlier_loss.record_skipped_step(5, 0.5)
    with pytest.raises(TrainingError, match=r"^non-finite loss at step 4 \(epoch 2\)"):
        earlier_loss.check(steps_per_epoch=4)


def test_a_resume_with_another_number_of_processes_says_it_will_not_be_bit_identical(npz_root, tmp_path):
    from sslsec.engine.checkpoint import write_manifest

    run_dir = tmp_path / "run"
    args = ["trainer.batch_size=16", "data.train_limit=80", "trainer.eval_every=0"]
    pretrain(load_config(None, _overrides(npz_root, run_dir, *args, "trainer.max_steps=3")))
    checkpoint = max((run_dir / "checkpoints").glob("step_*"))
    (state_file,) = [path for path in checkpoint.glob("custom_checkpoint_*.pkl")
                     if "processes" in torch.load(path, weights_only=False)]
    state = torch.load(state_file, weights_only=False)
    assert state["processes"] == 1  # what this one process recorded
    torch.save({**state, "processes": 2}, state_file)  # as if two processes had trained up to here
    write_manifest(checkpoint)

    with pytest.warns(UserWarning, match="checkpointed by 2 process.*resumes with 1.*not be bit-identical"):
        pretrain(load_config(None, _overrides(npz_root, run_dir, *args, "resume=true")))
    assert (run_dir / "backbone.safetensors").is_file()
    final = max((run_dir / "checkpoints").glob("step_*"))
    (state_file,) = [path for path in final.glob("custom_checkpoint_*.pkl")
                     if "processes" in torch.load(path, weights_only=False)]
    assert torch.load(state_file, weights_only=False)["processes"] == 1
