"""Gather one :class:`~explorer.stats.PointStats` per quantization point from one float pass per batch.

The explorer compares observers side by side and re-tunes them without running the model again.
Keeping the activations cannot scale to real ViTs (gigabytes per batch), and running the model
once per observer multiplies the cost; instead ``StatsCapture`` taps each block's quantization
points during a float forward pass and folds every tensor into that point's statistics, from
which any observer, with any settings, is fitted later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from explorer.allocator import retain_freed_memory
from explorer.config import ACTIVATION_POINTS, WEIGHT_POINTS, load_config, module_type_of
from explorer.config.loader import ConfigSource
from explorer.stats import DEFAULT_ALPHA_FLOOR, PointStats
from explorer.vit.model import QuantViT

PointKey = tuple[int, str]  # (block index, point name)


@dataclass
class CaptureResult:
    """What one capture pass produced."""

    stats: dict[PointKey, PointStats]  # (block, point) → its statistics
    errors: dict[PointKey, str] = field(default_factory=dict)  # points whose data was refused, and why
    batches: int = 0

    def to(self, device: torch.device | str) -> CaptureResult:
        """The same result with every point's statistics on ``device``."""
        stats = {key: s.to(device) for key, s in self.stats.items()}
        return CaptureResult(stats, dict(self.errors), self.batches)


class StatsCapture:
    """Statistics of every point of every block, fed from one float pass per batch.

    A point whose tensor is refused (e.g. NaN/Inf produced by the model) is recorded in
    ``errors`` with the reason and dropped; the other points continue.
    """

    def __init__(self, model: nn.Module, config: ConfigSource, alpha_floor: float = DEFAULT_ALPHA_FLOOR) -> None:
        retain_freed_memory()  # each batch's statistics free tens of MB: keep them (explorer.allocator)
        self.qvit = QuantViT(model, load_config(config))
        self.result = CaptureResult(
            stats={
                (index, point): PointStats(module_type_of(point), alpha_floor)
                for index in range(len(self.qvit.blocks))
                for point in (*WEIGHT_POINTS, *ACTIVATION_POINTS)
            }
        )
        for index, block in enumerate(self.qvit.blocks):
            block.taps.append(self._tap_for(index))

    def _tap_for(self, index: int) -> Callable[[str, Tensor], None]:
        def tap(point: str, tensor: Tensor) -> None:
            self._feed((index, point), tensor)

        return tap

    def _feed(self, key: PointKey, tensor: Tensor) -> None:
        stats = self.result.stats.get(key)
        if stats is None:
            return
        try:
            stats.update(tensor)
        except (ValueError, TypeError, RuntimeError, MemoryError) as exc:  # e.g. CUDA or host out of memory
            del self.result.stats[key]
            self.result.errors[key] = f"{type(exc).__name__}: {exc}"

    @torch.no_grad()
    def run(self, batches: Iterable[Tensor], progress: Callable[[int], None] | None = None) -> CaptureResult:
        """One float forward pass per batch; returns the statistics."""
        self.qvit.mode = "fp32"
        if self.result.batches == 0:
            for index, block in enumerate(self.qvit.blocks):
                for point, weight in block.weights().items():
                    self._feed((index, point), weight)
        for batch in batches:
            self.qvit(batch)
            self.result.batches += 1
            if progress is not None:
                progress(self.result.batches)
        if self.result.batches == 0:
            raise ValueError("StatsCapture.run got no batches; give at least one batch of calibration images")
        return self.result

    def close(self) -> None:
        """Remove the taps from the blocks."""
        for block in self.qvit.blocks:
            block.taps.clear()
