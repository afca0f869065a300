"""Model loading: the embedded demo ViT, timm ViTs by name, and local checkpoints.

Only timm ``VisionTransformer`` models are accepted, because the quantization
wrapper replaces their ``Block`` modules. Every failure is a ``ModelLoadError`` whose
message says what went wrong and what to do. Checkpoints are read as data only
(``weights_only=True`` / safetensors), never as pickled code.
"""

from __future__ import annotations

import difflib
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub.constants as hf_constants
import timm
import torch
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from explorer.data.calibration import load_torch_file, short_reason
from explorer.data.demo import DEMO_SPEC, DEMO_WEIGHTS, DemoSpec, load_demo_spec
from explorer.data.outliers import add_outlier_channels
from explorer.limits import (
    CALIBRATION_INPUT_BYTES,
    CALIBRATION_MEMORY_BYTES,
    MiB,
    calibration_bytes_per_image,
    over_limit,
)

DEMO_ARCH = "demo"
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".safetensors")
_HUB_PROBE_TIMEOUT_S = 3.0
_MAX_LISTED = 5


class ModelLoadError(Exception):
    """A model or checkpoint could not be loaded; the message says why and what to try."""


def build_demo_architecture(spec: DemoSpec) -> VisionTransformer:
    """An untrained ViT with the demo's architecture, carrying its input config as ``pretrained_cfg``."""
    model = VisionTransformer(**spec.model_kwargs)
    model.pretrained_cfg = {
        "input_size": spec.input_size,
        "mean": spec.mean,
        "std": spec.std,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": len(spec.class_names),
        "classifier": "head",
        "class_names": spec.class_names,
    }
    return model


def _demo_spec(path: Path) -> DemoSpec:
    """Read the demo json, turning a missing or malformed file into ``ModelLoadError``."""
    try:
        return load_demo_spec(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"demo model description unavailable: {exc}") from exc


def load_demo_model(
    weights: Path = DEMO_WEIGHTS, spec: Path = DEMO_SPEC, *, outlier_channels: bool = False
) -> nn.Module:
    """The embedded digits ViT from ``sample_data/``, in eval mode.

    ``outlier_channels=True`` gives the same function with a few channels tens of times wider
    than the rest, as in real ViTs (see :func:`explorer.data.outliers.add_outlier_channels`).
    """
    model = build_demo_architecture(_demo_spec(spec))
    _load_state_dict_checked(model, _read_state_dict(Path(weights)), Path(weights))
    if outlier_channels:
        add_outlier_channels(model)
    return model.eval()


def _suggest(name: str) -> str:
    """A hint listing timm model names close to ``name``."""
    matches = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=_MAX_LISTED, cutoff=0.6)
    return f"; did you mean {', '.join(matches)}?" if matches else "; see timm.list_models() for valid names"


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub endpoint accepts a TCP connection within a few seconds."""
    url = urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=_HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Temporarily put huggingface_hub in offline mode: cached files still load, missing ones fail at once.

    Without it, an unreachable hub costs tens of seconds of retries per file.
    """
    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = previous or enabled
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


def timm_architecture(name: str, **kwargs: Any) -> VisionTransformer:
    """The architecture of timm ViT ``name`` on the meta device: no memory, no download.

    A name that is unknown, does not build, or is not a ``VisionTransformer`` is a :class:`ModelLoadError`.
    """
    if not timm.is_model(name):
        raise ModelLoadError(f"unknown timm model name {name!r}{_suggest(name)}")
    try:
        with torch.device("meta"):
            skeleton = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # timm raises assorted types for invalid configurations
        raise ModelLoadError(f"timm model {name!r} could not be built: {short_reason(exc)}") from exc
    if not isinstance(skeleton, VisionTransformer):
        raise ModelLoadError(
            f"{name!r} is not a timm VisionTransformer (it builds {type(skeleton).__name__}): "
            "only ViT blocks are supported"
        )
    return skeleton


def architecture(name_or_arch: str) -> VisionTransformer:
    """The untrained architecture of ``"demo"`` or a timm ViT name on the meta device (for sizing a model)."""
    if name_or_arch == DEMO_ARCH:
        with torch.device("meta"):
            return build_demo_architecture(_demo_spec(DEMO_SPEC))
    return timm_architecture(name_or_arch)


