"""Quantization primitives and error metrics, as small pure tensor functions.

Everything that turns a clip range into ``(scale, zero_point)``, fake-quantizes a tensor (on a
uniform grid, or on the log2 / log√2 grids of ViT softmax quantizers) or measures the damage
lives here, so observers, the ViT wrapper and the app share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.bit_type import BitType

SCALE_EPS = torch.finfo(torch.float32).eps
_FLOAT32_MAX = torch.finfo(torch.float32).max

QUANTIZERS: tuple[str, ...] = ("uniform", "log2", "log_sqrt2")
"""Grids a point can quantize to: uniform (scale and zero point), or powers of 2 / of √2 below the clip max."""
LOG_BASES: dict[str, float] = {"log2": 2.0, "log_sqrt2": math.sqrt(2.0)}
"""The base of each log grid."""


def is_symmetric(bit_type: BitType, symmetric: bool | None) -> bool:
    """The effective symmetry: explicit setting, else symmetric for signed types."""
    return bit_type.signed if symmetric is None else symmetric


def _finite_scale(scale: Tensor, lo: Tensor, hi: Tensor, bit_type: BitType) -> Tensor:
    """``scale`` when every element is a finite float32; else a ValueError naming the first bad range."""
    bad = ~torch.isfinite(scale.float())
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        lo_i, hi_i, scale_i = (float(v.flatten()[i]) for v in (lo.expand_as(scale), hi.expand_as(scale), scale))
        raise ValueError(
            f"clip range [{lo_i:.6g}, {hi_i:.6g}] cannot be quantized to {bit_type.name}: its scale {scale_i:.6g} "
            f"is not a finite float32 (valid: finite bounds whose scale stays below {_FLOAT32_MAX:.6g})"
        )
    return scale


def qparams_from_range(
    lo: Tensor, hi: Tensor, bit_type: BitType, symmetric: bool | None = None
) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` that map the clip range ``[lo, hi]`` onto ``bit_type``.

    Symmetric signed: ``scale = amax / ((qmax - qmin) / 2)``; symmetric unsigned:
    ``scale = amax / qmax``; both with zero point 0. Asymmetric: the range is widened to
    include 0 and ``zero_point = clamp(qmin - round(lo / scale), qmin, qmax)``. The scale is
    clamped below at float32 eps so constant or all-zero data stays finite; a range whose
    scale is not a finite float32 (NaN bounds, or wider than float32 can span) is a ValueError,
    since such a scale would fake-quantize everything to NaN.
    """
    qmin, qmax = bit_type.lower_bound, bit_type.upper_bound
    lo = lo.to(torch.float64) if lo.dtype == torch.float64 else lo.float()
    hi = hi.to(lo.dtype)
    # The divisors are tensors: CUDA multiplies by the reciprocal of a Python number, which can miss
    # the division by one ulp, and the same range would then get another scale on a GPU.
    if is_symmetric(bit_type, symmetric):
        amax = torch.maximum(lo.abs(), hi.abs())
        denom = lo.new_tensor((qmax - qmin) / 2 if bit_type.signed else qmax)
        scale = _finite_scale((amax / denom).clamp_min(SCALE_EPS), lo, hi, bit_type)
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
        return scale, zero_point
    lo = lo.clamp(max=0)
    hi = hi.clamp(min=0)
    scale = _finite_scale(((hi - lo) / lo.new_tensor(qmax - qmin)).clamp_min(SCALE_EPS), lo, hi, bit_type)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zero_point


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> Tensor:
    """Integer codes (as floats): ``clamp(round(x / scale) + zero_point, qmin, qmax)``."""
    return torch.clamp(torch.round(x / scale) + zero_point, bit_type.lower_bound, bit_type.upper_bound)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """Real values of integer codes: ``(q - zero_point) * scale``."""
    return (q - zero_point) * scale


def fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bit_type: BitType,
    quantizer: str = "uniform",
    inplace: bool = False,
) -> Tensor:
    """Quantize then dequantize, in ``x``'s dtype; a log ``quantizer`` keeps the top of the uniform
    grid (the observer's clip max) and maps onto powers of its base below it (:func:`fake_quantize_log`).

    ``inplace`` lets a uniform grid overwrite a float32 ``x`` (same values): a quantized model's
    activations are fresh tensors nobody else reads, and not allocating a new one per point saves a
    quarter of a quantized ViT block's time on the CPU (fresh pages cost more than the arithmetic)."""
    if quantizer == "uniform":
        # dequantize(quantize(x)) in four passes over one buffer (it runs on every activation of a
        # quantized model): clamping round(x / scale) to the codes shifted by the zero point is the same
        # integer arithmetic, exact in float, so the values are those of the two-step formula.
        x32 = x.float()
        q = x32.div_(scale) if inplace or x32 is not x else torch.div(x32, scale)  # a converted copy is ours
        q.round_()
        q.clamp_(bit_type.lower_bound - zero_point, bit_type.upper_bound - zero_point)
        return q.mul_(scale).to(x.dtype)
    return fake_quantize_log(x, representable_range(scale, zero_point, bit_type)[1], bit_type.bits, quantizer)


