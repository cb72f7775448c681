"""The README's figure blocks come from the runs' files: written from fixture runs, checked, and errors named."""

import json

import pytest

from sslsec.analysis.readme_figures import FiguresError, changed_blocks, host_description, main, update_readme
from sslsec.config import load_config, save_config

README = """# project

intro 1.5 points, left alone

<!-- BEGIN figures: simclr_fmnist (written by a script) -->
stale 1.0 %
<!-- END figures: simclr_fmnist -->

in between

<!-- BEGIN figures: dml_fmnist (written by a script) -->
<!-- END figures: dml_fmnist -->

outro
"""
PROBE = {"dataset": "fashion_mnist", "train_size": 55000, "test_size": 10000, "num_classes": 10, "val_size": 5000,
         "val_top1": 90.32, "val_knn_top1": 84.84, "top1": 90.45, "top5": 99.9, "knn_top1": 84.84, "seconds": 18.4}
RANDOM_PROBE = {**PROBE, "val_top1": 87.62, "val_knn_top1": 76.52, "top1": 86.75, "top5": 99.0, "knn_top1": 76.91}


def retrieval(r1, map_at_r, nmi):
    split = {"images": 5000, "classes": 5, "recall_at_1": r1, "recall_at_2": 95.0, "recall_at_4": 97.0,
             "recall_at_8": 98.0, "map_at_r": map_at_r, "r_precision": 50.0, "nmi": nmi, "norm_std_over_mean": 0.25}
    return {"val": {**split, "images": 2500}, "test": split}


def write_run(run_dir, config_path, metrics, scores_name, scores, random_scores):
    """A run directory as pretraining and the probes write it: config.yaml, metrics.jsonl, the score JSON."""
    (run_dir / "random_init").mkdir(parents=True)
    save_config(load_config(config_path, [f"output_dir={run_dir}"]), run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    (run_dir / scores_name).write_text(json.dumps(scores))
    (run_dir / "random_init" / scores_name).write_text(json.dumps(random_scores))


@pytest.fixture
def runs(tmp_path):
    note = {"step": 0, "epoch": 1, "mixed_precision": "bf16", "precision_reason": "auto"}
    steps = [{"step": 20 * i, "epoch": 1, "time": 100.0 * i, "images_per_s": speed} for i, speed in
             enumerate([2000.0, 2600.0, 2500.0], start=1)]
    write_run(tmp_path / "runs" / "simclr_fmnist", "configs/simclr_fmnist.yaml",
              [note, *steps, {"step": 60, "epoch": 7, "knn_top1": 84.24, "monitor_split": "val"},
               {"step": 60, "epoch": 14, "knn_top1": 80.0}, {"step": 60, "epoch": 14, "knn_top1": 84.5}],
              "linear_probe.json", PROBE, RANDOM_PROBE)
    write_run(tmp_path / "runs" / "dml_fmnist", "configs/dml_fmnist.yaml",
              [note, {"step": 20, "epoch": 1, "time": 54.24, "images_per_s": 2388.4},
               {"step": 20, "epoch": 4, "recall_at_1": 90.68, "map_at_r": 78.9}],
              "retrieval.json", retrieval(93.26, 39.55, 46.59), retrieval(91.14, 33.68, 32.43))
    return tmp_path / "runs"


def test_blocks_are_written_from_the_runs_files_and_nothing_else_changes(runs):
    text = update_readme(README, runs, machine="a test CPU")
    assert text.startswith("# project\n\nintro 1.5 points, left alone\n\n<!-- BEGIN figures: simclr_fmnist (")
    assert "in between\n\n<!-- BEGIN figures: dml_fmnist" in text and text.endswith("-->\n\noutro\n")
    assert "stale" not in text
    ssl, dml = text.split("in between")
    # 14 epochs x 55 000 images; training time is the last logged time (300 s), the median of 2000/2600/2500
    assert "14 epochs (770,000 training images). Measured on a test CPU" in ssl
    assert "**5 min 0 s** in bf16" in ssl and "2,500 images/s median" in ssl and "the probe 18 s" in ssl
    assert "84.24 % after epoch 7, 84.50 % after epoch 14" in ssl  # an epoch's last row wins (a resume)
    assert "| 90.32 | 84.84 | 90.45 | 99.90 | 84.84 |" in ssl and "| 87.62 | 76.52 | 86.75 | 99.00 | 76.91 |" in ssl
    assert f"adds {90.45 - 86.75:.1f} points of linear top-1 and {84.84 - 76.91:.1f} of kNN" in ssl
    assert "linear 90.45 % >= 90.0 % (met)" in ssl and "kNN 84.84 % < 85.5 % (missed by 0.66 points)" in ssl
    assert "**54 s** in bf16" in dml and "90.68 / 78.90 (epoch 4)" in dml
    assert "| 93.26 | 95.00 | 97.00 | 98.00 | 39.55 | 50.00 | 46.59 | 0.250 |" in dml
    assert f"adds {39.55 - 33.68:.1f} points of MAP@R, {46.59 - 32.43:.1f} of NMI and {93.26 - 91.14:.1f}" in dml
    assert update_readme(text, runs, machine="a test CPU") == text  # rewriting again changes nothing


def test_check_fails_on_a_stale_block_passes_once_written_and_ignores_text_outside(runs, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["--readme", str(readme), "--runs", str(runs), "--machine", "a test CPU"]
    assert main([*args, "--check"]) == 1 and readme.read_text() == README
    assert "-stale 1.0 %" in capsys.readouterr().out
    assert main(args) == 0 and main([*args, "--check"]) == 0
    readme.write_text(readme.read_text().replace("outro", "outro, edited by hand"))
    assert main([*args, "--check"]) == 0
    readme.write_text(readme.read_text().replace("| 90.45 |", "| 91.45 |"))
    assert main([*args, "--check"]) == 1
    assert main([*args, "--check", "--machine", "another CPU"]) == 1
    assert [name for name, _, _ in changed_blocks(README, update_readme(README, runs, "m"))] == [
        "simclr_fmnist", "dml_fmnist"]


def test_a_missing_run_file_names_the_command_that_writes_it(runs, tmp_path, capsys):
    (runs / "simclr_fmnist" / "random_init" / "linear_probe.json").unlink()
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert main(["--readme", str(readme), "--runs", str(runs), "--machine", "m"]) == 2
    assert "python scripts/linear_probe.py --random-init --config configs/simclr_fmnist.yaml" in capsys.readouterr().err
    assert readme.read_text() == README


def test_a_block_without_a_writer_or_a_readme_without_blocks_is_an_error(runs):
    with pytest.raises(FiguresError, match="'figures: simclr_cifar' has no writer; known: simclr_fmnist, dml"):
        update_readme("<!-- BEGIN figures: simclr_cifar -->\nx\n<!-- END figures: simclr_cifar -->\n", runs, "m")
    with pytest.raises(FiguresError, match="no <!-- BEGIN figures"):
        update_readme("# no blocks\n", runs, "m")


def test_host_description_names_cores_model_and_native_bf16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert host_description(cpuinfo).endswith("-core AMD EPYC (bf16 natively: AVX512-BF16)")
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2\n")
    assert host_description(cpuinfo).endswith("-core Some CPU (no native bf16)")
