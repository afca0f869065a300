"""What the sidebar asks for, as hashable settings, and how each source is loaded.

Every setting is a frozen dataclass so that a whole calibration is identified by one
:class:`Settings` value (the key of the run cache). Uploaded files travel as :class:`Upload`
(name, digest and bytes; the bytes are left out of equality, hashing and ``repr``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.config import QuantConfig
from explorer.data import (
    DEMO_ARCH,
    DataLoadError,
    ModelLoadError,
    load_checkpoint,
    load_demo_model,
    load_image_folder,
    load_tensor_file,
    load_timm_model,
    load_uploaded_images,
)
from explorer.data.demo import demo_images, demo_split_size, normalize
from explorer.stats import DEFAULT_ALPHA_FLOOR
from explorer.ui.serving import path_policy

MAX_HOLDOUT_IMAGES = 256
"""At most this many images are evaluated for accuracy (twice: FP32 and quantized)."""
DEMO_CLASSES = 10
InputConfig = tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...]]
"""``(input_size (C, H, W), mean, std)`` as given by :func:`explorer.data.model_input_config`."""
T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """A file handed to the app through a file uploader, identified by its name and content digest."""

    name: str
    digest: str
    data: bytes = field(compare=False, hash=False, repr=False)

    @classmethod
    def of(cls, name: str, data: bytes) -> Upload:
        """An upload with the SHA-256 of ``data`` as its identity."""
        return cls(name, hashlib.sha256(data).hexdigest()[:16], data)


@dataclass(frozen=True)
class ModelSource:
    """Which model to quantize: the embedded demo, a timm name, or a checkpoint (path or upload)."""

    kind: str = "demo"  # "demo" | "timm" | "checkpoint"
    name: str = ""  # timm name, or the architecture of a checkpoint ("demo" or a timm name)
    pretrained: bool = False
    path: str = ""
    upload: Upload | None = None
    outlier_channels: bool = False  # demo only: same function, a few channels tens of times wider

    def describe(self) -> str:
        """A short human description for the header line."""
        if self.kind == "timm":
            return f"timm {self.name}" + (" (pretrained)" if self.pretrained else " (random init)")
        if self.kind == "checkpoint":
            where = self.upload.name if self.upload else self.path
            return f"checkpoint {where} ({'demo ViT' if self.name == DEMO_ARCH else self.name})"
        return "demo ViT (digits, outlier channels)" if self.outlier_channels else "demo ViT (digits)"


@dataclass(frozen=True)
class DataSource:
    """Where calibration images come from: the demo digits, a folder, uploaded images or a tensor file."""

    kind: str = "demo"  # "demo" | "folder" | "upload" | "tensor"
    path: str = ""
    uploads: tuple[Upload, ...] = ()

    def describe(self) -> str:
        """A short human description for the header line."""
        if self.kind == "folder":
            return f"images in {self.path}"
        if self.kind == "upload":
            return f"{len(self.uploads)} uploaded image(s)"
        if self.kind == "tensor":
            return f"tensor file {self.uploads[0].name if self.uploads else self.path}"
        return "demo digits (train split)"


@dataclass(frozen=True)
class Settings:
    """Everything one calibration run depends on; equal settings give the same run."""

    model: ModelSource
    data: DataSource
    num_batches: int
    batch_size: int
    device: str
    config: QuantConfig
    config_name: str
    alpha_floor: float = DEFAULT_ALPHA_FLOOR  # lowest percentile_alpha the run can be refitted at

    @property
    def run_id(self) -> str:
        """A short stable id of these settings, used as the hashable key of derived caches."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


@contextmanager
def _as_file(upload: Upload) -> Iterator[Path]:
    """The upload written to a temporary file with its own name (loaders read paths)."""
    with tempfile.TemporaryDirectory(prefix="explorer-upload-") as folder:
        path = Path(folder) / (Path(upload.name).name or "upload")
        path.write_bytes(upload.data)
        yield path


def from_upload(upload: Upload, load: Callable[[Path], T], error: type[Exception]) -> T:
    """``load`` applied to the upload's temporary file; errors name the upload, not the temp folder."""
    with _as_file(upload) as path:
        try:
            return load(path)
        except error as exc:
            raise error(str(exc).replace(str(path), upload.name)) from exc


def server_path(text: str, error: type[Exception], missing: str) -> Path:
    """The server path typed as ``text``, as :func:`path_policy` allows; ``missing`` when none was typed."""
    policy = path_policy()
    if policy.allows_paths and not text.strip():
        raise error(missing)
    return policy.resolve(text.strip(), error)


