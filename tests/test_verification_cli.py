"""sslsec-verification end to end on a tiny run: the table, verification.json, the ROC plots, the output rule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sslsec.cli import pretrain_main, verification_main
from sslsec.config import load_config
from sslsec.data import load_splits
from sslsec.eval.verification import split_verification
from sslsec.runs import load_run
from tests.data.verification_fixtures import write_bin
from tests.launch import cpu_env

REPO = Path(__file__).resolve().parents[1]


def test_verification_cli_scores_the_test_pairs_and_each_set(run_dir, tmp_path, capsys):
    write_bin(tmp_path / "agedb_30.bin", pairs=40)  # RGB PNGs, read in grey for the run's 1-channel backbone
    verification_main(["--run", str(run_dir), "eval.verification_pairs=200",
                       f"eval.verification_sets=[{tmp_path / 'agedb_30.bin'}]"])
    saved = json.loads((run_dir / "verification.json").read_text())
    assert list(saved["sets"]) == ["test", "agedb_30"] and "small_cnn" in saved["backbone"]
    assert saved["protocol"]["eval.verification_pairs"] == 200 and saved["protocol"]["eval.verification_flip"]
    test, agedb = saved["sets"]["test"], saved["sets"]["agedb_30"]
    assert (test["pairs"], agedb["pairs"], agedb["images"]) == (200, 40, 80) and "roc" not in test
    config, backbone = load_run(run_dir, ["eval.verification_pairs=200"])
    expected = split_verification(backbone, load_splits(config).test, n_pairs=200, seed=config.trainer.seed)
    assert test["accuracy"] == expected["accuracy"] and test["val_at_far"] == expected["val_at_far"]
    assert test["xnorm"] == pytest.approx(expected["xnorm"])
    for name in ("test", "agedb_30"):
        assert (run_dir / f"verification_roc_{name}.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "accuracy (%)" in out and "VAL@FAR=0.001 (%)" in out and "xnorm" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("test "))
    assert f"{test['accuracy']:.2f} ± {test['accuracy_std']:.2f}" in row and f"{test['xnorm']:.3f}" in row


def test_scores_of_another_protocol_are_not_replaced_silently(run_dir, tmp_path, capsys):
    settings = ["--run", str(run_dir), "eval.verification_pairs=40"]
    verification_main(settings)
    first = (run_dir / "verification.json").read_text()
    verification_main(settings)  # the same protocol: the same scores, replaced
    second = (run_dir / "verification.json").read_text()
    assert json.loads(second)["sets"] == json.loads(first)["sets"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        verification_main([*settings, "eval.verification_flip=false"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "holds scores of another protocol (eval.verification_flip: True -> False)" in err
    assert "--output FILE" in err and (run_dir / "verification.json").read_text() == second
    verification_main([*settings, "eval.verification_flip=false", "--output", str(tmp_path / "noflip.json")])
    assert not json.loads((tmp_path / "noflip.json").read_text())["protocol"]["eval.verification_flip"]
    assert (tmp_path / "noflip_roc_test.png").is_file()
    verification_main([*settings, "eval.verification_flip=false", "--overwrite"])
    assert not json.loads((run_dir / "verification.json").read_text())["protocol"]["eval.verification_flip"]


def test_random_init_writes_beside_the_run(run_dir):
    verification_main(["--random-init", "--config", str(run_dir / "config.yaml"), "eval.verification_pairs=40",
                       f"output_dir={run_dir}"])
    saved = json.loads((run_dir / "random_init" / "verification.json").read_text())
    assert "random init" in saved["backbone"] and saved["sets"]["test"]["pairs"] == 40
    assert not (run_dir / "verification.json").exists()


def test_a_corrupt_set_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    write_bin(tmp_path / "lfw.bin", pairs=20, corrupt_entry=5)
    with pytest.raises(SystemExit) as exit_info:
        verification_main(["--run", str(run_dir), f"eval.verification_sets=[{tmp_path / 'lfw.bin'}]"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "lfw.bin: entry 5 (pair 2) does not decode" in err and not (run_dir / "verification.json").exists()


def test_pretrain_probe_of_a_verification_method_scores_verification(tmp_path, monkeypatch, capsys):
    from sslsec.methods.simclr import SimCLR
    from tests.fixtures import write_template_npz

    monkeypatch.setattr(SimCLR, "evaluation", "verification")  # as method: face declares it
    output = tmp_path / "run"
    pretrain_main(["--probe", "data.name=npz", f"data.root={write_template_npz(tmp_path / 'data')}",
                   "model.backbone=small_cnn", "model.projection_hidden_dim=16", "model.projection_dim=8",
                   "trainer.batch_size=16", "trainer.epochs=1", "data.train_limit=32", "trainer.eval_every=0",
                   "trainer.mixed_precision=no", "optim.warmup_epochs=0", "eval.verification_pairs=40",
                   f"output_dir={output}"])
    assert json.loads((output / "verification.json").read_text())["sets"]["test"]["pairs"] == 40
    assert not (output / "linear_probe.json").exists() and "VAL@FAR" in capsys.readouterr().out


def test_the_script_is_the_console_entry():
    process = subprocess.run([sys.executable, str(REPO / "scripts" / "verification.py"), "--help"],
                             capture_output=True, text=True, cwd=REPO, env=cpu_env(), timeout=120)
    assert process.returncode == 0 and process.stdout.startswith("usage: sslsec-verification")
    assert "verification_pairs=6000" in process.stdout and "--overwrite" in process.stdout
