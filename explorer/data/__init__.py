"""Models and calibration data for the explorer: the embedded demo, timm ViTs, user files."""

from explorer.data.calibration import (
    DataLoadError,
    batched,
    batches_used,
    load_image_folder,
    load_tensor_file,
    load_uploaded_images,
)
from explorer.data.demo import DemoSpec, demo_batches, demo_images, demo_split, demo_split_size, load_demo_spec
from explorer.data.models import (
    DEMO_ARCH,
    CalibrationBounds,
    ModelLoadError,
    calibration_bounds,
    load_checkpoint,
    load_demo_model,
    load_timm_model,
    model_input_config,
)
from explorer.data.outliers import OUTLIER_SCALE, OutlierChannels, add_outlier_channels

__all__ = [
    "DEMO_ARCH",
    "CalibrationBounds",
    "DataLoadError",
    "DemoSpec",
    "ModelLoadError",
    "OUTLIER_SCALE",
    "OutlierChannels",
    "add_outlier_channels",
    "batched",
    "batches_used",
    "calibration_bounds",
    "demo_batches",
    "demo_images",
    "demo_split",
    "demo_split_size",
    "load_checkpoint",
    "load_demo_model",
    "load_demo_spec",
    "load_image_folder",
    "load_tensor_file",
    "load_timm_model",
    "load_uploaded_images",
    "model_input_config",
]
