"""The Compare tab: the four observers side by side on the selected point, then over all points
(error heatmap, which observer wins where, where MinMax falls apart, the full table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis import FitFailure, metric_matrix, wins
from explorer.charts import error_heatmap, histogram_figure, wins_figure
from explorer.config import ConfigError
from explorer.observers import observer_label
from explorer.ui import keys
from explorer.ui.explain import minmax_gaps
from explorer.ui.layer_view import ALL_VALUES, clip_lines
from explorer.ui.session import (
    Loaded,
    ObserverResult,
    cached_error_table,
    calibrated_summaries,
    point_facts,
    point_histogram,
    tuned_summary,
)

LOG_GRIDS = {"log2": "log2", "log_sqrt2": "log√2"}
"""The log grids compared on the softmax point, by quantizer → label."""


HEAT_METRICS = {
    "SQNR dB": ("sqnr_db", True),
    "log10 MSE": ("mse", False),
    "clipped %": ("clipped_fraction", False),
}
"""Heatmap colour choice → (error-table column, whether higher is better)."""


def log_grid_results(loaded: Loaded, block: int, name: str) -> dict[str, ObserverResult]:
    """On ``intSoft``: its configured observer choosing the top of each log grid (unsigned, same bits), by label."""
    if name != "intSoft":
        return {}
    point = loaded.run.config.point(name, block)
    bit_type = {"bits": point.bit_type.bits, "signed": False}
    results: dict[str, ObserverResult] = {}
    for grid, label in LOG_GRIDS.items():
        try:
            draft = point.replace(quantizer=grid, symmetric=None, bit_type=bit_type)
            results[label] = tuned_summary(loaded.run, loaded.settings.run_id, block, name, draft)
        except (ConfigError, ValueError, RuntimeError) as exc:
            results[label] = FitFailure(str(exc))
    return results


def side_by_side(loaded: Loaded, block: int, name: str) -> None:
    """One small histogram with its clip range and the metrics of each calibrated observer."""
    run, run_id = loaded.run, loaded.settings.run_id
    st.markdown(f"##### The four observers on block {block} · {name}")
    try:
        point_facts(run, run_id, block, name)
        edges, counts = point_histogram(run, run_id, block, name, ALL_VALUES)
    except ValueError as exc:
        st.error(str(exc))
        return
    results = {observer_label(t): r for t, r in calibrated_summaries(run, run_id, block, name).items()}
    logs = log_grid_results(loaded, block, name)
    results.update(logs)
    for column, (label, result) in zip(st.columns(len(results)), results.items(), strict=True):
        with column:
            if isinstance(result, FitFailure):
                st.error(f"{label}: {result.reason}")
                continue
            (clip,) = clip_lines({label: result})
            figure = histogram_figure(edges, counts, [clip], True, label, height=220, legend=False)
            st.plotly_chart(figure, key=keys.CMP_HIST_PREFIX + label)
            st.metric(f"{label} SQNR", f"{result.sqnr_db:.2f} dB")
            st.caption(
                f"clip [{clip.lo:.4g}, {clip.hi:.4g}] · MSE {result.mse:.4g} · "
                f"clipped {100 * result.clipped_fraction:.4f} %"
            )
    if logs:
        bits = loaded.run.config.point(name, block).bit_type.bits
        st.caption(
            f"log2 and log√2: the softmax's observer picks the clip max, the {bits}-bit log grid below it "
            "(FQ-ViT's and RepQ-ViT's softmax quantizers); set them in the Layer tab's Grid."
        )


def heat_values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The points × observers matrix of ``metric`` (a :data:`HEAT_METRICS` key) from the error table."""
    column, _ = HEAT_METRICS[metric]
    values = metric_matrix(table, column)
    if metric == "log10 MSE":
        with np.errstate(divide="ignore"):
            return np.log10(values)
    if metric == "clipped %":
        return 100 * values
    return values


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The error table as shown: one row per point × observer under readable headings, clipped in %."""
    return pd.DataFrame(
        {
            "block": table["block"],
            "point": table["point"],
            "kind": table["kind"],
            "observer": table["label"],
            "MSE": table["mse"],
            "SQNR dB": table["sqnr_db"],
            "clipped %": 100 * table["clipped_fraction"],
            "least MSE": table["best"],
            "failed because": table["failure"],
        }
    )


def open_in_layer(pick_key: str = keys.CMP_PICK) -> None:
    """Callback: select the point picked (``"block · point"``) in widget ``pick_key`` and switch to the Layer tab."""
    block, point = st.session_state[pick_key].split(" · ")
    st.session_state[keys.SEL_BLOCK] = int(block)
    st.session_state[keys.SEL_POINT] = point
    st.session_state[keys.VIEW] = "Layer"


def all_points(loaded: Loaded) -> None:
    """Heatmap, wins and the full error table over every point."""
    st.markdown("##### All points")
    table = cached_error_table(loaded.run, loaded.settings.run_id)
    sqnr = metric_matrix(table, "sqnr_db")
    rows = [f"{b} · {p}" for b, p in sqnr.index]
    st.markdown(minmax_gaps(sqnr))
    heat_col, wins_col = st.columns([2, 1], gap="large")
    with heat_col:
        metric = st.radio("Colour", list(HEAT_METRICS), horizontal=True, key=keys.HEAT_METRIC)
        _, higher_is_better = HEAT_METRICS[metric]
        values = heat_values(table, metric)
        st.plotly_chart(
            error_heatmap(values.to_numpy(dtype=float), rows, list(values.columns), metric, higher_is_better),
            key=keys.HEATMAP,
        )
    with wins_col:
        st.plotly_chart(wins_figure(wins(table), "Least MSE: points won"), key=keys.WINS)
        winners = table[table["best"]]
        by_kind = winners.groupby("kind")["label"].agg(lambda w: w.value_counts().idxmax())
        st.markdown("\n".join(f"- most often best on **{kind}** points: {best}" for kind, best in by_kind.items()))
        st.selectbox("Inspect a point", rows, key=keys.CMP_PICK)
        st.button("Open in the Layer tab", key=keys.CMP_OPEN, on_click=open_in_layer)
    st.dataframe(
        display_table(table),
        hide_index=True,
        key=keys.ERROR_TABLE,
        placeholder="—",
        column_config={
            "MSE": st.column_config.NumberColumn(format="%.3e"),
            "SQNR dB": st.column_config.NumberColumn(format="%.2f"),
            "clipped %": st.column_config.NumberColumn(format="%.4f"),
        },
    )


def compare_tab(loaded: Loaded, block: int, name: str) -> None:
    """Draw the Compare tab."""
    side_by_side(loaded, block, name)
    all_points(loaded)
