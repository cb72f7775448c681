"""Runs that survive: a real SIGKILL at a random step, SIGTERM, resume where there is nothing to resume, and a
changed recipe on resume. The training runs are real subprocesses of scripts/pretrain.py."""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launch import cpu_env, torchrun

REPO = Path(__file__).resolve().parents[2]
ENV = cpu_env(OMP_NUM_THREADS="1")  # the CPU, and the same threads in every run: bit-identical reductions


def _argv(npz_root, output_dir, *extra):
    return [sys.executable, str(REPO / "scripts" / "pretrain.py"), "data.name=npz", f"data.root={npz_root}",
            "model.backbone=small_cnn", "model.projection_hidden_dim=64", "model.projection_dim=32",
            "trainer.batch_size=16", "trainer.epochs=2", "trainer.log_every=1", "trainer.eval_every=0",
            "trainer.checkpoint_every_steps=1", "optim.warmup_epochs=0", "loss.sec_weight=0.3",
            "loss.sec_schedule=linear", "loss.sec_momentum=0.1", "trainer.mixed_precision=no",
            f"output_dir={output_dir}", *extra]


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300, **kwargs)


def _steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "total" in row]  # the step rows, not each invocation's precision row


def _start_and_wait_for(argv, run_dir, rows):
    """Start a training subprocess and return it once metrics.jsonl holds ``rows`` complete rows."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
                               start_new_session=True)  # its own process group: a launcher and its workers
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= rows:
            return process
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the run ended or stalled before logging {rows} rows: {process.communicate()[1][-2000:]}")


def _torchrun(npz_root, output_dir, *extra):
    return torchrun(*_argv(npz_root, output_dir, *extra)[1:])


@pytest.mark.slow
@pytest.mark.parametrize("launch", [_argv, _torchrun], ids=["one_process", "two_processes"])
def test_sigkill_at_a_random_step_then_resume_is_bit_identical_with_no_duplicate_rows(npz_root, tmp_path, launch):
    straight = _run(launch(npz_root, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_at = random.randint(2, 14)  # 16 global steps in all, with one process or two; any step must do
    victim = _start_and_wait_for(launch(npz_root, tmp_path / "killed"), tmp_path / "killed", killed_at)
    os.killpg(victim.pid, signal.SIGKILL)  # the whole group: with torchrun, the launcher and both workers at once
    victim.communicate()
    resumed = _run(launch(npz_root, tmp_path / "killed", "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected = load_file(tmp_path / "straight" / "backbone.safetensors")
    got = load_file(tmp_path / "killed" / "backbone.safetensors")
    assert all(torch.equal(expected[key], got[key]) for key in expected), f"killed after {killed_at} rows"
    assert _steps(tmp_path / "killed") == _steps(tmp_path / "straight") == list(range(1, 17))


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_exits_0_saying_how_to_resume(npz_root, tmp_path):
    run_dir = tmp_path / "run"
    process = _start_and_wait_for(_argv(npz_root, run_dir, "trainer.checkpoint_every_steps=null",
                                        "trainer.epochs=50"), run_dir, 2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM at step" in out and "To resume: sslsec-pretrain --config " in out
    step = int(out.split("stopped by SIGTERM at step ")[1].split(",")[0])
    command = shlex.split(out.split("To resume: ")[1].splitlines()[0])
    assert command[1:3] == ["--config", str(run_dir / "config.yaml")] and command[-1] == "resume=true"
    assert (run_dir / "checkpoints" / f"step_{step:08d}").is_dir()
    assert not (run_dir / "backbone.safetensors").exists()
    assert _steps(run_dir)[-1] == step


@pytest.mark.slow
def test_bad_resumes_are_one_line_exit_2_and_leave_the_run_untouched(npz_root, tmp_path):
    nothing = _run(_argv(npz_root, tmp_path / "typo", "resume=true"))
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1
    assert "holds no checkpoint to resume" in nothing.stderr and not (tmp_path / "typo").exists()

    run_dir = tmp_path / "run"
    assert _run(_argv(npz_root, run_dir, "trainer.max_steps=3")).returncode == 0
    config_before = (run_dir / "config.yaml").read_text()
    changed = _run(_argv(npz_root, run_dir, "resume=true", "loss.sec_weight=1.0", "optim.lr=0.5"))
    assert changed.returncode == 2 and len(changed.stderr.strip().splitlines()) == 1
    assert "loss.sec_weight=0.3 -> 1.0" in changed.stderr and "optim.lr=" in changed.stderr
    assert (run_dir / "config.yaml").read_text() == config_before

    # settings that do not change the weights may differ; resume=auto continues the run that exists
    auto = _run(_argv(npz_root, run_dir, "resume=auto", "trainer.log_every=2", "trainer.max_steps=null"))
    assert auto.returncode == 0, auto.stderr[-2000:]
    assert (run_dir / "backbone.safetensors").is_file() and (run_dir / "config.yaml").read_text() == config_before
    fresh = _run(_argv(npz_root, tmp_path / "fresh", "resume=auto", "trainer.max_steps=2"))
    assert fresh.returncode == 0 and "resumed" not in fresh.stdout


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(npz_root, tmp_path):
    straight = _run(_argv(npz_root, tmp_path / "straight"))
    run_dir = tmp_path / "run"
    assert _run(_argv(npz_root, run_dir, "trainer.max_steps=5")).returncode == 0
    newest, previous = sorted((run_dir / "checkpoints").glob("step_*"), reverse=True)
    model_file = next(path for path in newest.rglob("*.bin"))
    model_file.write_bytes(model_file.read_bytes()[:100])  # a disk that filled up, a copy cut short

    resumed = _run(_argv(npz_root, run_dir, "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and newest.name in warnings[0] and "damaged" in warnings[0]
    assert f"resumed from {previous}" in resumed.stdout
    expected, got = load_file(tmp_path / "straight" / "backbone.safetensors"), load_file(run_dir / "backbone.safetensors")
    assert straight.returncode == 0 and all(torch.equal(expected[key], got[key]) for key in expected)

    broken = tmp_path / "broken"
    assert _run(_argv(npz_root, broken, "trainer.max_steps=3")).returncode == 0
    for checkpoint in (broken / "checkpoints").glob("step_*"):
        (checkpoint / "manifest.json").unlink()
    failed = _run(_argv(npz_root, broken, "resume=true"))
    errors = [line for line in failed.stderr.splitlines() if not line.startswith("warning:")]
    assert failed.returncode == 2 and len(errors) == 1 and "no usable checkpoint" in errors[0]


def test_views_too_small_for_the_backbone_are_one_error_before_the_run_directory(npz_root, tmp_path):
    from sslsec.config import ConfigError, load_config
    from sslsec.engine import pretrain

    config = load_config(None, ["data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn",
                                "data.crop_size=2", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="2 px views are too small for model.backbone=small_cnn"):
        pretrain(config)
    assert not (tmp_path / "run").exists()



@pytest.mark.slow
def test_a_nan_on_one_of_two_processes_stops_both_without_a_hang(npz_root, tmp_path):
    hook = Path(__file__).parent / "nan_on_rank1"
    env = cpu_env([str(hook)], OMP_NUM_THREADS="1", SSLSEC_TEST_NAN_STEP="3")
    process = subprocess.run(_torchrun(npz_root, tmp_path / "run", "trainer.log_every=4"), capture_output=True,
                             text=True, env=env, cwd=REPO, timeout=300)  # a hang would time out here
    assert process.returncode != 0
    assert process.stderr.count("non-finite loss at step 3 (epoch 1)") == 2  # each process names the same step
    saved = [int(path.name.split("_")[1]) for path in (tmp_path / "run" / "checkpoints").glob("step_*")]
    assert saved and max(saved) <= 3  # checkpoints of steps 1-3 (every step), none after the bad one


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step_with_one_checkpoint(npz_root, tmp_path):
    hook = Path(__file__).parent / "sigterm_on_rank1"
    env = cpu_env([str(hook)], OMP_NUM_THREADS="1", SSLSEC_TEST_SIGTERM_CALL="3")  # during step 3 of rank 1
    run_dir = tmp_path / "run"
    process = subprocess.run(_torchrun(npz_root, run_dir, "trainer.log_every=4", "trainer.checkpoint_every_steps=null"),
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=300)  # a hang times out
    assert process.returncode == 0, process.stderr[-2000:]
    # the processes agree at the next log interval (step 4): both save it, then stop
    assert [path.name for path in (run_dir / "checkpoints").glob("step_*")] == ["step_00000004"]
    assert _steps(run_dir) == [4] and not (run_dir / "backbone.safetensors").exists()
