"""The metric-learning table: weights chosen on validation MAP@R, the chosen seed-0 runs reused in the table, the
summary, and the errors raised before any work."""

import json
from pathlib import Path

import pytest

from sslsec.analysis.metric_study import run_metric_study, summarize_metric_study
from sslsec.analysis.study import StudyError
from sslsec.cli import metric_study_main
from sslsec.config import ConfigError, load_config

ROOT = Path(__file__).parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _row(loss, variant, seed, val_map, test_r1, spread, sec_weight=0.0, l2=0.0, seconds=10.0):
    chosen_run = variant != "none" and seed == 0  # the table's seed-0 run of a weight is its choice run
    run_dir = f"{loss}/{f'choice/{variant}_{l2 or sec_weight:g}/' if chosen_run else ''}{variant}_seed{seed}"
    return {"variant": variant, "seed": seed, "run_dir": run_dir, "method": "metric", "dataset": "npz",
            "sec_weight": sec_weight,
            "sec_momentum": None, "norm_penalty_weight": l2, "sec_schedule": "constant", "val_map_at_r": val_map,
            "recall_at_1": test_r1, "map_at_r": test_r1 / 2, "nmi": 50.0, "norm_std_over_mean": spread,
            "seconds": seconds}


@pytest.mark.slow
def test_the_table_takes_the_weight_of_best_validation_map_and_reuses_its_seed0_run(metric_overrides, tmp_path):
    weights = {"sec": (0.1, 1.0), "l2": (0.01,)}
    log = []
    results = run_metric_study(None, ["triplet"], 2, metric_overrides(tmp_path), weights=weights,
                               log=log.append)
    result = results["triplet"]
    choice = {(row["variant"], row["norm_penalty_weight"] or row["sec_weight"]): row for row in result["choice"]}
    assert set(choice) == {("sec", 0.1), ("sec", 1.0), ("l2", 0.01)}
    best_sec = max((0.1, 1.0), key=lambda w: (choice[("sec", w)]["val_map_at_r"], -w))  # first wins a tie
    assert result["weights"] == {"sec": best_sec, "l2": 0.01}

    loss_dir = tmp_path / "triplet"
    rows = {(row["variant"], row["seed"]): row for row in result["rows"]}
    assert set(rows) == {(variant, seed) for variant in ("none", "l2", "sec") for seed in (0, 1)}
    assert rows[("sec", 0)] == choice[("sec", best_sec)]  # the choice run itself, not trained again
    assert (loss_dir / "sec_seed0").resolve() == (loss_dir / "choice" / f"sec_{best_sec:g}" / "sec_seed0").resolve()
    assert sum(line.startswith("training") for line in log) == 3 + 4  # 3 weights, then 2 x none + l2 + sec seed 1
    trained = load_config(loss_dir / "sec_seed1" / "config.yaml")
    assert (trained.metric.loss, trained.loss.sec_weight, trained.loss.norm_penalty_weight) == ("triplet", best_sec, 0)

    saved = json.loads((tmp_path / "metric_study.json").read_text())
    assert saved["triplet"]["weights"] == result["weights"]
    table = (tmp_path / "metric_study.md").read_text()
    assert "| loss | sec 0.1 | sec 1 | l2 0.01 | chosen |" in table
    none_recall = [rows[("none", seed)]["recall_at_1"] for seed in (0, 1)]
    assert f"| triplet | none | 0 | {sum(none_recall) / 2:.2f} ± " in table  # the mean over the seeds
    assert (tmp_path / "metric_study_recall.png").read_bytes()[:8] == PNG

    log.clear()
    assert run_metric_study(None, ["triplet"], 2, metric_overrides(tmp_path), weights=weights,
                            log=log.append) == json.loads(json.dumps(results))
    assert not any(line.startswith("training") for line in log)


