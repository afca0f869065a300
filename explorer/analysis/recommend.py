"""A recommended config: per point, the observer and parameters that cost the model least.

Every candidate (registered observer × granularity × ``percentile_alpha`` at or above the run's
floor × ``kl_bins`` × signedness the data allow) is fitted from the point's statistics and ranked
by the point's own MSE, which is cheap. The few best of different observers are then tried in the
model, block by block, and the one with the best logit SQNR against FP32 on the evaluation images
is kept (coordinate descent in model order: blocks before the current one are final, so each try
runs only from the current block on). The exported YAML says on each point why it was chosen.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import yaml
from torch import Tensor, nn

from explorer.analysis.explore import ExplorerRun, summarize
from explorer.analysis.sensitivity import ModelScorer, Progress, Score
from explorer.bit_type import BitType
from explorer.config import CALIBRATION_MODES, ConfigError, ConfigWarning, PointConfig, QuantConfig, section_of
from explorer.config.schema import module_type_of
from explorer.observers import Observer, build_observer, observer_label, observer_names, observer_params
from explorer.observers.registry import symmetric_only
from explorer.quant_ops import QUANTIZERS
from explorer.vit import PointKey, QuantViT

GUIDE_ALPHAS: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9995, 0.9999, 0.99999)
"""The guide's ``percentile_alpha`` values; those below the run's floor are skipped."""
KL_BINS: tuple[int, ...] = (512, 1024, 2048, 4096)
REFINE = 3
"""How many candidates per point (the best of as many observers, by MSE) are tried in the model."""


@dataclass(frozen=True)
class Candidate:
    """One setting of a point, fitted from its statistics, with the point's own error."""

    point: PointConfig
    observer: Observer
    mse: float
    sqnr_db: float

    @property
    def description(self) -> str:
        """Observer, granularity, parameters and bit type in a few words."""
        p = self.point
        taken = {spec.name for spec in observer_params(p.observer_type)}
        parts = [observer_label(p.observer_type), p.calibration_mode, str(p.bit_type.name)]
        if "percentile_alpha" in taken:
            parts.append(f"alpha {p.percentile_alpha:g}")
        if "kl_bins" in taken:
            parts.append(f"{p.kl_bins} bins")
        if p.symmetric is False:
            parts.append("asymmetric")
        if p.quantizer != "uniform":
            parts.append(f"{p.quantizer} grid")
        return " ".join(parts)


LOG_GRIDS = tuple(q for q in QUANTIZERS if q != "uniform")


def candidate_points(run: ExplorerRun, key: PointKey, bits: int | None = None) -> list[PointConfig]:
    """Every setting worth trying on ``key``: width ``bits`` (else the run config's), signed
    symmetric, and either unsigned (when the data never go below zero) or else signed asymmetric
    where the observer allows it (on non-negative data the two are the same grid); on a
    non-negative activation (the softmax) the unsigned ones on the log2 and log√2 grids too."""
    block, name = key
    base = run.config.point(name, block)
    width = bits or base.bit_type.bits
    non_negative = float(run.stats(key).view("layer_wise").min[0]) >= 0
    signs = [(True, None), (False, None) if non_negative else (True, False)]
    points = []
    for observer_type in observer_names():
        taken = {spec.name for spec in observer_params(observer_type)}
        variants: list[dict[str, float]] = [{}]
        if "percentile_alpha" in taken:
            variants = [{"percentile_alpha": a} for a in GUIDE_ALPHAS if a >= run.alpha_floor]
        if "kl_bins" in taken:
            variants = [{"kl_bins": b} for b in KL_BINS]
        for mode in CALIBRATION_MODES:
            for signed, symmetric in signs:
                if symmetric is False and symmetric_only(observer_type):
                    continue
                for variant in variants:
                    try:
                        points.append(
                            base.replace(
                                observer_type=observer_type,
                                calibration_mode=mode,
                                bit_type=BitType(width, signed),
                                symmetric=symmetric,
                                **variant,
                            )
                        )
                    except ConfigError:  # e.g. kl_bins below the levels of a wide bit type
                        continue
    if non_negative and module_type_of(name) == "activation":  # the softmax: log grids too
        unsigned = [p for p in points if not p.bit_type.signed and p.symmetric is None]
        points += [p.replace(quantizer=grid) for p in unsigned for grid in LOG_GRIDS]
    return points


def ranked_candidates(run: ExplorerRun, key: PointKey, bits: int | None = None) -> list[Candidate]:
    """The candidates of ``key`` that fit, least point MSE first."""
    stats = run.stats(key)
    ranked = []
    for point in candidate_points(run, key, bits):
        try:
            observer = build_observer(point, module_type_of(key[1])).fit(stats)
            summary = summarize(observer, point.observer_type, stats)
        except (ValueError, RuntimeError):  # e.g. a range too wide for the bit type
            continue
        ranked.append(Candidate(point, observer, summary.mse, summary.sqnr_db))
    if not ranked:
        raise ValueError(f"no candidate fits block {key[0]} {key[1]}")
    return sorted(ranked, key=lambda c: c.mse)


def shortlist(ranked: Sequence[Candidate], size: int = REFINE) -> list[Candidate]:
    """The best candidate of each observer, least MSE first, at most ``size``: alternatives that
    differ in kind (clipping vs range), not neighbouring alphas."""
    best: dict[str, Candidate] = {}
    for candidate in ranked:
        best.setdefault(candidate.point.observer_type, candidate)
    return list(best.values())[:size]


