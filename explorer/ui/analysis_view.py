"""The Sensitivity and Recommend tabs.

The analyses run the model many times, so they start on a button, with a progress bar, and their
results are kept in the session per run and config. Choices are made on the first half of the
held-out images and reported on the second half, so a table never grades a choice on the images
that made it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd
import streamlit as st
from torch import Tensor

from explorer.analysis import (
    AccuracyReport,
    evaluate_quantized,
    quantized_model,
    recommend,
    search_mixed_precision,
    sensitivity,
)
from explorer.analysis.mixed_precision import with_bits
from explorer.charts import pareto_figure, sensitivity_figure
from explorer.charts.analysis import SENSITIVITY_COLUMNS
from explorer.config import ConfigError, ConfigWarning, QuantConfig, dump_config, load_config
from explorer.ui import keys
from explorer.ui.compare_view import open_in_layer
from explorer.ui.session import Loaded
from explorer.ui.sidebar import CONFIG_DIR, DEFAULT_CONFIG

MAX_SELECTION_IMAGES = 256
UNIFORM_CONFIGS = {
    "MinMax": "quant_config_minmax.yaml",
    "Percentile": "quant_config_percentile.yaml",
    "OMSE": "quant_config_omse.yaml",
    "KL": "quant_config_kl.yaml",
}
BIT_CHOICES: dict[str, int | None] = {"as the config says": None, "4": 4, "6": 6, "8": 8}


def split_holdout(loaded: Loaded) -> tuple[list[Tensor], Tensor, Tensor | None]:
    """Selection batches (first half of the held-out images, at most 256) and the report images
    and labels (the second half)."""
    images, labels = loaded.holdout.images, loaded.holdout.labels
    half = max(1, len(images) // 2)
    selection = list(images[: min(half, MAX_SELECTION_IMAGES)].split(64))
    return selection, images[half:], None if labels is None else labels[half:]


def _progress(text: str) -> tuple[Callable[[int, int], None], Any]:
    """A progress bar and the callback that moves it."""
    bar = st.progress(0.0, text=text)
    return lambda done, total: bar.progress(min(1.0, done / total), text=f"{text} {done}/{total}"), bar


def _stored(key: Hashable) -> Any:
    return st.session_state.setdefault(keys.ANALYSIS_RESULTS, {}).get(key)


def _store(key: Hashable, value: object) -> None:
    st.session_state.setdefault(keys.ANALYSIS_RESULTS, {})[key] = value


def _bundled(name: str, bits: int | None) -> QuantConfig:
    """A config of ``configs/``, at ``bits`` on every point when given (its own warnings silenced:
    the comparison is the point)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        config = load_config(CONFIG_DIR / name)
        return config if bits is None else with_bits(config, bits)


def _report_row(label: str, loaded: Loaded, config: QuantConfig) -> dict[str, object]:
    """One comparison row: top-1, agreement and logit SQNR on the report images."""
    _, images, labels = split_holdout(loaded)
    report: AccuracyReport = evaluate_quantized(quantized_model(loaded.model, loaded.run, config), images, labels)
    return {
        "config": label,
        "top-1 %": report.quant_top1,
        "agreement %": 100 * report.agreement,
        "logit SQNR dB": report.logit_sqnr_db,
    }


def _select_from_chart(chart_key: str) -> None:
    """Callback: a bar clicked in the sensitivity chart opens its point in the Layer tab."""
    points = st.session_state[chart_key].selection.points
    if points:
        st.session_state[keys.SENS_PICK] = str(points[0]["y"])
        open_in_layer(keys.SENS_PICK)


def sensitivity_tab(loaded: Loaded, config: QuantConfig) -> None:
    """Only-this-point and all-but-this-point scores of every point, sorted, for the tuned config."""
    st.markdown("##### Which point hurts: each point quantized alone, and every point but it")
    selection, _, _ = split_holdout(loaded)
    key = ("sensitivity", loaded.settings.run_id, dump_config(config))
    if st.button("Measure sensitivity", key=keys.SENS_RUN, type="primary"):
        progress, bar = _progress("Scoring points…")
        try:
            _store(key, sensitivity(loaded.model, loaded.run, config, selection, progress))
        except (ConfigError, ValueError, RuntimeError) as exc:
            st.error(f"Could not measure sensitivity: {exc}")
        finally:
            bar.empty()
    table: pd.DataFrame | None = _stored(key)
    if table is None:
        st.info(
            f"Press **Measure sensitivity** to score every point with the tuned config on "
            f"{sum(len(b) for b in selection)} held-out images (logit SQNR and top-1 agreement against FP32)."
        )
        return
    column = st.radio(
        "Bars",
        list(SENSITIVITY_COLUMNS),
        format_func=SENSITIVITY_COLUMNS.__getitem__,
        horizontal=True,
        key=keys.SENS_BARS,
    )
    st.plotly_chart(
        sensitivity_figure(table, column),
        key=keys.SENS_CHART,
        on_select=lambda: _select_from_chart(keys.SENS_CHART),
        selection_mode="points",
    )
    rows = [f"{b} · {p}" for b, p in zip(table["block"], table["point"], strict=True)]
    st.caption("Click a bar, or pick a point below, to open it in the Layer tab.")
    col1, col2 = st.columns([2, 1])
    col1.selectbox("Inspect a point", rows, key=keys.SENS_PICK)
    col2.button("Open in the Layer tab", key=keys.SENS_OPEN, on_click=open_in_layer, args=(keys.SENS_PICK,))
    st.dataframe(table, hide_index=True, key=keys.SENS_TABLE)


