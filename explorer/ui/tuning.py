"""Tuning one quantization point: the draft settings from the widgets, and applying them to the config.

The widgets hold a draft :class:`PointConfig`; figures and metrics follow the draft at once
(refit from the kept tensors, no model run). "Apply" writes the draft into the tuned
:class:`QuantConfig` kept in ``st.session_state[keys.TUNED]``, for one block or for all blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from explorer.analysis import FitFailure, as_observer_type
from explorer.bit_type import MAX_BITS, MIN_BITS, BitType
from explorer.config import CALIBRATION_MODES, ConfigError, PointConfig, QuantConfig, apply_point, module_type_of
from explorer.observers import ParamSpec, observer_label, observer_names, observer_params
from explorer.observers.registry import all_params
from explorer.quant_ops import QUANTIZERS
from explorer.ui import keys
from explorer.ui.session import reset_when_changed

COMMON_WIDGETS = (keys.TUNE_OBSERVER, keys.TUNE_BITS, keys.TUNE_SIGNED, keys.TUNE_MODE, keys.TUNE_QUANTIZER)
"""Widgets every observer uses; each observer parameter has its own (:func:`param_key`)."""
FLOAT_DECIMALS = 8


def param_key(name: str) -> str:
    """The widget key of observer parameter ``name`` (``tune_percentile_alpha``)."""
    return keys.TUNE_PARAM_PREFIX + name


def widget_keys() -> tuple[str, ...]:
    """Keys of every tuning widget: the common ones and one per registered observer parameter."""
    return (*COMMON_WIDGETS, *(param_key(name) for name in all_params()))


def widget_values(point: PointConfig) -> dict[str, Any]:
    """The tuning widgets' values that show ``point``."""
    return {
        keys.TUNE_OBSERVER: point.observer_type,
        **{param_key(name): value for name, value in point.params.items()},
        keys.TUNE_BITS: point.bit_type.bits,
        keys.TUNE_SIGNED: point.bit_type.signed,
        keys.TUNE_MODE: point.calibration_mode,
        keys.TUNE_QUANTIZER: point.quantizer,
    }


def draft_point(current: PointConfig, values: Mapping[str, Any]) -> PointConfig:
    """``current`` with the widgets' ``values`` (keys as :func:`widget_keys`), validated.

    Only the parameters the chosen observer takes are read (the others keep ``current``'s
    values), so switching observers never drags along an unrelated edit. Raises
    :class:`ConfigError` with the library's message for invalid combinations (e.g. ``kl_bins``
    below the bit type's levels).
    """
    observer_type = values[keys.TUNE_OBSERVER]
    bits, signed = int(values[keys.TUNE_BITS]), bool(values[keys.TUNE_SIGNED])
    same_type = (bits, signed) == (current.bit_type.bits, current.bit_type.signed)
    bit_type: Any = (
        current.bit_type
        if same_type
        else {"bits": bits, "signed": signed, "name": f"{'int' if signed else 'uint'}{bits}"}
    )
    changes: dict[str, Any] = {
        "calibration_mode": values[keys.TUNE_MODE],
        "bit_type": bit_type,
        "quantizer": values[keys.TUNE_QUANTIZER],
    }
    for spec in observer_params(observer_type):
        value = values[param_key(spec.name)]  # floats rounded: browser steps leave noise such as 0.9995000000000001
        changes[spec.name] = round(value, FLOAT_DECIMALS) if isinstance(value, float) else value
    return as_observer_type(current, observer_type).replace(**changes)


def _widget_state() -> dict[str, Any]:
    """The tuning widgets' current values."""
    return {key: st.session_state[key] for key in widget_keys()}


def _apply(name: str, shown: int, block: int | None, check: Callable[[PointConfig], object]) -> None:
    """Button callback: write the draft into the tuned config, or report why it cannot be.

    ``check`` fits the draft on the shown block's data, so settings that fail there (e.g. KL with
    an unsigned type on negative values) are refused rather than exported.
    """
    config: QuantConfig = st.session_state[keys.TUNED]
    scope = "all blocks" if block is None else f"block {block}"
    try:
        draft = draft_point(config.point(name, shown), _widget_state())
        check(draft)
        st.session_state[keys.TUNED] = apply_point(config, name, block, draft)
    except (ConfigError, ValueError) as exc:
        st.session_state[keys.TUNE_MESSAGE] = ("error", f"Not applied to {name} in {scope}: {exc}")
    else:
        st.session_state[keys.TUNE_MESSAGE] = ("success", f"Applied to {name} in {scope}; the Export tab has the YAML.")


