"""Observer Explorer: post-training quantization observers for Vision Transformers."""

from explorer.bit_type import BIT_TYPE_PRESETS, INT4, INT8, UINT4, UINT8, BitType
from explorer.config import ConfigError, PointConfig, QuantConfig, dump_config, load_config
from explorer.observers import (
    KLObserver,
    MinmaxObserver,
    Observer,
    OmseObserver,
    PercentileObserver,
    build_observer,
)
from explorer.vit import QuantTimmVitBlock, QuantViT, StatsCapture

__all__ = [
    "BitType",
    "BIT_TYPE_PRESETS",
    "INT8",
    "UINT8",
    "INT4",
    "UINT4",
    "Observer",
    "MinmaxObserver",
    "PercentileObserver",
    "OmseObserver",
    "KLObserver",
    "build_observer",
    "ConfigError",
    "PointConfig",
    "QuantConfig",
    "load_config",
    "dump_config",
    "QuantTimmVitBlock",
    "QuantViT",
    "StatsCapture",
]
