"""Every bound on what the explorer reads and computes, stated in one place.

Hostile or extreme input (a YAML alias bomb, a 1 KB file that claims a billion values, a
13000×13000 PNG, a batch that cannot fit in memory) is refused by counting first, before the
memory is spent. Each refusal raises the caller's typed error (``ConfigError``,
``DataLoadError``, ``ModelLoadError`` or ``ValueError``) with :func:`over_limit`'s message,
which names the value, the bound and the constant here that sets it.
"""

from __future__ import annotations

MiB = 2**20
GiB = 2**30

# ----- YAML configs --------------------------------------------------------------------------------

CONFIG_MAX_BYTES = 128 * 1024
"""Largest config text (a config of the guide is ~1 KB; every point of 48 blocks overridden, 74 KB)."""
CONFIG_MAX_NODES = 20_000
"""Most YAML nodes a config may hold once every alias is expanded (counted once per node, not per path;
every point of 48 blocks overridden takes 7,200), so that reading one costs at most about a second."""
CONFIG_MAX_DEPTH = 32
"""Deepest nesting of mappings and sequences (the schema needs 6: blocks → 0 → layers → point → bit_type → bits)."""

# ----- calibration data ----------------------------------------------------------------------------

TENSOR_MAX_ELEMENTS = 2**26
"""Most values taken from a tensor file (256 MiB as float32), counted from its shape before reading them."""
IMAGE_MAX_PIXELS = 40_000_000
"""Largest image (width × height) decoded, checked from its header; a 40-megapixel photo is ~120 MB as RGB."""
CALIBRATION_INPUT_BYTES = 1 * GiB
"""Memory all calibration images may take together as float32 (the app holds them while calibrating)."""

# ----- calibration activations ---------------------------------------------------------------------

CALIBRATION_MEMORY_BYTES = 4 * GiB
"""Memory one calibration batch may take: the activations copied for re-tuning plus observer work."""
TRANSIENT_COPIES = 24
"""Copies of a block's largest activation the four observers make at once (measured ~18 on the demo ViT)."""

# ----- observers -----------------------------------------------------------------------------------

KL_MAX_BINS = 65_536
"""Largest ``kl_bins`` a config may ask for."""
STATS_POINT_HALF_BINS = 1 << 15
"""Bins per side of a point's whole-point histogram (fixed: the range only widens the bins)."""
STATS_CHANNEL_BIN_BUDGET = 1 << 18
"""Bins of a point's per-channel histograms together (int64: 2 MiB), within the bounds below."""
STATS_CHANNEL_HALF_BINS = (128, 1 << 15)
"""Fewest and most bins per side of one channel's histogram."""
STATS_RAW_VALUES = 262_144
"""A point's raw values are kept (for exact errors) while it has seen at most this many."""


def over_limit(what: str, value: int, limit: int, name: str, unit: str = "") -> str:
    """The message of a refused input: ``what`` is ``value``, above ``limit`` (set by ``name`` here)."""
    return f"{what} is {value:,}{unit}, above the limit of {limit:,}{unit} ({name} in explorer/limits.py)"


def calibration_bytes_per_image(blocks: int, tokens: int, dim: int, heads: int, mlp_hidden: int) -> int:
    """Estimated float32 bytes one image costs during calibration of a ViT with these sizes.

    Every activation point of every block is copied for re-tuning (qkv output ``tokens × 3·dim``,
    attention probabilities ``heads × tokens²``, ``sv_attn`` ``tokens × dim``, GELU output
    ``tokens × mlp_hidden``), and the observers work on :data:`TRANSIENT_COPIES` copies of the
    largest of them at a time.
    """
    per_block = tokens * 3 * dim + heads * tokens * tokens + tokens * dim + tokens * mlp_hidden
    largest = max(heads * tokens * tokens, tokens * mlp_hidden, tokens * 3 * dim)
    return 4 * (blocks * per_block + TRANSIENT_COPIES * largest)