def test_the_summary_shows_every_candidate_weight_and_mean_std_over_seeds():
    results = {"npair": {
        "weights": {"sec": 1.0, "l2": 0.001},
        "choice": [_row("npair", "sec", 0, 40.0, 80.0, 0.02, sec_weight=0.1),
                   _row("npair", "sec", 0, 42.5, 81.0, 0.01, sec_weight=1.0),
                   _row("npair", "l2", 0, 39.0, 79.0, 0.05, l2=0.001)],
        "rows": [_row("npair", "none", 0, 38.0, 78.0, 0.10), _row("npair", "none", 1, 40.0, 82.0, 0.20),
                 _row("npair", "sec", 0, 42.5, 81.0, 0.01, sec_weight=1.0),
                 _row("npair", "sec", 1, 44.5, 83.0, 0.03, sec_weight=1.0)]}}
    table = summarize_metric_study(results)
    assert "| npair | 40.00 | 42.50 | 39.00 | sec 1, l2 0.001 |" in table
    # test R@1, test MAP@R, test NMI, val MAP@R, norm std/mean
    assert "| none | 0 | 80.00 ± 2.83 | 40.00 ± 1.41 | 50.00 ± 0.00 | 39.00 ± 1.41 | 0.150 ± 0.071 |" in table
    assert "| sec | 1 | 82.00 ± 1.41 | 41.00 ± 0.71 | 50.00 ± 0.00 | 43.50 ± 1.41 | 0.020 ± 0.014 |" in table
    assert "6 runs, 10 ± 0 s per run" in table  # sec 1 seed 0 is both a choice and a table run


def test_a_table_that_cannot_be_chosen_on_validation_is_refused_before_any_work(metric_overrides, tmp_path):
    study = tmp_path / "study"
    with pytest.raises(StudyError, match="scores retrieval or verification; method=simclr"):
        run_metric_study(ROOT / "configs" / "simclr_fmnist.yaml", ["triplet"], 1, [f"output_dir={study}"])
    no_val = [*metric_overrides(study), "data.val_classes=null"]
    with pytest.raises(StudyError, match="no validation split: set data.val_size"):
        run_metric_study(None, ["triplet"], 1, no_val)
    with pytest.raises(ConfigError, match="metric.loss"):
        run_metric_study(None, ["triplet", "tripplet"], 1, metric_overrides(study))
    with pytest.raises(StudyError, match="weights of sec and l2 only"):
        run_metric_study(None, ["triplet"], 1, metric_overrides(study), weights={"sec_ema": (1.0,)})
    assert not study.exists()


def test_the_command_line_refuses_weights_that_are_not_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        metric_study_main(["--config", str(ROOT / "configs" / "dml_fmnist.yaml"), "--sec-weights", "0.1,big",
                           f"output_dir={tmp_path / 'study'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "sslsec-metric-study: error: --sec-weights takes comma-separated numbers" in err


@pytest.mark.slow
def test_the_face_table_chooses_weights_on_validation_verification_accuracy(six_classes, tmp_path):
    """method: face: the weight of best validation verification accuracy (pairs of held-out identities) wins, and
    the table reports test verification accuracy, VAL@FAR and the norm spread."""
    overrides = ["method=face", "metric.loss=cosface", "data.name=npz", f"data.root={six_classes}",
                 "data.train_classes=[0,1,2,3]", "data.val_classes=[2,3]", "data.test_classes=[4,5]",
                 "model.backbone=small_cnn", "model.embedding_dim=16", "model.embedding_head=face",
                 "trainer.batch_size=8", "trainer.epochs=1", "trainer.eval_every=1", "optim.name=adam",
                 "optim.lr=1e-3", "optim.warmup_epochs=0", "trainer.mixed_precision=no", "eval.verification_pairs=24",
                 "eval.verification_folds=2", f"output_dir={tmp_path}"]
    results = run_metric_study(None, ["cosface"], 1, overrides, weights={"sec": (0.1, 1.0), "l2": (0.01,)},
                               log=lambda line: None)
    result = results["cosface"]
    choice = {(row["variant"], row["norm_penalty_weight"] or row["sec_weight"]): row for row in result["choice"]}
    best_sec = max((0.1, 1.0), key=lambda w: (choice[("sec", w)]["val_verification_accuracy"], -w))
    assert result["weights"] == {"sec": best_sec, "l2": 0.01}
    for row in result["rows"]:
        assert 0 <= row["verification_accuracy"] <= 100 and 0 <= row["val_at_far"] <= 100
        assert row["monitor"] == "verification_accuracy" and row["norm_std_over_mean"] > 0
    table = (tmp_path / "metric_study.md").read_text()
    assert "Weights chosen on validation verification accuracy" in table
    assert "| loss | variant | weight | test acc | test VAL@FAR | val acc | val VAL@FAR | norm std/mean |" in table
