"""The observer ABC: validation, channel layout and the shared ``calculate`` path.

A subclass only says what statistics it keeps (``_observe``) and which clip range it picks
from them (``_clip_range``); turning that range into ``(scale, zero_point)`` is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.quant_ops import check_log_data, check_quantizer, is_symmetric, qparams_from_range
from explorer.stats.layout import (
    CALIBRATION_MODES,
    MODULE_TYPES,
    channel_blocks,
    channel_dim,
    channel_extremes,
    checked_tensor,
)

if TYPE_CHECKING:
    from explorer.stats.point_stats import PointStats, StatsView


class Observer(ABC):
    """Collects statistics of the tensors it sees and turns them into quantization parameters.

    Channel axis when ``calibration_mode='channel_wise'``: weights → dim 0 (output channel);
    activations → the last dim for tensors of up to 3 dims (tokens ``[B, N, C]``) and dim 1
    for 4-D tensors (``[B, C, H, W]``, attention maps ``[B, heads, N, N]``).
    """

    def __init__(
        self,
        bit_type: BitType,
        module_type: str,
        calibration_mode: str = "channel_wise",
        symmetric: bool | None = None,
    ) -> None:
        if not isinstance(bit_type, BitType):
            raise TypeError(f"{self._name}: bit_type must be a BitType, got {type(bit_type).__name__}")
        if module_type not in MODULE_TYPES:
            raise ValueError(f"{self._name}: module_type {module_type!r} is not one of {', '.join(MODULE_TYPES)}")
        if calibration_mode not in CALIBRATION_MODES:
            raise ValueError(
                f"{self._name}: calibration_mode {calibration_mode!r} is not one of {', '.join(CALIBRATION_MODES)}"
            )
        if symmetric is not None and not isinstance(symmetric, bool):
            raise TypeError(f"{self._name}: symmetric must be true, false or None, got {symmetric!r}")
        self.bit_type = bit_type
        self.module_type = module_type
        self.calibration_mode = calibration_mode
        self.symmetric = is_symmetric(bit_type, symmetric)
        self.data_min: Tensor | None = None  # running extremes of the data, per channel or scalar
        self.data_max: Tensor | None = None
        self.num_batches = 0
        self._quantizer = "uniform"
        self._ndim: int | None = None
        self._params: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # ----- public API -------------------------------------------------------------------
    @torch.no_grad()
    def update(self, v: Tensor) -> None:
        """Accumulate the statistics of one tensor. Bad input leaves the statistics as they were."""
        blocks = self._blocks(v)
        lo, hi = self._extremes(blocks)
        self._check_values(lo, hi)
        self._check_domain(lo)
        self._observe(blocks, lo, hi)
        if self.data_min is None or self.data_max is None:
            self.data_min, self.data_max = lo, hi
        else:
            self.data_min = torch.minimum(self.data_min, lo)
            self.data_max = torch.maximum(self.data_max, hi)
        self._ndim = v.dim()
        self.num_batches += 1
        self._params = None

    @torch.no_grad()
    def fit(self, stats: PointStats) -> Observer:
        """Take this observer's statistics from a point's :class:`~explorer.stats.PointStats`
        (replacing any it had): the same result as feeding it the batches those statistics saw."""
        if stats.module_type != self.module_type:
            raise ValueError(
                f"{self._name}.fit: statistics of a {stats.module_type} point, observer for {self.module_type}"
            )
        view = stats.view(self.calibration_mode)
        self._check_values(view.min, view.max)
        self._check_domain(view.min)
        self._fit(view)
        self.data_min, self.data_max = view.min.clone(), view.max.clone()
        self._ndim = view.ndim
        self.num_batches = view.num_batches
        self._params = None
        return self

    def get_quantization_params(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` shaped to broadcast against the tensors observed."""
        scale, zero_point, _, _ = self._calculate()
        return self._broadcastable(scale), self._broadcastable(zero_point)

    @property
    def quantizer(self) -> str:
        """The grid its parameters are used on: ``uniform``, or ``log2``/``log_sqrt2`` below the clip max
        (the observer chooses the range either way; see :func:`explorer.quant_ops.fake_quantize`)."""
        return self._quantizer

    @quantizer.setter
    def quantizer(self, value: str) -> None:
        why = check_quantizer(value, self.bit_type)
        if why is None and value != "uniform" and self.module_type != "activation":
            why = f"quantizer {value} applies to activations, not {self.module_type}"
        if why is not None:
            raise ValueError(f"{self._name}: {why}")
        if value != "uniform" and self.data_min is not None:
            self._check_domain(self.data_min, value)
        self._quantizer = value

    @property
    def clip_min(self) -> Tensor:
        """Lower end of the chosen clip range (per channel or scalar)."""
        return self._calculate()[2]

    @property
    def clip_max(self) -> Tensor:
        """Upper end of the chosen clip range (per channel or scalar)."""
        return self._calculate()[3]

    @property
    def min_val(self) -> Tensor | None:
        """The low statistic the observer tracks (the guide's ``min_val``): the running minimum,
        except where a subclass tracks something else (Percentile: its EMA'd low percentile)."""
        return self.data_min

    @property
    def max_val(self) -> Tensor | None:
        """The high statistic the observer tracks (see :attr:`min_val`)."""
        return self.data_max

    @property
    def num_channels(self) -> int | None:
        """Channels tracked (1 when layer-wise); None before the first update."""
        return None if self.data_min is None else self.data_min.numel()

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra_repr().items())
        if self._quantizer != "uniform":
            extra += f", quantizer={self._quantizer!r}"
        return (
            f"{self._name}(bit_type={self.bit_type.name}, module_type={self.module_type!r}, "
            f"calibration_mode={self.calibration_mode!r}{extra})"
        )

    # ----- subclass hooks ---------------------------------------------------------------
    def _extremes(self, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """Each channel's extremes of one batch ``blocks`` (a ValueError on NaN/Inf), before any state
        changes. A subclass whose own statistics hold them can take them from there, in one pass less."""
        return channel_extremes(blocks, f"{self._name}.update")

    @abstractmethod
    def _observe(self, blocks: Tensor, lo: Tensor, hi: Tensor) -> None:
        """Fold one batch into the statistics. ``blocks`` is ``[outer, channels, inner]`` float32 in
        memory order (:func:`~explorer.stats.layout.channel_blocks`; one channel when layer-wise);
        ``lo``/``hi`` are each channel's extremes."""

    @abstractmethod
    def _fit(self, view: StatsView) -> None:
        """Replace the statistics with those of ``view`` (rows as this observer's granularity)."""

    @abstractmethod
    def _clip_range(self) -> tuple[Tensor, Tensor]:
        """The chosen clip range ``(lo, hi)``, one value per channel."""

    def _check_values(self, lo: Tensor, hi: Tensor) -> None:  # noqa: B027  (optional hook)
        """Reject values this observer cannot handle (before any state changes)."""

    def _extra_repr(self) -> dict[str, Any]:
        return {}

    def _check_domain(self, lo: Tensor, quantizer: str | None = None) -> None:
        """A log grid holds no negative values: refuse data below 0 for one (before any state changes)."""
        quantizer = quantizer or self._quantizer
        if quantizer != "uniform":
            check_log_data(lo, f"{self._name}: quantizer {quantizer}")

    # ----- internals --------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return type(self).__name__

    def _calculate(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.num_batches == 0:
            raise RuntimeError(
                f"{self._name}: no statistics yet; call update() with calibration data before get_quantization_params()"
            )
        if self._params is None:
            lo, hi = self._clip_range()
            scale, zero_point = qparams_from_range(lo, hi, self.bit_type, self.symmetric)
            self._params = (scale.float(), zero_point, lo.float(), hi.float())
        return self._params

    def _blocks(self, v: Tensor) -> Tensor:
        """Validate ``v`` and view it as ``[outer, channels, inner]`` float32, its channel axis in the
        middle (a view of a contiguous tensor: no transposing copy); one channel when layer-wise."""
        v = checked_tensor(v, self.module_type, self._ndim, f"{self._name}.update")
        if self.calibration_mode == "layer_wise":
            return v.reshape(-1, 1, 1)
        blocks = channel_blocks(v, self.module_type)
        if self.data_min is not None and blocks.shape[1] != self.data_min.numel():
            raise ValueError(
                f"{self._name}.update: got {blocks.shape[1]} channels on dim "
                f"{channel_dim(v.dim(), self.module_type)} after {self.data_min.numel()}"
            )
        return blocks

    def _broadcastable(self, t: Tensor) -> Tensor:
        if self.calibration_mode == "layer_wise":
            return t.reshape(())
        assert self._ndim is not None
        shape = [1] * self._ndim
        shape[channel_dim(self._ndim, self.module_type)] = t.numel()
        return t.reshape(shape)
