"""The figure builders: pure functions of plain data → plotly figures with the expected parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.charts import (
    ClipRange,
    channel_range_figure,
    channel_scale_figure,
    color_of,
    convergence_figure,
    error_heatmap,
    histogram_figure,
    observer_colors,
    wins_figure,
)

EDGES = np.linspace(-2.0, 6.0, 9)
COUNTS = np.array([1, 5, 40, 100, 30, 4, 0, 1], dtype=float)
CLIPS = [ClipRange("MinMax", -2.0, 6.0), ClipRange("Percentile", -1.0, 2.5), ClipRange("Tuned", -0.5, 2.0)]


def test_histogram_has_bars_and_one_line_pair_per_observer() -> None:
    fig = histogram_figure(EDGES, COUNTS, CLIPS, title="block 0 · mlp_act")
    (bars,) = fig.data
    assert bars.type == "bar"
    np.testing.assert_allclose(bars.x, (EDGES[:-1] + EDGES[1:]) / 2)
    np.testing.assert_allclose(bars.y, COUNTS)
    shapes = fig.layout.shapes
    assert len(shapes) == 2 * len(CLIPS)
    for clip in CLIPS:
        lines = [s for s in shapes if s.legendgroup == clip.label]
        assert sorted((s.x0, s.x1) for s in lines) == [(clip.lo, clip.lo), (clip.hi, clip.hi)]
        assert {s.line.color for s in lines} == {color_of(clip.label)}
        assert [s.showlegend for s in lines].count(True) == 1  # one legend entry per observer
        assert all(s.yref == "paper" and (s.y0, s.y1) == (0, 1) for s in lines)
    assert {s.line.dash for s in shapes if s.legendgroup == "Tuned"} == {"dash"}
    assert len({color_of(c.label) for c in CLIPS}) == len(CLIPS)


def test_histogram_log_axis_and_legend_switch() -> None:
    assert histogram_figure(EDGES, COUNTS, CLIPS, log_y=True).layout.yaxis.type == "log"
    assert histogram_figure(EDGES, COUNTS, CLIPS).layout.yaxis.type == "linear"
    assert histogram_figure(EDGES, COUNTS, CLIPS[:1], legend=False).layout.showlegend is False


def test_legend_names_the_clip_range() -> None:
    fig = histogram_figure(EDGES, COUNTS, [ClipRange("KL", -1.25, 1.25)])
    assert [s.name for s in fig.layout.shapes if s.showlegend] == ["KL [-1.25, 1.25]"]


def test_channel_range_figure_draws_band_and_broadcasts_layer_wise_ranges() -> None:
    data_min, data_max = np.array([-1.0, -2.0, -0.5]), np.array([1.0, 8.0, 0.5])
    ranges = {
        "MinMax": (data_min, data_max),
        "KL": (np.array([-1.5]), np.array([1.5])),  # layer-wise: one value for every channel
    }
    fig = channel_range_figure(data_min, data_max, ranges)
    band = [t for t in fig.data if t.fill == "tonexty"]
    assert len(band) == 1 and list(band[0].y) == list(data_min)
    kl = [t for t in fig.data if t.legendgroup == "KL"]
    assert len(kl) == 2
    assert sorted(tuple(t.y) for t in kl) == [(-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)]
    assert all(list(t.x) == [0, 1, 2] for t in kl)
    assert sum(bool(t.showlegend) for t in fig.data if t.legendgroup == "MinMax") == 1


def test_channel_scale_figure_one_trace_per_observer() -> None:
    scales = {"MinMax": np.array([0.1, 0.2, 0.4, 0.8]), "Tuned": np.array([0.05])}
    fig = channel_scale_figure(scales, channels=4)
    assert [t.name for t in fig.data] == ["MinMax", "Tuned"]
    assert list(fig.data[1].y) == [0.05] * 4
    assert fig.data[1].line.dash == "dash"
    assert fig.layout.yaxis.type == "linear"
    assert channel_scale_figure(scales, channels=4, log_y=True).layout.yaxis.type == "log"


def test_error_heatmap_axes_and_colour_direction() -> None:
    rows = ["0 · attn_qkv", "0 · mlp_act", "1 · intSoft"]
    columns = ["MinMax", "Percentile", "OMSE", "KL"]
    values = np.arange(12, dtype=float).reshape(3, 4)
    fig = error_heatmap(values, rows, columns, "SQNR dB", higher_is_better=True)
    (heat,) = fig.data
    assert heat.type == "heatmap"
    assert list(heat.x) == columns and list(heat.y) == rows
    np.testing.assert_array_equal(np.asarray(heat.z), values)
    assert heat.colorbar.title.text == "SQNR dB"
    assert fig.layout.yaxis.autorange == "reversed"  # first point at the top
    mse = error_heatmap(values, rows, columns, "log10 MSE", higher_is_better=False)
    assert heat.colorscale != mse.data[0].colorscale  # reversed: low MSE is green


def test_wins_figure_bars_in_observer_colours() -> None:
    wins = {"MinMax": 3, "Percentile": 10, "OMSE": 15, "KL": 4}
    (bars,) = wins_figure(wins).data
    assert list(bars.x) == list(wins) and list(bars.y) == list(wins.values())
    assert list(bars.marker.color) == [observer_colors()[label] for label in wins]


@pytest.mark.parametrize("label", ["Tuned (KL)", "Tuned"])
def test_tuned_labels_share_the_tuned_colour(label: str) -> None:
    assert color_of(label) == observer_colors()["Tuned"]


def test_convergence_draws_each_observers_ends_with_the_legend_clear_of_the_axis() -> None:
    table = pd.DataFrame(
        {
            "observer_type": ["MinmaxObserver"] * 2 + ["PercentileObserver"] * 2,
            "batches": [1, 2, 1, 2],
            "clip_min": [-1.0, -1.5, -0.8, -0.9],
            "clip_max": [2.0, 2.5, 1.8, 1.9],
        }
    )
    fig = convergence_figure(table, {"MinmaxObserver": "MinMax", "PercentileObserver": "Percentile"})
    assert [t.name for t in fig.data] == ["MinMax max", "MinMax min", "Percentile max", "Percentile min"]
    np.testing.assert_allclose(fig.data[1].y, [-1.0, -1.5])
    legend = fig.layout.legend
    assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")  # at the foot, not over the ticks
    assert fig.layout.margin.b > 0
