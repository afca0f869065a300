"""Calibration data from user sources: image folders, uploaded images, saved tensors.

Every loader returns one float32 tensor ``[N, C, H, W]`` ready for the model, and
every failure is a ``DataLoadError`` that names the offending file: a broken input
is reported, never skipped silently.

Images are resized so that the shorter side matches the target, then center-cropped
to ``(H, W)`` (bilinear, antialiased by PIL), converted to RGB (or grey for
``C == 1``), scaled to [0, 1] and normalised with ``(x - mean) / std``.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from torch import Tensor

from explorer.limits import IMAGE_MAX_PIXELS, TENSOR_MAX_ELEMENTS, over_limit

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
TENSOR_EXTENSIONS = (".pt", ".pth", ".npy", ".safetensors")
_TENSOR_KEYS = ("images", "data")
_UNSAFE_PICKLE = "Weights only load failed"
_UNPICKLER_ERROR = "WeightsUnpickler error:"


class DataLoadError(Exception):
    """Calibration data could not be loaded; the message names the file and the reason."""


def short_reason(exc: BaseException) -> str:
    """One line saying why a file could not be read, for messages shown in the app.

    torch's weights-only unpickler explains at length how to disable the safety check; only
    its reason (the refused global or opcode) is kept, since loading code from a data file is
    never an option here.
    """
    text = str(exc)
    if _UNSAFE_PICKLE in text:
        details = [
            line.split(_UNPICKLER_ERROR, 1)[-1].strip()
            for line in text.splitlines()[1:]
            if not line.startswith("Check the documentation")
        ]
        reason = "; ".join(d for d in details if d) or "unsupported content"
        return f"it holds Python objects or pickle data, not only tensors ({reason}); save tensors or a state_dict"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_image_config(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and per-channel mean/std before touching any file."""
    if len(input_size) != 3 or any(int(v) < 1 for v in input_size):
        raise DataLoadError(f"input_size must be (C, H, W) with positive sizes, got {tuple(input_size)}")
    c, h, w = (int(v) for v in input_size)
    if c not in (1, 3):
        raise DataLoadError(f"images can be loaded as 1 (grey) or 3 (RGB) channels, not {c}")
    if len(mean) != c or len(std) != c:
        raise DataLoadError(f"mean and std need {c} values each, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise DataLoadError(f"std values must be positive, got {tuple(std)}")
    return c, h, w


def _check_pixels(name: str, width: int, height: int) -> None:
    """Refuse an image above :data:`IMAGE_MAX_PIXELS` from its header, before it is decoded."""
    if width * height > IMAGE_MAX_PIXELS:
        what = f"{name}: the image size ({width} × {height} pixels)"
        raise DataLoadError(over_limit(what, width * height, IMAGE_MAX_PIXELS, "IMAGE_MAX_PIXELS", " pixels"))


def _decode(name: str, data: bytes, size: tuple[int, int, int]) -> np.ndarray:
    """Decode one image to float32 ``[C, H, W]`` in [0, 1]; undecodable data raises naming ``name``."""
    c, h, w = size
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_pixels(name, img.width, img.height)
            img.load()
            img = img.convert("RGB" if c == 3 else "L")
    except DataLoadError:
        raise
    except Image.DecompressionBombError as exc:  # far above IMAGE_MAX_PIXELS: PIL refuses it while opening
        raise DataLoadError(f"{name}: {exc} (IMAGE_MAX_PIXELS in explorer/limits.py is {IMAGE_MAX_PIXELS:,})") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on corrupt data
        raise DataLoadError(f"{name}: not a readable image ({exc})") from exc
    scale = max(h / img.height, w / img.width)
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - w) // 2, (rh - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def _stack(arrays: list[np.ndarray], mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Stack decoded images into one normalised ``[N, C, H, W]`` tensor."""
    x = torch.from_numpy(np.stack(arrays))
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def _check_max_images(max_images: int | None) -> None:
    """``max_images`` is ``None`` (all) or a positive int."""
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise DataLoadError(f"max_images must be a positive integer or None, got {max_images!r}")


