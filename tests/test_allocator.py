"""explorer.allocator: glibc's malloc keeps freed memory once a run exists, checked by glibc's own
accounting (``mallinfo2``) in a fresh interpreter, so no earlier allocation has moved its thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from explorer.allocator import MMAP_THRESHOLD_BYTES, USER_SETTINGS

glibc = pytest.mark.skipif(
    sys.platform != "linux" or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
    reason="glibc only",
)

# In a fresh interpreter: optionally retain, then malloc and free a 16 MB block and report where
# glibc served it from (mmapped bytes while held) and how much free heap it kept afterwards.
_PROBE = """
import ctypes, json, sys
from explorer.allocator import retain_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = retain_freed_memory() if sys.argv[1] == "1" else False
mmapped_before = libc.mallinfo2().hblkhd
block = libc.malloc(16 << 20)
mmapped = libc.mallinfo2().hblkhd - mmapped_before
libc.free(block)
print(json.dumps({"applied": applied, "mmapped": mmapped, "free_heap": libc.mallinfo2().fordblks}))
"""


def _probe(retain: bool, env: dict[str, str] | None = None) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if retain else "0"],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@glibc
def test_retained_blocks_come_from_the_heap_and_stay_there() -> None:
    default, retained = _probe(False), _probe(True)
    # glibc's default serves a 16 MB block by mmap and unmaps it on free.
    assert not default["applied"] and default["mmapped"] >= 16 << 20
    assert default["free_heap"] < 16 << 20
    # Retained: from the heap (below the 32 MB threshold), and still there once freed.
    assert retained["applied"] and 16 << 20 < MMAP_THRESHOLD_BYTES
    assert retained["mmapped"] == 0
    assert retained["free_heap"] >= 16 << 20


@glibc
def test_the_users_own_malloc_settings_win() -> None:
    probe = _probe(True, {"MALLOC_TRIM_THRESHOLD_": str(1 << 20)})
    assert not probe["applied"]
    assert probe["mmapped"] >= 16 << 20  # glibc's default, not ours


@pytest.mark.filterwarnings("ignore::explorer.config.ConfigWarning")
def test_every_run_applies_it() -> None:
    """A run, however it comes to be (calibrated, loaded, merged), sets the thresholds."""
    from explorer.allocator import retain_freed_memory
    from explorer.analysis.explore import ExplorerRun
    from explorer.config import load_config
    from explorer.vit import CaptureResult

    retain_freed_memory.cache_clear()
    ExplorerRun(load_config({"default": {}}), 0, CaptureResult({}, {}, 0))
    assert retain_freed_memory.cache_info().currsize == 1
