"""The study's figures read at a glance: one shared x axis of ||z|| / mean for the norm histograms, titles inside
the figure, whole-number epochs; and the table's schedule column of a variant without a regularizer."""

import pytest
import torch
from safetensors.torch import save_file

from sslsec.analysis.study import (NORMS_FILE, loss_settings, monitor_figure, norms_figure, plot_study,
                                   schedule_cell)
from sslsec.config import LossConfig

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

SPREADS = {"none": (40.0, 10.0), "sec_paper": (3.0, 0.15), "sec_constant": (8.0, 0.6), "sec_linear": (8.0, 0.6),
           "sec_ema": (8.0, 0.5), "l2": (1.0, 0.25)}  # variant -> (mean, std) of its norms: scales 40x apart


def _rows(output_dir, variants=SPREADS, epochs=(1, 2, 3)):
    generator = torch.Generator().manual_seed(0)
    rows = []
    for variant in variants:
        mean, std = SPREADS[variant]
        norms = (mean + std * torch.randn(512, generator=generator)).abs()
        (output_dir / f"{variant}_seed0").mkdir()
        save_file({"norms": norms}, str(output_dir / f"{variant}_seed0" / NORMS_FILE))
        rows.append({"variant": variant, "seed": 0, "method": "simclr", "dataset": "npz",
                     "norm_std_over_mean": (norms.std() / norms.mean()).item(), "monitor": "knn_top1",
                     "monitor_split": "val", "knn_per_epoch": [[epoch, 50.0 + epoch] for epoch in epochs]})
    return rows


def _drawn(figure):
    FigureCanvasAgg(figure).draw()
    return figure, figure.canvas.get_renderer()


def _texts_inside_and_apart(figure):
    """Every axes title and the suptitle lie inside the figure, and no two titles overlap."""
    figure, renderer = _drawn(figure)
    titles = [axes.title for axes in figure.axes if axes.get_visible() and axes.get_title()]
    if figure._suptitle is not None:
        titles.append(figure._suptitle)
    boxes = [title.get_window_extent(renderer) for title in titles]
    inside = figure.bbox
    for title, box in zip(titles, boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, \
            title.get_text()
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), titles[i].get_text()
    return titles


def test_norm_histograms_share_one_axis_of_the_norm_over_its_mean(tmp_path):
    rows = _rows(tmp_path)
    figure = norms_figure(rows, tmp_path)
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert len(panels) == len(SPREADS)
    limits = {axes.get_xlim() for axes in panels}
    assert len(limits) == 1  # one shared x axis
    (low, high), = limits
    for axes, (variant, (mean, std)) in zip(panels, SPREADS.items()):
        edges = sorted({round(patch.get_x(), 9) for patch in axes.patches})
        assert edges == sorted({round(patch.get_x(), 9) for patch in panels[0].patches})  # the same bins
        assert sum(patch.get_height() for patch in axes.patches) == 512
        # the bars sit around 1 (= the run's own mean) whatever the norms' scale (1 to 40 here)
        weighted = sum((patch.get_x() + patch.get_width() / 2) * patch.get_height() for patch in axes.patches) / 512
        assert weighted == pytest.approx(1.0, abs=0.02)
        assert axes.get_title().startswith(f"{variant}: std/mean ")
    assert low < 1 < high
    assert {axes.get_xlabel() for axes in panels if axes.get_xlabel()} == {"||z|| / mean ||z||"}


def test_norm_histogram_titles_are_not_clipped(tmp_path):
    titles = _texts_inside_and_apart(norms_figure(_rows(tmp_path), tmp_path))
    assert len(titles) == len(SPREADS) + 1  # every panel's and the figure's


def test_the_monitor_plot_has_whole_epoch_ticks_even_for_one_epoch(tmp_path):
    for epochs in ((1,), (1, 2, 3), tuple(range(1, 12))):
        (tmp_path / str(len(epochs))).mkdir()
        figure, _ = _drawn(monitor_figure(_rows(tmp_path / str(len(epochs)), ["none", "sec_ema"], epochs)))
        (axes,) = figure.axes
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), (epochs, ticks)
        _texts_inside_and_apart(figure)


def test_plot_study_writes_both_pngs(tmp_path):
    paths = plot_study(_rows(tmp_path, ["none", "sec_ema", "l2"]), tmp_path)
    assert [path.name for path in paths] == ["study_knn.png", "study_norms.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in paths)


def test_a_variant_without_a_regularizer_has_no_schedule():
    none = loss_settings(LossConfig(sec_weight=0.0, norm_penalty_weight=0.0, sec_schedule="linear"))
    sec = loss_settings(LossConfig(sec_weight=0.35, sec_schedule="linear"))
    l2 = loss_settings(LossConfig(sec_weight=0.0, norm_penalty_weight=0.01, sec_schedule="constant"))
    assert none["sec_schedule"] is None and sec["sec_schedule"] == "linear" and l2["sec_schedule"] == "constant"
    assert [schedule_cell(row) for row in (none, sec, l2)] == ["-", "linear", "constant"]
    # a row written before this change names the schedule of nothing: still shown as "-"
    assert schedule_cell({**none, "sec_schedule": "linear"}) == "-"
