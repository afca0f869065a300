"""Exact row-wise quantiles for tensors of any size, from the whole rows or from their ends.

``torch.quantile`` refuses inputs of more than 2^24 elements and sorts everything; clip
percentiles sit near the ends of the distribution, so a partial selection (``topk``) of the
few extreme values is enough and much faster. Results follow ``numpy.quantile``'s default
("linear") method. The same selection kept per batch (:func:`tail_length` values from each
end) lets any quantile at or beyond a floor be recomputed later, exactly (:func:`tail_quantile`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Above this share of a row, a full sort is cheaper than a partial selection.
_TOPK_SHARE = 0.25
# Rows at least this many times longer than the values sought are narrowed down by group peaks first.
_GROUPED_FROM = 64
# Up to this many values per row are picked by repeated max (or min) passes instead of ``topk``, which
# costs several times more on the small inputs it gets here (measured side by side: 0.32 vs 0.55 ms to
# select 2 of 1576 values in 576 rows).
_BY_PASSES = 2


def _positions(n: int, q: float) -> tuple[int, int, float]:
    """``(below, above, gamma)``: the sorted positions quantile ``q`` interpolates between, as numpy's linear method."""
    h = n * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0  # numpy's virtual index, written as numpy computes it
    below = min(max(math.floor(h), 0), n - 1)
    return below, min(below + 1, n - 1), min(max(h - below, 0.0), 1.0)


def _lerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """numpy's lerp: from the nearer end, so ``t`` near 1 is exact at ``b``."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def tail_length(n: int, alpha_floor: float) -> int:
    """Values to keep from each end of a row of ``n`` so that every quantile ``q >= alpha_floor``
    (from the top) and ``q <= 1 - alpha_floor`` (from the bottom) is exact."""
    below, _, top_fraction = _positions(n, alpha_floor)
    _, above, bottom_fraction = _positions(n, 1.0 - alpha_floor)
    # The index is exact up to a few ulps of n, so it only moves past an integer (one more value
    # needed) for a quantile beyond the floor when the floor's own index lies that close to one.
    margin = 16 * n * 2.0**-53
    guard = int(top_fraction < margin or bottom_fraction > 1 - margin)
    return min(n, max(n - below, above + 1) + guard)


def tail_quantile(top: Tensor, bottom: Tensor, n: int, q: float) -> Tensor:
    """Quantile ``q`` of rows of length ``n`` from their ``top`` values (descending, ``[R, k]``) and
    ``bottom`` values (ascending), in float64; ValueError when the ends kept are too short for ``q``."""
    below, above, gamma = _positions(n, q)
    from_top, from_bottom = n - below, above + 1
    if from_top <= from_bottom and from_top <= top.shape[1]:
        a, b = top[:, n - 1 - below], top[:, n - 1 - above]
    elif from_bottom <= bottom.shape[1]:
        a, b = bottom[:, below], bottom[:, above]
    elif from_top <= top.shape[1]:
        a, b = top[:, n - 1 - below], top[:, n - 1 - above]
    else:
        raise ValueError(
            f"quantile {q} needs {min(from_top, from_bottom)} values from an end; {top.shape[1]} were kept"
        )
    return _lerp(a.double(), b.double(), gamma)


def _sort_beats_topk(n: int, k: int) -> bool:
    """Whether sorting rows of ``n`` is cheaper than selecting ``k`` values from an end."""
    return k >= n or k > max(2, int(n * _TOPK_SHARE))


def _outermost(
    t: Tensor, k: int, dim: int, largest: bool, owned: bool = False, ordered: bool = True
) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` of the ``k`` largest (or smallest) along ``dim``: outermost first, or in
    any order unless ``ordered`` (as ``topk``'s ``sorted``). ``owned``: ``t`` may be overwritten."""
    if k > _BY_PASSES:
        found = torch.topk(t, k, dim=dim, largest=largest, sorted=ordered)
        return found.values, found.indices
    work = t if owned or k == 1 else t.clone()
    values, indices = [], []
    for j in range(k):
        value, index = work.max(dim=dim, keepdim=True) if largest else work.min(dim=dim, keepdim=True)
        values.append(value)
        indices.append(index)
        if j < k - 1:  # set the one found aside: copies of its value stay for the next pass
            work.scatter_(dim, index, float("-inf") if largest else float("inf"))
    return torch.cat(values, dim=dim), torch.cat(indices, dim=dim)