def _reset(name: str, block: int) -> None:
    """Button callback: drop the unsaved edits, showing the tuned config's settings again."""
    st.session_state.update(widget_values(st.session_state[keys.TUNED].point(name, block)))
    st.session_state.pop(keys.TUNE_MESSAGE, None)


def tuning_panel(block: int, name: str, check: Callable[[PointConfig], object]) -> PointConfig | FitFailure:
    """The tuning widgets of one point; returns the draft, or the error that makes it invalid.

    ``check(draft)`` raises ValueError when the draft cannot be fitted on this point's data.
    """
    config: QuantConfig = st.session_state[keys.TUNED]
    current = config.point(name, block)
    reset_when_changed(keys.TUNE_FOR, (block, name, current), widget_values(current))
    reset_when_changed(keys.TUNE_MESSAGE_FOR, (block, name), {keys.TUNE_MESSAGE: None})
    st.markdown(f"**Tune block {block} · {name}**")
    observer = st.selectbox("Observer", observer_names(), format_func=observer_label, key=keys.TUNE_OBSERVER)
    used = {spec.name for spec in observer_params(observer)}
    bit_type = BitType(st.session_state[keys.TUNE_BITS], st.session_state[keys.TUNE_SIGNED])
    for spec in all_params().values():
        _param_input(spec, bit_type, disabled=spec.name not in used)
    st.selectbox("bits", range(MIN_BITS, MAX_BITS + 1), key=keys.TUNE_BITS, help=f"{MIN_BITS} to {MAX_BITS} bits.")
    st.checkbox("signed", key=keys.TUNE_SIGNED)  # own row: beside bits it is cut in a narrow panel
    st.radio("Granularity", CALIBRATION_MODES, key=keys.TUNE_MODE, horizontal=True)
    st.radio(
        "Grid",
        QUANTIZERS,
        key=keys.TUNE_QUANTIZER,
        horizontal=True,
        disabled=module_type_of(name) != "activation",
        help="uniform: scale and zero point. log2 / log_sqrt2: levels clip max · 2^-k or √2^-k, dense near 0 "
        "(FQ-ViT's and RepQ-ViT's softmax quantizers); activations ≥ 0 with an unsigned bit type only.",
    )
    st.button(
        f"Apply to {name} in block {block}",
        key=keys.TUNE_APPLY_BLOCK,
        on_click=_apply,
        args=(name, block, block, check),
        type="primary",
        width="stretch",
    )
    st.button(
        f"Apply to {name} in all blocks",
        key=keys.TUNE_APPLY_ALL,
        on_click=_apply,
        args=(name, block, None, check),
        width="stretch",
    )
    st.button(
        "Reset to the tuned config",
        key=keys.TUNE_RESET,
        on_click=_reset,
        args=(name, block),
        width="stretch",
        help="Drop the edits not applied yet.",
    )
    message = st.session_state.get(keys.TUNE_MESSAGE)
    if message is not None:
        (st.error if message[0] == "error" else st.success)(message[1])
    try:
        return draft_point(current, _widget_state())
    except (ConfigError, ValueError) as exc:
        return FitFailure(str(exc))


def _param_input(spec: ParamSpec, bit_type: BitType, disabled: bool) -> None:
    """The input of one observer parameter, offering only values its validation accepts for ``bit_type``."""
    key = param_key(spec.name)
    help_text = f"{spec.description} Valid: {spec.valid(bit_type)}."
    if spec.powers_of_two:
        choices = spec.choices(bit_type, st.session_state[key])
        st.selectbox(spec.name, choices, key=key, disabled=disabled, help=help_text)
        return
    low, high = spec.ui_bounds(bit_type)
    current = st.session_state[key]
    st.number_input(
        spec.name,
        min_value=min(low, current),  # a value from the config below the bound is shown (and reported), not reset
        max_value=max(high, current),
        step=spec.kind(spec.step),
        format=f"%.{spec.decimals}f" if spec.kind is float else "%d",
        key=key,
        disabled=disabled,
        help=help_text,
    )
