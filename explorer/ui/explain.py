"""Plain-language reading of a point's distribution: why the observers choose what they choose."""

from __future__ import annotations

from explorer.analysis import DistributionFacts
from explorer.analysis.explore import EXTREME_CHANNEL_RATIO

HEAVY_TAIL_RATIO = 2.0
"""max|x| / p99.99|x| above which a few outliers noticeably stretch MinMax's range."""


def _channels(extreme: list[tuple[int, float]]) -> str:
    """``"12 (8.1×), 40 (6.3×)"``."""
    return ", ".join(f"{channel} ({ratio:.1f}×)" for channel, ratio in extreme)


def explain_facts(facts: DistributionFacts, channel_wise: bool) -> list[str]:
    """One sentence per fact: range, tail, outlier ratio, extreme channels and sign.

    ``channel_wise`` says whether the point is quantized per channel in the tuned config,
    which decides what extreme channels cost.
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
        sentences.append(
            "All values are ≥ 0 (e.g. softmax probabilities): a signed type leaves its negative half unused; "
            "an unsigned type (uint8) doubles the resolution."
        )
    return sentences


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
