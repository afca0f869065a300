"""Keep freed memory in the process, so the analyses do not page-fault their temporaries back in.

Fitting and scoring a point from its statistics allocates and frees tens of MB of temporaries
(a ViT-B ``fc1`` weight is 18 MB as float64). glibc's malloc adapts its thresholds to the
largest block freed so far, but at most to a 64 MB trim threshold: once a point's temporaries
outgrow it, every point gives its memory back to the system and faults it in again, a page at a
time. In a fresh process (an app that loads a saved run) an ``error_table`` of ViT-B took 9-11 s
with 2.5-3 million page faults, against 4.5-5 s with none once the thresholds below are set
(``benchmarks/scale.py``, "loaded" column).

Setting them fixes what glibc would otherwise move: blocks under 32 MB (glibc's largest mmap
threshold) come from the heap, and up to 256 MB of freed heap stay mapped for reuse. Nothing is
done off glibc, or when the user set malloc's own environment variables (theirs win).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# glibc's mallopt parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
"""Blocks below this come from the heap (glibc's ceiling for this threshold on 64-bit systems)."""
TRIM_THRESHOLD_BYTES = 256 * 2**20
"""Freed heap memory kept mapped, up to this much, instead of being handed back to the system."""
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
"""Environment variables by which a user tunes glibc's malloc; when one is set, it is left to them."""


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc malloc's thresholds once per process (see the module docstring); whether they were set."""
    if sys.platform != "linux" or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return False
    if not libc.startswith("glibc"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either one stops glibc from moving both.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
