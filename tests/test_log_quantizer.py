"""The log2 / log√2 quantizers: the primitive against a plain loop, the metrics from statistics,
the config key, the observers' domain check, the ViT block and the explorer's summaries."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_impls import log_fake_quant_reference
from streamlit.testing.v1 import AppTest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer import UINT4, BitType, QuantTimmVitBlock, build_observer, load_config
from explorer.analysis.explore import log2_histogram, point_summary, quantized_model, run_calibration
from explorer.charts import ClipRange, histogram_figure
from explorer.config import ConfigError, ConfigWarning, dump_config
from explorer.quant_ops import LOG_BASES, fake_quantize, fake_quantize_log, qparams_from_range, quant_error
from explorer.stats import PointStats
from explorer.stats.log_metrics import LogHistogram, binned_log_sse, log_error_from_stats, log_error_from_values
from explorer.ui.tuning import draft_point, widget_values

QUANTIZERS = ("log2", "log_sqrt2")
APP = Path(__file__).resolve().parents[1] / "app.py"
pytestmark = pytest.mark.filterwarnings("ignore::explorer.config.errors.ConfigWarning")


def softmax_batches(count: int = 3, tokens: int = 40, seed: int = 0) -> list[Tensor]:
    """Attention-like maps ``[2, 3, tokens, tokens]``, with a few exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(2, 3, tokens, tokens, generator=generator) * 3).softmax(-1) for _ in range(count)]
    for b in batches:
        b[0, 0, 0, :3] = 0.0
    return batches


def reference_breakdown(values: list[float], clip_max: float, bits: int, base: float) -> tuple[float, float, float]:
    """``(mse, clipped fraction, clipping mse)`` by a loop: clipped means flushed to 0 from above 0,
    or above the top level's rounding interval."""
    quantized = log_fake_quant_reference(values, clip_max, bits, base)
    low, high = clip_max * base ** -(2**bits - 1.5), clip_max * math.sqrt(base)
    sse = clip_sse = 0.0
    clipped = 0
    for x, q in zip(values, quantized, strict=True):
        sse += (x - q) ** 2
        if 0 < x < low or x > high:
            clipped += 1
            clip_sse += (x - q) ** 2
    n = len(values)
    return sse / n, clipped / n, clip_sse / n


# ----- the primitive ------------------------------------------------------------------------------
@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_log_matches_the_loop(quantizer: str, bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.rand(500, generator=generator) ** 6 * 1.3, torch.tensor([0.0, 1e-30, 0.8, 1.0, 2.0])])
    clip_max = 0.8
    expected = torch.tensor(
        log_fake_quant_reference(x.double().tolist(), clip_max, bits, LOG_BASES[quantizer]), dtype=torch.float64
    )
    got = fake_quantize_log(x.double(), torch.tensor(clip_max, dtype=torch.float64), bits, quantizer)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_fake_quantize_uses_the_top_of_the_uniform_grid(quantizer: str) -> None:
    x = softmax_batches(1)[0]
    scale, zero_point = qparams_from_range(x.min(), x.max(), UINT4)
    got = fake_quantize(x, scale, zero_point, UINT4, quantizer)
    assert got.dtype == x.dtype
    torch.testing.assert_close(got, fake_quantize_log(x, x.max(), 4, quantizer))
    levels = set(got.unique().tolist()) - {0.0}
    assert len(levels) <= 2**4 - 1


