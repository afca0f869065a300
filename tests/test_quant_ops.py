"""BitType and the quantization primitives (``explorer.quant_ops``), checked by hand and against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_impls import np_fake_quant, np_qparams

from explorer import BIT_TYPE_PRESETS, INT4, INT8, UINT4, UINT8, BitType
from explorer.quant_ops import (
    SCALE_EPS,
    dequantize,
    fake_quantize,
    mse,
    qparams_from_range,
    quant_error,
    quantize,
    representable_range,
    sqnr_db,
)

EPS32 = float(np.finfo(np.float32).eps)


def t(value) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# BitType
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bit_type", "lower", "upper", "levels"),
    [
        (INT8, -128, 127, 128),
        (UINT8, 0, 255, 256),
        (INT4, -8, 7, 8),
        (UINT4, 0, 15, 16),
        (BitType(2, True), -2, 1, 2),
        (BitType(2, False), 0, 3, 4),
        (BitType(16, True), -32768, 32767, 32768),
        (BitType(16, False), 0, 65535, 65536),
    ],
)
def test_bit_type_bounds_and_levels(bit_type: BitType, lower: int, upper: int, levels: int) -> None:
    assert bit_type.lower_bound == lower
    assert bit_type.upper_bound == upper
    assert bit_type.levels == levels
    assert bit_type.upper_bound - bit_type.lower_bound + 1 == 2**bit_type.bits


def test_bit_type_presets_and_names() -> None:
    for name in ("int8", "uint8", "int4", "uint4"):
        assert name in BIT_TYPE_PRESETS
        preset = BIT_TYPE_PRESETS[name]
        assert preset.name == name
        assert preset.signed == (not name.startswith("u"))
        assert preset.bits == int(name.lstrip("uint"))
    assert BitType(8, True).name == "int8"
    assert BitType(3, False).name == "uint3"
    # The name is a label only: equal formats compare equal.
    assert BitType(8, True, name="my_int8") == INT8


@pytest.mark.parametrize("bits", [-1, 0, 1, 17, 32])
def test_bit_type_rejects_bits_outside_2_to_16(bits: int) -> None:
    with pytest.raises(ValueError, match=r"between 2 and 16"):
        BitType(bits, True)


@pytest.mark.parametrize("bits", [8.0, "8", True, None])
def test_bit_type_rejects_non_integer_bits(bits) -> None:
    with pytest.raises(TypeError, match="bits"):
        BitType(bits, True)


def test_bit_type_rejects_non_bool_signed() -> None:
    with pytest.raises(TypeError, match="signed"):
        BitType(8, 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# qparams_from_range: the SPEC §2 formulas on small numbers
# --------------------------------------------------------------------------------------------
def test_symmetric_signed_by_hand() -> None:
    scale, zp = qparams_from_range(t(-2.0), t(1.0), INT8)
    assert scale.item() == pytest.approx(2.0 / 127.5, rel=1e-6)
    assert zp.item() == 0
    # amax is the larger magnitude, whichever side it is on
    scale, zp = qparams_from_range(t(-0.5), t(3.0), INT4)
    assert scale.item() == pytest.approx(3.0 / 7.5, rel=1e-6)
    assert zp.item() == 0


def test_symmetric_unsigned_by_hand() -> None:
    scale, zp = qparams_from_range(t(0.0), t(2.55), UINT8, symmetric=True)
    assert scale.item() == pytest.approx(0.01, rel=1e-6)
    assert zp.item() == 0
    scale, zp = qparams_from_range(t(0.0), t(1.5), UINT4, symmetric=True)
    assert scale.item() == pytest.approx(0.1, rel=1e-6)
    assert zp.item() == 0


def test_asymmetric_by_hand() -> None:
    # uint8 defaults to asymmetric: scale = 4/255; zp = 0 - round(-1 / (4/255)) = round(63.75) = 64
    scale, zp = qparams_from_range(t(-1.0), t(3.0), UINT8)
    assert scale.item() == pytest.approx(4.0 / 255.0, rel=1e-6)
    assert zp.item() == 64
    # int8 forced asymmetric: zp = -128 + 64
    scale, zp = qparams_from_range(t(-1.0), t(3.0), INT8, symmetric=False)
    assert scale.item() == pytest.approx(4.0 / 255.0, rel=1e-6)
    assert zp.item() == -64
    # A range above 0 is widened down to 0: zp = 0
    scale, zp = qparams_from_range(t(0.5), t(2.0), UINT8)
    assert scale.item() == pytest.approx(2.0 / 255.0, rel=1e-6)
    assert zp.item() == 0
    # A range below 0 is widened up to 0: zp = qmax
    scale, zp = qparams_from_range(t(-3.0), t(-1.0), UINT8)
    assert scale.item() == pytest.approx(3.0 / 255.0, rel=1e-6)
    assert zp.item() == 255
    # uint4: scale = 1.5/15 = 0.1, zp = round(0.5/0.1) = 5
    scale, zp = qparams_from_range(t(-0.5), t(1.0), UINT4)
    assert scale.item() == pytest.approx(0.1, rel=1e-6)
    assert zp.item() == 5


def test_zero_point_is_integer_and_per_channel_shapes_kept() -> None:
    lo = t([-1.0, -2.0, 0.0])
    hi = t([1.2, 0.5, 4.0])
    scale, zp = qparams_from_range(lo, hi, UINT8)
    assert scale.shape == (3,) and zp.shape == (3,)
    assert scale.dtype == torch.float32
    assert not zp.is_floating_point()
    for i in range(3):
        s_ref, z_ref = np_qparams(float(lo[i]), float(hi[i]), 8, False, False)
        assert scale[i].item() == pytest.approx(s_ref, rel=1e-6)
        assert zp[i].item() == z_ref


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bit_type", [INT8, UINT8, INT4, UINT4, BitType(2, True), BitType(6, False)])
def test_qparams_match_hand_formula_on_random_ranges(bit_type: BitType, symmetric: bool) -> None:
    rng = np.random.default_rng(bit_type.bits * 10 + bit_type.signed)
    lo = -np.abs(rng.lognormal(0.0, 2.0, 200)) * (rng.random(200) < 0.8)
    hi = np.abs(rng.lognormal(0.0, 2.0, 200))
    scale, zp = qparams_from_range(torch.tensor(lo), torch.tensor(hi), bit_type, symmetric)
    for i in range(200):
        s_ref, z_ref = np_qparams(lo[i], hi[i], bit_type.bits, bit_type.signed, symmetric)
        assert scale[i].item() == pytest.approx(s_ref, rel=1e-6)
        assert zp[i].item() == z_ref


@pytest.mark.parametrize("bit_type", [INT8, UINT8, INT4, UINT4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_range_clamps_scale_to_eps(bit_type: BitType, symmetric: bool) -> None:
    scale, zp = qparams_from_range(t(0.0), t(0.0), bit_type, symmetric)
    assert scale.item() == pytest.approx(EPS32)
    assert SCALE_EPS == EPS32
    assert math.isfinite(scale.item())
    assert bit_type.lower_bound <= zp.item() <= bit_type.upper_bound
    # zero still quantizes to exactly zero, finite everywhere
    x = torch.zeros(5)
    assert torch.equal(fake_quantize(x, scale, zp, bit_type), x)
    # a tiny, non-zero range also stays at eps or above
    scale, _ = qparams_from_range(t(-1e-30), t(1e-30), bit_type, symmetric)
    assert scale.item() >= EPS32


# --------------------------------------------------------------------------------------------
# quantize / dequantize / fake_quantize
# --------------------------------------------------------------------------------------------
def test_quantize_by_hand() -> None:
    x = t([0.2, 0.25, 0.75, 0.76, -0.25, 100.0, -100.0])
    q = quantize(x, t(0.5), torch.tensor(0), INT8)
    # 0.4 → 0; 0.5 → 0 (half to even); 1.5 → 2; 1.52 → 2; -0.5 → -0; clamped at 127 / -128
    assert q.tolist() == [0.0, 0.0, 2.0, 2.0, 0.0, 127.0, -128.0]
    assert dequantize(q, t(0.5), torch.tensor(0)).tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 63.5, -64.0]
    # with a zero point
    q = quantize(t([-1.0, 0.0, 1.0, 10.0]), t(0.25), torch.tensor(3), UINT4)
    assert q.tolist() == [0.0, 3.0, 7.0, 15.0]
    assert dequantize(q, t(0.25), torch.tensor(3)).tolist() == [-0.75, 0.0, 1.0, 3.0]


@pytest.mark.parametrize("bit_type", [INT8, UINT8, INT4, UINT4])
def test_fake_quantize_matches_numpy(bit_type: BitType) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 2.0, (16, 12)).astype(np.float32)
    lo = np.percentile(x, 2, axis=0)
    hi = np.percentile(x, 98, axis=0)
    scale, zp = qparams_from_range(torch.tensor(lo), torch.tensor(hi), bit_type)
    got = fake_quantize(torch.from_numpy(x), scale, zp, bit_type).numpy()
    want = np_fake_quant(x, scale.numpy().astype(np.float64), zp.numpy(), bit_type.bits, bit_type.signed)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(scale.max()))


@pytest.mark.parametrize("bit_type", [INT8, UINT8, INT4, UINT4])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quantize_equals_quantize_then_dequantize(bit_type: BitType, per_channel: bool) -> None:
    # the one-buffer uniform path gives exactly the values of the two-step formula, ties and clipping included
    rng = np.random.default_rng(6)
    shape = (12,) if per_channel else ()
    scale = torch.from_numpy(rng.uniform(0.01, 0.2, shape).astype(np.float32))
    zero_point = torch.from_numpy(rng.integers(bit_type.lower_bound, bit_type.upper_bound + 1, shape))
    codes = rng.integers(bit_type.lower_bound - 40, bit_type.upper_bound + 40, (64, 12))
    codes = codes + rng.choice([0.0, 0.5], (64, 12))
    x = torch.from_numpy(codes.astype(np.float32)) * scale  # on the grid, half way between levels, and beyond it
    x = torch.cat([x, torch.from_numpy(rng.normal(0, 5, (64, 12)).astype(np.float32))])
    want = dequantize(quantize(x, scale, zero_point, bit_type), scale, zero_point)
    assert torch.equal(fake_quantize(x, scale, zero_point, bit_type), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fake_quantize_in_place_gives_the_same_values(dtype: torch.dtype) -> None:
    # in place overwrites a float32 input with exactly the out-of-place values; another dtype is converted
    # into a copy first, so the caller's tensor is left alone
    x = torch.linspace(-3, 3, 257).reshape(1, 257).to(dtype)
    scale, zp = qparams_from_range(t(-2.0), t(2.5), INT4, symmetric=False)
    want = fake_quantize(x.clone(), scale, zp, INT4)
    original = x.clone()
    got = fake_quantize(x, scale, zp, INT4, inplace=True)
    assert torch.equal(got, want)
    assert torch.equal(x, want if dtype == torch.float32 else original)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_fake_quantize_keeps_dtype(dtype: torch.dtype) -> None:
    x = torch.linspace(-2, 2, 33).to(dtype)
    scale, zp = qparams_from_range(t(-2.0), t(2.0), INT8)
    out = fake_quantize(x, scale, zp, INT8)
    assert out.dtype == dtype
    assert torch.allclose(out.double(), x.double(), atol=float(scale) / 2 + 1e-2)


def test_representable_range() -> None:
    lo, hi = representable_range(t(0.5), torch.tensor(0), INT8)
    assert (lo.item(), hi.item()) == (-64.0, 63.5)
    lo, hi = representable_range(t(0.1), torch.tensor(5), UINT4)
    assert lo.item() == pytest.approx(-0.5) and hi.item() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Error metrics against direct numpy computation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("bit_type", "symmetric"), [(INT8, None), (UINT8, None), (INT4, None), (INT8, False)])
def test_quant_error_matches_numpy(bit_type: BitType, symmetric: bool | None) -> None:
    rng = np.random.default_rng(11)
    x = rng.laplace(0.2, 1.0, 20_000).astype(np.float32)
    # Clip well inside the data so some values are clipped.
    lo, hi = np.quantile(x, 0.01), np.quantile(x, 0.97)
    scale, zp = qparams_from_range(t(lo), t(hi), bit_type, symmetric)
    err = quant_error(torch.from_numpy(x), scale, zp, bit_type)

    s, z = float(scale), int(zp)
    x64 = x.astype(np.float64)
    x_hat = np_fake_quant(x64, s, z, bit_type.bits, bit_type.signed)
    want_mse = np.mean((x64 - x_hat) ** 2)
    want_sqnr = 10 * np.log10(np.sum(x64**2) / np.sum((x64 - x_hat) ** 2))
    r_lo, r_hi = (bit_type.lower_bound - z) * s, (bit_type.upper_bound - z) * s
    want_clipped = np.mean((x64 < r_lo - s / 2) | (x64 > r_hi + s / 2))

    assert err.mse == pytest.approx(want_mse, rel=1e-4)
    assert err.sqnr_db == pytest.approx(want_sqnr, abs=1e-3)
    assert err.clipped_fraction == pytest.approx(want_clipped, abs=1e-9)
    assert 0.0 < err.clipped_fraction < 0.1
    # the standalone metrics agree
    x_t = torch.from_numpy(x)
    x_hat_t = fake_quantize(x_t, scale, zp, bit_type)
    assert mse(x_t, x_hat_t) == pytest.approx(want_mse, rel=1e-4)
    assert sqnr_db(x_t, x_hat_t) == pytest.approx(want_sqnr, abs=1e-3)


def test_quant_error_over_batches_equals_concatenation() -> None:
    rng = np.random.default_rng(12)
    batches = [torch.from_numpy(rng.normal(0, s, (50, 40)).astype(np.float32)) for s in (0.5, 1.0, 3.0)]
    scale, zp = qparams_from_range(t(-2.0), t(2.0), INT8)
    whole = quant_error(torch.cat([b.reshape(-1) for b in batches]), scale, zp, INT8)
    streamed = quant_error(batches, scale, zp, INT8)
    assert streamed.mse == pytest.approx(whole.mse, rel=1e-9)
    assert streamed.sqnr_db == pytest.approx(whole.sqnr_db, abs=1e-9)
    assert streamed.clipped_fraction == pytest.approx(whole.clipped_fraction, abs=1e-12)
    assert whole.clipped_fraction > 0


def test_metrics_edge_cases() -> None:
    x = t([0.0, 0.5, -1.0])
    assert mse(x, x) == 0.0
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(torch.zeros(3), t([0.1, 0.0, 0.0])) == -math.inf
    # SQNR of a known noise: signal 4, noise 0.04 → 20 dB
    assert sqnr_db(t([2.0]), t([1.8])) == pytest.approx(20.0, abs=1e-4)
    # values on the grid inside the range: nothing clipped, no error
    scale, zp = t(0.5), torch.tensor(0)
    grid = t([-64.0, -0.5, 0.0, 63.5])
    e = quant_error(grid, scale, zp, INT8)
    assert e.mse == 0.0 and e.clipped_fraction == 0.0 and e.sqnr_db == math.inf
    # half a step beyond the end level is not clipped, beyond that is
    assert quant_error(t([63.5 + 0.2]), scale, zp, INT8).clipped_fraction == 0.0
    assert quant_error(t([63.5 + 0.3, -64.3, 0.0, 1.0]), scale, zp, INT8).clipped_fraction == 0.5
