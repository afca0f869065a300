"""Uniform quantization primitives and error metrics, as small pure tensor functions.

Everything that turns a clip range into ``(scale, zero_point)``, fake-quantizes a tensor or
measures the damage lives here, so observers, the ViT wrapper and the app share one definition.
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
    if is_symmetric(bit_type, symmetric):
        amax = torch.maximum(lo.abs(), hi.abs())
        denom = (qmax - qmin) / 2 if bit_type.signed else qmax
        scale = _finite_scale((amax / denom).clamp_min(SCALE_EPS), lo, hi, bit_type)
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
        return scale, zero_point
    lo = lo.clamp(max=0)
    hi = hi.clamp(min=0)
    scale = _finite_scale(((hi - lo) / (qmax - qmin)).clamp_min(SCALE_EPS), lo, hi, bit_type)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zero_point


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> Tensor:
    """Integer codes (as floats): ``clamp(round(x / scale) + zero_point, qmin, qmax)``."""
    return torch.clamp(torch.round(x / scale) + zero_point, bit_type.lower_bound, bit_type.upper_bound)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """Real values of integer codes: ``(q - zero_point) * scale``."""
    return (q - zero_point) * scale


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> Tensor:
    """Quantize then dequantize, in ``x``'s dtype."""
    out = dequantize(quantize(x.float(), scale, zero_point, bit_type), scale, zero_point)
    return out.to(x.dtype)


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


def clipped_mask(x: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> Tensor:
    """Elements beyond the representable range by more than half a step (they get clipped)."""
    lo, hi = representable_range(scale, zero_point, bit_type)
    half = scale / 2
    return (x < lo - half) | (x > hi + half)


@dataclass(frozen=True)
class QuantError:
    """How much fake quantization changed a tensor (or a stream of batches)."""

    mse: float
    sqnr_db: float
    clipped_fraction: float


def quant_error(x: Tensor | Sequence[Tensor], scale: Tensor, zero_point: Tensor, bit_type: BitType) -> QuantError:
    """MSE, SQNR and clipped fraction of fake-quantizing ``x`` (one tensor or all batches)."""
    batches = [x] if isinstance(x, Tensor) else list(x)
    squared_error = signal = 0.0
    clipped = count = 0
    for batch in batches:
        batch = batch.float()
        diff = (batch - fake_quantize(batch, scale, zero_point, bit_type)).double()
        squared_error += float(torch.sum(diff * diff))
        signal += float(torch.sum(batch.double() ** 2))
        clipped += int(clipped_mask(batch, scale, zero_point, bit_type).sum())
        count += batch.numel()
    if count == 0:
        raise ValueError("quant_error needs at least one non-empty tensor")
    return QuantError(squared_error / count, ratio_db(signal, squared_error), clipped / count)
