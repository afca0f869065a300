"""Small files that claim a lot: inputs shared by the hostile-input tests and the app's tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch


def alias_bomb(levels: int) -> str:
    """``levels`` anchors, each a list of nine aliases of the previous one (9**levels nodes, ~100 bytes a level)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` grey pixels in a few dozen bytes (its data is never read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def expanded_images(tmp: Path) -> Path:
    """A 1.6 KB file holding a [1_000_000, 3, 16, 16] view of one zero (768 M values once materialised)."""
    path = tmp / "expanded.pt"
    torch.save(torch.zeros(1, 1, 1, 1).expand(1_000_000, 3, 16, 16), path)
    return path
