"""Bits per point under an average-bit budget, assigned from each point's sensitivity.

The budget is element-weighted: a weight point counts the weight's elements, an activation point
the tensor's elements for one image, so the average is the bits moved per image and parameter.
Each point is scored quantized alone at every width (logit noise power relative to the FP32
logits); taking those noises as additive, a greedy walk from the widest assignment lowers, step
by step, the point whose next narrower width adds the least noise per bit-element saved. Points
along the walk and the uniform assignments are evaluated in the model; the best by logit SQNR
among those within the budget is returned.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from explorer.analysis.explore import ExplorerRun, observer_for
from explorer.analysis.sensitivity import ModelScorer, Progress, Score
from explorer.bit_type import BitType
from explorer.config import ALL_POINTS, ConfigWarning, QuantConfig
from explorer.observers import Observer
from explorer.vit import PointKey, QuantViT

EVALUATED_STEPS = 12
"""About how many assignments along the greedy walk are evaluated in the model (for the plot)."""

Assignment = dict[PointKey, int]


def with_bits(config: QuantConfig, bits: int) -> QuantConfig:
    """``config`` with every point (and every per-block override) at ``bits``, signedness kept."""
    out = config
    for name in ALL_POINTS:
        out = out.with_point(name, bit_type={"bits": bits, "signed": config.point(name).bit_type.signed})
    for block in config.block_indices:
        for entries in config.blocks[block].values():
            for name in entries:
                signed = config.point(name, block).bit_type.signed
                out = out.with_point(name, block, bit_type={"bits": bits, "signed": signed})
    return out


def assign_bits(config: QuantConfig, bits: Assignment) -> QuantConfig:
    """``config`` with each point's width set under its block (signedness kept); no repeated warnings."""
    out = config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        for (block, name), width in bits.items():
            signed = config.point(name, block).bit_type.signed
            out = out.with_point(name, block, bit_type={"bits": width, "signed": signed})
    return out