@dataclass(frozen=True)
class Recommendation:
    """The recommended config, why each point got its setting, its score on the evaluation images,
    and the score of the least-MSE choice on every point it started from."""

    config: QuantConfig
    reasons: dict[PointKey, str]
    score: Score
    least_mse_score: Score

    def yaml(self) -> str:
        """The config as YAML loadable by ``load_config``, with a comment above each point saying why."""
        lines = [
            "# Recommended by explorer.analysis.recommend_config: each point's candidates ranked by the",
            "# point's own MSE, the best of a few observers then tried in the model by logit SQNR vs FP32.",
            f"# Logit SQNR {self.score.sqnr_db:.2f} dB (least MSE everywhere: {self.least_mse_score.sqnr_db:.2f} dB), "
            f"top-1 agreement {100 * self.score.agreement:.2f} % on the evaluation images.",
            "blocks:",
        ]
        for block, sections in self.config.to_dict()["blocks"].items():
            lines.append(f"  {block}:")
            for section, entries in sections.items():
                lines.append(f"    {section}:")
                for name, entry in entries.items():
                    lines.append(f"      # {self.reasons[(block, name)]}")
                    lines.append(f"      {name}:")
                    body = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False)
                    lines.extend(f"        {line}" for line in body.splitlines())
        return "\n".join(lines) + "\n"


def config_of(points: dict[PointKey, PointConfig]) -> QuantConfig:
    """A config setting every point of every block explicitly under ``blocks`` (no warnings: the
    choices were measured)."""
    data: dict[int, dict[str, dict[str, object]]] = {}
    for (block, name), point in points.items():
        entry = {
            "observer_type": point.observer_type,
            "calibration_mode": point.calibration_mode,
            "bit_type": {"bits": point.bit_type.bits, "signed": point.bit_type.signed},
            **({"quantizer": point.quantizer} if point.quantizer != "uniform" else {}),
            **point.observer_params(),
        }
        data.setdefault(block, {}).setdefault(section_of(name), {})[name] = entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return QuantConfig({"blocks": data})


def _reason(kept: Candidate, top: Candidate, tried: list[tuple[Candidate, float]], total: int) -> str:
    """Why ``kept`` won, in one line."""
    if len(tried) == 1:
        return f"{kept.description}: least point MSE of {total} candidates (point SQNR {kept.sqnr_db:.1f} dB)"
    own = next(s for c, s in tried if c is kept)
    others = ", ".join(f"{c.description} {s:.2f} dB" for c, s in tried if c is not kept)
    if kept is top:
        return (
            f"{kept.description}: least point MSE of {total} candidates and best model logit SQNR "
            f"{own:.2f} dB (vs {others})"
        )
    return (
        f"{kept.description}: best model logit SQNR {own:.2f} dB (vs {others}); "
        f"the least point MSE of {total} candidates was {top.description}"
    )


@torch.no_grad()
def recommend(
    model: nn.Module,
    run: ExplorerRun,
    eval_batches: Sequence[Tensor],
    bits: int | None = None,
    refine: int = REFINE,
    progress: Progress | None = None,
) -> Recommendation:
    """The recommended setting of every point (see the module docstring), with the reasons."""
    points = run.points
    total = 2 * len(points)
    ranked: dict[PointKey, list[Candidate]] = {}
    for done, key in enumerate(points, start=1):
        ranked[key] = ranked_candidates(run, key, bits)
        if progress is not None:
            progress(done, total)
    qvit = QuantViT(model, run.config)
    for (block, name), candidates in ranked.items():
        qvit.set_observer(block, name, candidates[0].observer)
    qvit.compute_quant_params()
    scorer = ModelScorer(qvit, eval_batches)
    scorer.set_float(())
    inputs = scorer.block_inputs()[0]
    score = start = scorer.score(0, inputs)
    chosen: dict[PointKey, Candidate] = {}
    reasons: dict[PointKey, str] = {}
    current = 0
    for done, key in enumerate(points, start=len(points) + 1):
        block = key[0]
        while current < block:  # a new block: the ones before it are final
            inputs = [qvit.blocks[current](x) for x in inputs]
            current += 1
        top = ranked[key][0]
        tried = [(top, score.sqnr_db)]
        best, best_score = top, score
        for candidate in shortlist(ranked[key], refine)[1:]:
            _put(qvit, key, candidate)
            trial = scorer.score(block, inputs)
            tried.append((candidate, trial.sqnr_db))
            if trial.sqnr_db > best_score.sqnr_db:
                best, best_score = candidate, trial
        _put(qvit, key, best)
        chosen[key], score = best, best_score
        reasons[key] = _reason(best, top, tried, len(ranked[key]))
        if progress is not None:
            progress(done, total)
    return Recommendation(config_of({k: c.point for k, c in chosen.items()}), reasons, score, start)


def _put(qvit: QuantViT, key: PointKey, candidate: Candidate) -> None:
    """Quantize ``key`` with ``candidate``'s observer."""
    block, name = key
    qvit.set_observer(block, name, candidate.observer)
    qvit.blocks[block].compute_quant_params()
    qvit.blocks[block].mode = "quantized"


def recommend_config(
    model: nn.Module,
    run: ExplorerRun,
    eval_batches: Sequence[Tensor],
    bits: int | None = None,
    progress: Progress | None = None,
) -> QuantConfig:
    """The config of :func:`recommend` (its ``yaml()`` adds the reasons as comments)."""
    return recommend(model, run, eval_batches, bits, progress=progress).config
