"""Exact row-wise quantiles for tensors of any size.

``torch.quantile`` refuses inputs of more than 2^24 elements and sorts everything; clip
percentiles sit near the ends of the distribution, so a partial selection (``topk``) of the
few extreme values is enough and much faster. Results follow ``numpy.quantile``'s default
("linear") method.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Above this share of a row, a full sort is cheaper than a partial selection.
_TOPK_SHARE = 0.25


def _virtual_index(n: int, q: float) -> float:
    """Position of quantile ``q`` in ``n`` sorted values, computed as numpy's linear method does."""
    return n * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0


def _lerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """numpy's lerp: from the nearer end, so ``t`` near 1 is exact at ``b``."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def row_quantile(rows: Tensor, q: float) -> Tensor:
    """Quantile ``q`` of each row of a 2-D tensor, in float64."""
    if rows.dim() != 2 or rows.shape[1] == 0:
        raise ValueError(f"row_quantile expects a non-empty 2-D tensor, got shape {tuple(rows.shape)}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    n = rows.shape[1]
    h = _virtual_index(n, q)
    below = min(max(math.floor(h), 0), n - 1)
    above = min(below + 1, n - 1)
    gamma = min(max(h - below, 0.0), 1.0)
    from_top = n - below  # values needed when selecting from the largest end
    from_bottom = above + 1  # values needed when selecting from the smallest end
    if min(from_top, from_bottom) > max(2, int(n * _TOPK_SHARE)):
        ordered = torch.sort(rows, dim=1).values
        a, b = ordered[:, below], ordered[:, above]
    elif from_top <= from_bottom:
        top = torch.topk(rows, from_top, dim=1, largest=True, sorted=True).values
        a, b = top[:, from_top - 1], top[:, n - 1 - above]
    else:
        bottom = torch.topk(rows, from_bottom, dim=1, largest=False, sorted=True).values
        a, b = bottom[:, below], bottom[:, above]
    return _lerp(a.double(), b.double(), gamma)
