"""``QuantTimmVitBlock``: a timm ViT block with observers at its eight quantization points.

Weight points: ``attn_qkv``, ``attn_proj``, ``mlp_fc1``, ``mlp_fc2`` (the linear weights).
Activation points:
- ``attn_qkv_output``: the output of the qkv linear, ``[B, N, 3C]``;
- ``intSoft``: the softmax probabilities, ``[B, heads, N, N]`` (the softmax is explicit here);
- ``sv_attn``: softmax·V with heads merged, i.e. the input of ``attn.proj``, ``[B, N, C]``;
- ``mlp_act``: the GELU output, i.e. the input of ``mlp.fc2``, ``[B, N, hidden]``.
(When a block has timm's optional scale-norm or gate, ``sv_attn``/``mlp_act`` are taken right
before the projection they feed, which is the tensor an integer kernel would consume.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.config import ACTIVATION_POINTS, WEIGHT_POINTS, load_config
from explorer.config.loader import ConfigSource
from explorer.observers import Observer, build_observer
from explorer.quant_ops import fake_quantize

Mode = Literal["fp32", "calibration", "quantized"]
MODES: tuple[str, ...] = ("fp32", "calibration", "quantized")
Tap = Callable[[str, Tensor], None]

# Where each weight point lives in a timm Block.
WEIGHT_MODULES = {
    "attn_qkv": ("attn", "qkv"),
    "attn_proj": ("attn", "proj"),
    "mlp_fc1": ("mlp", "fc1"),
    "mlp_fc2": ("mlp", "fc2"),
}


def check_timm_block(block: nn.Module) -> None:
    """Raise a clear error unless ``block`` has the structure of timm's ``vision_transformer.Block``."""
    needed = ["norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"]
    missing = [name for name in needed if not hasattr(block, name)]
    for parent, child in WEIGHT_MODULES.values():
        module = getattr(getattr(block, parent, None), child, None)
        if not isinstance(module, nn.Linear):
            missing.append(f"{parent}.{child} (nn.Linear)")
    if missing:
        raise TypeError(
            f"QuantTimmVitBlock wraps timm vision_transformer.Block modules; {type(block).__name__} "
            f"lacks {', '.join(missing)}"
        )


