"""Tuning one quantization point: the draft settings from the widgets, and applying them to the config.

The widgets hold a draft :class:`PointConfig`; figures and metrics follow the draft at once
(refit from the kept tensors, no model run). "Apply" writes the draft into the tuned
:class:`QuantConfig` kept in ``st.session_state["tuned"]``, for one block or for all blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from explorer.analysis import OBSERVER_LABELS, OBSERVER_TYPES, as_observer_type
from explorer.config import CALIBRATION_MODES, ConfigError, PointConfig, QuantConfig, load_config, section_of
from explorer.ui.session import reset_when_changed

TUNED = "tuned"
"""Session-state key of the tuned :class:`QuantConfig`."""
MESSAGE = "tune_message"
"""Session-state key of the last apply's outcome, as ``(kind, text)``."""
WIDGET_KEYS = ("tune_observer", "tune_alpha", "tune_sigma", "tune_kl_bins", "tune_bits", "tune_signed", "tune_mode")
OBSERVER_PARAMETERS = {"PercentileObserver": ("tune_alpha", "tune_sigma"), "KLObserver": ("tune_kl_bins",)}
"""The parameter widgets each observer type uses (the others are disabled)."""
WIDGET_PARAMETERS = {"tune_alpha": "percentile_alpha", "tune_sigma": "percentile_sigma", "tune_kl_bins": "kl_bins"}
"""Parameter widget → the config key it edits."""
FLOAT_DECIMALS = 8


def widget_values(point: PointConfig) -> dict[str, Any]:
    """The tuning widgets' values that show ``point``."""
    return {
        "tune_observer": point.observer_type,
        "tune_alpha": point.percentile_alpha,
        "tune_sigma": point.percentile_sigma,
        "tune_kl_bins": point.kl_bins,
        "tune_bits": point.bit_type.bits,
        "tune_signed": point.bit_type.signed,
        "tune_mode": point.calibration_mode,
    }


def draft_point(current: PointConfig, values: Mapping[str, Any]) -> PointConfig:
    """``current`` with the widgets' ``values`` (keys as :data:`WIDGET_KEYS`), validated.

    Only the parameters the chosen observer takes are read (the others keep ``current``'s
    values), so switching observers never drags along an unrelated edit. Raises
    :class:`ConfigError` with the library's message for invalid combinations (e.g. ``kl_bins``
    below the bit type's levels).
    """
    observer_type = values["tune_observer"]
    bits, signed = int(values["tune_bits"]), bool(values["tune_signed"])
    same_type = (bits, signed) == (current.bit_type.bits, current.bit_type.signed)
    bit_type: Any = (
        current.bit_type
        if same_type
        else {"bits": bits, "signed": signed, "name": f"{'int' if signed else 'uint'}{bits}"}
    )
    changes: dict[str, Any] = {"calibration_mode": values["tune_mode"], "bit_type": bit_type}
    for key in OBSERVER_PARAMETERS.get(observer_type, ()):
        value = values[key]  # floats rounded: browser steps leave noise such as 0.9995000000000001
        changes[WIDGET_PARAMETERS[key]] = round(value, FLOAT_DECIMALS) if isinstance(value, float) else value
    return as_observer_type(current, observer_type).replace(**changes)


def _widget_state() -> dict[str, Any]:
    """The tuning widgets' current values."""
    return {key: st.session_state[key] for key in WIDGET_KEYS}


def point_changes(target: PointConfig, draft: PointConfig) -> dict[str, Any]:
    """The YAML keys to set so that ``target`` becomes ``draft`` (None removes a key)."""
    old, new = target.to_mapping(), draft.to_mapping()
    return {key: new.get(key) for key in (*new, *old) if new.get(key) != old.get(key)}


def apply_point(config: QuantConfig, name: str, block: int | None, draft: PointConfig) -> QuantConfig:
    """``config`` with point ``name`` set to ``draft`` in one block, or in all blocks (``block=None``).

    For all blocks, per-block overrides of that point are removed, so every block resolves to ``draft``.
    """
    changes = point_changes(config.point(name, block), draft)
    updated = config.with_point(name, block=block, **changes) if changes else config
    if block is not None:
        return updated
    data = updated.to_dict()
    section = section_of(name)
    for index in list(data.get("blocks", {})):
        entries = data["blocks"][index]
        entries.get(section, {}).pop(name, None)
        if section in entries and not entries[section]:
            del entries[section]
        if not entries:
            del data["blocks"][index]
    if "blocks" in data and not data["blocks"]:
        del data["blocks"]
    return load_config(data)


