"""The Sensitivity and Recommend tabs through ``AppTest``, and the analysis figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis import ExplorerRun
from explorer.analysis.mixed_precision import MixedPrecision, assign_bits
from explorer.analysis.recommend import Recommendation, config_of
from explorer.analysis.sensitivity import Score
from explorer.charts import pareto_figure, pareto_front, sensitivity_figure
from explorer.config import QuantConfig
from explorer.ui import analysis_view

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT_S = 900  # the first run calibrates the demo; a loaded 2-core machine can take minutes


def open_tab(tab: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    at.session_state["view"] = tab
    at.run()
    assert not at.exception, at.exception
    return at


def test_sensitivity_tab_measures_every_point_and_opens_one() -> None:
    at = open_tab("Sensitivity")
    at.button(key="sens_run").click().run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "only_sqnr_db" in df.value.columns)
    assert len(table) == 4 * 8
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="sens_pick").set_value("3 · mlp_fc2")
    at.button(key="sens_open").click().run()
    assert at.session_state["view"] == "Layer"
    assert any(m.value == "**Tune block 3 · mlp_fc2**" for m in at.markdown)


def _click_bar(payload: str) -> None:
    """App script: the sensitivity chart's state as the browser reports a click, then the chart's callback."""
    import streamlit as st
    from streamlit.elements.plotly_chart import PlotlyChartSelectionSerde

    from explorer.ui.analysis_view import _select_from_chart

    st.session_state["sens_chart"] = PlotlyChartSelectionSerde().deserialize(payload)
    _select_from_chart("sens_chart")


def test_clicking_a_bar_opens_its_point_in_the_layer_tab() -> None:
    table = pd.DataFrame(
        {"block": [0, 2, 1], "point": ["attn_qkv", "intSoft", "mlp_fc2"], "only_sqnr_db": [30.0, 10.0, 20.0]}
    )
    bar = sensitivity_figure(table, "only_sqnr_db").data[0]
    i = 1  # the second most harmful bar: only_sqnr_db 20, block 1 · mlp_fc2
    point = {"curve_number": 0, "point_number": i, "point_index": i, "x": bar.x[i], "y": bar.y[i], "label": bar.y[i]}
    payload = {"selection": {"points": [point], "point_indices": [i], "box": [], "lasso": []}}
    at = AppTest.from_function(_click_bar, args=(json.dumps(payload),)).run()
    assert not at.exception, at.exception
    assert (at.session_state["sel_block"], at.session_state["sel_point"]) == (1, "mlp_fc2")
    assert at.session_state["view"] == "Layer"


def test_recommend_tab_compares_and_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_recommend(
        model: object, run: ExplorerRun, eval_batches: object, bits: object, progress: object
    ) -> Recommendation:
        """The run's own config, written out per point: the table and buttons are what is tested."""
        score = Score(30.0, 1.0)
        points = {(b, p): run.config.point(p, b) for b, p in run.points}
        return Recommendation(config_of(points), dict.fromkeys(points, "test reason"), score, score)

    monkeypatch.setattr(analysis_view, "recommend", fake_recommend)
    at = open_tab("Recommend")
    at.button(key="rec_run").click().run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "agreement %" in df.value.columns)
    assert list(table["config"]) == [
        "recommendation",
        "guide (recommended_config.yaml)",
        "uniform MinMax",
        "uniform Percentile",
        "uniform OMSE",
        "uniform KL",
    ]
    at.button(key="rec_apply").click().run()
    assert not at.exception, at.exception
    assert 0 in at.session_state["tuned"].blocks
    assert any("Applied the recommendation" in s.value for s in at.success)


def test_mixed_precision_section_plots_and_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_search(
        model: object, run: ExplorerRun, config: QuantConfig, *args: object, **kwargs: object
    ) -> MixedPrecision:
        """Two assignments, the narrower chosen: the plot, table and apply are what is tested."""
        bits = dict.fromkeys(run.points, 6)
        tried = pd.DataFrame(
            {"label": ["a", "b"], "average_bits": [8.0, 6.0], "sqnr_db": [30.0, 20.0], "agreement": [1.0, 0.99]}
        )
        tried["chosen"] = [False, True]
        return MixedPrecision(assign_bits(config, bits), bits, tried)

    monkeypatch.setattr(analysis_view, "search_mixed_precision", fake_search)
    at = open_tab("Recommend")
    at.button(key="mp_run").click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1
    at.button(key="mp_apply").click().run()
    assert at.session_state["tuned"].point("mlp_act", 2).bit_type.bits == 6
    assert any("Applied the mixed-precision assignment" in s.value for s in at.success)


def test_sensitivity_figure_puts_the_most_harmful_first() -> None:
    table = pd.DataFrame(
        {"block": [0, 0, 1], "point": ["a", "b", "a"], "only_sqnr_db": [30.0, 10.0, 20.0], "all_but_sqnr_db": [1, 3, 2]}
    )
    assert list(sensitivity_figure(table, "only_sqnr_db").data[0].y) == ["0 · b", "1 · a", "0 · a"]
    assert list(sensitivity_figure(table, "all_but_sqnr_db").data[0].y) == ["0 · b", "1 · a", "0 · a"]


def test_pareto_front_keeps_the_undominated() -> None:
    tried = pd.DataFrame(
        {
            "label": ["a", "b", "c", "d"],
            "average_bits": [4.0, 5.0, 6.0, 8.0],
            "agreement": [0.90, 0.85, 0.97, 0.97],
            "chosen": [False, False, True, False],
        }
    )
    assert list(pareto_front(tried)["label"]) == ["a", "c"]
    assert len(pareto_figure(tried, 6.0).data) == 3
