"""The Layer tab: one point's histogram with every observer's clip range, per-channel ranges and
scales, a metrics table, the distribution facts in words, and the tuning panel."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import streamlit as st
import torch

from explorer.analysis import DistributionFacts, FitFailure, ObserverSummary
from explorer.charts import ClipRange, channel_range_figure, channel_scale_figure, histogram_figure
from explorer.config import ConfigError, PointConfig
from explorer.observers import observer_label
from explorer.quant_ops import log_levels
from explorer.ui import keys
from explorer.ui.convergence_view import convergence_chart
from explorer.ui.explain import explain_facts
from explorer.ui.session import (
    Loaded,
    ObserverResult,
    calibrated_summaries,
    point_facts,
    point_histogram,
    point_log2_histogram,
    reset_when_changed,
    tuned_summary,
)
from explorer.ui.tuning import tuning_panel

TUNED_LABEL = "Tuned"
ALL_VALUES = -1
"""The "Histogram of" choice that shows every value rather than one channel."""


def observer_results(
    loaded: Loaded, block: int, name: str, draft: PointConfig | FitFailure
) -> dict[str, ObserverResult]:
    """The four calibrated observers and the tuned draft on one point, by label (or why each failed)."""
    run, run_id = loaded.run, loaded.settings.run_id
    results: dict[str, ObserverResult] = {
        observer_label(t): r for t, r in calibrated_summaries(run, run_id, block, name).items()
    }
    if isinstance(draft, FitFailure):
        results[TUNED_LABEL] = draft
    else:
        try:
            results[TUNED_LABEL] = tuned_summary(run, run_id, block, name, draft)
        except (ConfigError, ValueError, RuntimeError) as exc:
            results[TUNED_LABEL] = FitFailure(str(exc))
    return results


def summaries_only(results: Mapping[str, ObserverResult]) -> dict[str, ObserverSummary]:
    """The observers that succeeded."""
    return {label: r for label, r in results.items() if isinstance(r, ObserverSummary)}


def show_failures(results: Mapping[str, ObserverResult], block: int, name: str) -> None:
    """One ``st.error`` per calibrated observer that could not produce parameters on this point
    (the tuned one's error is shown with its metrics)."""
    for label, result in results.items():
        if isinstance(result, FitFailure) and label != TUNED_LABEL:
            st.error(f"{label} on block {block} {name}: {result}")


def clip_lines(summaries: Mapping[str, ObserverSummary], channel: int = ALL_VALUES) -> list[ClipRange]:
    """Each observer's clip range on the histogram: one channel's, or the widest over channels."""
    lines = []
    for label, s in summaries.items():
        if channel == ALL_VALUES:
            lo, hi = float(np.min(s.clip_min)), float(np.max(s.clip_max))
        else:
            index = channel if s.clip_min.size > 1 else 0
            lo, hi = float(s.clip_min[index]), float(s.clip_max[index])
        lines.append(ClipRange(label, lo, hi))
    return lines


def metrics_table(results: Mapping[str, ObserverResult], tuned_point: PointConfig | FitFailure) -> pd.DataFrame:
    """One row per observer: clip range (widest over channels), median scale and the error it causes.

    When some observer failed, a ``failed because`` column (second) gives its reason; its other cells are empty.
    """
    rows = []
    for label, result in results.items():
        row: dict[str, object] = {"observer": label, "failed because": ""}
        if label == TUNED_LABEL and isinstance(tuned_point, PointConfig):
            row["observer"] = f"{label} ({observer_label(tuned_point.observer_type)})"
        if isinstance(result, ObserverSummary):
            row.update(
                {
                    "granularity": "channel_wise" if result.clip_min.size > 1 else "layer_wise",
                    "clip min": float(np.min(result.clip_min)),
                    "clip max": float(np.max(result.clip_max)),
                    "grid": result.quantizer,
                    "scale (median)": float(np.median(result.scale)),
                    "MSE": result.mse,
                    "SQNR dB": result.sqnr_db,
                    "clipped %": 100 * result.clipped_fraction,
                    "clipping MSE": result.clip_mse,
                    "rounding MSE": result.round_mse,
                }
            )
        else:
            row["failed because"] = result.reason
        rows.append(row)
    table = pd.DataFrame(rows)
    return table if (table["failed because"] != "").any() else table.drop(columns="failed because")


def log_grid_levels(summary: ObserverSummary, bits: int, channel: int = ALL_VALUES) -> tuple[str, np.ndarray]:
    """``(grid, levels)`` to draw on a log2 axis: the summary's own log grid, or the log2 grid its clip
    max would have (a preview) when it is uniform; one channel's clip max, or the highest."""
    grid = summary.quantizer if summary.quantizer != "uniform" else "log2"
    top = (
        float(np.max(summary.clip_max))
        if channel == ALL_VALUES or summary.clip_max.size == 1
        else summary.clip_max[channel]
    )
    return grid, log_levels(torch.tensor(float(top)), bits, grid).numpy()


def _channel_label(facts: DistributionFacts) -> dict[int, str]:
    """Histogram choices: all values, then the extreme channels (flagged), then every channel."""
    extreme = dict(facts.extreme_channels)
    labels = {ALL_VALUES: "all values"}
    for channel, ratio in facts.extreme_channels:
        labels[channel] = f"channel {channel} — range {ratio:.1f}× the median"
    for channel in range(facts.channel_min.size):
        if channel not in extreme:
            labels[channel] = f"channel {channel}"
    return labels


def tuned_metrics(results: Mapping[str, ObserverResult], draft: PointConfig | FitFailure) -> None:
    """The tuned observer's clip range and error, with the SQNR change against its calibrated counterpart."""
    tuned = results[TUNED_LABEL]
    if not isinstance(tuned, ObserverSummary) or not isinstance(draft, PointConfig):
        st.error(f"Tuned settings are not usable: {tuned}")
        return
    label = observer_label(draft.observer_type)
    base = results.get(label)
    delta = f"{tuned.sqnr_db - base.sqnr_db:+.2f} dB" if isinstance(base, ObserverSummary) else None
    widest = " (widest channel)" if tuned.clip_min.size > 1 else ""
    columns = st.columns(5)
    columns[0].metric("Tuned clip min", f"{np.min(tuned.clip_min):.5g}", help=f"Lowest clip min{widest}.")
    columns[1].metric("Tuned clip max", f"{np.max(tuned.clip_max):.5g}", help=f"Highest clip max{widest}.")
    columns[2].metric(
        "Tuned SQNR",
        f"{tuned.sqnr_db:.2f} dB",
        delta=delta,
        delta_arrow="off",  # the sign says it; without the arrow the change fits on one line at 1100 px
        help=f"Change against calibrated {label}.",
    )
    columns[3].metric("Tuned MSE", f"{tuned.mse:.4g}")
    columns[4].metric("Tuned clipped", f"{100 * tuned.clipped_fraction:.4f} %")


def layer_tab(loaded: Loaded, block: int, name: str) -> None:
    """Draw the Layer tab for ``(block, name)``."""
    run, run_id = loaded.run, loaded.settings.run_id
    tune_col, chart_col = st.columns([1, 2.3], gap="large")
    with tune_col, st.container(border=True):
        draft = tuning_panel(block, name, lambda point: tuned_summary(run, run_id, block, name, point))
    results = observer_results(loaded, block, name, draft)
    summaries = summaries_only(results)
    with chart_col:
        try:
            facts = point_facts(run, run_id, block, name)
        except ValueError as exc:
            st.error(str(exc))
            return
        labels = _channel_label(facts)
        reset_when_changed(keys.HIST_FOR, (run_id, name), {keys.HIST_CHANNEL: ALL_VALUES})
        axes, pick = st.columns([1, 1.6])  # toggles stacked: side by side their labels are cut at 1100 px
        log_y = axes.toggle("Log count axis", value=True, key=keys.HIST_LOG)
        log2_x = (
            axes.toggle(
                "log2 x axis",
                key=keys.HIST_LOG2,
                disabled=facts.min < 0,
                help="For points ≥ 0 (the softmax): values on a log2 axis, with the levels of a log grid.",
            )
            and facts.min >= 0
        )
        channel = pick.selectbox("Histogram of", list(labels), format_func=labels.__getitem__, key=keys.HIST_CHANNEL)
        title = f"Block {block} · {name}" + ("" if channel == ALL_VALUES else f" · channel {channel}")
        tuned = summaries.get(TUNED_LABEL)
        if log2_x and isinstance(tuned, ObserverSummary) and isinstance(draft, PointConfig):
            edges, counts = point_log2_histogram(run, run_id, block, name, channel)
            grid, levels = log_grid_levels(tuned, draft.bit_type.bits, channel)
            figure = histogram_figure(
                edges, counts, clip_lines(summaries, channel), log_y, title, log2_x=True, levels=levels
            )
            preview = " (a preview: the tuned grid is uniform)" if tuned.quantizer == "uniform" else ""
            st.plotly_chart(figure, key=keys.HIST)
            st.caption(f"Dotted: the {len(levels)} levels of the tuned {grid} grid at its clip max{preview}.")
        else:
            edges, counts = point_histogram(run, run_id, block, name, channel)
            st.plotly_chart(
                histogram_figure(edges, counts, clip_lines(summaries, channel), log_y, title), key=keys.HIST
            )
        if channel == ALL_VALUES and any(s.clip_min.size > 1 for s in summaries.values()):
            st.caption(
                "Channel-wise observers are drawn at their widest channel (lowest clip min, highest clip max); "
                "pick a channel to see its own ranges."
            )
        tuned_metrics(results, draft)
        convergence_chart(loaded, block, name)
    show_failures(results, block, name)
    st.markdown("##### Observers on this point")
    st.dataframe(
        metrics_table(results, draft),
        hide_index=True,
        key=keys.LAYER_METRICS,
        placeholder="—",
        column_config={
            "failed because": st.column_config.TextColumn(
                width="medium", help="Why this observer gave no parameters here (the full text is above)"
            ),
            "clip min": st.column_config.NumberColumn(format="%.4g"),
            "clip max": st.column_config.NumberColumn(format="%.4g"),
            "scale (median)": st.column_config.NumberColumn(format="%.4g"),
            "MSE": st.column_config.NumberColumn(format="%.3e"),
            "SQNR dB": st.column_config.NumberColumn(format="%.2f"),
            "clipped %": st.column_config.NumberColumn(format="%.4f"),
            "clipping MSE": st.column_config.NumberColumn(
                format="%.3e", help="MSE from values beyond the end levels (clipped)"
            ),
            "rounding MSE": st.column_config.NumberColumn(
                format="%.3e", help="MSE from values inside the range (rounding)"
            ),
        },
    )
    st.markdown("##### What the data says")
    tuned_point = st.session_state[keys.TUNED].point(name, block)
    sentences = explain_facts(facts, tuned_point.calibration_mode == "channel_wise", tuned_point.bit_type)
    st.markdown("\n".join(f"- {sentence}" for sentence in sentences))
    st.markdown("##### Per channel")
    ranges = {label: (s.clip_min, s.clip_max) for label, s in summaries.items()}
    scales = {label: s.scale for label, s in summaries.items()}
    channels = facts.channel_min.size
    col1, col2 = st.columns(2)
    col1.plotly_chart(
        channel_range_figure(facts.channel_min, facts.channel_max, ranges, "Clip range per channel (x: channel)"),
        key=keys.CH_RANGE,
    )
    col2.plotly_chart(channel_scale_figure(scales, channels, title="Scale per channel (x: channel)"), key=keys.CH_SCALE)