def _apply(config: QuantConfig, what: str) -> None:
    """Callback: make ``config`` the tuned config."""
    st.session_state[keys.TUNED] = config
    st.session_state[keys.ANALYSIS_APPLIED] = f"Applied the {what} as the tuned config; the Export tab has the YAML."


def recommend_section(loaded: Loaded) -> None:
    """The recommendation beside the guide's and the uniform configs, with apply and download."""
    st.markdown("##### Recommended config")
    selection, report_images, _ = split_holdout(loaded)
    choice = st.selectbox("Bits on every point", list(BIT_CHOICES), key=keys.REC_BITS)
    bits = BIT_CHOICES[choice]
    key = ("recommend", loaded.settings.run_id, bits)
    if st.button("Recommend", key=keys.REC_RUN, type="primary"):
        progress, bar = _progress("Ranking and refining candidates…")
        try:
            recommendation = recommend(loaded.model, loaded.run, selection, bits, progress=progress)
            rows = [_report_row("recommendation", loaded, recommendation.config)]
            rows.append(_report_row(f"guide ({DEFAULT_CONFIG})", loaded, _bundled(DEFAULT_CONFIG, bits)))
            rows += [_report_row(f"uniform {lbl}", loaded, _bundled(f, bits)) for lbl, f in UNIFORM_CONFIGS.items()]
            _store(key, (recommendation, pd.DataFrame(rows)))
        except (ConfigError, ValueError, RuntimeError) as exc:
            st.error(f"Could not recommend a config: {exc}")
        finally:
            bar.empty()
    stored = _stored(key)
    if stored is None:
        st.info(
            "Press **Recommend**: every point's candidates (observers × granularity × alpha × kl_bins × signedness) "
            "are ranked by the point's error, then the best few are tried in the model."
        )
        return
    recommendation, table = stored
    st.dataframe(table, hide_index=True, key=keys.REC_TABLE)
    st.caption(
        f"Chosen on {sum(len(b) for b in selection)} held-out images, measured here on the other {len(report_images)}."
    )
    col1, col2 = st.columns(2)
    col1.button(
        "Apply recommendation", key=keys.REC_APPLY, on_click=_apply, args=(recommendation.config, "recommendation")
    )
    text = recommendation.yaml()
    col2.download_button("Download YAML", text, file_name="recommended.yaml", mime="application/x-yaml")
    with st.expander("YAML, with why each point got its setting"):
        st.code(text, language="yaml")


def mixed_precision_section(loaded: Loaded, config: QuantConfig) -> None:
    """Bits per point under an average-bit budget, for the tuned config's observers."""
    st.markdown("##### Mixed precision")
    selection, _, _ = split_holdout(loaded)
    col1, col2 = st.columns(2)
    budget = col1.number_input("Average bits at most", 2.0, 16.0, 6.0, 0.25, key=keys.MP_BUDGET)
    choices = col2.multiselect("Widths to choose from", [2, 3, 4, 5, 6, 7, 8], [4, 6, 8], key=keys.MP_CHOICES)
    key = ("mixed", loaded.settings.run_id, dump_config(config), float(budget), tuple(sorted(choices)))
    if st.button("Assign bits", key=keys.MP_RUN, type="primary", disabled=not choices):
        progress, bar = _progress("Scoring points at each width…")
        try:
            _store(key, search_mixed_precision(loaded.model, loaded.run, config, selection, budget, choices, progress))
        except (ConfigError, ValueError, RuntimeError) as exc:
            st.error(f"Could not assign bits: {exc}")
        finally:
            bar.empty()
    result = _stored(key)
    if result is None:
        st.info("Press **Assign bits** to give sensitive points more bits within the average-bit budget.")
        return
    st.plotly_chart(pareto_figure(result.tried, budget, "Agreement vs average bits"), key=keys.MP_PARETO)
    st.dataframe(result.tried, hide_index=True, key=keys.MP_TABLE)
    col1, col2 = st.columns(2)
    col1.button("Apply bits", key=keys.MP_APPLY, on_click=_apply, args=(result.config, "mixed-precision assignment"))
    col2.download_button("Download YAML", dump_config(result.config), file_name="mixed_precision.yaml")


def recommend_tab(loaded: Loaded, config: QuantConfig) -> None:
    """Draw the Recommend tab: the recommendation, then mixed precision."""
    applied = st.session_state.pop(keys.ANALYSIS_APPLIED, None)
    if applied is not None:
        st.success(applied)
    recommend_section(loaded)
    mixed_precision_section(loaded, config)
