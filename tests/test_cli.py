"""The console entry points: one style of command line, one-line errors, thin scripts."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sslsec.cli import diagnose_main, linear_probe_main, pretrain_main, study_main
from tests.fixtures import write_run
from tests.launch import cpu_env

REPO = Path(__file__).resolve().parents[1]

def test_linear_probe_cli_writes_json_for_a_run(run_dir, capsys):
    linear_probe_main(["--run", str(run_dir), "eval.probe_epochs=10"])
    result = json.loads((run_dir / "linear_probe.json").read_text())
    assert result["dataset"] == "npz" and "small_cnn" in result["backbone"] and result["epochs"] == 10
    assert result["top1"] >= 90.0 and result["top5"] >= result["top1"] and result["knn_top1"] >= 90.0
    assert "linear top-1" in capsys.readouterr().out


def test_linear_probe_cli_backbone_file_and_random_init(run_dir, tmp_path):
    linear_probe_main(["--backbone", str(run_dir / "backbone.safetensors"), "--config", str(run_dir / "config.yaml"),
                       "--output-dir", str(tmp_path / "file"), "eval.probe_epochs=2"])
    assert json.loads((tmp_path / "file" / "linear_probe.json").read_text())["epochs"] == 2
    linear_probe_main(["--random-init", "--config", str(run_dir / "config.yaml"), "eval.probe_epochs=2",
                       f"output_dir={tmp_path / 'baseline'}"])
    assert "random init" in json.loads((tmp_path / "baseline" / "random_init" / "linear_probe.json").read_text())[
        "backbone"]


def test_random_init_after_the_run_writes_beside_it_not_over_it(run_dir):
    linear_probe_main(["--run", str(run_dir), "eval.probe_epochs=2"])
    trained = (run_dir / "linear_probe.json").read_text()
    linear_probe_main(["--random-init", "--config", str(run_dir / "config.yaml"), "eval.probe_epochs=2",
                       f"output_dir={run_dir}"])  # the README's order: the main job, then its baseline
    assert (run_dir / "linear_probe.json").read_text() == trained
    assert "random init" in json.loads((run_dir / "random_init" / "linear_probe.json").read_text())["backbone"]


def run_cli_expecting_error(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_cli_errors_are_one_line_and_exit_2(run_dir, tmp_path, capsys):
    empty_run = write_run(tmp_path / "unfinished", run_dir.parent / "data", backbone=False)
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(empty_run)], capsys)
    assert "backbone.safetensors is missing" in err and "pretraining writes it when it finishes" in err
    rgb_run = write_run(tmp_path / "rgb", run_dir.parent / "data", in_channels=3)
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(rgb_run)], capsys)
    assert "3-channel images but data set 'npz' has 1-channel" in err
    err = run_cli_expecting_error(linear_probe_main, ["--run", str(run_dir), "eval.probe_epochs=zero"], capsys)
    assert "eval.probe_epochs" in err
    err = run_cli_expecting_error(diagnose_main, ["--run", str(empty_run)], capsys)
    assert "backbone.safetensors is missing" in err


def test_script_reports_a_missing_run_without_traceback(tmp_path):
    process = subprocess.run([sys.executable, str(REPO / "scripts" / "linear_probe.py"), "--run", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO, env=cpu_env())
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert "config.yaml is missing" in process.stderr


def test_cli_rejects_a_bad_key_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pretrain.py"), "--config", str(REPO / "configs" / "simclr_fmnist.yaml"),
         "loss.sec_wieght=1", f"output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=cpu_env(),
    )
    assert result.returncode == 2
    assert "unknown key loss.sec_wieght" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("main", [linear_probe_main, diagnose_main, pretrain_main, study_main])
def test_help_lists_every_config_section_and_key_with_its_default(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: sslsec-")
    for section in ("data", "model", "loss", "augment", "moco", "optim", "trainer", "eval"):
        assert f"  {section}:  " in out
    assert "sec_weight=0.0" in out and "mixed_precision=auto" in out and "seed=0" in out
    assert "--seed " not in out and "--sec-weight" not in out  # config keys are key=value, never flags


def test_overrides_go_before_or_after_the_flags(run_dir):
    linear_probe_main(["eval.probe_epochs=3", "--run", str(run_dir), "eval.knn_k=5"])
    result = json.loads((run_dir / "linear_probe.json").read_text())
    assert (result["epochs"], result["knn_k"]) == (3, 5)


def test_console_scripts_are_named_sslsec_and_scripts_only_call_them():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"sslsec-pretrain", "sslsec-linear-probe", "sslsec-retrieval", "sslsec-diagnose",
                            "sslsec-study", "sslsec-metric-study"}
    for path in (REPO / "scripts").glob("*.py"):
        if path.name.startswith("bench_"):  # benchmarks are scripts, not entry points
            continue
        code = [line for line in path.read_text().split('"""')[-1].splitlines() if line.strip()]
        assert code[0].startswith("from sslsec.cli import ") and len(code) == 3, path.name


def test_training_benchmark_runs_the_three_loops_and_prints_their_ratios(npz_root):
    process = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--steps", "2", "--repeats", "1", "--workers", "0",
         "--config", str(REPO / "configs" / "simclr_fmnist.yaml"), "data.name=npz", f"data.root={npz_root}",
         "data.val_size=null", "trainer.batch_size=16", "trainer.mixed_precision=no"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=cpu_env())
    assert process.returncode == 0, process.stderr[-2000:]
    speeds = re.findall(r"^\((a|b|c)\) .*: +(\d+) img/s", process.stdout, flags=re.MULTILINE)
    assert [name for name, _ in speeds] == ["a", "b", "c"] and all(int(value) > 0 for _, value in speeds)
    assert "step time of (b) over (a)" in process.stdout and "speed of (b) over (c)" in process.stdout
    assert re.search(r"^CPU: .+, (native bf16|no native bf16 \(bf16 emulated)", process.stdout, flags=re.MULTILINE)