def load_image_folder(
    folder: str | Path,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    max_images: int | None = None,
) -> Tensor:
    """Load the images directly inside ``folder`` (sorted by file name) as ``[N, C, H, W]``.

    Only files with an image extension (``IMAGE_EXTENSIONS``) are read; other files
    (notes, label lists, hidden files) and subfolders are ignored. A file with an image
    extension that does not decode is an error naming it, and so is a folder without
    any image. ``max_images`` keeps the first images in sorted order.
    """
    size = _check_image_config(input_size, mean, std)
    _check_max_images(max_images)
    root = Path(folder)
    if not root.is_dir():
        raise DataLoadError(f"{root}: not a folder")
    entries = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        others = ", ".join(p.name for p in entries[:5]) or "nothing"
        raise DataLoadError(
            f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder; found {others}"
        )
    if max_images is not None:
        images = images[:max_images]
    arrays = []
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataLoadError(f"{path}: cannot be read ({exc})") from exc
        arrays.append(_decode(str(path), data, size))
    return _stack(arrays, mean, std)


def load_uploaded_images(
    files: Sequence[tuple[str, bytes]],
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    max_images: int | None = None,
) -> Tensor:
    """Load in-memory images given as ``(name, bytes)`` (e.g. Streamlit uploads), in the given order.

    Preprocessing is the same as ``load_image_folder``; an undecodable upload is an error naming it.
    """
    size = _check_image_config(input_size, mean, std)
    _check_max_images(max_images)
    if not files:
        raise DataLoadError("no images were uploaded")
    chosen = files if max_images is None else files[:max_images]
    return _stack([_decode(name, data, size) for name, data in chosen], mean, std)


@dataclass(frozen=True)
class _Entry:
    """A tensor of a file before its values are read: shape and dtype, and how to read its first rows."""

    shape: tuple[int, ...]
    dtype: str
    floating: bool
    read: Callable[[int | None], Tensor]
    """``read(n)``: the first ``n`` entries along dim 0 (None: all of it)."""

    @classmethod
    def of(cls, t: Tensor) -> _Entry:
        """An entry of a memory-mapped or expanded tensor (slicing it reads nothing)."""
        return cls(tuple(t.shape), str(t.dtype), t.is_floating_point(), lambda n: t if n is None else t[:n])


def _safetensors_entries(path: Path) -> dict[str, _Entry]:
    """The tensors of a ``.safetensors`` file from its header; rows are read from the file on demand."""

    def reader(key: str) -> Callable[[int | None], Tensor]:
        def read(n: int | None) -> Tensor:
            with safe_open(path, framework="pt") as f:
                return f.get_slice(key)[:n]

        return read

    with safe_open(path, framework="pt") as f:
        slices = {key: f.get_slice(key) for key in f.keys()}
        return {
            key: _Entry(tuple(s.get_shape()), s.get_dtype(), s.get_dtype().startswith(("F", "BF")), reader(key))
            for key, s in slices.items()
        }


def load_torch_file(path: Path) -> object:
    """The content of a ``torch.save`` file, read as data only (never code) and memory-mapped.

    Memory-mapping keeps the values on disk until used, so a tensor's shape can be checked
    before any of it is read. Only the zip format (``torch.save`` since torch 1.6) can be
    mapped; the old format and raw pickles are refused, since they allocate whatever size
    the file claims before reading it.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "not a torch.save archive (an old-format file or a raw pickle); "
            "save it again with torch.save (torch >= 1.6) or as .safetensors"
        )
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _entries(path: Path, suffix: str) -> object:
    """The file's tensors as :class:`_Entry` (alone or in a dict), nothing read yet; a ``.pt`` may hold
    other objects, returned as they are for :func:`_pick_entry` to name."""
    if suffix == ".npy":
        return _Entry.of(torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False)))
    if suffix == ".safetensors":
        return _safetensors_entries(path)
    obj = load_torch_file(path)
    if isinstance(obj, Tensor):
        return _Entry.of(obj)
    if isinstance(obj, dict):
        return {str(k): _Entry.of(v) if isinstance(v, Tensor) else v for k, v in obj.items()}
    return obj


def _pick_entry(name: str, obj: object) -> _Entry:
    """The images in a file's content: a tensor, or a dict with ``images``/``data`` or a single tensor."""
    if isinstance(obj, _Entry):
        return obj
    if isinstance(obj, dict):
        for key in _TENSOR_KEYS:
            if isinstance(obj.get(key), _Entry):
                return obj[key]  # type: ignore[no-any-return]
        tensors = [v for v in obj.values() if isinstance(v, _Entry)]
        if len(tensors) == 1:
            return tensors[0]
        raise DataLoadError(
            f"{name}: expected a tensor or a dict with key 'images' or 'data' (or a single tensor); "
            f"found keys {sorted(map(str, obj))[:10]}"
        )
    raise DataLoadError(f"{name}: expected a tensor, found {type(obj).__name__}")


