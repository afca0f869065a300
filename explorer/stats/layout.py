"""How observers and statistics see a tensor: which module types and ranks are accepted, the
channel axis of each, and the ``[channels, values]`` view everything is computed on.

Channel axis when channel-wise: weights → dim 0 (output channel); activations → the last dim for
tensors of up to 3 dims (tokens ``[B, N, C]``) and dim 1 for 4-D tensors (``[B, C, H, W]``,
attention maps ``[B, heads, N, N]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

MODULE_TYPES = ("activation", "linear_weight", "conv_weight")
CALIBRATION_MODES = ("layer_wise", "channel_wise")
# Tensor ranks each module type accepts.
_RANKS = {"activation": (2, 3, 4), "linear_weight": (2,), "conv_weight": (3, 4, 5)}


def checked_tensor(v: Tensor, module_type: str, ndim: int | None, where: str) -> Tensor:
    """``v`` detached as float32 after checking what an observer of ``module_type`` accepts
    (a floating-point, non-empty tensor of the right rank, the same rank as before)."""
    if module_type not in MODULE_TYPES:
        raise ValueError(f"{where}: module_type {module_type!r} is not one of {', '.join(MODULE_TYPES)}")
    if not isinstance(v, Tensor):
        raise TypeError(f"{where} expects a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{where} expects a floating-point tensor (float32/float16/bfloat16/float64), got {v.dtype}")
    if v.numel() == 0:
        raise ValueError(f"{where} got an empty tensor of shape {tuple(v.shape)}")
    ranks = _RANKS[module_type]
    if v.dim() not in ranks:
        raise ValueError(
            f"{where}: a {module_type} tensor must have {' or '.join(map(str, ranks))} dims, got shape {tuple(v.shape)}"
        )
    if ndim is not None and v.dim() != ndim:
        raise ValueError(
            f"{where}: got a {v.dim()}-D tensor after {ndim}-D ones; one observer watches one kind of tensor"
        )
    v = v.detach()
    return v if v.dtype == torch.float32 else v.float()


def channel_dim(ndim: int, module_type: str) -> int:
    """The channel axis of a tensor of rank ``ndim`` (see :class:`Observer`)."""
    if module_type != "activation":
        return 0
    return 1 if ndim == 4 else ndim - 1


def channel_blocks(v: Tensor, module_type: str) -> Tensor:
    """``v`` as a contiguous ``[outer, channels, inner]``, its channel axis in the middle (a view of a
    contiguous tensor), so per-channel passes (reductions over dims 0 and 2, factors broadcast as
    ``[1, C, 1]``) read memory in order instead of through a transposing copy."""
    dim = channel_dim(v.dim(), module_type)
    return v.contiguous().view(math.prod(v.shape[:dim]), v.shape[dim], -1)


def channel_extremes(blocks: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """Each channel's minimum and maximum of ``blocks [outer, C, inner]``; a ValueError naming
    ``where`` and how many values are NaN/Inf when any is (checked on the extremes: one pass less)."""
    lo, hi = blocks.amin(dim=(0, 2)), blocks.amax(dim=(0, 2))  # (torch.aminmax with dim is far slower on CPU)
    check_extremes(blocks, lo, hi, where)
    return lo, hi


def check_extremes(values: Tensor, lo: Tensor, hi: Tensor, where: str) -> None:
    """A ValueError naming ``where`` and how many of ``values`` are NaN/Inf, unless the extremes ``lo``/``hi``
    taken from them are all finite (a NaN or an infinity among the values shows in them)."""
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(
            f"{where}: the tensor has {bad} NaN/Inf value(s) of {values.numel()}; statistics were left unchanged"
        )


def row_blocks(rows: Tensor) -> Tensor:
    """Rows ``[R, n]`` as ``[outer, R, inner]`` in their memory order (a view when the rows are
    contiguous or a transposed contiguous tensor); see :func:`channel_blocks`."""
    if rows.is_contiguous():
        return rows.unsqueeze(0)
    if rows.t().is_contiguous():
        return rows.t().unsqueeze(2)
    return rows.contiguous().unsqueeze(0)


CHUNK_VALUES = 1 << 20
"""Values per slice in :func:`outer_chunks` (4 MB of float32)."""


def outer_chunks(blocks: Tensor, values: int = CHUNK_VALUES) -> Iterator[tuple[int, Tensor]]:
    """``(start, part)``: ``blocks [outer, R, inner]`` sliced along ``outer`` into parts of about
    ``values`` values, so passes over a large tensor hold a few MB of temporaries at a time (in
    cache) instead of several copies of the whole tensor."""
    step = max(1, values // max(1, blocks.shape[1] * blocks.shape[2]))
    for start in range(0, blocks.shape[0], step):
        yield start, blocks[start : start + step]


def true_positions(mask: Tensor) -> Tensor:
    """Flat positions (ascending, int64) of the True entries of a contiguous bool ``mask``, as
    ``mask.reshape(-1).nonzero()`` gives them but faster when few are set: the search runs first over
    8-byte words (8 entries at a time), then only inside the words that hold any (unless they are more
    than one in eight)."""
    flat = mask.reshape(-1)
    whole = flat.numel() // 8 * 8
    if flat.dtype != torch.bool or flat.storage_offset() % 8:
        return flat.nonzero().squeeze(1)
    words = flat[:whole].view(torch.int64).nonzero().squeeze(1)
    if words.numel() > whole // 64:  # many set: looking inside the words would cost more than it saves
        return flat.nonzero().squeeze(1)
    lanes = (words.unsqueeze(1) * 8 + torch.arange(8, device=flat.device)).reshape(-1)
    return torch.cat([lanes[flat[lanes]], whole + flat[whole:].nonzero().squeeze(1)])


def blocks_as_rows(blocks: Tensor) -> Tensor:
    """``[outer, R, inner]`` back to rows ``[R, outer * inner]`` (a view when ``outer`` or ``inner`` is 1,
    e.g. channels-last tokens; else a copy)."""
    return blocks.transpose(0, 1).reshape(blocks.shape[1], -1)
