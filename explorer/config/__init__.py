"""Quantization configs: the guide's YAML schema, validated, resolved per point, and written back.

``load_config`` reads a file, YAML text or plain data into an immutable :class:`QuantConfig`;
``config.point(name, block)`` gives the :class:`PointConfig` an observer is built from;
``dump_config`` writes YAML that loads back equal.
"""

from explorer.config.edit import apply_point, changed_points, point_changes
from explorer.config.errors import ConfigError, ConfigWarning
from explorer.config.loader import ConfigSource, dump_config, load_config
from explorer.config.quant_config import QuantConfig
from explorer.config.schema import (
    ACTIVATION_POINTS,
    ALL_POINTS,
    CALIBRATION_MODES,
    QUANTIZATION_METHODS,
    SECTION_POINTS,
    WEIGHT_POINTS,
    PointConfig,
    builtin_defaults,
    entry_keys,
    module_type_of,
    section_of,
)

__all__ = [
    "ACTIVATION_POINTS",
    "ALL_POINTS",
    "CALIBRATION_MODES",
    "QUANTIZATION_METHODS",
    "SECTION_POINTS",
    "WEIGHT_POINTS",
    "ConfigError",
    "ConfigSource",
    "ConfigWarning",
    "PointConfig",
    "QuantConfig",
    "dump_config",
    "apply_point",
    "builtin_defaults",
    "changed_points",
    "entry_keys",
    "load_config",
    "module_type_of",
    "point_changes",
    "section_of",
]