def check_quantizer(quantizer: str, bit_type: BitType, symmetric: bool | None = None) -> str | None:
    """Why ``quantizer`` cannot go with these settings (None when it can): log grids hold
    non-negative values only (an unsigned bit type) and have no zero point to make symmetric."""
    if quantizer not in QUANTIZERS:
        return f"unknown quantizer {quantizer!r}; valid: {', '.join(QUANTIZERS)}"
    if quantizer == "uniform":
        return None
    if bit_type.signed:
        return f"quantizer {quantizer} needs an unsigned bit type (data ≥ 0), got {bit_type.name}; valid: e.g. uint4"
    if symmetric is not None:
        return f"quantizer {quantizer} has no zero point, so symmetric does not apply; valid: leave symmetric out"
    return None


def check_log_data(low: Tensor, what: str) -> None:
    """ValueError naming ``what`` when the data's minimum ``low`` (per row) is below 0 (a log grid has no
    negative levels)."""
    if bool((low < 0).any()):
        raise ValueError(
            f"{what} takes data ≥ 0 only (softmax and other non-negative points), got a minimum of "
            f"{float(low.min()):.4g}; use quantizer uniform here"
        )


def fake_quantize_log(x: Tensor, clip_max: Tensor, bits: int, quantizer: str) -> Tensor:
    """``x`` on the log grid ``clip_max · base^-k``, ``k`` in ``[0, 2^bits - 2]`` (the last code is 0):
    FQ-ViT's log2 and RepQ-ViT's log√2 softmax quantizers. ``x`` must be ≥ 0; ``x``'s dtype is kept."""
    # k = round(-log_base(x / clip_max)), at least 0 (values above the top saturate); in float64 so that
    # the rounding boundaries are those of the plain formula. x = 0 gives k = inf: flushed to 0.
    k = torch.round(-torch.log(x.double() / clip_max.double()) / math.log(LOG_BASES[quantizer])).clamp_min(0)
    levels = clip_max.double() * torch.pow(LOG_BASES[quantizer], -k)
    out = torch.where(k <= (1 << bits) - 2, levels, torch.zeros_like(levels))
    return out.to(x.dtype)


def log_levels(clip_max: Tensor, bits: int, quantizer: str) -> Tensor:
    """The nonzero levels of a log grid, ``clip_max · base^-k`` for ``k = 0 .. 2^bits - 2`` (last dim, descending)."""
    k = torch.arange((1 << bits) - 1, dtype=torch.float64, device=clip_max.device)
    return clip_max.double().unsqueeze(-1) * LOG_BASES[quantizer] ** -k


def log_bounds(clip_max: Tensor, bits: int, quantizer: str) -> tuple[Tensor, Tensor]:
    """``(low, high)``: values below ``low`` are flushed to 0, values above ``high`` saturate at the
    clip max (the rounding boundaries half a log step beyond the end levels)."""
    base = LOG_BASES[quantizer]
    top = clip_max.double()
    return top * base ** -((1 << bits) - 1.5), top * math.sqrt(base)


def representable_range(scale: Tensor, zero_point: Tensor, bit_type: BitType) -> tuple[Tensor, Tensor]:
    """The smallest and largest values the quantizer can output."""
    return (bit_type.lower_bound - zero_point) * scale, (bit_type.upper_bound - zero_point) * scale


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error."""
    return float(torch.mean((x.double() - x_hat.double()) ** 2))


def ratio_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``; inf for zero noise, -inf for zero signal."""
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)


def sqnr_db(x: Tensor, x_hat: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when the error is exactly zero)."""
    return ratio_db(float(torch.sum(x.double() ** 2)), float(torch.sum((x.double() - x_hat.double()) ** 2)))


def clipped_mask(x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType, quantizer: str = "uniform") -> Tensor:
    """Elements beyond the representable range by more than half a step (they get clipped); on a
    log grid, those above the top level's rounding interval or flushed to 0 below the last level."""
    lo, hi = representable_range(scale, zero_point, bit_type)
    if quantizer != "uniform":
        low, high = log_bounds(hi, bit_type.bits, quantizer)
        return ((x > 0) & (x < low)) | (x > high)
    half = scale / 2
    return (x < lo - half) | (x > hi + half)


@dataclass(frozen=True)
class QuantError:
    """How much fake quantization changed a tensor (or a stream of batches)."""

    mse: float
    sqnr_db: float
    clipped_fraction: float


def quant_error(
    x: Tensor | Sequence[Tensor], scale: Tensor, zero_point: Tensor, bit_type: BitType, quantizer: str = "uniform"
) -> QuantError:
    """MSE, SQNR and clipped fraction of fake-quantizing ``x`` (one tensor or all batches)."""
    batches = [x] if isinstance(x, Tensor) else list(x)
    squared_error = signal = 0.0
    clipped = count = 0
    for batch in batches:
        batch = batch.float()
        diff = (batch - fake_quantize(batch, scale, zero_point, bit_type, quantizer)).double()
        squared_error += float(torch.sum(diff * diff))
        signal += float(torch.sum(batch.double() ** 2))
        clipped += int(clipped_mask(batch, scale, zero_point, bit_type, quantizer).sum())
        count += batch.numel()
    if count == 0:
        raise ValueError("quant_error needs at least one non-empty tensor")
    return QuantError(squared_error / count, ratio_db(signal, squared_error), clipped / count)
