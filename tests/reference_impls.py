"""Plain, deliberately unoptimised reference implementations the observer tests compare against.

Nothing here imports the observers: these are written from the published descriptions
(SPEC §2, TensorRT's entropy calibration) so a shared mistake is unlikely.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats


# --------------------------------------------------------------------------------------------
# Scale / zero point and fake quantization, in numpy float64
# --------------------------------------------------------------------------------------------
def bounds(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-wide format."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def np_qparams(lo: float, hi: float, bits: int, signed: bool, symmetric: bool) -> tuple[float, int]:
    """SPEC §2 scale/zero point for one clip range, written out by hand."""
    qmin, qmax = bounds(bits, signed)
    eps = float(np.finfo(np.float32).eps)
    if symmetric:
        amax = max(abs(lo), abs(hi))
        levels = (qmax - qmin) / 2 if signed else qmax
        return max(amax / levels, eps), 0
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (qmax - qmin), eps)
    zp = int(min(max(qmin - np.round(lo / scale), qmin), qmax))
    return scale, zp


def np_fake_quant(x: np.ndarray, scale, zp, bits: int, signed: bool) -> np.ndarray:
    """``(clamp(round(x / s) + zp, qmin, qmax) - zp) * s`` in float64 (round half to even)."""
    qmin, qmax = bounds(bits, signed)
    q = np.clip(np.round(np.asarray(x, np.float64) / scale) + zp, qmin, qmax)
    return (q - zp) * scale


def log_fake_quant_reference(values: list[float], clip_max: float, bits: int, base: float) -> list[float]:
    """FQ-ViT / RepQ-ViT log quantization, one value at a time: ``k = round(-log_base(x / clip_max))``,
    at least 0; ``clip_max * base**-k`` while ``k <= 2**bits - 2``, else 0 (and 0 stays 0)."""
    out = []
    for x in values:
        if x == 0:
            out.append(0.0)
            continue
        k = max(0, round(-math.log(x / clip_max) / math.log(base)))
        out.append(clip_max * base**-k if k <= 2**bits - 2 else 0.0)
    return out


# --------------------------------------------------------------------------------------------
# TensorRT entropy calibration, one candidate at a time
# --------------------------------------------------------------------------------------------
def kl_entropy_reference(hist: np.ndarray, levels: int) -> tuple[int, np.ndarray]:
    """TensorRT's entropy calibration on a histogram of ``|x|``, as a plain loop.

    Returns ``(best_i, divergences)`` where ``divergences[i]`` is the KL divergence of the
    candidate threshold at bin edge ``i`` (NaN for ``i < levels``) and ``best_i`` is the last
    index of the minimum (the threshold is ``best_i * bin_width``).

    For each ``i`` in ``levels .. len(hist)``:
      * P = hist[:i] with the mass of hist[i:] added to its last bin;
      * Q = hist[:i] merged into ``levels`` groups exactly as ``np.linspace(0, i, levels + 1)`` with
        ``np.digitize`` groups them; each group's mass spread evenly over its non-zero bins,
        zero bins stay zero;
      * KL = scipy.stats.entropy(P, Q) (normalises both).
    As NVIDIA's calibrator does, the first bin's count is replaced by the second's beforehand.
    """
    bins = np.array(hist, dtype=np.float64)
    bins[0] = bins[1]
    length = len(bins)
    divergences = np.full(length + 1, np.nan)
    for i in range(levels, length + 1):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()
        space = np.linspace(0, i, levels + 1)
        group = np.digitize(np.arange(i), space) - 1
        below = bins[:i]
        group_mass = np.bincount(group, weights=below, minlength=levels)
        group_nonzero = np.bincount(group, weights=(below > 0).astype(np.float64), minlength=levels)
        q = np.zeros(i)
        occupied = below > 0
        q[occupied] = group_mass[group[occupied]] / group_nonzero[group[occupied]]
        divergences[i] = scipy.stats.entropy(p, q)
    valid = divergences[levels:]
    best = levels + (len(valid) - 1 - int(np.argmin(valid[::-1])))
    return best, divergences


# --------------------------------------------------------------------------------------------
# OMSE brute force
# --------------------------------------------------------------------------------------------
SHRINK_FACTORS = [1.0 - i / 100.0 for i in range(100)]


def omse_candidate_mse(rows, lo, hi, bit_type, symmetric) -> np.ndarray:
    """Exact MSE of every OMSE candidate on all the data: ``[C, 100]`` float64.

    ``rows`` is ``[C, n]`` (one row per channel, all batches concatenated); ``lo``/``hi`` are the
    observed per-channel min/max. Candidate ``f`` quantizes with
    ``qparams_from_range(lo * f, hi * f)`` and its error is measured by direct fake quantization
    of every value (float32 arithmetic like the library's fake quantizer, sums in float64).
    """
    import torch

    from explorer.quant_ops import qparams_from_range

    x = np.ascontiguousarray(np.asarray(rows, dtype=np.float32))
    lo_t = torch.as_tensor(np.asarray(lo, dtype=np.float32)).reshape(-1, 1)
    hi_t = torch.as_tensor(np.asarray(hi, dtype=np.float32)).reshape(-1, 1)
    qmin, qmax = bit_type.lower_bound, bit_type.upper_bound
    out = np.empty((x.shape[0], len(SHRINK_FACTORS)), dtype=np.float64)
    buf = np.empty_like(x)
    for k, f in enumerate(SHRINK_FACTORS):
        scale_t, zp_t = qparams_from_range(lo_t * f, hi_t * f, bit_type, symmetric)
        scale = scale_t.numpy().astype(np.float32)
        zp = zp_t.numpy().astype(np.float32)
        np.divide(x, scale, out=buf)
        np.rint(buf, out=buf)
        buf += zp
        np.clip(buf, qmin, qmax, out=buf)
        buf -= zp
        buf *= scale
        buf -= x
        np.square(buf, out=buf)
        out[:, k] = buf.sum(axis=1, dtype=np.float64) / x.shape[1]
    return out
