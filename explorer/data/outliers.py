"""Outlier channels for a timm ViT by an exact, function-preserving rescaling of its attention.

Real ViTs have a few channels whose range is tens of times the others', which is what makes
layer-wise MinMax collapse on them. The small demo ViT has no such channels, so the observers
barely differ on it. Two rescalings create them without changing what the model computes:

- query/key: row ``c`` of the qkv linear (weight and bias, the query channel) times ``S`` and
  row ``C + c`` (the matching key channel) divided by ``S``. Each attention score is a sum of
  ``q_c * k_c`` over the head's channels, so every term, hence the softmax, is unchanged.
- value/projection: row ``2C + c`` (a value channel) times ``S`` and input column ``c`` of
  ``attn.proj`` divided by ``S``. ``softmax · V`` is linear in ``V``, so channel ``c`` of its
  output is ``S`` times larger and the projection's weight undoes it exactly.

Both need nothing non-linear between the qkv linear and the score (``q_norm``/``k_norm``) or
between ``softmax · V`` and the projection (``attn.norm``); a block with one is refused. The MLP
is left alone: scaling a ``fc1`` row before the GELU is not function-preserving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OUTLIER_SCALE = 40.0
"""``S``: the factor of the rescaled query and value channels (the key and projection get ``1/S``)."""


@dataclass(frozen=True)
class OutlierChannels:
    """The channels rescaled in one block, as indices into the ``C`` channels of q, k and v.

    At ``attn_qkv_output`` (``[.., 3C]``) the large channels are ``query`` and ``2C + value``
    and the small ones ``C + query``; at ``sv_attn`` (``[.., C]``) the large ones are ``value``.
    """

    query: tuple[int, ...]
    value: tuple[int, ...]


def _strongest_per_head(weight: torch.Tensor, num_heads: int) -> tuple[int, ...]:
    """Per head, the channel whose weight row has the largest L2 norm (the already-strongest one)."""
    head_dim = weight.shape[0] // num_heads
    norms = weight.norm(dim=1).reshape(num_heads, head_dim)
    return tuple(h * head_dim + int(i) for h, i in enumerate(norms.argmax(dim=1)))


def _check_exact(attn: nn.Module, index: int) -> None:
    """Refuse a block where the rescaling would change the function."""
    for name in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity):
            raise ValueError(
                f"block {index}: attn.{name} is {type(getattr(attn, name)).__name__}, not Identity; "
                "rescaling q/k/v channels would not preserve the model's function"
            )


@torch.no_grad()
def add_outlier_channels(model: nn.Module, scale: float = OUTLIER_SCALE) -> list[OutlierChannels]:
    """Rescale, in place, one query/key pair and one value channel per head in every block.

    The channels are, per head, the query and the value channel with the largest weight-row
    norm, so the choice depends only on the weights (deterministic). Returns them per block.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    chosen = []
    for index, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        attn = block.attn
        _check_exact(attn, index)
        qkv, proj, heads = attn.qkv, attn.proj, attn.num_heads
        dim = qkv.out_features // 3
        query = _strongest_per_head(qkv.weight[:dim], heads)
        value = _strongest_per_head(qkv.weight[2 * dim :], heads)
        rows = {c: scale for c in query} | {dim + c: 1 / scale for c in query} | {2 * dim + c: scale for c in value}
        for row, factor in rows.items():
            qkv.weight[row] *= factor
            if qkv.bias is not None:
                qkv.bias[row] *= factor
        proj.weight[:, list(value)] /= scale
        chosen.append(OutlierChannels(query, value))
    return chosen
