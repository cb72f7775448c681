"""Norm and cosine diagnostics, and the sslsec-diagnose command."""

import json

import pytest
import torch

from sslsec.analysis.diagnostics import projection_samples, summarize
from sslsec.augment import EvalTransform
from sslsec.cli import diagnose_main
from sslsec.data import load_split
from sslsec.methods import build_augment, build_projection_head
from sslsec.runs import load_projection_head, load_run
from tests.fixtures import small_cnn, template_dataset

def test_identical_views_give_positive_cosine_one_and_summary_matches():
    data, backbone, head = template_dataset(5), small_cnn(), build_projection_head("moco", small_cnn().feature_dim, 64, 16)
    samples = projection_samples(backbone, head, data, EvalTransform(None, data.mean, data.std), n=40, batch_size=16)
    assert samples["norms"].shape == (80,) and samples["positive_cosines"].shape == (40,)
    assert samples["negative_cosines"].shape == (2 * 16 * 15 + 8 * 7,)
    assert torch.allclose(samples["positive_cosines"], torch.ones(40), atol=1e-5)
    summary, norms = summarize(samples), samples["norms"].double()
    assert summary["norm_std_over_mean"] == pytest.approx((norms.std() / norms.mean()).item())
    gap = samples["positive_cosines"].double().mean() - samples["negative_cosines"].double().mean()
    assert summary["cosine_gap"] == pytest.approx(gap.item())


def test_diagnose_cli_writes_histograms_and_json(run_dir, capsys):
    diagnose_main(["--run", str(run_dir), "--n", "64"])
    result = json.loads((run_dir / "diagnostics_seed0.json").read_text())
    assert result["histograms"] == ["projection_norms_seed0.png", "pair_cosines_seed0.png"]
    for name in result["histograms"]:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n_images"] == 64 and result["norm_mean"] > 0 and result["method"] == "simclr"
    # an untrained network maps every view to nearly one direction: both means are high, and neither wins
    assert result["positive_cosine_mean"] > 0.8 and result["negative_cosine_mean"] > 0.8
    assert abs(result["cosine_gap"]) < 0.05
    assert result["cosine_gap"] == pytest.approx(result["positive_cosine_mean"] - result["negative_cosine_mean"])
    assert "std/mean" in capsys.readouterr().out

    # the same numbers from the run's own views, recomputed; trainer.seed picks images and views
    config, backbone = load_run(run_dir)
    test = load_split(config, "test")
    head = load_projection_head(run_dir, config, backbone.feature_dim)
    expected = summarize(projection_samples(backbone, head, test, build_augment(config, test), 64, seed=0))
    assert result["positive_cosine_mean"] == pytest.approx(expected["positive_cosine_mean"], abs=1e-6)
    assert result["norm_mean"] == pytest.approx(expected["norm_mean"], rel=1e-6)
    seed0 = {name: (run_dir / name).read_bytes() for name in ["diagnostics_seed0.json", *result["histograms"]]}
    diagnose_main(["--run", str(run_dir), "--n", "64", "trainer.seed=1"])
    reseeded = json.loads((run_dir / "diagnostics_seed1.json").read_text())
    assert reseeded["seed"] == 1 and reseeded["positive_cosine_mean"] != result["positive_cosine_mean"]
    assert all((run_dir / name).is_file() for name in reseeded["histograms"])
    # seed 1 wrote beside seed 0, not over it
    assert {name: (run_dir / name).read_bytes() for name in seed0} == seed0

    # other settings of the same seed never replace its diagnostics silently; --overwrite does
    with pytest.raises(SystemExit) as exit_info:
        diagnose_main(["--run", str(run_dir), "--n", "32"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "diagnostics_seed0.json holds the scores of another protocol (n=64 -> 32)" in err
    assert "--overwrite" in err and {name: (run_dir / name).read_bytes() for name in seed0} == seed0
    diagnose_main(["--run", str(run_dir), "--n", "32", "--overwrite"])
    assert json.loads((run_dir / "diagnostics_seed0.json").read_text())["n_images"] == 32