def _apply(name: str, shown: int, block: int | None, check: Callable[[PointConfig], object]) -> None:
    """Button callback: write the draft into the tuned config, or report why it cannot be.

    ``check`` fits the draft on the shown block's data, so settings that fail there (e.g. KL with
    an unsigned type on negative values) are refused rather than exported.
    """
    config: QuantConfig = st.session_state[TUNED]
    scope = "all blocks" if block is None else f"block {block}"
    try:
        draft = draft_point(config.point(name, shown), _widget_state())
        check(draft)
        st.session_state[TUNED] = apply_point(config, name, block, draft)
    except (ConfigError, ValueError) as exc:
        st.session_state[MESSAGE] = ("error", f"Not applied to {name} in {scope}: {exc}")
    else:
        st.session_state[MESSAGE] = ("success", f"Applied to {name} in {scope}; the Export tab has the YAML.")


def _reset(name: str, block: int) -> None:
    """Button callback: drop the unsaved edits, showing the tuned config's settings again."""
    st.session_state.update(widget_values(st.session_state[TUNED].point(name, block)))
    st.session_state.pop(MESSAGE, None)


def tuning_panel(block: int, name: str, check: Callable[[PointConfig], object]) -> PointConfig | str:
    """The tuning widgets of one point; returns the draft, or the error that makes it invalid.

    ``check(draft)`` raises ValueError when the draft cannot be fitted on this point's data.
    """
    config: QuantConfig = st.session_state[TUNED]
    current = config.point(name, block)
    reset_when_changed("tune_for", (block, name, current), widget_values(current))
    reset_when_changed("tune_message_for", (block, name), {MESSAGE: None})
    st.markdown(f"**Tune block {block} · {name}**")
    observer = st.selectbox("Observer", OBSERVER_TYPES, format_func=OBSERVER_LABELS.__getitem__, key="tune_observer")
    used = OBSERVER_PARAMETERS.get(observer, ())
    col1, col2 = st.columns(2)
    col1.number_input(
        "percentile_alpha",
        min_value=0.5,
        max_value=1.0,
        step=0.0001,
        format="%.5f",
        key="tune_alpha",
        disabled="tune_alpha" not in used,
        help="Fraction of values kept inside the range, in (0.5, 1]; the guide's range is 0.9–0.99999.",
    )
    col2.number_input(
        "percentile_sigma",
        min_value=0.001,
        max_value=1.0,
        step=0.01,
        format="%.3f",
        key="tune_sigma",
        disabled="tune_sigma" not in used,
        help="EMA weight of each new batch's percentiles, in (0, 1].",
    )
    st.number_input(
        "kl_bins",
        min_value=2,
        max_value=65536,
        step=256,
        key="tune_kl_bins",
        disabled="tune_kl_bins" not in used,
        help="Histogram bins of the KL search; the guide uses 512–8192; at least the bit type's levels.",
    )
    col1, col2 = st.columns(2)
    col1.number_input("bits", min_value=2, max_value=16, step=1, key="tune_bits")
    col2.checkbox("signed", key="tune_signed")
    st.radio("Granularity", CALIBRATION_MODES, key="tune_mode", horizontal=True)
    st.button(
        f"Apply to {name} in block {block}",
        key="tune_apply_block",
        on_click=_apply,
        args=(name, block, block, check),
        type="primary",
        width="stretch",
    )
    st.button(
        f"Apply to {name} in all blocks",
        key="tune_apply_all",
        on_click=_apply,
        args=(name, block, None, check),
        width="stretch",
    )
    st.button(
        "Reset to the tuned config",
        key="tune_reset",
        on_click=_reset,
        args=(name, block),
        width="stretch",
        help="Drop the edits not applied yet.",
    )
    message = st.session_state.get(MESSAGE)
    if message is not None:
        (st.error if message[0] == "error" else st.success)(message[1])
    try:
        return draft_point(current, _widget_state())
    except (ConfigError, ValueError) as exc:
        return str(exc)
