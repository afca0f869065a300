"""Observers against independent references.

MinMax vs ``torch.ao``; Percentile vs ``numpy.quantile``; OMSE vs a brute-force exact MSE of
all 100 candidates; KL vs a plain-loop TensorRT entropy calibration and vs NVIDIA's
calibrator (``nvidia-modelopt``); the guide's snippets; bad input; the registry.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_impls import SHRINK_FACTORS, kl_entropy_reference, omse_candidate_mse

from explorer import (
    INT4,
    INT8,
    UINT4,
    UINT8,
    BitType,
    KLObserver,
    MinmaxObserver,
    OmseObserver,
    PercentileObserver,
    build_observer,
)
from explorer.observers import observer_class, observer_names
from explorer.quant_ops import fake_quantize
from explorer.stats.histogram import SignedHistogram

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
OBSERVERS = (MinmaxObserver, PercentileObserver, OmseObserver, KLObserver)
EPS32 = float(torch.finfo(torch.float32).eps)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gauss(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def laplace(g: torch.Generator, *shape: int) -> torch.Tensor:
    u = torch.rand(*shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12) - 0.5
    return (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()


def as_rows(batches: list[torch.Tensor], module_type: str, calibration_mode: str) -> np.ndarray:
    """All batches as ``[channels, values]`` numpy, channel axis per SPEC §2 (written independently)."""
    if calibration_mode == "layer_wise":
        return np.concatenate([b.float().reshape(-1).numpy() for b in batches]).reshape(1, -1)
    parts = []
    for b in batches:
        a = b.float().numpy()
        if module_type != "activation":
            axis = 0
        else:
            axis = 1 if a.ndim == 4 else a.ndim - 1
        parts.append(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1))
    return np.concatenate(parts, axis=1)


# ============================================================================================
# 3. MinMax vs torch.ao
# ============================================================================================
MINMAX_LAYOUTS = [
    # (module_type, shape, torch.ao ch_axis)
    ("linear_weight", (16, 24), 0),
    ("activation", (4, 10, 12), 2),
    ("activation", (20, 8), 1),
    ("activation", (3, 6, 5, 5), 1),
    ("conv_weight", (8, 3, 3, 3), 0),
]


@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize(("module_type", "shape", "ch_axis"), MINMAX_LAYOUTS)
@pytest.mark.parametrize("signed", [True, False])
def test_minmax_matches_torch_ao(signed: bool, module_type: str, shape, ch_axis: int, calibration_mode: str) -> None:
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    dtype = torch.qint8 if signed else torch.quint8
    if calibration_mode == "layer_wise":
        qscheme = torch.per_tensor_symmetric if signed else torch.per_tensor_affine
        ref = MinMaxObserver(dtype=dtype, qscheme=qscheme, reduce_range=False)
    else:
        qscheme = torch.per_channel_symmetric if signed else torch.per_channel_affine
        ref = PerChannelMinMaxObserver(ch_axis=ch_axis, dtype=dtype, qscheme=qscheme, reduce_range=False)
    assert (ref.quant_min, ref.quant_max) == ((-128, 127) if signed else (0, 255))

    bit_type = BitType(8, signed)
    obs = MinmaxObserver(bit_type, module_type, calibration_mode)
    g = gen(zlib.crc32(repr((signed, module_type, shape, calibration_mode)).encode()))
    for scale, offset in ((1.0, 0.0), (2.5, 0.7), (0.3, -1.2), (1.7, 0.2)):
        batch = gauss(g, *shape) * scale + offset
        obs.update(batch)
        ref(batch)

    scale, zero_point = obs.get_quantization_params()
    ref_scale, ref_zp = ref.calculate_qparams()
    if calibration_mode == "layer_wise":
        assert scale.shape == () and zero_point.shape == ()
    else:
        expected = [1] * len(shape)
        expected[ch_axis] = shape[ch_axis]
        assert list(scale.shape) == expected and list(zero_point.shape) == expected
    torch.testing.assert_close(scale.reshape(-1), ref_scale.reshape(-1).float(), rtol=1e-6, atol=0)
    assert zero_point.reshape(-1).tolist() == ref_zp.reshape(-1).tolist()
    torch.testing.assert_close(obs.min_val.reshape(-1).float(), ref.min_val.reshape(-1))
    torch.testing.assert_close(obs.max_val.reshape(-1).float(), ref.max_val.reshape(-1))
    # The clip range of MinMax is the observed range.
    torch.testing.assert_close(obs.clip_min.reshape(-1), ref.min_val.reshape(-1))
    torch.testing.assert_close(obs.clip_max.reshape(-1), ref.max_val.reshape(-1))


# ============================================================================================
# 4. Percentile vs numpy.quantile
# ============================================================================================
ALPHAS = [0.6, 0.9, 0.99, 0.9995, 0.99999, 1.0]  # 0.6 takes the full-sort path


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
def test_percentile_one_batch_matches_numpy_quantile(alpha: float, calibration_mode: str) -> None:
    g = gen(int(alpha * 1e5))
    x = laplace(g, 16, 197, 12) * torch.linspace(0.5, 4.0, 12) + 0.3
    obs = PercentileObserver(INT8, "activation", calibration_mode, percentile_alpha=alpha)
    obs.update(x)
    rows = as_rows([x], "activation", calibration_mode).astype(np.float64)
    want_hi = np.quantile(rows, alpha, axis=1)
    want_lo = np.quantile(rows, 1.0 - alpha, axis=1)
    np.testing.assert_allclose(obs.clip_max.reshape(-1).double().numpy(), want_hi, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obs.clip_min.reshape(-1).double().numpy(), want_lo, rtol=1e-6, atol=1e-6)
    if alpha == 1.0:
        assert torch.equal(obs.clip_max.reshape(-1), obs.max_val.reshape(-1).float())
        assert torch.equal(obs.clip_min.reshape(-1), obs.min_val.reshape(-1).float())


@pytest.mark.parametrize("alpha", [0.99, 0.9995])
def test_percentile_channel_wise_4d_uses_dim_1(alpha: float) -> None:
    g = gen(41)
    x = gauss(g, 8, 6, 9, 9) * torch.tensor([0.1, 1.0, 3.0, 10.0, 0.5, 2.0]).view(1, 6, 1, 1)
    obs = PercentileObserver(INT8, "activation", "channel_wise", percentile_alpha=alpha)
    obs.update(x)
    per_channel = x.double().numpy().transpose(1, 0, 2, 3).reshape(6, -1)
    np.testing.assert_allclose(obs.clip_max.double().numpy(), np.quantile(per_channel, alpha, axis=1), rtol=1e-6)
    np.testing.assert_allclose(obs.clip_min.double().numpy(), np.quantile(per_channel, 1 - alpha, axis=1), rtol=1e-6)
    scale, zero_point = obs.get_quantization_params()
    assert scale.shape == (1, 6, 1, 1) and zero_point.shape == (1, 6, 1, 1)


def test_percentile_on_more_than_2_pow_24_elements() -> None:
    n = 17_000_000
    assert n > 2**24  # torch.quantile refuses inputs this large
    rng = np.random.default_rng(7)
    data = rng.standard_normal(n, dtype=np.float32)
    obs = PercentileObserver(INT8, "activation", "layer_wise", percentile_alpha=0.9995)
    obs.update(torch.from_numpy(data).view(1000, 17_000))
    assert float(obs.clip_max) == pytest.approx(float(np.quantile(data, 0.9995)), rel=1e-6)
    assert float(obs.clip_min) == pytest.approx(float(np.quantile(data, 1 - 0.9995)), rel=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 0.35, 1.0])
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
def test_percentile_ema_over_batches(sigma: float, calibration_mode: str) -> None:
    alpha = 0.999
    g = gen(int(sigma * 100))
    batches = [gauss(g, 8, 100, 5) * s + o for s, o in ((1.0, 0.0), (3.0, 1.0), (0.5, -0.5), (2.0, 0.0))]
    obs = PercentileObserver(INT8, "activation", calibration_mode, percentile_alpha=alpha, percentile_sigma=sigma)
    lo = hi = None
    for batch in batches:
        obs.update(batch)
        rows = as_rows([batch], "activation", calibration_mode).astype(np.float64)
        cur_lo, cur_hi = np.quantile(rows, 1 - alpha, axis=1), np.quantile(rows, alpha, axis=1)
        if lo is None:
            lo, hi = cur_lo, cur_hi
        else:
            lo = lo + sigma * (cur_lo - lo)
            hi = hi + sigma * (cur_hi - hi)
        np.testing.assert_allclose(obs.clip_min.reshape(-1).double().numpy(), lo, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(obs.clip_max.reshape(-1).double().numpy(), hi, rtol=1e-6, atol=1e-6)
    # min_val/max_val are the EMA'd percentiles the scale comes from (FQ-ViT); data_min/max the extremes
    np.testing.assert_allclose(obs.min_val.reshape(-1).double().numpy(), lo, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obs.max_val.reshape(-1).double().numpy(), hi, rtol=1e-6, atol=1e-6)
    all_rows = as_rows(batches, "activation", calibration_mode)
    np.testing.assert_array_equal(obs.data_min.reshape(-1).float().numpy(), all_rows.min(axis=1))
    np.testing.assert_array_equal(obs.data_max.reshape(-1).float().numpy(), all_rows.max(axis=1))


# ============================================================================================
# 5. OMSE vs brute force
# ============================================================================================
def omse_chosen_index(obs: OmseObserver) -> np.ndarray:
    """The candidate ``i`` (``f = 1 - i/100``) the observer chose, per channel, from its clip range."""
    mx = obs.max_val.reshape(-1).double()
    mn = obs.min_val.reshape(-1).double()
    use_max = mx.abs() >= mn.abs()
    ratio = torch.where(use_max, obs.clip_max.reshape(-1).double() / mx, obs.clip_min.reshape(-1).double() / mn)
    index = torch.round((1.0 - ratio) * 100).long()
    # The clip range really is one of the candidates.
    factor = torch.tensor(SHRINK_FACTORS, dtype=torch.float64)[index]
    torch.testing.assert_close(obs.clip_max.reshape(-1).double(), mx * factor, rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(obs.clip_min.reshape(-1).double(), mn * factor, rtol=1e-6, atol=1e-30)
    return index.numpy()


def check_omse(batches, bit_type, module_type="activation", calibration_mode="layer_wise", symmetric=None):
    """Feed the batches, then compare the observer's choice with the exact MSE of every candidate.

    Returns the ``[C, 100]`` exact MSE table.
    """
    obs = OmseObserver(bit_type, module_type, calibration_mode, symmetric=symmetric)
    for batch in batches:
        obs.update(batch)
    chosen = omse_chosen_index(obs)
    rows = as_rows(batches, module_type, calibration_mode)
    table = omse_candidate_mse(
        rows, obs.min_val.reshape(-1).numpy(), obs.max_val.reshape(-1).numpy(), bit_type, obs.symmetric
    )
    best = table.min(axis=1)
    got = table[np.arange(len(chosen)), chosen]
    worst = float((got / best).max())
    assert worst <= 1.01, f"chosen candidates {chosen} vs best {table.argmin(axis=1)}: MSE ratio {worst:.4f}"
    return table


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x)


# Sizes: OMSE may score small calibration sets on the values themselves and larger ones on a
# histogram; the "large" cases (> 2**18 values in all) and the "small" ones cover both.
T = 64  # tokens per batch of the large cases: 3 x [64, 197, 8] = 302,592 values

OMSE_LAYER_CASES = {
    "gaussian": lambda g, i, t: gauss(g, t, 197, 8),
    "laplace": lambda g, i, t: laplace(g, t, 197, 8),
    "outlier_channel_x30": lambda g, i, t: gauss(g, t, 197, 8) * torch.tensor([1.0] * 7 + [30.0]),
    "gelu": lambda g, i, t: _gelu(gauss(g, t, 197, 8) * 2.0),
    "relu_many_zeros": lambda g, i, t: torch.relu(gauss(g, t, 197, 8) - 0.3),
    "growing_range": lambda g, i, t: gauss(g, t, 197, 8) * (1.0, 2.0, 4.0)[i],
}


@pytest.mark.parametrize("bit_type", [INT8, INT4], ids=["int8", "int4"])
@pytest.mark.parametrize("case", sorted(OMSE_LAYER_CASES))
def test_omse_layer_wise_within_1pct_of_best_candidate(case: str, bit_type: BitType) -> None:
    g = gen(len(case) * 7 + bit_type.bits)
    batches = [OMSE_LAYER_CASES[case](g, i, T) for i in range(3)]
    assert sum(b.numel() for b in batches) > 2**18
    if case == "relu_many_zeros":
        assert float((batches[0] == 0).float().mean()) > 0.5
    table = check_omse(batches, bit_type)
    if bit_type == INT4 and case in ("laplace", "outlier_channel_x30"):
        # The search matters here: the best shrink clearly beats the plain range (f = 1).
        assert table[0].argmin() > 10
        assert table[0].min() < 0.6 * table[0, 0]


@pytest.mark.parametrize("bit_type", [INT8, INT4], ids=["int8", "int4"])
@pytest.mark.parametrize("case", ["gaussian", "laplace", "relu_many_zeros", "growing_range"])
def test_omse_layer_wise_small_calibration_set(case: str, bit_type: BitType) -> None:
    g = gen(len(case) * 11 + bit_type.bits)
    check_omse([OMSE_LAYER_CASES[case](g, i, 4) for i in range(3)], bit_type)


@pytest.mark.parametrize("bit_type", [UINT8, INT8, UINT4], ids=["uint8", "int8", "uint4"])
def test_omse_softmax_probabilities(bit_type: BitType) -> None:
    g = gen(19)
    batches = [torch.softmax(gauss(g, 16, 4, 40, 40) * 3.0, dim=-1) for _ in range(3)]
    check_omse(batches, bit_type)
    check_omse([b[:2] for b in batches], bit_type)  # a small calibration set too


@pytest.mark.parametrize(("bit_type", "symmetric"), [(UINT8, None), (INT8, False)], ids=["uint8", "int8_asym"])
def test_omse_asymmetric_gelu(bit_type: BitType, symmetric) -> None:
    g = gen(23)
    batches = [_gelu(gauss(g, T, 197, 8) * 2.0) for _ in range(3)]
    check_omse(batches, bit_type, symmetric=symmetric)


def test_omse_one_sided_first_batch_then_signed() -> None:
    # The negative side's histogram only starts with the second batch.
    g = gen(29)
    batches = [torch.relu(gauss(g, T, 197, 8)), gauss(g, T, 197, 8) * 2.0, gauss(g, T, 197, 8)]
    check_omse(batches, INT4)
    check_omse(batches, UINT8)


def test_omse_scores_all_batches_not_only_the_last() -> None:
    g = gen(5)
    heavy = [laplace(g, 80, 197, 8) for _ in range(2)]
    reach = float(max(b.abs().max() for b in heavy))
    last = (torch.rand(16, 197, 8, generator=g) * 2 - 1) * reach  # uniform: no clipping wanted
    assert sum(b.numel() for b in heavy + [last]) > 2**18
    table = check_omse(heavy + [last], INT4)
    # The last batch alone would choose differently, and that choice is clearly worse on all data.
    obs_range = float(max(b.abs().max() for b in heavy + [last]))
    mn = min(float(b.min()) for b in heavy + [last])
    last_only = omse_candidate_mse(last.reshape(1, -1).numpy(), np.array([mn]), np.array([obs_range]), INT4, True)
    assert table[0, last_only.argmin()] > 1.1 * table.min()


def test_omse_channel_wise_int8_many_samples() -> None:
    g = gen(37)
    spread = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.25, 1.0, 3.0, 1.0])
    batches = [gauss(g, 2000, 50, 8) * spread for _ in range(3)]
    batches = [b + torch.where(torch.arange(8) == 7, laplace(g, 2000, 50, 8) * 5, torch.zeros(1)) for b in batches]
    table = check_omse(batches, INT8, calibration_mode="channel_wise")
    assert table.shape == (8, 100)


@pytest.mark.parametrize("shape", [(400, 50, 8), (64, 8, 14, 14)], ids=["tokens", "nchw"])
def test_omse_channel_wise_int4(shape) -> None:
    g = gen(43)
    channels = shape[-1] if len(shape) == 3 else shape[1]
    spread = torch.linspace(0.5, 4.0, channels)
    view = (1, 1, channels) if len(shape) == 3 else (1, channels, 1, 1)
    batches = [laplace(g, *shape) * spread.view(view) for _ in range(3)]
    check_omse(batches, INT4, calibration_mode="channel_wise")


def test_omse_channel_wise_weights_many_channels() -> None:
    # Enough channels that the observer screens candidates before scoring exactly.
    g = gen(47)
    w = laplace(g, 160, 10_000) * torch.linspace(0.01, 0.1, 160).unsqueeze(1)
    w[:, :3] *= 8.0
    check_omse([w], INT4, module_type="linear_weight", calibration_mode="channel_wise")


# ============================================================================================
# 6. KL vs a plain-loop TensorRT reference on the observer's own histogram
# ============================================================================================
def softmax_like(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.softmax(gauss(g, *shape) * 3.0, dim=-1)


KL_CASES = {
    "gaussian": lambda g, i: gauss(g, 32, 197, 8),
    "laplace": lambda g, i: laplace(g, 32, 197, 8),
    "softmax": lambda g, i: softmax_like(g, 4, 4, 50, 50),
    "outliers": lambda g, i: gauss(g, 32, 197, 8) * torch.tensor([1.0] * 7 + [30.0]),
    "growing": lambda g, i: gauss(g, 32, 197, 8) * (1.0, 1.8, 2.6)[i],
}


def check_kl_against_loop(obs: KLObserver, channel: int = 0) -> int:
    obs.get_quantization_params()  # runs the search, which records the histogram it searched
    assert int(obs.num_bins.max()) <= 16 * obs.kl_bins  # the search histogram's size stays bounded
    hist = obs.hist[channel, : int(obs.num_bins[channel])].numpy()
    levels = obs.bit_type.levels
    best, ref_div = kl_entropy_reference(hist, levels)
    width = float(obs.bin_width[channel])
    chosen = float(obs.clip_max.reshape(-1)[channel]) / width
    assert abs(chosen - best) < max(1e-3, 1e-6 * best), (
        f"channel {channel}: threshold bin {chosen:.3f}, reference {best} "
        f"(KL {ref_div[int(round(chosen))]:.5g} vs {ref_div[best]:.5g})"
    )
    ours = obs.divergence[channel].numpy()
    n = len(hist)
    np.testing.assert_allclose(ours[levels : n + 1], ref_div[levels:], rtol=1e-7, atol=1e-10)
    assert np.isinf(ours[n + 1 :]).all()
    return best


@pytest.mark.parametrize("kl_bins", [512, 1024])
@pytest.mark.parametrize("case", sorted(KL_CASES))
def test_kl_layer_wise_matches_loop_reference(case: str, kl_bins: int) -> None:
    g = gen(len(case) + kl_bins)
    obs = KLObserver(INT8, "activation", "layer_wise", kl_bins=kl_bins)
    for i in range(3 if case == "growing" else 2):
        obs.update(KL_CASES[case](g, i))
    best = check_kl_against_loop(obs)
    # NVIDIA's grid: the first batch's max over kl_bins, extended as the range grows
    first = float(KL_CASES[case](gen(len(case) + kl_bins), 0).abs().max())
    assert float(obs.bin_width[0]) == pytest.approx(first / kl_bins, rel=1e-6)
    assert float(obs.clip_min) == -float(obs.clip_max)
    assert best >= 128


def test_kl_unsigned_softmax_uses_256_levels() -> None:
    g = gen(3)
    obs = KLObserver(UINT8, "activation", "layer_wise", kl_bins=1024)
    for _ in range(2):
        obs.update(softmax_like(g, 4, 4, 50, 50))
    best = check_kl_against_loop(obs)
    assert best >= 256
    assert float(obs.clip_min) == 0.0
    scale, zero_point = obs.get_quantization_params()
    assert int(zero_point) == 0
    assert float(scale) == pytest.approx(float(obs.clip_max) / 255, rel=1e-6)


def test_kl_channel_wise_matches_loop_reference_per_channel() -> None:
    g = gen(13)
    spread = torch.tensor([1.0, 0.2, 5.0])
    obs = KLObserver(INT8, "activation", "channel_wise", kl_bins=512)
    first = laplace(g, 64, 50, 3) * spread
    second = laplace(g, 64, 50, 3) * spread * torch.tensor([1.0, 1.0, 3.0])  # channel 2 grows
    obs.update(first)
    obs.update(second)
    for c in range(3):
        check_kl_against_loop(obs, c)
    assert obs.get_quantization_params()[0].shape == (1, 1, 3)


def test_kl_first_batch_all_zero() -> None:
    g = gen(17)
    # layer-wise: the bin width is set by the first batch that has a non-zero value
    obs = KLObserver(INT8, "activation", "layer_wise", kl_bins=512)
    obs.update(torch.zeros(4, 10, 8))
    obs.update(gauss(g, 32, 197, 8))
    check_kl_against_loop(obs)
    # channel-wise: one channel silent in the first batch
    obs = KLObserver(INT8, "activation", "channel_wise", kl_bins=512)
    first = gauss(g, 64, 50, 3)
    first[..., 1] = 0.0
    obs.update(first)
    obs.update(gauss(g, 64, 50, 3) * torch.tensor([1.0, 1.0, 1.5]))
    for c in range(3):
        check_kl_against_loop(obs, c)


def test_kl_channel_wise_many_channels_matches_loop_reference() -> None:
    g = gen(0)
    channels = 192
    obs = KLObserver(INT8, "activation", "channel_wise", kl_bins=512)
    obs.update(laplace(g, 64, 50, channels) * torch.linspace(0.5, 3.0, channels))
    for c in (0, 24, 48, 96, 144):
        check_kl_against_loop(obs, c)


@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
def test_kl_equal_divergences_pick_the_last_threshold(calibration_mode: str) -> None:
    """Values on a few widely spaced magnitudes: every finite threshold has a divergence of exactly 0
    (each group holds at most one of them), so the last one wins: the largest magnitude. Rounding
    (about 1e-15 apart) must not pick an earlier one."""
    g = gen(3)
    magnitude = torch.randint(1, 6, (96, 192), generator=g).double() / 100
    sign = torch.where(torch.rand(96, 192, generator=g) < 0.5, -1.0, 1.0).double()
    weights = (magnitude * sign).float()
    obs = KLObserver(INT8, "linear_weight", calibration_mode)
    obs.update(weights)
    obs.get_quantization_params()
    reach = weights.abs().amax(dim=1) if calibration_mode == "channel_wise" else weights.abs().max()
    torch.testing.assert_close(obs.clip_max.reshape(-1), reach.reshape(-1).double().to(obs.clip_max.dtype))


def test_kl_tiny_first_batch_then_real_data() -> None:
    g = gen(97)
    obs = KLObserver(INT8, "activation", "layer_wise", kl_bins=512)
    first = torch.zeros(2, 4, 8)
    first[0, 0, 0] = 1e-30  # a nearly silent first batch
    obs.update(first)
    data = gauss(g, 8, 50, 8)
    try:
        obs.update(data)
    except (ValueError, RuntimeError):
        return  # refusing clearly would be acceptable; silently mis-binning is not
    # The histogram must account for the new data: the threshold covers the bulk of it.
    assert float(obs.clip_max) > 1.0


# ============================================================================================
# 7. KL vs NVIDIA's calibrator
# ============================================================================================
NV_CASES = {
    "gaussian": lambda g, i: gauss(g, 16, 197, 32),
    "laplace": lambda g, i: laplace(g, 16, 197, 32),
    "growing": lambda g, i: gauss(g, 16, 197, 32) * (1.0, 1.25, 1.5)[i],
    "outliers": lambda g, i: gauss(g, 16, 197, 32) * torch.tensor([1.0] * 31 + [30.0]),
    "softmax": lambda g, i: softmax_like(g, 4, 4, 50, 50),
}


def _nvidia_amax(batches, num_bins: int) -> float:
    histogram = pytest.importorskip("modelopt.torch.quantization.calib.histogram")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calib = histogram.HistogramCalibrator(num_bits=8, axis=None, unsigned=False, num_bins=num_bins)
        for batch in batches:
            calib.collect(batch)
        return float(calib.compute_amax("entropy"))


@pytest.mark.parametrize(
    ("case", "num_bins", "num_batches"),
    [(case, 512, 3) for case in sorted(NV_CASES)] + [("gaussian", 2048, 2)],
)
def test_kl_matches_nvidia_modelopt(case: str, num_bins: int, num_batches: int) -> None:
    pytest.importorskip("modelopt.torch.quantization.calib.histogram")
    g = gen(len(case) * 3 + num_bins)
    batches = [NV_CASES[case](g, i) for i in range(num_batches)]
    obs = KLObserver(INT8, "activation", "layer_wise", kl_bins=num_bins)
    for batch in batches:
        obs.update(batch)
    amax = _nvidia_amax(batches, num_bins)
    ours = float(obs.clip_max)
    width = float(obs.bin_width[0])  # our bins: the power-of-two width putting the range in ≤ num_bins bins
    assert abs(ours - amax) <= width * (1 + 1e-6), (ours, amax, width)


# ============================================================================================
# 9. The guide's snippets
# ============================================================================================
def test_guide_manual_quantization_snippet() -> None:
    from explorer import BitType, PercentileObserver  # noqa: F811  (as the guide imports them)

    g = gen(61)

    class Model:
        def get_activations(self, batch):
            return batch

    model = Model()
    calibration_data = [gauss(g, 4, 16, 7, 7) * torch.linspace(0.2, 5.0, 16).view(1, 16, 1, 1) for _ in range(4)]
    bit_type = BitType(bits=8, signed=True, name="int8")

    # --- the guide, as written ---
    observer = PercentileObserver(
        bit_type=BitType(bits=8, signed=True, name="int8"),
        module_type="activation",
        calibration_mode="channel_wise",
        percentile_alpha=0.999,
        percentile_sigma=0.1,
    )

    for batch in calibration_data:
        activations = model.get_activations(batch)  # [N, C, H, W]
        observer.update(activations)

    scale, zero_point = observer.get_quantization_params()

    quantized = torch.clamp(
        torch.round(activations / scale) + zero_point,
        min=bit_type.lower_bound,
        max=bit_type.upper_bound,
    )
    dequantized = (quantized - zero_point) * scale
    # --- end of the guide's code ---

    assert scale.shape == (1, 16, 1, 1) and zero_point.shape == (1, 16, 1, 1)
    assert dequantized.shape == activations.shape
    assert torch.all(quantized >= -128) and torch.all(quantized <= 127)
    assert torch.equal(quantized, torch.round(quantized))
    # Inside the clip range the error is at most half a step; overall the tensor is well preserved.
    inside = (activations >= observer.clip_min.view(1, -1, 1, 1)) & (activations <= observer.clip_max.view(1, -1, 1, 1))
    err = (dequantized - activations).abs()
    assert torch.all(err[inside] <= (scale / 2 * (1 + 1e-5)).expand_as(err)[inside] + 1e-6)
    assert inside.float().mean() > 0.99
    sqnr = 10 * torch.log10((activations**2).sum() / ((dequantized - activations) ** 2).sum())
    assert sqnr > 30


def test_guide_debugging_tips_snippet(capsys) -> None:
    g = gen(67)
    bit_type = INT8
    observer = OmseObserver(bit_type=bit_type, module_type="activation", calibration_mode="channel_wise")
    activation = gauss(g, 4, 50, 12)
    observer.update(activation)

    # --- the guide, as written ---
    print(f"Max val: {observer.max_val}")
    print(f"Min val: {observer.min_val}")

    scale, zero_point = observer.get_quantization_params()
    print(f"Scale: {scale}")
    print(f"Zero point: {zero_point}")

    original = activation
    quantized = ((original / scale).round() + zero_point).clamp(bit_type.lower_bound, bit_type.upper_bound)
    dequantized = (quantized - zero_point) * scale

    mse = ((original - dequantized) ** 2).mean()
    print(f"MSE: {mse.item()}")
    # --- end of the guide's code ---

    out = capsys.readouterr().out
    for label in ("Max val:", "Min val:", "Scale:", "Zero point:", "MSE:"):
        assert label in out
    assert observer.max_val.numel() == 12
    assert 0.0 < mse.item() < float(scale.max()) ** 2
    ref = fake_quantize(original, scale, zero_point, bit_type)
    torch.testing.assert_close(dequantized, ref)


# ============================================================================================
# 10. Bad input
# ============================================================================================
def make(cls, bit_type=INT8, module_type="activation", calibration_mode="layer_wise", **kw):
    if cls is KLObserver:
        kw.setdefault("kl_bins", 512)
    return cls(bit_type, module_type, calibration_mode, **kw)


def snapshot(obs) -> dict:
    state = {}
    for key, value in vars(obs).items():
        if key == "_params":
            continue
        state[key] = value.clone() if isinstance(value, torch.Tensor) else value
    return state


def assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if isinstance(value, torch.Tensor):
            assert isinstance(other, torch.Tensor), key
            assert value.shape == other.shape and value.dtype == other.dtype, key
            assert torch.equal(value, other) or torch.allclose(value, other, rtol=0, atol=0, equal_nan=True), key
        else:
            assert value == other, key


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_non_finite_input_rejected_and_statistics_unchanged(cls, calibration_mode: str, bad: float) -> None:
    g = gen(71)
    obs = make(cls, calibration_mode=calibration_mode)
    obs.update(gauss(g, 4, 20, 6))
    obs.update(gauss(g, 4, 20, 6) * 2)
    params_before = [p.clone() for p in obs.get_quantization_params()]
    before = snapshot(obs)
    poisoned = gauss(g, 4, 20, 6) * 10  # would widen every statistic if it were taken
    poisoned[1, 3, 2] = bad
    with pytest.raises(ValueError, match=cls.__name__ + r".*(NaN|Inf)"):
        obs.update(poisoned)
    assert_same_state(before, snapshot(obs))
    assert obs.num_batches == 2
    for p, q in zip(params_before, obs.get_quantization_params(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_input_type_and_shape_errors(cls) -> None:
    obs = make(cls, calibration_mode="channel_wise")
    with pytest.raises(ValueError, match="empty"):
        obs.update(torch.empty(0, 4, 8))
    for dtype in (torch.int32, torch.int64, torch.uint8, torch.bool):
        with pytest.raises(TypeError, match="floating"):
            obs.update(torch.ones(2, 3, 4, dtype=dtype))
    with pytest.raises(TypeError, match="Tensor"):
        obs.update([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dims"):
        obs.update(torch.randn(10))
    with pytest.raises(ValueError, match="dims"):
        obs.update(torch.randn(2, 3, 4, 5, 6))
    assert obs.num_batches == 0

    lin = make(cls, module_type="linear_weight", calibration_mode="channel_wise")
    with pytest.raises(ValueError, match="linear_weight.*dims"):
        lin.update(torch.randn(4, 5, 6))
    conv = make(cls, module_type="conv_weight", calibration_mode="channel_wise")
    with pytest.raises(ValueError, match="conv_weight.*dims"):
        conv.update(torch.randn(4, 5))

    # channel count and rank must not change between updates
    obs.update(torch.randn(2, 7, 8))
    before = snapshot(obs)
    with pytest.raises(ValueError, match="channels"):
        obs.update(torch.randn(2, 7, 9))
    with pytest.raises(ValueError, match="4-D.*3-D"):
        obs.update(torch.randn(2, 8, 7, 7))
    assert_same_state(before, snapshot(obs))


@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_params_before_update_is_a_clear_error(cls) -> None:
    obs = make(cls)
    with pytest.raises(RuntimeError, match="update"):
        obs.get_quantization_params()
    with pytest.raises(RuntimeError, match="update"):
        _ = obs.clip_max


@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_unknown_module_type_and_calibration_mode(cls) -> None:
    with pytest.raises(ValueError, match="module_type.*'weights'.*activation"):
        make(cls, module_type="weights")
    with pytest.raises(ValueError, match="calibration_mode.*'per_tensor'.*layer_wise"):
        make(cls, calibration_mode="per_tensor")


def test_observer_parameter_errors() -> None:
    with pytest.raises(ValueError, match="kl_bins.*64.*128"):
        KLObserver(INT8, "activation", "layer_wise", kl_bins=64)
    with pytest.raises(ValueError, match="kl_bins.*128.*256"):
        KLObserver(UINT8, "activation", "layer_wise", kl_bins=128)
    KLObserver(INT8, "activation", "layer_wise", kl_bins=128)  # exactly the levels is fine
    with pytest.raises(ValueError, match="symmetric"):
        KLObserver(INT8, "activation", "layer_wise", symmetric=False)
    for alpha in (0.5, 0.3, 1.0001, 2.0):
        with pytest.raises(ValueError, match="percentile_alpha"):
            PercentileObserver(INT8, "activation", percentile_alpha=alpha)
    for sigma in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="percentile_sigma"):
            PercentileObserver(INT8, "activation", percentile_sigma=sigma)
    PercentileObserver(INT8, "activation", percentile_alpha=1.0, percentile_sigma=1.0)


def test_kl_negative_data_with_unsigned_type() -> None:
    obs = KLObserver(UINT8, "activation", "layer_wise", kl_bins=512)
    obs.update(torch.rand(4, 10, 8))
    before = snapshot(obs)
    with pytest.raises(ValueError, match="negative.*uint8"):
        obs.update(torch.randn(4, 10, 8))
    assert_same_state(before, snapshot(obs))


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("bit_type", [INT8, UINT8, INT4], ids=["int8", "uint8", "int4"])
@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_constant_tensors_give_valid_params(cls, bit_type: BitType, calibration_mode: str, value: float) -> None:
    if cls is KLObserver and not bit_type.signed and value < 0:
        pytest.skip("KL on an unsigned type takes non-negative data only")
    obs = make(cls, bit_type=bit_type, calibration_mode=calibration_mode)
    x = torch.full((3, 10, 4), value)
    obs.update(x)
    obs.update(x)
    scale, zero_point = obs.get_quantization_params()
    assert torch.isfinite(scale).all()
    assert (scale >= EPS32).all()
    q = torch.clamp(torch.round(x / scale) + zero_point, bit_type.lower_bound, bit_type.upper_bound)
    assert torch.isfinite(q).all()
    assert (bit_type.lower_bound <= zero_point).all() and (zero_point <= bit_type.upper_bound).all()
    x_hat = (q - zero_point) * scale
    assert torch.isfinite(x_hat).all()
    if value == 0.0:
        assert torch.equal(x_hat, torch.zeros_like(x))
    # the constant is reproduced to within a step
    assert torch.all((x_hat - x).abs() <= scale * 1.0001)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_half_precision_input(cls, calibration_mode: str, dtype: torch.dtype) -> None:
    g = gen(73)
    # The last batch takes the point past the raw-value limit: OMSE and KL go on from a histogram.
    batches = [(gauss(g, n, 30, 8) * s).to(dtype) for n, s in ((4, 1.0), (4, 3.0), (1100, 2.0))]
    low = make(cls, calibration_mode=calibration_mode)
    full = make(cls, calibration_mode=calibration_mode)
    for batch in batches:
        low.update(batch)
        full.update(batch.float())  # exact upcast of the same values
    assert low.min_val.dtype in (torch.float32, torch.float64)
    assert low.max_val.dtype in (torch.float32, torch.float64)
    for a, b in zip(low.get_quantization_params(), full.get_quantization_params(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(low.clip_max, full.clip_max)
    if cls is KLObserver:
        assert low.stats_hist.counts.dtype == torch.int64  # the statistics stay integer counts


@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_non_contiguous_input_same_as_contiguous(cls, calibration_mode: str) -> None:
    g = gen(89)
    nchw = [laplace(g, 4, 6, 5, 5) * s for s in (1.0, 2.0)]
    tokens = [gauss(g, 30, 4, 8) * s for s in (1.0, 2.0)]  # [N, B, C], fed as a [B, N, C] view
    for batches, views in (
        (nchw, [b.contiguous(memory_format=torch.channels_last) for b in nchw]),
        ([b.transpose(0, 1).contiguous() for b in tokens], [b.transpose(0, 1) for b in tokens]),
    ):
        plain = make(cls, calibration_mode=calibration_mode)
        strided = make(cls, calibration_mode=calibration_mode)
        for a, b in zip(batches, views, strict=True):
            assert torch.equal(a, b)
            plain.update(a)
            strided.update(b)
        for p, q in zip(plain.get_quantization_params(), strided.get_quantization_params(), strict=True):
            assert torch.equal(p, q)
        assert torch.equal(plain.clip_max, strided.clip_max)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("cls", OBSERVERS, ids=lambda c: c.__name__)
def test_cuda_matches_cpu(cls, calibration_mode: str) -> None:
    g = gen(79)
    batches = [laplace(g, 8, 197, 16) * s for s in (1.0, 1.5, 2.5)]
    cpu = make(cls, calibration_mode=calibration_mode)
    gpu = make(cls, calibration_mode=calibration_mode)
    for i, batch in enumerate(batches):
        # the middle batch goes in as fp16, on both devices alike
        batch = batch.half() if i == 1 else batch
        cpu.update(batch)
        gpu.update(batch.cuda())
    scale, zero_point = gpu.get_quantization_params()
    assert scale.device.type == "cuda"
    lo_c, hi_c = cpu.clip_min.double(), cpu.clip_max.double()
    lo_g, hi_g = gpu.clip_min.cpu().double(), gpu.clip_max.cpu().double()
    if cls is KLObserver:
        tol = cpu.bin_width.cpu() * 1.001
    elif cls is OmseObserver:
        tol = torch.maximum(cpu.max_val.abs(), cpu.min_val.abs()).double() * 0.0101
    else:
        tol = 1e-6 * (hi_c.abs() + 1)
    assert torch.all((hi_c - hi_g).abs() <= tol)
    assert torch.all((lo_c - lo_g).abs() <= tol)
    torch.testing.assert_close(scale.cpu(), cpu.get_quantization_params()[0], rtol=0.011, atol=0)


# ============================================================================================
# 11. Registry / build_observer / configs
# ============================================================================================
def test_build_observer_from_mapping() -> None:
    obs = build_observer(
        {"observer_type": "KLObserver", "kl_bins": 4096, "calibration_mode": "layer_wise"}, "activation"
    )
    assert isinstance(obs, KLObserver)
    assert obs.kl_bins == 4096
    assert obs.calibration_mode == "layer_wise"
    assert obs.module_type == "activation"
    assert obs.bit_type == INT8  # built-in default

    obs = build_observer(
        {
            "observer_type": "PercentileObserver",
            "percentile_alpha": 0.99,
            "percentile_sigma": 0.3,
            "bit_type": {"bits": 4, "signed": False},
        },
        "linear_weight",
    )
    assert isinstance(obs, PercentileObserver)
    assert (obs.percentile_alpha, obs.percentile_sigma) == (0.99, 0.3)
    assert obs.bit_type == UINT4 and obs.module_type == "linear_weight"
    assert obs.calibration_mode == "channel_wise"

    obs = build_observer({"observer_type": "MinmaxObserver", "symmetric": False}, "activation")
    assert isinstance(obs, MinmaxObserver) and obs.symmetric is False


def test_defaults_and_top_level_exports() -> None:
    import explorer

    for name in (
        "BitType",
        "MinmaxObserver",
        "PercentileObserver",
        "OmseObserver",
        "KLObserver",
        "build_observer",
        "load_config",
        "QuantTimmVitBlock",
    ):
        assert hasattr(explorer, name), name
    for cls in OBSERVERS:
        obs = cls(INT8, "activation")
        assert obs.calibration_mode == "channel_wise"
        assert obs.symmetric is True
    assert MinmaxObserver(UINT8, "activation").symmetric is False  # unsigned → asymmetric by default
    pct = PercentileObserver(INT8, "activation")
    assert (pct.percentile_alpha, pct.percentile_sigma) == (0.9995, 0.1)
    assert KLObserver(INT8, "activation").kl_bins == 2048


def test_unknown_observer_type_lists_valid_names() -> None:
    names = observer_names()
    assert set(names) >= {"MinmaxObserver", "PercentileObserver", "OmseObserver", "KLObserver"}
    with pytest.raises(Exception, match="FooObserver") as info:
        build_observer({"observer_type": "FooObserver"}, "activation")
    for name in ("MinmaxObserver", "PercentileObserver", "OmseObserver", "KLObserver"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="FooObserver") as info:
        observer_class("FooObserver")
    for name in names:
        assert name in str(info.value)
    for name in names:
        assert observer_class(name).__name__ == name


@pytest.mark.parametrize("filename", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_config_entries_build_observers(filename: str) -> None:
    from explorer.config import ALL_POINTS, load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = load_config(CONFIGS / filename)
    g = gen(83)
    for name in ALL_POINTS:
        point = config.point(name)
        module_type = config.module_type(name)
        obs = build_observer(point, module_type)
        assert type(obs).__name__ == point.observer_type
        assert obs.calibration_mode == point.calibration_mode
        assert obs.bit_type == point.bit_type
        assert obs.module_type == module_type
        if isinstance(obs, KLObserver):
            assert obs.kl_bins == point.kl_bins
        if isinstance(obs, PercentileObserver):
            assert obs.percentile_alpha == point.percentile_alpha
            assert obs.percentile_sigma == point.percentile_sigma
        if isinstance(obs, KLObserver):
            continue  # a KL search over the default 2048 bins is covered elsewhere; keep this quick
        x = gauss(g, 8, 16) if module_type == "linear_weight" else torch.softmax(gauss(g, 2, 5, 10), dim=-1)
        obs.update(x)
        scale, _ = obs.get_quantization_params()
        assert torch.isfinite(scale).all() and (scale > 0).all()


def test_kl_config_points() -> None:
    from explorer.config import load_config

    config = load_config(CONFIGS / "quant_config_kl.yaml")
    soft = build_observer(config.point("intSoft"), config.module_type("intSoft"))
    assert isinstance(soft, KLObserver) and soft.kl_bins == 4096 and soft.calibration_mode == "layer_wise"
    qkv = build_observer(config.point("attn_qkv_output"), config.module_type("attn_qkv_output"))
    assert isinstance(qkv, KLObserver) and qkv.kl_bins == 2048 and qkv.calibration_mode == "channel_wise"


def test_kl_merge_on_one_channel_keeps_histogram_shape_consistent() -> None:
    """Regression: one channel's range growing past the growth limit merges its bins while the
    other channels keep theirs; the next histogram must still line up with the stored one."""
    obs = KLObserver(BitType(2, False), "conv_weight", "channel_wise", kl_bins=128)
    g = gen(5)
    obs.update(torch.rand(3, 2, 2, 4, generator=g) * 5)
    later = torch.rand(3, 2, 2, 4, generator=g) * 5
    later[2, 1, 1, 2] = 150.0  # 30x the first batch's reach: beyond 16 x kl_bins bins at the old width
    obs.update(later)
    obs.update(torch.rand(3, 2, 2, 4, generator=g) * 5)
    obs.get_quantization_params()
    assert obs.hist is not None
    assert obs.hist.sum(dim=1).tolist() == [48, 48, 48]  # every value counted once
    assert float(obs.clip_max[2]) > 5.0  # the grown channel's range reaches beyond the first batch


@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
def test_omse_bins_nothing_while_raw_values_are_kept(calibration_mode: str) -> None:
    """A small point is scored on its raw values and has no histogram; when a batch takes it past the
    raw-value limit, the histogram starts from the kept values: the same counts as binning each batch."""
    g = gen(61)
    batches = [gauss(g, n, 30, 8) * s for n, s in ((4, 1.0), (8, 3.0), (1100, 2.0))]
    obs = OmseObserver(INT8, "activation", calibration_mode)
    obs.update(batches[0])
    obs.update(batches[1])
    assert obs.hist is None
    obs.update(batches[2])
    assert obs.hist is not None
    rows = 1 if calibration_mode == "layer_wise" else 8
    expected = SignedHistogram.empty(rows, obs.hist.half_bins)
    for batch in batches:
        values = batch.reshape(-1, rows).t()
        expected = expected.counted(values, values.amin(dim=1), values.amax(dim=1))
    assert torch.equal(obs.hist.counts, expected.counts) and torch.equal(obs.hist.zeros, expected.zeros)
    assert torch.equal(obs.hist.exponent, expected.exponent)


@pytest.mark.parametrize("alpha", [0.51, 0.6, 0.99, 0.9995, 1.0])
@pytest.mark.parametrize("shape", [(4, 300, 6), (3, 2, 40, 40)], ids=["tokens", "attention"])
@pytest.mark.parametrize("calibration_mode", ["layer_wise", "channel_wise"])
def test_percentile_extremes_from_its_selections(calibration_mode: str, shape: tuple[int, ...], alpha: float) -> None:
    """Percentile takes each batch's extremes from the selections its quantiles are read from (or a
    reduction where the quantile did not need that end): the same running min/max as MinMax."""
    g = gen(97)
    perc = PercentileObserver(INT8, "activation", calibration_mode, percentile_alpha=alpha)
    minmax = MinmaxObserver(INT8, "activation", calibration_mode)
    for scale in (1.0, 3.0, 0.5):
        batch = torch.round(torch.randn(*shape, generator=g) * scale * 4) / 4  # ties at the ends
        perc.update(batch)
        minmax.update(batch)
    assert torch.equal(perc.data_min, minmax.data_min) and torch.equal(perc.data_max, minmax.data_max)