def _select(rows: Tensor, k: int, largest: bool) -> Tensor:
    """The ``k`` largest (or smallest) values of each row, outermost first, by a partial selection.

    Long rows are split into groups of about ``sqrt(n / k)`` values first: the ``k`` values sought
    all lie in the ``k`` groups of most extreme peaks (any group left out has a peak no more extreme
    than each of those ``k`` groups' peaks), so one reduction pass and two small selections replace a
    selection over every value."""
    n = rows.shape[1]
    if n < _GROUPED_FROM * k:
        return _outermost(rows, k, 1, largest)[0]
    size = 1 << max(3, round(math.log2(math.sqrt(n / k))))
    full = n // size * size
    # Groups run along memory: rows that are a transposed [n, R] tensor (channels last) are grouped
    # down its columns, without a transposing copy.
    columns = not rows.is_contiguous() and rows.t().is_contiguous()
    values = rows.t() if columns else rows.contiguous()  # [n, R] or [R, n]
    dim = 0 if columns else 1  # the axis along a row
    groups = values.narrow(dim, 0, full).unflatten(dim, (-1, size))  # [G, size, R] or [R, G, size]
    peaks = groups.amax(dim=dim + 1) if largest else groups.amin(dim=dim + 1)
    chosen = _outermost(peaks, k, dim, largest, owned=True, ordered=False)[1].unsqueeze(dim + 1)
    picked = groups.gather(dim, chosen.expand(*chosen.shape[: dim + 1], size, *chosen.shape[dim + 2 :]))
    candidates = torch.cat([picked.flatten(dim, dim + 1), values.narrow(dim, full, n - full)], dim=dim)
    found = _outermost(candidates, k, dim, largest, owned=True)[0]
    return found.t() if columns else found


def row_largest(rows: Tensor, k: int) -> Tensor:
    """The ``k`` largest values of each row, descending."""
    if _sort_beats_topk(rows.shape[1], k):
        return torch.sort(rows, dim=1, descending=True).values[:, :k]
    return _select(rows, k, largest=True)


def row_smallest(rows: Tensor, k: int) -> Tensor:
    """The ``k`` smallest values of each row, ascending."""
    if _sort_beats_topk(rows.shape[1], k):
        return torch.sort(rows, dim=1).values[:, :k]
    return _select(rows, k, largest=False)


def row_ends(rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest values of each row (descending) and the ``k`` smallest (ascending)."""
    if _sort_beats_topk(rows.shape[1], k):
        ordered = torch.sort(rows, dim=1).values
        return ordered[:, -k:].flip(1), ordered[:, :k]
    return _select(rows, k, largest=True), _select(rows, k, largest=False)


def row_quantile(rows: Tensor, q: float) -> Tensor:
    """Quantile ``q`` of each row of a 2-D tensor, in float64."""
    return _quantile_and_ends(rows, q)[0]


def row_quantile_and_extreme(rows: Tensor, q: float, largest: bool) -> tuple[Tensor, Tensor]:
    """Quantile ``q`` of each row (float64) and the row's largest (or smallest) value, in the rows'
    dtype. When ``q`` is read from that end, the selection already holds the extreme: no pass more."""
    quantile, top, bottom = _quantile_and_ends(rows, q)
    end = top if largest else bottom
    if end.shape[1]:
        return quantile, end[:, 0].clone()  # not a view that keeps the whole selection alive
    return quantile, rows.amax(dim=1) if largest else rows.amin(dim=1)


def _quantile_and_ends(rows: Tensor, q: float) -> tuple[Tensor, Tensor, Tensor]:
    """Quantile ``q`` of each row, and the rows' largest values (descending) and smallest (ascending)
    it was read from (one of them empty when it needed only the other end)."""
    if rows.dim() != 2 or rows.shape[1] == 0:
        raise ValueError(f"row_quantile expects a non-empty 2-D tensor, got shape {tuple(rows.shape)}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    n = rows.shape[1]
    below, above, _ = _positions(n, q)
    from_top, from_bottom = n - below, above + 1
    if _sort_beats_topk(n, min(from_top, from_bottom)):
        ordered = torch.sort(rows, dim=1).values
        top, bottom = ordered.flip(1), ordered
    elif from_top <= from_bottom:
        top = _select(rows, from_top, largest=True)
        bottom = top[:, :0]
    else:
        bottom = _select(rows, from_bottom, largest=False)
        top = bottom[:, :0]
    return tail_quantile(top, bottom, n, q), top, bottom