def load_model(source: ModelSource, device: str) -> nn.Module:
    """The model of ``source`` on ``device``, in eval mode (raises :class:`ModelLoadError`)."""
    if source.kind == "timm":
        if not source.name.strip():
            raise ModelLoadError("enter a timm model name, e.g. vit_tiny_patch16_224")
        model = load_timm_model(source.name.strip(), pretrained=source.pretrained)
    elif source.kind == "checkpoint":
        arch = source.name.strip() or DEMO_ARCH
        if source.upload is not None:
            model = from_upload(source.upload, lambda p: load_checkpoint(p, arch), ModelLoadError)
        else:
            path = server_path(source.path, ModelLoadError, "upload a checkpoint file or enter its path")
            model = load_checkpoint(path, arch)
    else:
        model = load_demo_model(outlier_channels=source.outlier_channels)
    return model.to(device).eval()


def _demo_for(input_config: InputConfig, split: str, limit: int | None) -> tuple[Tensor, Tensor]:
    """The first ``limit`` (None: all) demo digits of ``split``, resized and normalised for ``input_config``."""
    (channels, height, width), mean, std = input_config
    images, labels = demo_images(split)  # type: ignore[arg-type]
    images, labels = images[:limit], labels[:limit]  # before resizing: a 224-pixel copy of every digit is large
    if channels != images.shape[1]:
        raise DataLoadError(
            f"the demo digits have {images.shape[1]} channels but the model expects {channels}; "
            "use an image folder or a tensor file"
        )
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return normalize(images, mean, std), labels


def known_image_count(source: DataSource) -> int | None:
    """How many calibration images ``source`` holds when that is known without reading it (the demo
    digits, uploaded images); None for a folder or tensor file, read only when calibrating."""
    if source.kind == "demo":
        return demo_split_size("train")
    if source.kind == "upload":
        return len(source.uploads)
    return None


def load_images(source: DataSource, input_config: InputConfig, calibration_images: int) -> Tensor:
    """Images ``[N, C, H, W]`` prepared for a model with ``input_config`` (raises DataLoadError).

    Reads what calibration needs plus, for user data, up to :data:`MAX_HOLDOUT_IMAGES` more to
    measure accuracy on (the demo has its own test split for that); nothing beyond is read.
    """
    size, mean, std = input_config
    limit = calibration_images + MAX_HOLDOUT_IMAGES
    if source.kind == "folder":
        folder = server_path(source.path, DataLoadError, "enter the path of an image folder")
        return load_image_folder(folder, size, mean, std, max_images=limit)
    if source.kind == "upload":
        return load_uploaded_images([(u.name, u.data) for u in source.uploads], size, mean, std, max_images=limit)
    if source.kind == "tensor":
        if source.uploads:
            return from_upload(source.uploads[0], lambda p: load_tensor_file(p, size, limit), DataLoadError)
        path = server_path(source.path, DataLoadError, "upload a tensor file or enter its path")
        return load_tensor_file(path, size, limit)
    return _demo_for(input_config, "train", calibration_images)[0]


@dataclass(frozen=True)
class Holdout:
    """Images to measure accuracy on, their labels when top-1 means something, and what they are."""

    images: Tensor
    labels: Tensor | None
    description: str


def holdout_images(
    source: DataSource, input_config: InputConfig, images: Tensor, used: int, num_classes: int | None
) -> Holdout:
    """The whole demo test split, labelled, for a 10-class (digits) model; for other models at most
    :data:`MAX_HOLDOUT_IMAGES` of: the demo test digits, else the images not used for calibration,
    else (when calibration used them all) the calibration images themselves."""
    if source.kind == "demo":
        if num_classes == DEMO_CLASSES:
            test, labels = _demo_for(input_config, "test", None)
            return Holdout(test, labels, "the demo test split (labelled digits)")
        test, _ = _demo_for(input_config, "test", MAX_HOLDOUT_IMAGES)
        return Holdout(test, None, "digits of the demo test split (no top-1: the model's classes are not digits)")
    rest = images[used:]
    if len(rest):
        return Holdout(rest[:MAX_HOLDOUT_IMAGES], None, "held-out images not used for calibration")
    return Holdout(
        images[:MAX_HOLDOUT_IMAGES],
        None,
        "the calibration images themselves: every image was used for calibration, so nothing is held out",
    )


def model_summary(model: nn.Module) -> str:
    """Blocks and parameter count, e.g. ``"4 blocks, 205,770 parameters"``."""
    blocks = len(getattr(model, "blocks", ()))
    params = sum(p.numel() for p in model.parameters())
    return f"{blocks} blocks, {params:,} parameters"


def available_devices() -> list[str]:
    """``["cuda", "cpu"]`` when a GPU is usable, else ``["cpu"]``."""
    return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