# ----- metrics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("bits", [3, 4])
def test_error_from_values_matches_the_loop(quantizer: str, bits: int) -> None:
    values = torch.cat([b.reshape(-1) for b in softmax_batches(1)])
    clip_max = float(values.max()) * 0.5  # some values saturate
    bit_type = BitType(bits, False)
    scale, zero_point = qparams_from_range(torch.tensor(0.0), torch.tensor(clip_max), bit_type)
    err = log_error_from_values(values.reshape(1, -1), scale, zero_point, bit_type, quantizer)
    top = float((bit_type.upper_bound - zero_point.double()) * scale.double())
    mse, clipped, clip_mse = reference_breakdown(values.double().tolist(), top, bits, LOG_BASES[quantizer])
    assert err.mse == pytest.approx(mse, rel=1e-9)
    assert err.clipped_fraction == pytest.approx(clipped)
    assert err.clip_mse == pytest.approx(clip_mse, rel=1e-9)
    assert err.round_mse == pytest.approx(mse - clip_mse, rel=1e-9, abs=1e-15)
    whole = quant_error(values, scale, zero_point, bit_type, quantizer)
    assert whole.mse == pytest.approx(mse, rel=1e-6)
    assert whole.clipped_fraction == pytest.approx(clipped)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_binned_integration_is_exact_for_evenly_spread_values(quantizer: str) -> None:
    """Values evenly spread inside each bin: the integral equals the mean over a fine grid of them."""
    edges = torch.tensor([[0.0, 0.01, 0.05, 0.3, 0.9, 1.6]], dtype=torch.float64)
    counts = torch.tensor([[10, 20, 5, 1, 3]])
    clip_max, bits = torch.tensor([1.0], dtype=torch.float64), 3
    rounding, clipping = binned_log_sse(counts, edges, clip_max, bits, quantizer)
    expected = 0.0
    for m in range(5):
        a, b = float(edges[0, m]), float(edges[0, m + 1])
        fine = torch.linspace(a, b, 200_001, dtype=torch.float64)[:-1] + (b - a) / 400_000
        error = (fine - fake_quantize_log(fine, clip_max, bits, quantizer)) ** 2
        expected += float(counts[0, m]) * float(error.mean())
    assert float(rounding + clipping) == pytest.approx(expected, rel=1e-6)
    assert float(clipping) > 0  # the bin above the top saturates


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("mode", ["layer_wise", "channel_wise"])
def test_error_from_stats_within_a_tenth_of_a_db_of_exact(quantizer: str, mode: str) -> None:
    batches = softmax_batches(3, tokens=96)
    stats = PointStats("activation")
    for b in batches:
        stats.update(b)
    view = dataclasses.replace(stats.view(mode), raw=None)  # force the histogram path
    scale, zero_point = qparams_from_range(view.min, view.max, UINT4)
    binned = log_error_from_stats(view, scale, zero_point, UINT4, quantizer)
    rows = torch.cat([b.transpose(0, 1).reshape(3, -1) for b in batches], dim=1)
    if mode == "layer_wise":
        rows = rows.reshape(1, -1)
    exact = log_error_from_values(rows, scale.reshape(-1), zero_point.reshape(-1), UINT4, quantizer)
    assert binned.sqnr_db == pytest.approx(exact.sqnr_db, abs=0.1)
    assert binned.clipped_fraction == pytest.approx(exact.clipped_fraction, abs=0.01)
    kept = log_error_from_stats(stats.view(mode), scale, zero_point, UINT4, quantizer)
    if stats.view(mode).raw is not None:
        assert kept == log_error_from_values(stats.view(mode).raw, scale, zero_point, UINT4, quantizer)


def test_metrics_refuse_negative_data() -> None:
    stats = PointStats("activation")
    stats.update(torch.randn(2, 8, 16))
    scale, zero_point = qparams_from_range(torch.tensor(-1.0), torch.tensor(1.0), UINT4)
    with pytest.raises(ValueError, match="data ≥ 0 only"):
        log_error_from_stats(stats.view("layer_wise"), scale, zero_point, UINT4, "log2")


def test_log_histogram_merges_exactly_and_integrates_close_to_exact() -> None:
    batches = softmax_batches(3)
    flat = [b.reshape(1, -1) for b in batches]
    one = LogHistogram.empty(1)
    for f in flat:
        one = one.counted(f)
    parts = LogHistogram.empty(1).counted(flat[0]).merged(LogHistogram.empty(1).counted(torch.cat(flat[1:], 1)))
    assert torch.equal(one.counts, parts.counts) and torch.equal(one.zeros, parts.zeros)
    assert int(one.zeros) == 3 * 3 and int(one.counts.sum() + one.zeros) == sum(f.numel() for f in flat)
    values = torch.cat(flat, dim=1)
    top = values.max().double()
    scale, zero_point = qparams_from_range(torch.tensor(0.0), values.max(), UINT4)
    for quantizer in QUANTIZERS:
        rounding, clipping = one.log_sse(top, 4, quantizer)
        exact = log_error_from_values(values, scale, zero_point, UINT4, quantizer)
        assert float(rounding + clipping) / values.numel() == pytest.approx(exact.mse, rel=0.05)
    with pytest.raises(ValueError, match="data ≥ 0 only"):
        one.counted(torch.tensor([[0.5, -0.1]]))


