"""``QuantViT``: every block of a timm ``VisionTransformer`` wrapped with the same config.

Patch embedding, position embedding, the final norm and the classifier head stay in float;
only the transformer blocks are observed and fake-quantized.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from explorer.config import QuantConfig, load_config
from explorer.config.loader import ConfigSource
from explorer.observers import Observer
from explorer.vit.block import QuantTimmVitBlock


def vit_blocks(model: nn.Module) -> nn.Sequential:
    """The transformer blocks of a timm ViT, with a clear error for other models."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not hasattr(model, "forward_features"):
        raise TypeError(
            f"{type(model).__name__} is not a timm VisionTransformer (no `blocks` Sequential); "
            "only timm ViT models are supported"
        )
    return blocks


class QuantViT(nn.Module):
    """A timm ViT whose blocks are :class:`QuantTimmVitBlock` s; the original model is not modified
    (its parameters are shared, not copied)."""

    def __init__(self, model: nn.Module, quant_config: ConfigSource, enable_profiling: bool = False) -> None:
        super().__init__()
        blocks = vit_blocks(model)
        self.config: QuantConfig = load_config(quant_config)
        out_of_range = [i for i in self.config.block_indices if i >= len(blocks)]
        if out_of_range:
            raise ValueError(
                f"the config overrides block(s) {out_of_range} but the model has {len(blocks)} blocks "
                f"(valid indices 0..{len(blocks) - 1})"
            )
        wrapped = nn.Sequential(
            *(QuantTimmVitBlock(b, self.config, enable_profiling, block_index=i) for i, b in enumerate(blocks))
        )
        shell = copy.copy(model)  # shares parameters; own module table so the original keeps its blocks
        shell._modules = dict(model._modules)
        shell.blocks = wrapped
        self.model = shell
        self.blocks: list[QuantTimmVitBlock] = list(wrapped)  # type: ignore[arg-type]

    @property
    def mode(self) -> str:
        """The mode shared by all blocks."""
        return self.blocks[0].mode

    @mode.setter
    def mode(self, value: str) -> None:
        previous = [block.mode for block in self.blocks]
        try:
            for block in self.blocks:
                block.mode = value
        except (ValueError, RuntimeError):
            for block, mode in zip(self.blocks, previous, strict=True):  # all or none: never a mixed model
                block.mode = mode
            raise

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    @torch.no_grad()
    def calibration(self, x: Tensor) -> Tensor:
        """One calibration batch through the whole model; returns the float logits."""
        self.mode = "calibration"
        for block in self.blocks:
            block.observe_weights()
        return self.model(x)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor], progress: Callable[[int], None] | None = None) -> int:
        """Calibrate on every batch; ``progress(i)`` is called after batch ``i`` (1-based)."""
        count = 0
        for count, batch in enumerate(batches, start=1):
            self.calibration(batch)
            if progress is not None:
                progress(count)
        if count == 0:
            raise ValueError("calibrate() got no batches; give at least one batch of calibration images")
        return count

    def compute_quant_params(self) -> None:
        """Quantization parameters for every point of every block."""
        for block in self.blocks:
            block.compute_quant_params()

    def set_observer(self, block: int, point: str, observer: Observer) -> None:
        """Use an already-fed observer for one point (e.g. refit from kept tensors)."""
        self.blocks[block].set_observer(point, observer)

    def keep_float(self, points: Iterable[tuple[int, str]]) -> None:
        """Leave exactly these ``(block, point)`` s in float in ``'quantized'`` mode (none: all quantized)."""
        chosen = set(points)
        unknown = chosen - set(self.observers())
        if unknown:
            raise KeyError(f"not points of this model: {sorted(unknown)}")
        for index, block in enumerate(self.blocks):
            block.float_points = {p for p in block.observers if (index, p) in chosen}

    def observers(self) -> dict[tuple[int, str], Observer]:
        """Every observer, keyed by ``(block index, point)``."""
        return {(i, p): obs for i, block in enumerate(self.blocks) for p, obs in block.observers.items()}
