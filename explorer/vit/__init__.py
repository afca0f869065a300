"""The ViT wrapper: quantization points of timm ViT blocks, whole-model calibration, stats capture."""

from explorer.vit.block import MODES, QuantTimmVitBlock, observer_state_bytes
from explorer.vit.capture import CaptureResult, PointKey, StatsCapture
from explorer.vit.model import QuantViT, vit_blocks

__all__ = [
    "MODES",
    "CaptureResult",
    "PointKey",
    "QuantTimmVitBlock",
    "QuantViT",
    "StatsCapture",
    "observer_state_bytes",
    "vit_blocks",
]