# ----- config ---------------------------------------------------------------------------------------
def test_config_quantizer_key_defaults_and_round_trips() -> None:
    text = "attn_layer:\n  intSoft:\n    bit_type: uint4\n    quantizer: log_sqrt2\n"
    config = load_config(text)
    assert config.point("intSoft").quantizer == "log_sqrt2"
    assert config.point("sv_attn").quantizer == "uniform"
    assert load_config(dump_config(config)) == config
    assert config.point("intSoft").replace(quantizer="log2").quantizer == "log2"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("attn_layer:\n  intSoft:\n    quantizer: log2\n", 3, "unsigned bit type"),
        ("layers:\n  mlp_fc1:\n    bit_type: uint4\n    quantizer: log2\n", 4, "applies to activations"),
        ("default:\n  bit_type: uint8\n  quantizer: log2\n", 3, "applies to activations"),
        ("attn_layer:\n  intSoft:\n    bit_type: uint4\n    symmetric: false\n    quantizer: log2\n", 5, "symmetric"),
        ("attn_layer:\n  intSoft:\n    quantizer: log10\n", 3, "uniform, log2, log_sqrt2"),
    ],
)
def test_config_rejects_log_quantizers_where_they_make_no_sense(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_config(text)
    assert f"line {line}" in str(caught.value)


# ----- observers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("observer_type", ["MinmaxObserver", "PercentileObserver", "OmseObserver"])
def test_observers_refuse_negative_data_under_a_log_grid(observer_type: str) -> None:
    entry = {"observer_type": observer_type, "bit_type": "uint4", "quantizer": "log2", "calibration_mode": "layer_wise"}
    observer = build_observer(entry)
    assert observer.quantizer == "log2"
    with pytest.raises(ValueError, match="data ≥ 0 only"):
        observer.update(torch.randn(2, 4, 8))
    assert observer.num_batches == 0
    stats = PointStats("activation")
    stats.update(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="data ≥ 0 only"):
        build_observer(entry).fit(stats)


def test_observer_quantizer_setter_checks_bit_type_and_module() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        build_observer({"bit_type": "int4"}).quantizer = "log2"
    with pytest.raises(ValueError, match="activations"):
        build_observer({"bit_type": "uint4"}, "linear_weight").quantizer = "log2"


# ----- the ViT block and the explorer ---------------------------------------------------------------
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_block_applies_and_records_the_log_grid(
    demo_model: VisionTransformer, quantizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        {
            "default": {"bit_type": "int16", "observer_type": "MinmaxObserver"},
            "attn_layer": {"intSoft": {"bit_type": "uint4", "calibration_mode": "layer_wise", "quantizer": quantizer}},
        }
    )
    block = QuantTimmVitBlock(demo_model.blocks[0], config)
    tokens = torch.randn(2, 65, 64)
    block.calibration(tokens)
    block.compute_quant_params()
    assert block.grids["intSoft"] == quantizer and block.grids["sv_attn"] == "uniform"
    calls: list[tuple[Tensor, Tensor, str]] = []

    def recording(
        x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType, grid: str = "uniform", inplace: bool = False
    ) -> Tensor:
        seen = x.clone()
        out = fake_quantize(x, scale, zero_point, bit_type, grid, inplace)
        calls.append((seen, out, grid))
        return out

    monkeypatch.setattr("explorer.vit.block.fake_quantize", recording)
    block.mode = "quantized"
    with torch.no_grad():
        block(tokens)
    softmax = [(x, out) for x, out, grid in calls if grid == quantizer]
    assert len(softmax) == 1 and [grid for *_, grid in calls].count("uniform") == 3
    x, out = softmax[0]
    assert float(x.min()) >= 0 and x.shape == (2, 4, 65, 65)
    top = block.observers["intSoft"].clip_max.double()
    torch.testing.assert_close(out, fake_quantize_log(x, top, 4, quantizer))


def test_summary_and_quantized_model_use_the_log_grid(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        base = load_config({"default": {"bit_type": "int16"}})
        config = base.with_point("intSoft", bit_type="uint4", calibration_mode="layer_wise", quantizer="log2")
    run = run_calibration(demo_model, calib[:1], base)
    summary = point_summary(run, (0, "intSoft"), config.point("intSoft"))
    uniform = point_summary(run, (0, "intSoft"), config.point("intSoft").replace(quantizer="uniform"))
    assert summary.quantizer == "log2" and uniform.quantizer == "uniform"
    assert summary.sqnr_db > uniform.sqnr_db  # attention probabilities: log levels where the values are
    qvit = quantized_model(demo_model, run, config)
    assert qvit.blocks[0].grids["intSoft"] == "log2"


# ----- the app ----------------------------------------------------------------------------------------
def test_log2_histogram_keeps_every_positive_value_on_quarter_octaves() -> None:
    stats = PointStats("activation")
    for b in softmax_batches(2):
        stats.update(b)
    edges, counts = log2_histogram(stats)
    positive = sum(int((b > 0).sum()) for b in softmax_batches(2))
    assert counts.sum() == positive
    np.testing.assert_allclose(np.diff(np.log2(edges)), 0.25)
    channel_edges, channel_counts = log2_histogram(stats, channel=1)
    assert channel_counts.sum() == sum(int((b[:, 1] > 0).sum()) for b in softmax_batches(2))
    assert channel_edges.size == channel_counts.size + 1


def test_histogram_figure_on_a_log2_axis_draws_the_levels() -> None:
    edges, counts = np.array([0.0, 0.25, 0.5, 1.0]), np.array([5.0, 3.0, 1.0])
    levels = fake_quantize_log(torch.tensor([1.0, 0.5, 0.25]), torch.tensor(1.0), 2, "log2").tolist()
    fig = histogram_figure(edges, counts, [ClipRange("MinMax", 0.0, 1.0)], log2_x=True, levels=levels)
    assert fig.layout.xaxis.title.text == "log2(value)"
    np.testing.assert_allclose(fig.data[0].x, [-1.5, -0.5])  # the bin starting at 0 has no log2
    dotted = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert sorted(s.x0 for s in dotted) == [-2.0, -1.0, 0.0]
    assert [s.x0 for s in fig.layout.shapes if s.line.dash != "dot"] == [0.0]  # clip lo 0 is left out


def test_tuning_draft_takes_the_grid() -> None:
    current = load_config({"attn_layer": {"intSoft": {"bit_type": "uint4"}}}).point("intSoft")
    values = widget_values(current)
    assert values["tune_quantizer"] == "uniform"
    assert draft_point(current, {**values, "tune_quantizer": "log_sqrt2"}).quantizer == "log_sqrt2"
    with pytest.raises(ConfigError, match="unsigned"):
        draft_point(current, {**values, "tune_quantizer": "log2", "tune_signed": True})


def test_app_layer_and_compare_show_the_log_grids() -> None:
    at = AppTest.from_file(str(APP), default_timeout=900).run()
    assert not at.exception, at.exception
    at.selectbox(key="sel_block").set_value(0)
    at.selectbox(key="sel_point").set_value("intSoft").run()
    at.checkbox(key="tune_signed").uncheck()
    at.radio(key="tune_quantizer").set_value("log2")
    at.toggle(key="hist_log2").set_value(True).run()
    assert not at.exception, at.exception
    assert any("levels of the tuned log2 grid" in c.value for c in at.caption)
    assert "log2" in set(next(df.value for df in at.dataframe if "grid" in df.value.columns)["grid"])
    at.session_state["view"] = "Compare"
    at.run()
    assert not at.exception, at.exception
    assert {"log2 SQNR", "log√2 SQNR"} <= {m.label for m in at.metric}
