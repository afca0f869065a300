"""Plain-language reading of a point's distribution: why the observers choose what they choose."""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.analysis import DistributionFacts
from explorer.analysis.explore import EXTREME_CHANNEL_RATIO
from explorer.bit_type import BitType
from explorer.observers import observer_label

HEAVY_TAIL_RATIO = 2.0
"""max|x| / p99.99|x| above which a few outliers noticeably stretch MinMax's range."""
MATERIAL_GAP_DB = 3.0
"""SQNR gap to the best observer from which MinMax is said to fall apart (3 dB: twice the error power)."""
MINMAX = observer_label("MinmaxObserver")


def _channels(extreme: list[tuple[int, float]]) -> str:
    """``"12 (8.1×), 40 (6.3×)"``."""
    return ", ".join(f"{channel} ({ratio:.1f}×)" for channel, ratio in extreme)


def explain_facts(facts: DistributionFacts, channel_wise: bool, bit_type: BitType | None = None) -> list[str]:
    """One sentence per fact: range, tail, outlier ratio, extreme channels and sign.

    ``channel_wise`` and ``bit_type`` are the point's settings in the tuned config: they decide
    what extreme channels cost and whether an unsigned type of the same width would help
    (suggested only for a signed type on non-negative data; without ``bit_type``, no type is named).
    """
    ratio = facts.outlier_ratio
    sentences = [
        f"Values span [{facts.min:.4g}, {facts.max:.4g}] over {facts.numel:,} values "
        f"and {facts.channel_min.size} channel(s).",
        f"99.99% of the magnitudes |x| are below {facts.p9999_abs:.4g}; the largest is {ratio:.1f}× that.",
    ]
    if ratio >= HEAVY_TAIL_RATIO:
        sentences.append(
            f"A few values {ratio:.1f}× beyond the 99.99th percentile stretch MinMax's range: its step is "
            f"about {ratio:.1f}× coarser than the bulk of the data needs, which clipping observers "
            "(Percentile, OMSE, KL) avoid by sacrificing those few values."
        )
    else:
        sentences.append(
            f"No heavy tail (max is only {ratio:.1f}× the 99.99th percentile): MinMax's range is close to "
            "what the data needs, and clipping gains little."
        )
    if facts.extreme_channels:
        cost = (
            "channel_wise gives them their own scales, so the other channels keep their resolution."
            if channel_wise
            else "with one layer_wise range, every other channel's step is set by them — channel_wise would help."
        )
        sentences.append(
            f"Channel(s) {_channels(facts.extreme_channels)} span at least {EXTREME_CHANNEL_RATIO:g}× the median "
            f"channel range: {cost}"
        )
    else:
        sentences.append(
            f"No channel spans {EXTREME_CHANNEL_RATIO:g}× the median channel range or more: "
            "layer_wise and channel_wise ranges differ little here."
        )
    if facts.min >= 0:
        sentences.append(_sign_advice(bit_type))
    return sentences


def _sign_advice(bit_type: BitType | None) -> str:
    """What non-negative data means for the point's bit type."""
    if bit_type is None:
        return "All values are ≥ 0 (e.g. softmax probabilities): a signed type would leave its negative half unused."
    if not bit_type.signed:
        return f"All values are ≥ 0, and the unsigned {bit_type.name} uses its whole range for them."
    return (
        f"All values are ≥ 0 (e.g. softmax probabilities): {bit_type.name} leaves its negative half unused; "
        f"uint{bit_type.bits} (unsigned, same {bit_type.bits} bits) doubles the resolution."
    )


def minmax_gaps(sqnr: pd.DataFrame, top: int = 3) -> str:
    """Markdown for "Where MinMax falls apart": the points whose MinMax SQNR is furthest below the best
    observer's, when that gap is material (≥ :data:`MATERIAL_GAP_DB`), else a sentence saying no point has one.

    ``sqnr`` is the SQNR (dB) of every point × observer, rows indexed by ``(block, point)`` and columns
    by observer label (:func:`~explorer.analysis.metric_matrix` of the error table's ``sqnr_db``).
    """
    best = sqnr.max(axis=1)
    gap = best - sqnr[MINMAX]
    lines = []
    for index in gap.sort_values(ascending=False).index[:top]:
        if not np.isfinite(gap[index]) or gap[index] < MATERIAL_GAP_DB:
            break
        block, point = index
        lines.append(
            f"- block {block} · {point}: MinMax {sqnr.loc[index, MINMAX]:.1f} dB, "
            f"{gap[index]:.1f} dB below {sqnr.loc[index].idxmax()} ({best[index]:.1f} dB)"
        )
    if not lines:
        return (
            f"**Where MinMax falls apart:** nowhere here — no point has a material gap "
            f"(≥ {MATERIAL_GAP_DB:g} dB SQNR) between MinMax and the best observer."
        )
    return "\n".join(["**Where MinMax falls apart** (largest SQNR gap to the best observer):", *lines])


POINT_DESCRIPTIONS: dict[str, str] = {
    "attn_qkv": "qkv projection weight",
    "attn_proj": "attention output projection weight",
    "mlp_fc1": "MLP fc1 weight",
    "mlp_fc2": "MLP fc2 weight",
    "attn_qkv_output": "qkv linear output",
    "intSoft": "softmax probabilities, per head",
    "sv_attn": "softmax·V, input of proj",
    "mlp_act": "GELU output, input of fc2",
}
"""What each quantization point is, for selectors and captions."""