class QuantTimmVitBlock(nn.Module):
    """A timm ViT block that observes (``'calibration'``) or fake-quantizes (``'quantized'``)
    its eight quantization points; ``'fp32'`` runs the wrapped block unchanged.

    ``block_index`` selects the per-block overrides of the config's ``blocks:`` section.
    ``enable_profiling`` records the time spent in each point's observer.
    ``float_points`` names points that stay in float in ``'quantized'`` mode (sensitivity analysis:
    quantize one point only, or all but one).
    """

    def __init__(
        self,
        block: nn.Module,
        quant_config: ConfigSource,
        enable_profiling: bool = False,
        block_index: int | None = None,
    ) -> None:
        super().__init__()
        check_timm_block(block)
        self.block = block
        self.config = load_config(quant_config)
        self.block_index = block_index
        self.enable_profiling = enable_profiling
        self.observers: dict[str, Observer] = {
            point: build_observer(self.config.point(point, block_index), self.config.module_type(point))
            for point in (*WEIGHT_POINTS, *ACTIVATION_POINTS)
        }
        self.profile_seconds: dict[str, float] = dict.fromkeys(self.observers, 0.0)
        self.taps: list[Tap] = []
        self.float_points: set[str] = set()
        self._mode: Mode = "fp32"
        self._qparams: dict[str, tuple[Tensor, Tensor]] | None = None
        self._grids: dict[str, str] = {}
        self._quant_weights: dict[str, Tensor] = {}

    # ----- modes ------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        """``'fp32'``, ``'calibration'`` or ``'quantized'``."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
        if value == "quantized" and self._qparams is None:
            raise RuntimeError(
                "no quantization parameters yet: run calibration(batch) on calibration data, "
                "then compute_quant_params(), before setting mode = 'quantized'"
            )
        self._mode = value  # type: ignore[assignment]

    def weights(self) -> dict[str, Tensor]:
        """The four weight tensors, by point name."""
        return {point: getattr(getattr(self.block, a), b).weight for point, (a, b) in WEIGHT_MODULES.items()}

    @torch.no_grad()
    def calibration(self, x: Tensor) -> Tensor:
        """Run one calibration batch: every observer sees its point; returns the float output."""
        self.mode = "calibration"
        self.observe_weights()
        return self.forward(x)

    def observe_weights(self) -> None:
        """Feed each weight to its observer once (weights are constant across batches)."""
        for point, weight in self.weights().items():
            if self.observers[point].num_batches == 0:
                self._observe(point, weight)

    def compute_quant_params(self) -> None:
        """Turn every observer's statistics into ``(scale, zero_point)`` and record the grid each point uses."""
        empty = [p for p, obs in self.observers.items() if obs.num_batches == 0]
        if empty:
            raise RuntimeError(
                f"compute_quant_params() before calibration: no statistics for {', '.join(empty)}; "
                "call calibration(batch) on calibration data first"
            )
        device = self.block.attn.qkv.weight.device  # observers refit elsewhere may live on the CPU
        self._qparams = {
            p: tuple(t.to(device) for t in obs.get_quantization_params())  # type: ignore[misc]
            for p, obs in self.observers.items()
        }
        self._grids = {p: obs.quantizer for p, obs in self.observers.items()}
        bit_types = {p: obs.bit_type for p, obs in self.observers.items()}
        self._quant_weights = {
            p: fake_quantize(w.detach(), *self._qparams[p], bit_types[p]) for p, w in self.weights().items()
        }

    def set_observer(self, point: str, observer: Observer) -> None:
        """Replace one point's observer; parameters must be computed again."""
        if point not in self.observers:
            raise KeyError(f"unknown point {point!r}; valid: {', '.join(self.observers)}")
        self.observers[point] = observer
        self._qparams = None
        self._grids = {}
        self._quant_weights = {}
        if self._mode == "quantized":
            self._mode = "fp32"

    @property
    def qparams(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``(scale, zero_point)`` per point, after ``compute_quant_params()``."""
        if self._qparams is None:
            raise RuntimeError("no quantization parameters yet: call compute_quant_params() after calibration")
        return self._qparams

    @property
    def grids(self) -> dict[str, str]:
        """The grid each point is quantized on (``uniform``, ``log2``, ``log_sqrt2``), recorded by
        ``compute_quant_params()`` (empty before): a log grid uses ``qparams`` only for its top level."""
        return dict(self._grids)

    # ----- forward ----------------------------------------------------------------------
    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if self._mode == "fp32" and not self.taps:
            return (
                self.block(x, attn_mask=attn_mask, is_causal=is_causal)
                if attn_mask is not None or is_causal
                else self.block(x)
            )
        b = self.block
        x = x + b.drop_path1(b.ls1(self._attention(b.norm1(x), attn_mask, is_causal)))
        x = x + b.drop_path2(b.ls2(self._mlp(b.norm2(x))))
        return x

    def _attention(self, x: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor:
        attn = self.block.attn
        batch, tokens, _ = x.shape
        heads = attn.num_heads
        attn_dim = getattr(attn, "attn_dim", attn.qkv.out_features // 3)
        head_dim = attn_dim // heads
        gate_layer = getattr(attn, "gate", None)
        gate = gate_layer(x).sigmoid() if gate_layer is not None else None
        qkv = self._point("attn_qkv_output", self._linear("attn_qkv", attn.qkv, x))
        q, k, v = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        scores = (q * attn.scale) @ k.transpose(-2, -1)
        if is_causal:
            causal = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
            )
        probs = attn.attn_drop(self._point("intSoft", scores.softmax(dim=-1)))
        out = (probs @ v).transpose(1, 2).reshape(batch, tokens, attn_dim)
        out = attn.norm(out)
        if gate is not None:
            out = out * gate
        out = self._linear("attn_proj", attn.proj, self._point("sv_attn", out))
        return attn.proj_drop(out)

    def _mlp(self, x: Tensor) -> Tensor:
        mlp = self.block.mlp
        hidden = mlp.norm(mlp.drop1(mlp.act(self._linear("mlp_fc1", mlp.fc1, x))))
        out = self._linear("mlp_fc2", mlp.fc2, self._point("mlp_act", hidden))
        return mlp.drop2(out)

    def _linear(self, point: str, layer: nn.Linear, x: Tensor) -> Tensor:
        quantized = self._mode == "quantized" and point not in self.float_points
        weight = self._quant_weights[point] if quantized else layer.weight
        return F.linear(x, weight, layer.bias)

    def _point(self, point: str, x: Tensor) -> Tensor:
        """Observe, tap or fake-quantize one activation, by mode."""
        for tap in self.taps:
            tap(point, x)
        if self._mode == "calibration":
            self._observe(point, x)
        elif self._mode == "quantized" and point not in self.float_points:
            scale, zero_point = self.qparams[point]
            # x is a fresh op output; without autograd or a tap holding it, overwriting it is safe
            inplace = not self.taps and not torch.is_grad_enabled()
            return fake_quantize(x, scale, zero_point, self.observers[point].bit_type, self._grids[point], inplace)
        return x

    def _observe(self, point: str, x: Tensor) -> None:
        if not self.enable_profiling:
            self.observers[point].update(x)
            return
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        self.observers[point].update(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        self.profile_seconds[point] += time.perf_counter() - start

    def profile(self) -> dict[str, dict[str, float]]:
        """Per point: observer seconds, batches seen and bytes of statistics held."""
        return {
            point: {
                "seconds": self.profile_seconds[point],
                "batches": float(obs.num_batches),
                "state_bytes": float(observer_state_bytes(obs)),
            }
            for point, obs in self.observers.items()
        }


def observer_state_bytes(observer: Observer) -> int:
    """Bytes of the tensors an observer keeps (its statistics)."""
    return sum(v.numel() * v.element_size() for v in vars(observer).values() if isinstance(v, Tensor))
