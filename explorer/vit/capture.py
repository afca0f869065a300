"""Feed several observer configurations of every point from one forward pass per batch.

The explorer compares observers side by side: running the model once per observer would
multiply the calibration cost by the number of observers. ``StatsCapture`` taps each block's
quantization points during a float forward pass and hands every tensor to all the observers
of that point; it can also keep the tensors so observers can be refitted later (tuning)
without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from explorer.config import ACTIVATION_POINTS, WEIGHT_POINTS, PointConfig, load_config, module_type_of
from explorer.config.loader import ConfigSource
from explorer.observers import Observer, build_observer
from explorer.vit.model import QuantViT

PointKey = tuple[int, str]  # (block index, point name)


@dataclass
class CaptureResult:
    """What one capture pass produced."""

    observers: dict[str, dict[PointKey, Observer]]  # variant → (block, point) → observer
    tensors: dict[PointKey, list[Tensor]]  # kept tensors per point (CPU float32), possibly a prefix of batches
    errors: dict[str, dict[PointKey, str]] = field(default_factory=dict)  # variant → point → why it failed
    batches: int = 0
    kept_batches: int = 0


class StatsCapture:
    """Observers for named variants of a config, fed from one float pass per batch.

    ``variants`` maps a label to a function ``(block, point) -> PointConfig``, so a variant
    can be "the base config with another observer type" or any other rule. A variant whose
    observer rejects a tensor (e.g. KL with an unsigned type on negative data) is recorded in
    ``errors`` for that point and the others continue. ``keep_bytes`` bounds the tensors kept
    for later refits (0 keeps none); batches are kept whole, in order, while they fit.
    """

    def __init__(
        self,
        model: nn.Module,
        base_config: ConfigSource,
        variants: Mapping[str, Callable[[int, str], PointConfig]],
        keep_bytes: int = 0,
    ) -> None:
        self.qvit = QuantViT(model, load_config(base_config))
        self.variants = dict(variants)
        self.keep_bytes = keep_bytes
        self.result = CaptureResult(observers={v: {} for v in self.variants}, tensors={})
        self._kept = 0
        self._keeping = keep_bytes > 0
        self._batch_tensors: dict[PointKey, Tensor] = {}
        for index, block in enumerate(self.qvit.blocks):
            for point in (*WEIGHT_POINTS, *ACTIVATION_POINTS):
                for label, rule in self.variants.items():
                    try:
                        observer = build_observer(rule(index, point), module_type_of(point))
                    except (ValueError, TypeError) as exc:
                        self.result.errors.setdefault(label, {})[(index, point)] = str(exc)
                        continue
                    self.result.observers[label][(index, point)] = observer
            block.taps.append(self._tap_for(index))

    def _tap_for(self, index: int) -> Callable[[str, Tensor], None]:
        def tap(point: str, tensor: Tensor) -> None:
            self._feed((index, point), tensor)
            if self._keeping:
                self._batch_tensors[(index, point)] = tensor.detach().to("cpu", torch.float32, copy=True)

        return tap

    def _feed(self, key: PointKey, tensor: Tensor) -> None:
        for label, observers in self.result.observers.items():
            observer = observers.get(key)
            if observer is None:
                continue
            try:
                observer.update(tensor)
            except ValueError as exc:
                del observers[key]
                self.result.errors.setdefault(label, {})[key] = str(exc)

    @torch.no_grad()
    def run(self, batches: Iterable[Tensor], progress: Callable[[int], None] | None = None) -> CaptureResult:
        """One float forward pass per batch; returns the observers (and kept tensors)."""
        self.qvit.mode = "fp32"
        if self.result.batches == 0:
            for index, block in enumerate(self.qvit.blocks):
                for point, weight in block.weights().items():
                    self._feed((index, point), weight)
                    if self._keeping:
                        self.result.tensors[(index, point)] = [weight.detach().to("cpu", torch.float32, copy=True)]
        for batch in batches:
            self._batch_tensors = {}
            self.qvit(batch)
            self.result.batches += 1
            if self._keeping:
                size = sum(t.numel() * t.element_size() for t in self._batch_tensors.values())
                if self._kept + size <= self.keep_bytes:
                    for key, tensor in self._batch_tensors.items():
                        self.result.tensors.setdefault(key, []).append(tensor)
                    self._kept += size
                    self.result.kept_batches += 1
                else:
                    self._keeping = False
            if progress is not None:
                progress(self.result.batches)
        self._batch_tensors = {}
        if self.result.batches == 0:
            raise ValueError("StatsCapture.run got no batches; give at least one batch of calibration images")
        return self.result

    def close(self) -> None:
        """Remove the taps from the blocks."""
        for block in self.qvit.blocks:
            block.taps.clear()
