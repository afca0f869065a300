"""End-to-end accuracy of a quantized ViT: FP32 vs fake-quantized predictions on the same images.

With labels (the demo's test split) the report gives top-1 accuracy of both; without labels
(any model, any images) it still gives the top-1 agreement of the quantized predictions with
the FP32 ones and the SQNR of the quantized logits against the FP32 logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.config.loader import ConfigSource
from explorer.quant_ops import sqnr_db
from explorer.vit.model import QuantViT


@dataclass(frozen=True)
class AccuracyReport:
    """FP32 vs quantized on one set of images.

    ``fp32_top1``/``quant_top1`` are percentages (0-100), None when no labels were given;
    ``agreement`` is the fraction (0-1) of images whose quantized top-1 class equals the FP32 one;
    ``logit_sqnr_db`` compares all quantized logits with the FP32 logits (inf when identical).
    """

    fp32_top1: float | None
    quant_top1: float | None
    agreement: float
    logit_sqnr_db: float
    num_images: int

    @property
    def drop(self) -> float | None:
        """Accuracy lost to quantization, in percentage points (FP32 minus quantized); None without labels."""
        if self.fp32_top1 is None or self.quant_top1 is None:
            return None
        return self.fp32_top1 - self.quant_top1


def _as_batches(images: Tensor | Sequence[Tensor], batch_size: int) -> list[Tensor]:
    """Batches of at most ``batch_size`` images, in order.

    ``images`` is one ``[N, C, H, W]`` tensor, or a list of batches ``[n, C, H, W]`` and/or
    single images ``[C, H, W]`` (joined, then re-batched).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parts = [images] if isinstance(images, Tensor) else list(images)
    if not all(isinstance(p, Tensor) for p in parts):
        raise TypeError("images must be a tensor [N, C, H, W] or a list of tensors")
    fixed = []
    for part in parts:
        if part.dim() == 3:
            part = part.unsqueeze(0)
        if part.dim() != 4:
            shape = tuple(part.shape)
            raise ValueError(f"expected images [N, C, H, W] (or single images [C, H, W]), got shape {shape}")
        fixed.append(part)
    if sum(p.shape[0] for p in fixed) == 0:
        raise ValueError("evaluate_quantized got no images")
    joined = fixed[0] if len(fixed) == 1 else torch.cat(fixed)
    return list(joined.split(batch_size))


def _device_of(module: nn.Module) -> torch.device:
    """Where the module's parameters live (CPU when it has none)."""
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _logits(qvit: QuantViT, batches: Iterable[Tensor], device: torch.device) -> Tensor:
    """Concatenated float32 logits of every batch, on the CPU."""
    return torch.cat([qvit(batch.to(device)).float().cpu() for batch in batches])


def _top1(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(dim=1) == labels).double().mean())


@torch.no_grad()
def evaluate_quantized(
    qvit: QuantViT,
    images: Tensor | list[Tensor],
    labels: Tensor | None = None,
    batch_size: int = 256,
) -> AccuracyReport:
    """Run ``images`` through ``qvit`` in ``'fp32'`` and in ``'quantized'`` mode and compare.

    ``qvit`` must have quantization parameters (``compute_quant_params()``). Its mode is
    restored afterwards, even on error. ``labels`` (int, one per image) add top-1 accuracies.
    """
    if not isinstance(qvit, QuantViT):
        raise TypeError(f"evaluate_quantized needs a QuantViT, got {type(qvit).__name__}")
    batches = _as_batches(images, batch_size)
    count = sum(b.shape[0] for b in batches)
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).cpu().long()
        if labels.numel() != count:
            raise ValueError(f"got {labels.numel()} labels for {count} images")
    device = _device_of(qvit)
    previous = qvit.mode
    try:
        qvit.mode = "fp32"
        reference = _logits(qvit, batches, device)
        qvit.mode = "quantized"  # a clear RuntimeError when there are no parameters yet
        quantized = _logits(qvit, batches, device)
    finally:
        qvit.mode = previous
    agreement = float((reference.argmax(dim=1) == quantized.argmax(dim=1)).double().mean())
    return AccuracyReport(
        fp32_top1=None if labels is None else _top1(reference, labels),
        quant_top1=None if labels is None else _top1(quantized, labels),
        agreement=agreement,
        logit_sqnr_db=sqnr_db(reference, quantized),
        num_images=count,
    )


def calibrate_and_evaluate(
    model: nn.Module,
    config: ConfigSource,
    calib_batches: Iterable[Tensor],
    eval_images: Tensor | list[Tensor],
    eval_labels: Tensor | None = None,
    batch_size: int = 256,
) -> tuple[QuantViT, AccuracyReport]:
    """Wrap ``model`` (left unchanged), calibrate on ``calib_batches``, compute parameters and evaluate.

    Returns the calibrated :class:`QuantViT` (in ``'quantized'`` mode) and its report.
    """
    qvit = QuantViT(model, config)
    device = _device_of(qvit)
    qvit.calibrate(batch.to(device) for batch in calib_batches)
    qvit.compute_quant_params()
    qvit.mode = "quantized"
    return qvit, evaluate_quantized(qvit, eval_images, eval_labels, batch_size)
