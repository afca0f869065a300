"""The sidebar: model, calibration data, batches, device, base config and global bits.

It returns the :class:`Settings` the user asks for (or None while an input is invalid, with the
reason shown right there) and whether "Calibrate" was pressed. Every source can be given as an
upload or as a local path, so large files need not go through the browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from explorer.config import ConfigError, QuantConfig, load_config
from explorer.data import DEMO_ARCH, batches_used
from explorer.data.calibration import IMAGE_EXTENSIONS, TENSOR_EXTENSIONS
from explorer.data.models import (
    CHECKPOINT_EXTENSIONS,
    CalibrationBounds,
    ModelLoadError,
    architecture,
    calibration_bounds,
)
from explorer.stats import DEFAULT_ALPHA_FLOOR
from explorer.ui import keys
from explorer.ui.runfile_source import RUN_FILE_EXTENSIONS, RunFileSource
from explorer.ui.serving import PATHS_DISABLED, path_policy
from explorer.ui.sources import DataSource, ModelSource, Settings, Upload, available_devices, known_image_count

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = "recommended_config.yaml"
UPLOAD_CONFIG = "Upload a YAML file…"
AS_IN_CONFIG = "as in config"
GLOBAL_BITS: tuple[Any, ...] = (AS_IN_CONFIG, 8, 6, 4)
DEFAULT_BATCHES = 4
DEFAULT_BATCH_SIZE = 32
MAX_BATCHES = 10_000
MAX_BATCH_SIZE = 65_536
"""Widget maxima only; what a model really allows is checked against its :class:`CalibrationBounds`."""

MODEL_KINDS = {
    "demo": "Demo ViT (digits)",
    "demo_outliers": "Demo ViT (outlier channels)",
    "timm": "timm model",
    "checkpoint": "Checkpoint file",
}
DATA_KINDS = {"demo": "Demo digits", "folder": "Image folder", "upload": "Uploaded images", "tensor": "Tensor file"}


def _suffixes(extensions: Any) -> list[str]:
    """File-uploader types from extensions with dots."""
    return sorted(ext.lstrip(".") for ext in extensions)


def _upload(key: str, label: str, types: list[str], help_text: str) -> Upload | None:
    """One uploaded file as an :class:`Upload`, if any."""
    file = st.file_uploader(label, type=types, key=key, help=help_text)
    return None if file is None else Upload.of(file.name, file.getvalue())


def _path_input(label: str, key: str, disabled: bool) -> str:
    """A text input for a server path, or a note saying why there is none (paths disabled while serving)."""
    policy = path_policy()
    if not policy.allows_paths:
        st.caption(PATHS_DISABLED.capitalize())
        return ""
    where = "" if policy.roots is None else f" Only inside: {', '.join(map(str, policy.roots))}."
    return st.text_input(label, key=key, disabled=disabled, help=f"A path on the machine running the app.{where}")


def model_source() -> ModelSource:
    """Widgets of the model section."""
    kind = st.radio("Model", list(MODEL_KINDS), format_func=MODEL_KINDS.__getitem__, key=keys.MODEL_KIND)
    if kind == "timm":
        name = st.text_input("timm model name", value="vit_tiny_patch16_224", key=keys.TIMM_NAME)
        pretrained = st.checkbox(
            "pretrained weights",
            value=False,
            key=keys.TIMM_PRETRAINED,
            help="Needs the weights in the local cache when there is no network access.",
        )
        return ModelSource("timm", name=name, pretrained=pretrained)
    if kind == "checkpoint":
        upload = _upload(
            keys.CKPT_UPLOAD,
            "Checkpoint upload",
            _suffixes(CHECKPOINT_EXTENSIONS),
            "A state_dict (.pt/.pth/.safetensors).",
        )
        path = _path_input("…or checkpoint path", keys.CKPT_PATH, upload is not None)
        arch = st.text_input(
            "Architecture",
            value=DEMO_ARCH,
            key=keys.CKPT_ARCH,
            help="'demo' for the embedded digits ViT, or a timm name.",
        )
        return ModelSource("checkpoint", name=arch, path=path, upload=upload)
    return ModelSource(outlier_channels=kind == "demo_outliers")


def data_source() -> DataSource:
    """Widgets of the calibration data section."""
    kind = st.radio("Calibration data", list(DATA_KINDS), format_func=DATA_KINDS.__getitem__, key=keys.DATA_KIND)
    if kind == "folder":
        return DataSource("folder", path=_path_input("Image folder path", keys.DATA_FOLDER, False))
    if kind == "upload":
        files = st.file_uploader(
            "Images", type=_suffixes(IMAGE_EXTENSIONS), accept_multiple_files=True, key=keys.DATA_UPLOAD
        )
        return DataSource("upload", uploads=tuple(Upload.of(f.name, f.getvalue()) for f in files or ()))
    if kind == "tensor":
        upload = _upload(
            keys.TENSOR_UPLOAD,
            "Tensor file upload",
            _suffixes(TENSOR_EXTENSIONS),
            "Images [N, C, H, W] as .pt/.npy/.safetensors.",
        )
        path = _path_input("…or tensor file path", keys.TENSOR_PATH, upload is not None)
        return DataSource("tensor", path=path, uploads=() if upload is None else (upload,))
    return DataSource()


@st.cache_resource(max_entries=32, show_spinner=False)
def parse_config(text: str) -> QuantConfig | ConfigError:
    """A validated config from YAML ``text``, or the ConfigError naming the line; cached as a resource
    because configs are immutable and hold read-only views that do not pickle. Failures are cached
    too, so that a bad upload costs its parse once, not again on every rerun."""
    try:
        return load_config(text)
    except ConfigError as exc:
        return exc


def base_config() -> tuple[QuantConfig, str]:
    """Widgets of the config section: a shipped file or an upload, then the global bits.

    Raises :class:`ConfigError` (or ValueError, OSError) when the chosen YAML is invalid or unreadable.
    """
    files = sorted(p.name for p in CONFIG_DIR.glob("*.y*ml"))
    options = [*files, UPLOAD_CONFIG]
    choice = st.selectbox(
        "Base config",
        options,
        index=options.index(DEFAULT_CONFIG) if DEFAULT_CONFIG in options else 0,
        key=keys.CONFIG_FILE,
    )
    if choice == UPLOAD_CONFIG:
        upload = _upload(keys.CONFIG_UPLOAD, "Config upload", ["yaml", "yml"], "A YAML config in the guide's schema.")
        if upload is None:
            raise ConfigError("upload a YAML config, or pick one of the shipped configs")
        name = upload.name
        text = upload.data.decode("utf-8-sig", errors="replace")
    else:
        name = choice
        text = (CONFIG_DIR / choice).read_text(encoding="utf-8-sig")
    config = parse_config(text)
    if isinstance(config, ConfigError):
        raise ConfigError(f"{name}: {config}")
    bits = st.selectbox(
        "Bits (all points)",
        GLOBAL_BITS,
        key=keys.GLOBAL_BITS,
        format_func=lambda b: b if b == AS_IN_CONFIG else f"int{b}",
        help="Sets default.bit_type; points whose entry sets its own bit_type keep it.",
    )
    if bits != AS_IN_CONFIG:
        config = config.with_default(bit_type={"bits": bits, "signed": True, "name": f"int{bits}"})
        name = f"{name} + int{bits}"
    for warning in config.warnings:
        st.warning(warning)
    return config, name


@st.cache_data(max_entries=64, show_spinner=False)
def model_bounds(arch: str) -> CalibrationBounds | None:
    """The calibration bounds of the architecture ``arch`` ("demo" or a timm name), sized on the meta
    device; None when it does not build (loading the model will report why)."""
    try:
        return calibration_bounds(architecture(arch.strip() or DEMO_ARCH))
    except ModelLoadError:
        return None


def batches_note(available: int | None, num_batches: int, batch_size: int) -> str:
    """What the data makes of the batches asked for: fewer batches when it holds fewer images (``available``;
    None when not known before calibrating); empty when every batch is filled."""
    if available is None:
        return "Fewer batches run when the data holds fewer images."
    if available >= num_batches * batch_size:
        return ""
    used = batches_used(available, batch_size, num_batches)
    last = available - (used - 1) * batch_size
    return f"The data holds {available:,} images: {num_batches} × {batch_size} runs as **{used} batch(es)**" + (
        f", the last of {last}." if last < batch_size else "."
    )


def batch_inputs(bounds: CalibrationBounds | None, available: int | None) -> tuple[int, int, bool]:
    """Batches and batch size, with how many batches the data allows (``available`` images, when known)
    and the model's maxima beside them; False (with the reason shown) when they exceed the model's bounds."""
    col1, col2 = st.columns(2)
    num_batches = int(col1.number_input("Batches", 1, MAX_BATCHES, DEFAULT_BATCHES, key=keys.NUM_BATCHES))
    batch_size = int(col2.number_input("Batch size", 1, MAX_BATCH_SIZE, DEFAULT_BATCH_SIZE, key=keys.BATCH_SIZE))
    note = batches_note(available, num_batches, batch_size)
    if note:
        st.caption(note)
    if bounds is None:
        return num_batches, batch_size, True
    st.caption(
        f"This model allows batches of at most {bounds.max_batch_size:,} images and "
        f"{bounds.max_images:,} calibration images in all (memory limits in explorer/limits.py)."
    )
    try:
        bounds.check(batch_size, num_batches)
    except ValueError as exc:
        st.error(f"Batches not usable: {exc}")
        return num_batches, batch_size, False
    return num_batches, batch_size, True


@dataclass(frozen=True)
class SidebarResult:
    """What the sidebar asks for: the settings (None while invalid) and whether Calibrate was pressed."""

    settings: Settings | None
    calibrate: bool
    run_file: RunFileSource | None = None  # open this saved run instead of calibrating
    device: str = "cpu"


STARTS = {"calibrate": "Calibrate here", "file": "Calibration file"}


def run_file_sidebar() -> SidebarResult:
    """Widgets of the "Calibration file" source: a run file by upload or path, and the device for accuracy."""
    upload = _upload(
        keys.RUN_UPLOAD,
        "Run file upload",
        list(RUN_FILE_EXTENSIONS),
        "A run saved by `observer-explorer calibrate` (or torchrun).",
    )
    path = _path_input("…or run file path", keys.RUN_PATH, upload is not None)
    device = st.selectbox("Device (for accuracy)", available_devices(), key=keys.DEVICE)
    return SidebarResult(None, False, RunFileSource(path, upload), device)


def sidebar() -> SidebarResult:
    """Draw the sidebar; invalid inputs are reported in place with the library's message."""
    with st.sidebar:
        st.header("Setup")
        start = st.radio(
            "Start from", list(STARTS), format_func=STARTS.__getitem__, key=keys.START_FROM, horizontal=True
        )
        if start == "file":
            return run_file_sidebar()
        model = model_source()
        data = data_source()
        num_batches, batch_size, sizes_ok = batch_inputs(
            model_bounds(model.name if model.kind != "demo" else DEMO_ARCH), known_image_count(data)
        )
        alpha_floor = float(
            st.number_input(
                "Lowest percentile_alpha to explore",
                min_value=0.9,
                max_value=1.0,
                value=DEFAULT_ALPHA_FLOOR,
                step=0.0001,
                format="%.5f",
                key=keys.ALPHA_FLOOR,
                help="Calibration keeps, per batch, just enough of each point's largest and smallest values "
                "for Percentile to be refitted exactly at any alpha at or above this floor. Lower floors keep more.",
            )
        )
        device = st.selectbox("Device", available_devices(), key=keys.DEVICE)
        settings: Settings | None = None
        try:
            config, config_name = base_config()
        except (ConfigError, ValueError, OSError) as exc:
            st.error(f"Config not usable: {exc}")
        else:
            if sizes_ok:
                settings = Settings(model, data, num_batches, batch_size, device, config, config_name, alpha_floor)
        clicked = st.button("Calibrate", type="primary", key=keys.CALIBRATE, width="stretch")
    return SidebarResult(settings, clicked, device=device)
