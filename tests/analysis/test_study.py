"""The SEC study end to end on tiny npz data sets (SSL, and metric learning on held-out classes): runs, table, JSON,
PNGs, reuse, resume and its errors."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn.functional as F
from safetensors.torch import load_file

from sslsec.cli import study_main
from sslsec.config import load_config
from sslsec.config import LossConfig
from sslsec.analysis.study import (NORMS_FILE, StudyError, monitor_per_epoch, paper_sec_weight, run_study,
                                   summarize_study, variant_overrides)
from sslsec.data import load_splits
from sslsec.engine import pretrain
from sslsec.eval import extract_features
from sslsec.runs import load_saved_backbone
from tests.launch import cpu_env, torchrun

ROOT = Path(__file__).parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _overrides(npz_root, output_dir, *extra):
    return [
        "data.name=npz", f"data.root={npz_root}", "data.val_size=null", "trainer.mixed_precision=no",
        "model.backbone=small_cnn",
        "model.projection_hidden_dim=64",
        "model.projection_dim=32", "trainer.batch_size=32", "trainer.epochs=2", "trainer.log_every=1",
        "trainer.eval_every=1", "trainer.checkpoint_every=1", "optim.warmup_epochs=0", "eval.knn_k=10",
        "eval.probe_epochs=5", f"output_dir={output_dir}", *extra,
    ]


def _study_cli(npz_root, output_dir):
    """Run ``sslsec-study`` with sec (weight 0.5) and l2 (weight 0.02), one seed; returns its stdout."""
    argv = ["--config", str(ROOT / "configs" / "simclr_fmnist.yaml"), "--variants", "sec,l2", "--seeds", "1",
            "loss.sec_weight=0.5", "loss.norm_penalty_weight=0.02", "--diagnostics-n", "64",
            *_overrides(npz_root, output_dir)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        study_main(argv)
    return out.getvalue()


@pytest.fixture(scope="module")
def study(npz_root, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("study")
    return output_dir, _study_cli(npz_root, output_dir)


def _knn_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["epoch"], r["knn_top1"]] for r in rows if "knn_top1" in r]


def test_variants_take_weights_and_schedule_from_the_config_and_fall_back_without_them():
    base = ["loss.sec_weight=3", "loss.sec_momentum=0.5", "loss.norm_penalty_weight=2", "loss.sec_schedule=linear",
            "loss.temperature=0.2"]
    loss = load_config(None, base).loss
    from_config = {"none": (0.0, "linear", None, 0.0), "sec": (3.0, "linear", None, 0.0),
                   "sec_constant": (3.0, "constant", None, 0.0), "sec_linear": (3.0, "linear", None, 0.0),
                   "sec_paper": (0.35, "linear", None, 0.0), "sec_ema": (3.0, "linear", 0.5, 0.0),
                   "l2": (0.0, "linear", None, 2.0)}
    # loss.sec_momentum and loss.norm_penalty_weight unset: sec_ema falls back to 0.1, l2 to 0.01
    fallback = {"sec": (0.7, "constant", None, 0.0), "sec_ema": (0.7, "constant", 0.1, 0.0),
                "l2": (0.0, "constant", None, 0.01)}
    for name, expected in from_config.items():
        got = load_config(None, [*base, *variant_overrides(name, loss)]).loss
        assert (got.sec_weight, got.sec_schedule, got.sec_momentum, got.norm_penalty_weight) == pytest.approx(expected)
    plain = load_config(None, ["loss.sec_weight=0.7"]).loss
    for name, expected in fallback.items():
        got = load_config(None, [*base, *variant_overrides(name, plain)]).loss
        assert (got.sec_weight, got.sec_schedule, got.sec_momentum, got.norm_penalty_weight) == pytest.approx(expected)


def test_the_paper_weight_converts_the_authors_loss_scale():
    assert paper_sec_weight(0.5) == pytest.approx(0.14)  # their eta = 1 against NT-Xent x T / 0.07
    assert paper_sec_weight(0.07, eta=2.0) == pytest.approx(2.0)


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_the_paper_weight_of_byol_and_simsiam_is_the_shipped_configs(method):
    shipped = load_config(Path(__file__).parents[2] / "configs" / f"{method}_fmnist.yaml")
    expected = paper_sec_weight(0.5, method=method)
    assert paper_sec_weight(0.1, method=method) == expected  # no temperature in their losses
    assert shipped.loss.sec_weight == pytest.approx(expected)
    got = load_config(None, variant_overrides("sec_paper", shipped.loss, method)).loss
    assert (got.sec_weight, got.sec_schedule) == (pytest.approx(expected), "linear")


def test_sec_variants_without_a_weight_are_refused():
    with pytest.raises(StudyError, match="needs an SEC weight"):
        variant_overrides("sec", LossConfig(sec_weight=0.0))


@pytest.mark.slow
def test_study_writes_the_table_json_and_plots(study):
    output_dir, printed = study
    rows = json.loads((output_dir / "study.json").read_text())
    assert [(r["variant"], r["seed"]) for r in rows] == [("sec", 0), ("l2", 0)]
    for row in rows:
        run_dir = output_dir / f"{row['variant']}_seed0"
        assert {"linear_top1", "knn_top1", "norm_std_over_mean", "knn_per_epoch", "run_dir", "seconds"} <= set(row)
        assert 0 <= row["linear_top1"] <= 100 and 0 <= row["knn_top1"] <= 100
        assert row["knn_per_epoch"] == _knn_rows(run_dir) and [e for e, _ in row["knn_per_epoch"]] == [1, 2]
        norms = load_file(run_dir / NORMS_FILE)["norms"].double()
        assert len(norms) == 64  # two views of each of the 32 test images (n=64 is capped at the split)
        assert row["norm_std_over_mean"] == pytest.approx((norms.std() / norms.mean()).item())

    sec, l2 = (load_config(output_dir / f"{name}_seed0" / "config.yaml").loss for name in ("sec", "l2"))
    assert (sec.sec_weight, sec.sec_momentum, sec.norm_penalty_weight) == (0.5, None, 0.0)
    assert (l2.sec_weight, l2.norm_penalty_weight) == (0.0, 0.02)

    table = (output_dir / "study.md").read_text()
    assert table in printed
    assert f"| sec | 0.5 | linear | 1 | {rows[0]['linear_top1']:.2f} | {rows[0]['knn_top1']:.2f} |" in table
    assert "| epoch | sec | l2 |" in table and f"| 2 | {rows[0]['knn_per_epoch'][1][1]:.2f} |" in table
    for name in ("study_knn.png", "study_norms.png"):
        assert (output_dir / name).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_second_invocation_reuses_the_finished_runs(npz_root, study):
    output_dir, _ = study
    watched = [output_dir / f"{name}_seed0" / file for name in ("sec", "l2")
               for file in ("metrics.jsonl", "backbone.safetensors", "study_row.json")]
    before = [path.stat().st_mtime_ns for path in watched]
    rows = json.loads((output_dir / "study.json").read_text())
    printed = _study_cli(npz_root, output_dir)
    assert [path.stat().st_mtime_ns for path in watched] == before
    assert f"reused {output_dir / 'sec_seed0'}" in printed and "reused 2 of 2 runs: sec_seed0, l2_seed0" in printed
    assert json.loads((output_dir / "study.json").read_text()) == rows


@pytest.mark.slow
def test_an_interrupted_run_is_resumed_and_other_settings_are_refused(npz_root, tmp_path):
    run_dir = tmp_path / "none_seed0"
    interrupted = [*_overrides(npz_root, run_dir), *variant_overrides("none", LossConfig()), "trainer.seed=0", "trainer.max_steps=3"]
    pretrain(load_config(None, interrupted))
    assert not (run_dir / "backbone.safetensors").exists()

    log = []
    [row] = run_study(None, ["none"], 1, _overrides(npz_root, tmp_path), diagnostics_n=64, log=log.append)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "total" in row]
    assert f"resuming {run_dir}" in log and steps == sorted(steps) and steps[0] == 1 and steps[-1] == 8
    assert (row["sec_weight"], row["norm_penalty_weight"]) == (0.0, 0.0) and (run_dir / "backbone.safetensors").is_file()

    trained = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    [row] = run_study(None, ["none"], 1, _overrides(npz_root, tmp_path, "eval.probe_epochs=3"), diagnostics_n=64,
                      log=log.append)
    assert f"evaluating {run_dir}" in log and row["eval"]["probe_epochs"] == 3
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == trained  # evaluated again, not retrained

    with pytest.raises(StudyError, match=r"trained with trainer.epochs=2, but this study asks for 3"):
        run_study(None, ["none"], 1, _overrides(npz_root, tmp_path, "trainer.epochs=3"))


def test_a_study_without_output_dir_never_writes_into_the_configs_run_directory():
    from sslsec.analysis.study import study_dir

    main_job = load_config(ROOT / "configs" / "simclr_fmnist.yaml")
    assert study_dir(main_job, ["trainer.epochs=3"]) == Path("runs/simclr_fmnist_study")
    chosen = ["output_dir=runs/mine"]
    assert study_dir(load_config(ROOT / "configs" / "simclr_fmnist.yaml", chosen), chosen) == Path("runs/mine")


def test_an_unknown_variant_is_one_clear_error_before_any_work(npz_root, tmp_path, capsys):
    with pytest.raises(StudyError, match="unknown variant 'sec_emma'; valid variants: none, sec, sec_constant"):
        run_study(None, ["none", "sec_emma"], 1, _overrides(npz_root, tmp_path / "study"))
    with pytest.raises(SystemExit) as exit_info:
        study_main(["--variants", "none,bogus", *_overrides(npz_root, tmp_path / "study")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "sslsec-study: error: unknown variant 'bogus'; valid variants: none, sec, sec_constant" in err
    assert not (tmp_path / "study").exists()

    process = subprocess.run([sys.executable, str(ROOT / "scripts" / "study.py"), "--variants", "L2",
                              f"output_dir={tmp_path / 'study'}"], capture_output=True, text=True, env=cpu_env())
    assert process.returncode == 2 and "Traceback" not in process.stderr and "valid variants" in process.stderr


def test_summary_shows_mean_and_sample_std_over_seeds():
    def row(variant, seed, linear, knn, spread, curve, weight=0.0):
        return {"variant": variant, "seed": seed, "method": "simclr", "dataset": "npz", "linear_top1": linear,
                "knn_top1": knn, "norm_std_over_mean": spread, "knn_per_epoch": curve, "sec_weight": weight,
                "sec_schedule": "linear", "sec_momentum": None, "norm_penalty_weight": 0.0,
                "val_linear_top1": linear - 1, "val_knn_top1": knn - 2}

    table = summarize_study([row("none", 0, 80.0, 70.0, 0.30, [[1, 50.0], [2, 60.0]]),
                             row("none", 1, 82.0, 74.0, 0.20, [[1, 54.0], [2, 62.0]]),
                             row("sec", 0, 85.0, 75.0, 0.05, [[2, 66.0]], weight=0.14)])
    assert "| variant | SEC weight | schedule | seeds | val linear | val kNN | test linear | test kNN |" in table
    # none has no regularizer, so no schedule, although its (older) rows still say "linear"
    assert "| none | 0 | - | 2 | 80.00 ± 1.41 | 70.00 ± 2.83 | 81.00 ± 1.41 | 72.00 ± 2.83 | 0.250 ± 0.071 |" in table
    assert "| sec | 0.14 | linear | 1 | 84.00 | 73.00 | 85.00 | 75.00 | 0.050 |" in table
    assert "| 1 | 52.00 |  |" in table and "| 2 | 61.00 | 66.00 |" in table


@pytest.mark.slow
def test_two_processes_run_the_study_and_only_the_main_one_writes(npz_root, tmp_path):
    process = subprocess.run(
        torchrun(ROOT / "scripts" / "study.py", "--variants", "sec_ema", "--seeds", "1", "--diagnostics-n", "64",
                 "loss.sec_weight=1.0", *_overrides(npz_root, tmp_path)),
        capture_output=True, text=True, env=cpu_env(OMP_NUM_THREADS="1"), timeout=300, cwd=ROOT)
    assert process.returncode == 0, process.stderr[-3000:]
    [row] = json.loads((tmp_path / "study.json").read_text())
    assert row["variant"] == "sec_ema" and row["sec_momentum"] == 0.1 and row["sec_weight"] == 1.0
    assert process.stdout.count("| sec_ema | 1, EMA 0.1 | constant | 1 |") == 1  # printed once, by the main process
    assert row["knn_per_epoch"] == _knn_rows(tmp_path / "sec_ema_seed0")



@pytest.mark.slow
def test_a_metric_study_scores_each_run_by_retrieval_and_plots_validation_recall(metric_overrides, tmp_path):
    log = []
    rows = run_study(None, ["none", "sec"], 1, metric_overrides(tmp_path), log=log.append)
    for row in rows:
        run_dir = tmp_path / f"{row['variant']}_seed0"
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        monitored = [[r["epoch"], r["recall_at_1"]] for r in logged if "recall_at_1" in r]
        assert row["monitor"] == "recall_at_1" and row["monitor_split"] == "val"
        assert row["recall_per_epoch"] == monitored and [epoch for epoch, _ in monitored] == [1, 2]
        assert row["val_recall_at_1"] == pytest.approx(monitored[-1][1])  # the monitor scored the saved embedder
        assert "linear_top1" not in row and not (run_dir / NORMS_FILE).exists()

        config = load_config(run_dir / "config.yaml")
        _, _, test = load_splits(config)
        embeddings, labels = extract_features(load_saved_backbone(run_dir / "backbone.safetensors"), test,
                                              progress=False)
        norms = embeddings.double().norm(dim=1)
        cosine = F.normalize(embeddings.double(), dim=1) @ F.normalize(embeddings.double(), dim=1).T
        cosine.fill_diagonal_(-2)
        assert len(test) == 12 and row["recall_at_1"] == pytest.approx(
            100 * (labels[cosine.argmax(dim=1)] == labels).double().mean().item())
        assert row["norm_std_over_mean"] == pytest.approx((norms.std() / norms.mean()).item(), rel=1e-5)
        assert {"map_at_r", "nmi", "val_map_at_r", "val_nmi"} <= set(row)
    assert (rows[0]["sec_weight"], rows[1]["sec_weight"]) == (0.0, 1.0)

    table = (tmp_path / "study.md").read_text()
    assert ("| variant | SEC weight | schedule | seeds | val R@1 | val MAP@R | test R@1 | test MAP@R | test NMI | "
            "norm std/mean |") in table
    sec = rows[1]
    assert (f"| sec | 1 | constant | 1 | {sec['val_recall_at_1']:.2f} | {sec['val_map_at_r']:.2f} | "
            f"{sec['recall_at_1']:.2f} | {sec['map_at_r']:.2f} | {sec['nmi']:.2f} | {sec['norm_std_over_mean']:.3f} |"
            ) in table
    assert "Recall@1 (%) during training" in table and f"| 2 | {rows[0]['recall_per_epoch'][1][1]:.2f} |" in table
    assert (tmp_path / "study_recall.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "study_knn.png").exists() and not (tmp_path / "study_norms.png").exists()

    again = run_study(None, ["none", "sec"], 1, metric_overrides(tmp_path), log=log.append)
    assert again == rows and f"reused {tmp_path / 'sec_seed0'} (finished: study_row.json)" in log


def test_the_curve_is_whichever_monitor_the_run_logged_and_the_last_row_of_an_epoch_wins(tmp_path):
    def write(rows):
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    write([{"step": 1, "epoch": 1, "total": 2.0}, {"step": 2, "epoch": 1, "recall_at_1": 50.0, "monitor_split": "val"},
           {"step": 4, "epoch": 2, "recall_at_1": 60.0, "monitor_split": "val"},
           {"step": 4, "epoch": 2, "recall_at_1": 61.0, "monitor_split": "val"}])  # epoch 2 again after a resume
    assert monitor_per_epoch(tmp_path) == {"monitor": "recall_at_1", "monitor_split": "val",
                                           "recall_per_epoch": [[1, 50.0], [2, 61.0]]}
    write([{"step": 2, "epoch": 1, "knn_top1": 40.0, "monitor_split": "test"}])
    assert monitor_per_epoch(tmp_path) == {"monitor": "knn_top1", "monitor_split": "test",
                                           "knn_per_epoch": [[1, 40.0]]}
    write([{"step": 1, "epoch": 1, "total": 2.0}])  # eval_every=0: no monitor
    assert monitor_per_epoch(tmp_path)["knn_per_epoch"] == []