def load_timm_model(name: str, pretrained: bool = False, num_classes: int | None = None) -> nn.Module:
    """A timm Vision Transformer by name (``arch`` or ``arch.tag``), in eval mode.

    The architecture is checked on the meta device first (no memory, no download),
    so a non-ViT name fails before any weights are fetched. With ``pretrained=True``
    and the hub unreachable, only weights already in the local cache can load.
    ``num_classes`` overrides the classifier size.
    """
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    timm_architecture(name, **kwargs)
    offline = pretrained and not hf_constants.HF_HUB_OFFLINE and not _hub_reachable()
    try:
        with _hub_offline(offline):
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # download, cache and state-dict errors all surface here
        if pretrained and (offline or hf_constants.HF_HUB_OFFLINE):
            raise ModelLoadError(
                f"pretrained weights for {name} could not be downloaded: no network access? "
                "Use pretrained=False or load a local checkpoint"
            ) from exc
        what = "pretrained weights for" if pretrained else "timm model"
        raise ModelLoadError(f"{what} {name} could not be loaded: {short_reason(exc)}") from exc
    return model.eval()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict; any failure names the file."""
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_EXTENSIONS:
        raise ModelLoadError(f"{path}: unsupported checkpoint type {suffix or '(none)'}; use {CHECKPOINT_EXTENSIONS}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such checkpoint file")
    try:
        obj: object = load_file(path) if suffix == ".safetensors" else load_torch_file(path)
    except Exception as exc:  # corrupt files raise pickle, zip, safetensors or OS errors; pickled code is refused
        raise ModelLoadError(f"{path}: cannot be read as a {suffix} checkpoint ({short_reason(exc)})") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelLoadError(
            f"{path}: expected a state_dict (name -> tensor), or a dict holding one under 'state_dict' or 'model'"
        )
    prefix = "module."
    if all(str(k).startswith(prefix) for k in obj):  # saved from DataParallel / DDP
        return {str(k)[len(prefix) :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def _load_state_dict_checked(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load ``state`` strictly, reporting missing/unexpected keys, shape and dtype mismatches by name.

    A complex or integer tensor for a floating-point weight is refused: copying it would drop the
    imaginary part or quietly turn codes into values.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    wrong_dtypes = [
        f"{k}: checkpoint {v.dtype} vs model {expected[k].dtype}"
        for k, v in state.items()
        if k in expected and (v.is_complex() or v.is_floating_point() != expected[k].is_floating_point())
    ]
    groups = (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("dtype mismatches (real floating-point weights are needed; nothing is cast silently)", wrong_dtypes),
    )
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{', ...' if len(items) > _MAX_LISTED else ''}"
        for label, items in groups
        if items
    ]
    if problems:
        raise ModelLoadError(f"{path}: checkpoint does not fit the architecture; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, model_name_or_arch: str) -> nn.Module:
    """A ViT with weights from a local ``.pt``/``.pth``/``.safetensors`` checkpoint, in eval mode.

    ``model_name_or_arch`` is ``"demo"`` (the embedded demo architecture) or a timm
    model name; for a timm name the classifier size is taken from the checkpoint's
    ``head.weight`` when present.
    """
    p = Path(path)
    state = _read_state_dict(p)
    if model_name_or_arch == DEMO_ARCH:
        model: nn.Module = build_demo_architecture(_demo_spec(DEMO_SPEC))
    else:
        head = state.get("head.weight")
        model = load_timm_model(model_name_or_arch, num_classes=None if head is None else int(head.shape[0]))
    _load_state_dict_checked(model, state, p)
    return model.eval()


def model_input_config(model: nn.Module) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...]]:
    """``(input_size (C, H, W), mean, std)`` the model expects, from its timm ``pretrained_cfg``.

    For a ViT the spatial size comes from its patch embedding, which is what it was built for.
    """
    cfg = resolve_data_config({}, model=model)
    c, h, w = (int(v) for v in cfg["input_size"])
    if isinstance(model, VisionTransformer):
        h, w = (int(v) for v in model.patch_embed.img_size)
    return (c, h, w), tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


@dataclass(frozen=True)
class CalibrationBounds:
    """The largest calibration a model allows within the memory budgets of :mod:`explorer.limits`."""

    bytes_per_image: int
    """Estimated calibration memory per image (see :func:`explorer.limits.calibration_bytes_per_image`)."""
    image_bytes: int
    """One input image as float32."""

    @property
    def max_batch_size(self) -> int:
        """Largest batch whose calibration fits :data:`CALIBRATION_MEMORY_BYTES`."""
        return max(1, CALIBRATION_MEMORY_BYTES // self.bytes_per_image)

    @property
    def max_images(self) -> int:
        """Most calibration images that fit :data:`CALIBRATION_INPUT_BYTES` together."""
        return max(1, CALIBRATION_INPUT_BYTES // self.image_bytes)

    def max_batches(self, batch_size: int) -> int:
        """Most batches of ``batch_size`` within :attr:`max_images`."""
        return max(1, self.max_images // batch_size)

    def check(self, batch_size: int, num_batches: int) -> None:
        """Refuse (ValueError naming the limit and the value) a calibration above these bounds, before it runs."""
        if batch_size > self.max_batch_size:
            what = f"the batch size (about {self.bytes_per_image / MiB:.1f} MiB of activations per image)"
            detail = over_limit(what, batch_size, self.max_batch_size, "CALIBRATION_MEMORY_BYTES")
            raise ValueError(f"{detail}; choose a smaller batch size")
        images = batch_size * num_batches
        if images > self.max_images:
            what = f"the number of calibration images ({num_batches} batches × {batch_size})"
            detail = over_limit(what, images, self.max_images, "CALIBRATION_INPUT_BYTES")
            raise ValueError(f"{detail}; choose at most {self.max_batches(batch_size)} batches")


def calibration_bounds(model: nn.Module) -> CalibrationBounds:
    """The :class:`CalibrationBounds` of a timm ViT, from its sizes alone (a meta-device model will do)."""
    if not isinstance(model, VisionTransformer) or not len(model.blocks):
        raise ModelLoadError("calibration bounds need a timm VisionTransformer with at least one block")
    block = model.blocks[0]
    per_image = calibration_bytes_per_image(
        blocks=len(model.blocks),
        tokens=model.patch_embed.num_patches + model.num_prefix_tokens,
        dim=model.embed_dim,
        heads=block.attn.num_heads,
        mlp_hidden=block.mlp.fc1.out_features,
    )
    (channels, height, width), _, _ = model_input_config(model)
    return CalibrationBounds(per_image, 4 * channels * height * width)
