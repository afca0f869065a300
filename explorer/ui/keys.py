"""Every ``st.session_state`` key of the app, widgets' and elements' included, in one place.

A key names a value shared across reruns, callbacks and views (and is how tests drive a widget),
so it is written here once and imported, never retyped. The values are the app's stable names.
"""

from __future__ import annotations

# App state, set by code
LOADED = "loaded"
"""The current :class:`~explorer.ui.session.Loaded` calibration."""
FAILED = "calibration_error"
"""The last failed calibration, as ``(settings, message)``."""
TUNED = "tuned"
"""The tuned :class:`~explorer.config.QuantConfig`."""
TUNE_MESSAGE = "tune_message"
"""The last tuning apply's outcome, as ``(kind, text)``."""
ANALYSIS_APPLIED = "analysis_applied"
"""What an analysis's "Apply" last made the tuned config."""
ANALYSIS_RESULTS = "analysis_results"
"""The analyses computed, by ``(analysis, run id, settings…)``."""
TUNE_FOR = "tune_for"
"""Marker: the point and settings the tuning widgets were last loaded with."""
TUNE_MESSAGE_FOR = "tune_message_for"
"""Marker: the point the apply message belongs to."""
HIST_FOR = "hist_for"
"""Marker: the run and point the histogram choice belongs to."""

# Sidebar
START_FROM = "start_from"
MODEL_KIND = "model_kind"
TIMM_NAME = "timm_name"
TIMM_PRETRAINED = "timm_pretrained"
CKPT_UPLOAD = "ckpt_upload"
CKPT_PATH = "ckpt_path"
CKPT_ARCH = "ckpt_arch"
DATA_KIND = "data_kind"
DATA_FOLDER = "data_folder"
DATA_UPLOAD = "data_upload"
TENSOR_UPLOAD = "tensor_upload"
TENSOR_PATH = "tensor_path"
NUM_BATCHES = "num_batches"
BATCH_SIZE = "batch_size"
ALPHA_FLOOR = "alpha_floor"
DEVICE = "device"
CONFIG_FILE = "config_file"
CONFIG_UPLOAD = "config_upload"
GLOBAL_BITS = "global_bits"
CALIBRATE = "calibrate"
RUN_UPLOAD = "run_upload"
RUN_PATH = "run_path"

# Point selection and tabs
SEL_BLOCK = "sel_block"
SEL_POINT = "sel_point"
VIEW = "view"
"""The open tab."""

# Layer tab
HIST_LOG = "hist_log"
HIST_LOG2 = "hist_log2"
HIST_CHANNEL = "hist_channel"
HIST = "hist"
LAYER_METRICS = "layer_metrics"
CH_RANGE = "ch_range"
CH_SCALE = "ch_scale"
CONVERGENCE = "convergence"

# Tuning panel (each observer parameter has its own key: tuning.param_key)
TUNE_OBSERVER = "tune_observer"
TUNE_BITS = "tune_bits"
TUNE_SIGNED = "tune_signed"
TUNE_MODE = "tune_mode"
TUNE_QUANTIZER = "tune_quantizer"
TUNE_PARAM_PREFIX = "tune_"
TUNE_APPLY_BLOCK = "tune_apply_block"
TUNE_APPLY_ALL = "tune_apply_all"
TUNE_RESET = "tune_reset"

# Compare tab
CMP_HIST_PREFIX = "cmp_hist_"
"""Followed by the observer's label: its small histogram."""
HEAT_METRIC = "heat_metric"
HEATMAP = "heatmap"
WINS = "wins"
CMP_PICK = "cmp_pick"
CMP_OPEN = "cmp_open"
ERROR_TABLE = "error_table"

# Sensitivity, Recommend and mixed precision
SENS_RUN = "sens_run"
SENS_BARS = "sens_bars"
SENS_CHART = "sens_chart"
SENS_PICK = "sens_pick"
SENS_OPEN = "sens_open"
SENS_TABLE = "sens_table"
REC_BITS = "rec_bits"
REC_RUN = "rec_run"
REC_TABLE = "rec_table"
REC_APPLY = "rec_apply"
MP_BUDGET = "mp_budget"
MP_CHOICES = "mp_choices"
MP_RUN = "mp_run"
MP_PARETO = "mp_pareto"
MP_TABLE = "mp_table"
MP_APPLY = "mp_apply"

# Export tab
EXPORT_PARAMS = "export_params"
DOWNLOAD_JSON = "download_json"
DOWNLOAD_SAFETENSORS = "download_safetensors"
DOWNLOAD_YAML = "download"
EXPORT_CHANGES = "export_changes"