@torch.no_grad()
def point_elements(qvit: QuantViT, image: Tensor) -> dict[PointKey, int]:
    """Elements of each point: the weight's, or the activation's for one image (measured on ``image``)."""
    elements: dict[PointKey, int] = {}
    for index, block in enumerate(qvit.blocks):
        elements.update({(index, p): w.numel() for p, w in block.weights().items()})
        block.taps.append(lambda p, x, i=index: elements.setdefault((i, p), x.numel() // x.shape[0]))
    previous = qvit.mode
    try:
        qvit.mode = "fp32"
        qvit(image[:1])
    finally:
        for block in qvit.blocks:
            block.taps.clear()
        qvit.mode = previous
    return elements


def average_bits(bits: Assignment, elements: dict[PointKey, int]) -> float:
    """The element-weighted average width."""
    return sum(bits[k] * elements[k] for k in bits) / sum(elements[k] for k in bits)


@dataclass(frozen=True)
class MixedPrecision:
    """The chosen assignment, its config, and every assignment evaluated (``tried``: one row each
    with ``label``, ``average_bits``, ``sqnr_db``, ``agreement``, ``chosen``)."""

    config: QuantConfig
    bits: Assignment
    tried: pd.DataFrame


def _noise(score: Score) -> float:
    """Logit noise power relative to the FP32 logits' power."""
    return 0.0 if math.isinf(score.sqnr_db) else 10 ** (-score.sqnr_db / 10)


def _greedy_walk(
    noise: dict[PointKey, dict[int, float]], elements: dict[PointKey, int], choices: Sequence[int]
) -> list[Assignment]:
    """Assignments from every point at the widest choice down to every point at the narrowest,
    lowering one point by one choice per step (least added noise per bit-element saved)."""
    widths = sorted(choices, reverse=True)
    current = dict.fromkeys(noise, widths[0])
    walk = [dict(current)]
    while True:
        steps = []
        for key, width in current.items():
            position = widths.index(width)
            if position + 1 < len(widths):
                lower = widths[position + 1]
                cost = (noise[key][lower] - noise[key][width]) / (elements[key] * (width - lower))
                steps.append((cost, key, lower))
        if not steps:
            return walk
        _, key, lower = min(steps)
        current[key] = lower
        walk.append(dict(current))


def search_mixed_precision(
    model: nn.Module,
    run: ExplorerRun,
    config: QuantConfig,
    eval_batches: Sequence[Tensor],
    average_bits_budget: float,
    choices: Sequence[int] = (4, 6, 8),
    progress: Progress | None = None,
) -> MixedPrecision:
    """The assignment (see the module docstring) with every assignment evaluated on the way."""
    if not choices:
        raise ValueError("no bit widths to choose from; give at least one, e.g. (4, 6, 8)")
    if average_bits_budget < min(choices):
        raise ValueError(f"an average of {average_bits_budget} bits is below the narrowest choice {min(choices)}")
    points = run.points
    qvit = QuantViT(model, config)
    scorer = ModelScorer(qvit, eval_batches)
    elements = point_elements(qvit, scorer.batches[0])
    observers: dict[tuple[PointKey, int], Observer] = {}
    for key in points:
        point = config.point(key[1], key[0])
        for width in choices:
            observers[key, width] = observer_for(
                run, key, point.replace(bit_type=BitType(width, point.bit_type.signed))
            )
    for (block, name), observer in ((k, observers[k, max(choices)]) for k in points):
        qvit.set_observer(block, name, observer)
    qvit.compute_quant_params()
    scorer.set_float(points)
    float_inputs = scorer.block_inputs()
    total = len(points) * len(choices) + EVALUATED_STEPS + len(choices) + 2
    done = 0
    noise: dict[PointKey, dict[int, float]] = {}
    for key in points:
        scorer.set_float(p for p in points if p != key)
        noise[key] = {}
        for width in choices:
            _use(qvit, {key: width}, observers)
            noise[key][width] = _noise(scorer.score(key[0], float_inputs[key[0]]))
            done += 1
            if progress is not None:
                progress(done, total)
        _use(qvit, {key: max(choices)}, observers)
    walk = _greedy_walk(noise, elements, choices)
    within = [a for a in walk if average_bits(a, elements) <= average_bits_budget + 1e-9]
    stride = max(1, len(walk) // EVALUATED_STEPS)
    candidates: dict[str, Assignment] = {f"greedy step {i}": walk[i] for i in range(0, len(walk), stride)}
    candidates[f"greedy step {walk.index(within[0])}"] = within[0]
    candidates.update({f"uniform {w}-bit": dict.fromkeys(points, w) for w in choices})
    scorer.set_float(())
    rows = []
    for label, assignment in candidates.items():
        _use(qvit, assignment, observers)
        score = scorer.score()
        rows.append(
            {
                "label": label,
                "average_bits": average_bits(assignment, elements),
                "sqnr_db": score.sqnr_db,
                "agreement": score.agreement,
            }
        )
        done += 1
        if progress is not None:
            progress(min(done, total), total)
    tried = pd.DataFrame(rows)
    eligible = tried[tried["average_bits"] <= average_bits_budget + 1e-9]
    best = str(eligible.loc[eligible["sqnr_db"].idxmax(), "label"])
    tried["chosen"] = tried["label"] == best
    return MixedPrecision(assign_bits(config, candidates[best]), candidates[best], tried)


def _use(qvit: QuantViT, bits: Assignment, observers: dict[tuple[PointKey, int], Observer]) -> None:
    """Put the fitted observer of each point's width in the model, with parameters computed."""
    for (block, name), width in bits.items():
        qvit.set_observer(block, name, observers[(block, name), width])
    for block in {block for block, _ in bits}:
        qvit.blocks[block].compute_quant_params()
        qvit.blocks[block].mode = "quantized"


def mixed_precision(
    model: nn.Module,
    run: ExplorerRun,
    config: QuantConfig,
    eval_batches: Sequence[Tensor],
    average_bits: float,
    choices: Sequence[int] = (4, 6, 8),
    progress: Progress | None = None,
) -> QuantConfig:
    """The config of :func:`search_mixed_precision`: bits per point with an element-weighted average
    of at most ``average_bits``."""
    return search_mixed_precision(model, run, config, eval_batches, average_bits, choices, progress).config
