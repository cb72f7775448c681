"""The console entry points: one style of command line, one-line errors, thin scripts."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from sslsec.cli import diagnose_main, linear_probe_main, pretrain_main, study_main
from tests.fixtures import write_jpeg_folder, write_npz, write_run
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


def test_scores_of_other_settings_never_replace_a_scores_file_silently(run_dir, tmp_path, capsys):
    from sslsec.cli import retrieval_main

    linear_probe_main(["--run", str(run_dir), "eval.probe_epochs=2"])  # the main job's probe
    first = (run_dir / "linear_probe.json").read_text()
    assert json.loads(first)["protocol"]["eval.probe_epochs"] == 2
    other = ["--backbone", str(run_dir / "backbone.safetensors"), "--config", str(run_dir / "config.yaml"),
             "eval.probe_epochs=3"]  # the same weights, by their file, probed another way: into the same folder
    capsys.readouterr()
    err = run_cli_expecting_error(linear_probe_main, other, capsys)
    assert "linear_probe.json holds the scores of another protocol (eval.probe_epochs=2 -> 3)" in err
    assert "--output-dir DIR to keep both, or --overwrite" in err
    assert (run_dir / "linear_probe.json").read_text() == first
    linear_probe_main([*other, "--output-dir", str(tmp_path / "other")])  # beside it
    assert json.loads((tmp_path / "other" / "linear_probe.json").read_text())["epochs"] == 3
    linear_probe_main([*other, "--overwrite"])
    assert json.loads((run_dir / "linear_probe.json").read_text())["epochs"] == 3
    linear_probe_main(["--run", str(run_dir), "eval.probe_epochs=3"])  # the same protocol: a rerun replaces it

    capsys.readouterr()
    retrieval_main(["--run", str(run_dir)])  # an SSL run saw every class: not "unseen classes"
    assert "the test split holds the training classes (seen in pretraining)" in capsys.readouterr().out
    scores = (run_dir / "retrieval.json").read_text()
    err = run_cli_expecting_error(retrieval_main, ["--run", str(run_dir), "data.test_limit=16"], capsys)
    assert "retrieval.json holds the scores of another protocol (data.test_limit=None -> 16)" in err
    assert (run_dir / "retrieval.json").read_text() == scores
    retrieval_main(["--run", str(run_dir), "data.test_limit=16", "--overwrite"])
    assert json.loads((run_dir / "retrieval.json").read_text())["test"]["images"] == 16


def test_pretrain_probe_scores_a_run_by_its_method_evaluation_as_the_study_does(tmp_path):
    from sslsec.analysis.scoring import SCORERS, evaluation
    from sslsec.cli import EVALUATIONS
    from sslsec.methods import METHODS

    assert {evaluation(name) for name in METHODS} <= set(EVALUATIONS) & set(SCORERS)  # each kind: both commands
    write_npz(tmp_path / "data", channels=1, size=12, n_train=48, n_test=24, num_classes=4)
    run = tmp_path / "run"  # no data.test_classes: the test split holds the training classes, still retrieval
    pretrain_main(["--probe", "method=metric", "data.name=npz", f"data.root={tmp_path / 'data'}",
                   "model.backbone=small_cnn", "model.embedding_dim=8", "metric.images_per_class=4",
                   "trainer.batch_size=12", "trainer.epochs=1", "trainer.eval_every=0", "optim.name=adam",
                   "trainer.mixed_precision=no", f"output_dir={run}"])
    assert json.loads((run / "retrieval.json").read_text())["test"]["classes"] == 4
    assert not (run / "linear_probe.json").exists()
    assert not (run / "projection_head.safetensors").exists()  # metric learning has no head: no empty file
    from sslsec.config import load_config as read_config
    from sslsec.runs import load_projection_head

    assert isinstance(load_projection_head(run, read_config(run / "config.yaml"), 8), torch.nn.Identity)


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
                            "sslsec-study", "sslsec-metric-study", "sslsec-verification"}
    for path in (REPO / "scripts").glob("*.py"):
        if path.name.startswith("bench_") or path.name == "readme_figures.py":  # maintainers' tools, no entry points
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
    assert "warm-up (c) done" in process.stderr  # progress while it measures, on stderr
    assert re.search(r"^repeat 1/1: \(a\) \d+, \(b\) \d+, \(c\) \d+ img/s", process.stderr, flags=re.MULTILINE)


def _folder_run(root, output_dir, *extra):
    """sslsec-pretrain's arguments for one step over every image of a JPEG folder (3 + 1 files in class a, 4 in b)."""
    return ["data.name=imagenet_folder", f"data.root={root}", "data.image_size=16", "model.backbone=small_cnn",
            "model.projection_hidden_dim=16", "model.projection_dim=8", "trainer.batch_size=8", "trainer.epochs=2",
            "trainer.eval_every=0", "trainer.log_every=1", "trainer.mixed_precision=no", "optim.warmup_epochs=0",
            f"output_dir={output_dir}", *extra]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_is_one_line_naming_it_and_leaves_nothing_or_is_skipped(tmp_path, capfd, workers):
    write_jpeg_folder(tmp_path / "data", {"a": 3, "b": 4})
    bad = tmp_path / "data" / "train" / "a" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 cut short")  # a JPEG header, then nothing
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main(_folder_run(tmp_path / "data", tmp_path / "run", f"data.num_workers={workers}"))
    # file descriptor 2, the DataLoader workers' output too, as a terminal shows it: the progress bar is cleared
    err = capfd.readouterr().err.rsplit("\r", 1)[-1]
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sslsec-pretrain: error: cannot decode {bad}: ") and "data.skip_corrupt=true" in err
    assert not (tmp_path / "run").exists()  # config.yaml and metrics.jsonl were written, then removed

    pretrain_main(_folder_run(tmp_path / "data", tmp_path / "skip", f"data.num_workers={workers}",
                              "data.skip_corrupt=true"))
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]  # \r splits too
    assert len(warnings) == 1 and str(bad) in warnings[0] and "1 corrupt file skipped so far" in warnings[0]
    assert (tmp_path / "skip" / "backbone.safetensors").is_file()


def test_ctrl_c_in_an_evaluation_is_one_line_and_exit_130(run_dir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sslsec.eval.evaluate_backbone", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        linear_probe_main(["--run", str(run_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and err == "sslsec-linear-probe: stopped by Ctrl-C; nothing was written\n"
    assert not (run_dir / "linear_probe.json").exists()


HEAVY_MODULES = ("torch", "torchvision", "kornia", "lightly", "accelerate", "matplotlib", "pytorch_metric_learning")


def test_help_and_command_line_errors_import_none_of_the_heavy_modules():
    """What makes start-up slow (about 10 s of imports) is imported where it is used, not by --help or a typo."""
    code = ("import sys\n"
            "from sslsec import cli\n"
            "for main in (cli.pretrain_main, cli.linear_probe_main, cli.retrieval_main, cli.diagnose_main,\n"
            "             cli.study_main, cli.metric_study_main, cli.verification_main):\n"
            "    for argv in (['--help'], ['loss.sec_wieght=1'], ['--run', '/nonexistent']):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip().splitlines()[-1] == "[]"
    assert "unknown key loss.sec_wieght" in process.stderr and "run directory /nonexistent does not exist" in process.stderr
    import sslsec  # the public API still answers at the top level, loaded on first use
    assert sslsec.WithSEC.__module__ == "sslsec.losses" and "WithSEC" in dir(sslsec)