def load_tensor_file(
    path: str | Path, input_size: Sequence[int] | None = None, max_images: int | None = None
) -> Tensor:
    """Load a saved image tensor ``[N, C, H, W]`` (``.pt``/``.pth``, ``.npy``, ``.safetensors``) as float32.

    ``.pt``/``.pth`` are read with ``weights_only=True`` (a data file, never code). The
    content must be a floating tensor (3-D gets a batch dim), finite, non-empty and,
    when ``input_size`` is given, of per-sample shape ``input_size``. ``max_images`` keeps
    the first images. Shape, dtype and size (at most :data:`TENSOR_MAX_ELEMENTS` values) are
    checked from the file's metadata before any value is read: a small file that claims a
    huge tensor (e.g. a saved ``expand``) costs nothing.
    """
    _check_max_images(max_images)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TENSOR_EXTENSIONS:
        raise DataLoadError(f"{p}: unsupported tensor file type {suffix or '(none)'}; use one of {TENSOR_EXTENSIONS}")
    if not p.is_file():
        raise DataLoadError(f"{p}: no such file")
    try:
        entry = _pick_entry(str(p), _entries(p, suffix))
    except DataLoadError:
        raise
    except Exception as exc:  # numpy, safetensors and torch's weights-only unpickler each raise their own types
        raise DataLoadError(f"{p}: cannot be read as a {suffix} tensor file ({short_reason(exc)})") from exc
    if not entry.floating:
        raise DataLoadError(f"{p}: expected floating-point images, got dtype {entry.dtype}")
    if len(entry.shape) not in (3, 4):
        raise DataLoadError(f"{p}: expected images [N, C, H, W] (or [C, H, W]), got shape {entry.shape}")
    shape = entry.shape if len(entry.shape) == 4 else (1, *entry.shape)
    if shape[0] == 0:
        raise DataLoadError(f"{p}: the tensor holds no images (shape {entry.shape})")
    if input_size is not None and shape[1:] != tuple(int(v) for v in input_size):
        raise DataLoadError(f"{p}: per-image shape {shape[1:]} does not match the model input {tuple(input_size)}")
    count = shape[0] if max_images is None else min(shape[0], max_images)
    elements = count * math.prod(shape[1:])
    if elements > TENSOR_MAX_ELEMENTS:
        what = f"{p}: the number of values ({count:,} images of shape {shape[1:]})"
        limit = over_limit(what, elements, TENSOR_MAX_ELEMENTS, "TENSOR_MAX_ELEMENTS")
        raise DataLoadError(f"{limit}; take fewer images")
    t = torch.empty((count, *shape[1:]), dtype=torch.float32)
    t.copy_(entry.read(count if len(entry.shape) == 4 else None))  # the one copy: only the images taken
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise DataLoadError(f"{p}: {bad} of {t.numel()} values are NaN or infinite")
    return t


def batches_used(images: int, batch_size: int, num_batches: int) -> int:
    """How many batches :func:`batched` gives from ``images`` samples: ``num_batches``, or fewer when
    the data runs out first (the last one then partly filled)."""
    return min(num_batches, math.ceil(images / batch_size))


def batched(images: Tensor, batch_size: int, num_batches: int | None = None) -> list[Tensor]:
    """Split ``images`` along dim 0 into consecutive batches of ``batch_size`` (the last may be smaller).

    ``num_batches`` keeps at most that many batches; when the data holds fewer, all are returned.
    """
    if not isinstance(images, Tensor) or images.dim() == 0 or images.shape[0] == 0:
        raise DataLoadError("batched() needs a tensor with at least one sample along dim 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataLoadError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise DataLoadError(f"num_batches must be a positive integer or None, got {num_batches!r}")
    batches = list(torch.split(images, batch_size))
    return batches if num_batches is None else batches[:num_batches]
