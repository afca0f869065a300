"""Which point costs the model accuracy: each point quantized alone, and every point but it.

Both are measured against the FP32 logits of evaluation images, with the observers refit from the
run's statistics (no calibration pass). :class:`ModelScorer` is the shared engine (also used by the
recommendation and mixed precision): it caches the FP32 logits and the input of every block, so a
change in block ``b`` only runs blocks ``b`` onwards (from the cached input, without the patch
embedding), and blocks left wholly in float take timm's plain forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from explorer.analysis.evaluation import _device_of
from explorer.analysis.explore import ExplorerRun, quantized_model
from explorer.config import QuantConfig
from explorer.quant_ops import sqnr_db
from explorer.vit import PointKey, QuantViT

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called after each step of a long analysis."""


@dataclass(frozen=True)
class Score:
    """A quantized model against FP32 on the evaluation images."""

    sqnr_db: float  # of all logits
    agreement: float  # fraction of images with the FP32 top-1 class


SCORE_BATCH = 64
"""Images per forward when scoring. Regrouping changes no output (bit for bit on the CPU), and per
image a vit_tiny block on 16 images took about 2× as long as on 64 (2 threads, shared machine: the
cost per operation dominates); 64 vit_base images hold a few hundred MB of activations."""


class ModelScorer:
    """Scores configurations of one :class:`QuantViT` (parameters computed) on fixed evaluation images
    (the batches given, regrouped into batches of :data:`SCORE_BATCH` on the model's device)."""

    def __init__(self, qvit: QuantViT, batches: Sequence[Tensor]) -> None:
        if not batches:
            raise ValueError("no evaluation batches; give at least one batch of images")
        self.qvit = qvit
        device = _device_of(qvit)
        self.batches = [batch.to(device) for batch in torch.cat(list(batches)).split(SCORE_BATCH)]
        self.qvit.mode = "fp32"
        self.reference = self.logits()

    def set_float(self, points: Iterable[PointKey]) -> None:
        """Quantize every point but ``points``; blocks with nothing quantized run timm's plain forward."""
        chosen = set(points)
        self.qvit.keep_float(chosen)
        for block in self.qvit.blocks:
            block.mode = "fp32" if block.float_points == set(block.observers) else "quantized"

    @torch.no_grad()
    def block_inputs(self) -> list[list[Tensor]]:
        """The input of every block, per batch, with the model as it is set now."""
        inputs: list[list[Tensor]] = [[] for _ in self.qvit.blocks]
        hooks = [
            block.register_forward_pre_hook(lambda _, args, i=i: inputs[i].append(args[0]))
            for i, block in enumerate(self.qvit.blocks)
        ]
        try:
            for batch in self.batches:
                self.qvit(batch)
        finally:
            for hook in hooks:
                hook.remove()
        return inputs

    def _from_block(self, start: int, x: Tensor) -> Tensor:
        """Logits from block ``start``'s input: the blocks from there, then timm's final norm and head
        (what ``forward`` runs after the blocks), so the patch embedding is not recomputed."""
        for block in self.qvit.blocks[start:]:
            x = block(x)
        model = self.qvit.model
        return model.forward_head(model.norm(x))

    @torch.no_grad()
    def logits(self, start: int = 0, inputs: Sequence[Tensor] | None = None) -> Tensor:
        """Logits of every batch, running the blocks from ``start`` on ``inputs`` (that block's input
        per batch, from :meth:`block_inputs`); the whole model when ``inputs`` is None."""
        if inputs is None:
            return torch.cat([self.qvit(batch).float().cpu() for batch in self.batches])
        return torch.cat([self._from_block(start, x).float().cpu() for x in inputs])

    def score(self, start: int = 0, inputs: Sequence[Tensor] | None = None) -> Score:
        """:meth:`logits` against the FP32 logits."""
        logits = self.logits(start, inputs)
        agreement = float((logits.argmax(dim=1) == self.reference.argmax(dim=1)).double().mean())
        return Score(sqnr_db(self.reference, logits), agreement)


def sensitivity(
    model: nn.Module,
    run: ExplorerRun,
    config: QuantConfig,
    eval_batches: Sequence[Tensor],
    progress: Progress | None = None,
) -> pd.DataFrame:
    """One row per point: logit SQNR and top-1 agreement with FP32 when only this point is quantized
    (``only_*``) and when every point but this one is (``all_but_*``), observers as ``config`` says."""
    scorer = ModelScorer(quantized_model(model, run, config), eval_batches)
    points = run.points
    scorer.set_float(points)
    float_inputs = scorer.block_inputs()
    scorer.set_float(())
    quantized_inputs = scorer.block_inputs()
    rows = []
    for done, key in enumerate(points, start=1):
        block = key[0]
        scorer.set_float(p for p in points if p != key)
        only = scorer.score(block, float_inputs[block])
        scorer.set_float([key])
        all_but = scorer.score(block, quantized_inputs[block])
        rows.append(
            {
                "block": block,
                "point": key[1],
                "only_sqnr_db": only.sqnr_db,
                "only_agreement": only.agreement,
                "all_but_sqnr_db": all_but.sqnr_db,
                "all_but_agreement": all_but.agreement,
            }
        )
        if progress is not None:
            progress(done, len(points))
    scorer.set_float(())
    return pd.DataFrame(rows)
