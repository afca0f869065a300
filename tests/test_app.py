"""The Streamlit app driven through ``AppTest`` (the real ``app.py``), plus its pure helpers.

The demo calibration is cached for the whole process (the app's run store), so only the
first test pays for it; every later ``AppTest`` starts from the cached run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from hostile_inputs import alias_bomb, expanded_images, png_header
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from explorer.analysis import DistributionFacts, FitFailure, point_summary, run_calibration
from explorer.bit_type import BitType
from explorer.config import ConfigError, apply_point, load_config, point_changes
from explorer.data import batched, demo_batches, demo_split_size, load_demo_model, models
from explorer.observers.registry import all_params
from explorer.ui import keys
from explorer.ui.explain import explain_facts, minmax_gaps
from explorer.ui.layer_view import metrics_table
from explorer.ui.serving import ROOTS_ENV, SERVE_ENV
from explorer.ui.sidebar import UPLOAD_CONFIG, batches_note
from explorer.ui.tuning import draft_point, param_key, widget_values

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT_S = 900  # the first run calibrates the demo; a loaded 2-core machine can take minutes
RECOMMENDED = Path(__file__).resolve().parents[1] / "configs" / "recommended_config.yaml"


def open_app() -> AppTest:
    """The app after its first run (the demo calibrated), checked to have raised nothing."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on screen that has ``column`` (AppTest does not expose dataframe keys)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def select_point(at: AppTest, block: int, point: str) -> None:
    at.selectbox(key="sel_block").set_value(block)
    at.selectbox(key="sel_point").set_value(point).run()
    assert not at.exception, at.exception


def show_tab(at: AppTest, tab: str) -> None:
    at.session_state["view"] = tab
    at.run()
    assert not at.exception, at.exception


def assert_demo_still_shown(at: AppTest) -> None:
    """The last good calibration survives a failed one."""
    assert not at.exception, at.exception
    assert any("demo ViT" in m.value and "Calibrated" in m.value for m in at.markdown)
    assert "Tuned SQNR" in metrics(at)


def calibrate(at: AppTest) -> None:
    at.button(key="calibrate").click().run()


# ----- the app, end to end through AppTest -------------------------------------------------------


def test_default_run_shows_the_calibrated_demo() -> None:
    at = open_app()
    assert not errors(at)
    header = next(m.value for m in at.markdown if m.value.startswith("**Model**"))
    assert "demo ViT" in header and "4 batch(es), 128 images" in header and "recommended_config.yaml" in header
    shown = metrics(at)
    assert {"Tuned clip min", "Tuned clip max", "Tuned SQNR", "Tuned MSE", "Tuned clipped"} <= set(shown)
    table = table_with(at, "observer")
    assert list(table["observer"][:4]) == ["MinMax", "Percentile", "OMSE", "KL"]
    assert table["observer"][4].startswith("Tuned")
    assert np.isfinite(table["SQNR dB"]).all()
    assert len(at.get("plotly_chart")) == 4  # histogram, convergence, per-channel ranges, per-channel scales
    alpha = at.number_input(key="tune_percentile_alpha")
    assert alpha.value == pytest.approx(0.999)  # recommended config: mlp_act alpha 0.999
    assert alpha.proto.format == "%.5f"  # shown as 0.99900, never "1.00"


def test_reruns_reuse_the_cached_calibration() -> None:
    at = open_app()
    first = next(m.value for m in at.markdown if m.value.startswith("**Model**"))
    at.run()
    assert next(m.value for m in at.markdown if m.value.startswith("**Model**")) == first  # same run, same time


def test_tuning_alpha_and_kl_bins_changes_the_clip_range() -> None:
    at = open_app()
    select_point(at, 1, "mlp_act")
    assert any(m.value == "**Tune block 1 · mlp_act**" for m in at.markdown)
    before = metrics(at)["Tuned clip max"]
    at.number_input(key="tune_percentile_alpha").set_value(1.0).run()
    after = metrics(at)["Tuned clip max"]
    assert float(after) > float(before)  # keeping every value widens the range to the extremes
    assert not at.exception and not errors(at)
    at.number_input(key="tune_percentile_alpha").set_value(0.99).run()  # below the floor: a clear message
    assert any("alpha_floor 0.999" in e for e in errors(at)) and not at.exception
    at.number_input(key="tune_percentile_alpha").set_value(0.999).run()

    at.selectbox(key="tune_observer").set_value("KLObserver").run()
    kl_default = (metrics(at)["Tuned clip max"], metrics(at)["Tuned MSE"])
    at.selectbox(key="tune_kl_bins").set_value(256).run()  # below the 512 bins a demo channel has
    assert not at.exception and not errors(at)
    assert (metrics(at)["Tuned clip max"], metrics(at)["Tuned MSE"]) != kl_default  # other thresholds
    assert table_with(at, "observer")["observer"].iloc[-1] == "Tuned (KL)"

    at.toggle(key="hist_log").set_value(False)
    at.selectbox(key="hist_channel").set_value(3).run()  # one channel's histogram and clip ranges
    assert not at.exception and not errors(at)
    assert not any("widest channel" in c.value for c in at.caption)


def test_invalid_tuning_shows_the_library_message() -> None:
    at = open_app()
    select_point(at, 1, "mlp_act")
    at.selectbox(key="tune_observer").set_value("KLObserver")
    at.selectbox(key="tune_bits").set_value(16).run()  # 32768 levels > kl_bins 2048
    assert not at.exception
    assert any("kl_bins" in e and "levels" in e for e in errors(at))

    at.selectbox(key="tune_bits").set_value(8)
    at.checkbox(key="tune_signed").uncheck().run()  # KL on unsigned, but GELU output has negatives
    assert not at.exception
    assert any("Tuned settings are not usable" in e and "negative" in e for e in errors(at))

    at.button(key="tune_apply_block").click().run()  # refused, with the reason
    assert not at.exception
    assert load_config(dump_of(at)) == load_config(RECOMMENDED)


def dump_of(at: AppTest) -> str:
    """The exported YAML, as shown in the Export tab."""
    show_tab(at, "Export")
    (code,) = at.code
    return code.value


def test_apply_to_one_block_then_all_blocks_exports_yaml_that_loads_back() -> None:
    at = open_app()
    select_point(at, 1, "mlp_act")
    at.number_input(key="tune_percentile_alpha").set_value(0.9999)
    at.button(key="tune_apply_block").click().run()
    assert any("Applied to mlp_act in block 1" in s.value for s in at.success)

    text = dump_of(at)
    exported = load_config(text)
    assert exported.blocks[1]["attn_layer"]["mlp_act"] == {"percentile_alpha": 0.9999}
    assert exported.point("mlp_act", 1).percentile_alpha == 0.9999
    assert exported.point("mlp_act", 0).percentile_alpha == 0.999
    assert exported == at.session_state["tuned"]
    assert any("Validated" in s.value for s in at.success)
    assert at.get("download_button")

    show_tab(at, "Layer")
    at.number_input(key="tune_percentile_sigma").set_value(0.3)
    at.button(key="tune_apply_all").click().run()
    exported = load_config(dump_of(at))
    assert exported.attn_layer["mlp_act"]["percentile_alpha"] == 0.9999
    assert exported.attn_layer["mlp_act"]["percentile_sigma"] == 0.3
    assert not exported.blocks  # the block override was folded into "all blocks"
    assert all(exported.point("mlp_act", b).percentile_alpha == 0.9999 for b in range(4))


def test_compare_view_shows_observers_side_by_side_and_over_all_points() -> None:
    at = open_app()
    show_tab(at, "Compare")
    assert not errors(at)
    assert any(m.value == "##### The four observers on block 0 · mlp_act" for m in at.markdown)
    table = table_with(at, "least MSE")
    assert len(table) == 4 * 8 * 4  # every block × point × observer
    assert list(table["observer"][:4]) == ["MinMax", "Percentile", "OMSE", "KL"]
    assert table.groupby(["block", "point"])["least MSE"].sum().eq(1).all()
    assert len(at.get("plotly_chart")) == 6  # four small histograms, the heatmap, the wins
    assert any(m.value.startswith("**Where MinMax falls apart") for m in at.markdown)
    at.selectbox(key="cmp_pick").set_value("2 · intSoft")
    at.button(key="cmp_open").click().run()
    assert not at.exception
    assert at.session_state["view"] == "Layer"
    assert any(m.value == "**Tune block 2 · intSoft**" for m in at.markdown)


def test_accuracy_view_reports_top1_on_the_demo_test_split() -> None:
    at = open_app()
    show_tab(at, "Accuracy")
    assert not errors(at)
    shown = metrics(at)
    fp32 = float(shown["FP32 top-1"].removesuffix(" %"))
    quant = float(shown["Quantized top-1"].removesuffix(" %"))
    assert 50 < fp32 <= 100 and 0 <= quant <= 100
    assert "Agreement with FP32" in shown and shown["Logit SQNR"].endswith(" dB")
    assert any("demo test split" in c.value for c in at.caption)


# ----- bad input: an error on screen, no exception, the last good results kept -------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default: [1, 2\n", "invalid YAML"),
        ("default:\n  percentile_alfa: 0.99\n", "percentile_alfa"),
        ("default: {}\x00", "invalid YAML"),
        (alias_bomb(8), "CONFIG_MAX_NODES"),
        ("[" * 5000 + "]" * 5000, "CONFIG_MAX_DEPTH"),
    ],
    ids=["unclosed", "typo", "nul", "alias-bomb", "deep"],
)
def test_broken_config_upload(text: str, expected: str) -> None:
    at = open_app()
    at.selectbox(key="config_file").set_value(UPLOAD_CONFIG).run()
    at.file_uploader(key="config_upload").upload("broken.yaml", text.encode(), "application/x-yaml").run()
    assert any(expected in e and "broken.yaml" in e for e in errors(at))
    calibrate(at)
    assert any("needs valid settings" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_unreadable_image_in_folder(tmp_path: Path) -> None:
    (tmp_path / "digit.png").write_bytes(b"this is not a png")
    at = open_app()
    at.radio(key="data_kind").set_value("folder").run()
    at.text_input(key="data_folder").input(str(tmp_path)).run()
    calibrate(at)
    assert any("digit.png" in e and "not a readable image" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_non_image_upload() -> None:
    at = open_app()
    at.radio(key="data_kind").set_value("upload").run()
    at.file_uploader(key="data_upload").upload("notes.png", b"hello", "image/png").run()
    calibrate(at)
    assert any("notes.png" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00garbage, not a checkpoint")
    at = open_app()
    at.radio(key="model_kind").set_value("checkpoint").run()
    at.text_input(key="ckpt_path").input(str(path)).run()
    calibrate(at)
    assert any("model.pt" in e and "cannot be read" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_corrupt_checkpoint_upload_is_named_by_its_file_name() -> None:
    at = open_app()
    at.radio(key="model_kind").set_value("checkpoint").run()
    at.file_uploader(key="ckpt_upload").upload("broken.safetensors", b"\x01\x02 not safetensors").run()
    calibrate(at)
    assert any("broken.safetensors" in e and "cannot be read" in e for e in errors(at))
    assert not any("explorer-upload-" in e for e in errors(at))  # no temporary paths in messages
    assert_demo_still_shown(at)


def test_tensor_file_with_nan(tmp_path: Path) -> None:
    images = torch.zeros(8, 3, 16, 16)
    images[0, 0, 0, 0] = float("nan")
    path = tmp_path / "images.pt"
    torch.save(images, path)
    at = open_app()
    at.radio(key="data_kind").set_value("tensor").run()
    at.text_input(key="tensor_path").input(str(path)).run()
    calibrate(at)
    assert any("NaN" in e and "images.pt" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_expanded_tensor_upload_reads_only_what_calibration_takes(tmp_path: Path) -> None:
    at = open_app()
    at.radio(key="data_kind").set_value("tensor").run()
    at.file_uploader(key="tensor_upload").upload("expanded.pt", expanded_images(tmp_path).read_bytes()).run()
    calibrate(at)
    assert not at.exception, at.exception
    assert not errors(at)
    header = next(m.value for m in at.markdown if m.value.startswith("**Model**"))
    assert "tensor file expanded.pt" in header and "128 images" in header


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # refused before decoding anyway
def test_huge_image_upload_is_refused_from_its_header() -> None:
    at = open_app()
    at.radio(key="data_kind").set_value("upload").run()
    at.file_uploader(key="data_upload").upload("huge.png", png_header(13000, 13000), "image/png").run()
    calibrate(at)
    assert any("huge.png" in e and "IMAGE_MAX_PIXELS" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_batch_size_above_the_models_bound() -> None:
    at = open_app()
    assert any("at most 1,770" in c.value for c in at.caption)  # the demo ViT's largest batch
    at.number_input(key="batch_size").set_value(4096).run()
    assert any("CALIBRATION_MEMORY_BYTES" in e and "4,096" in e for e in errors(at))
    calibrate(at)
    assert any("needs valid settings" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_served_paths_outside_the_roots_answer_like_missing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    at = open_app()
    at.radio(key="data_kind").set_value("folder").run()
    answers = []
    for path in ("/etc", "/etc/no-such-folder", str(tmp_path / "missing")):
        at.text_input(key="data_folder").input(path).run()
        calibrate(at)
        answers.append([e.replace(path, "<path>") for e in errors(at)])
    assert answers[0] == answers[1] == answers[2]
    assert any("allowed data folders" in e for e in answers[0])
    assert not any("passwd" in e for e in answers[0])
    assert_demo_still_shown(at)

    at.radio(key="data_kind").set_value("demo")
    at.radio(key="model_kind").set_value("checkpoint").run()
    refusals = []
    for path in ("/etc/passwd.pt", "/etc/no-such-file.pt"):
        at.text_input(key="ckpt_path").input(path).run()
        calibrate(at)
        refusals.append([e.replace(path, "<path>") for e in errors(at)])
    assert refusals[0] == refusals[1] and any("allowed data folders" in e for e in refusals[0])


def test_serving_mode_offers_no_server_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVE_ENV, "1")
    at = open_app()
    at.radio(key="data_kind").set_value("folder").run()
    assert not [t for t in at.text_input if t.key == "data_folder"]
    assert any("disabled" in c.value for c in at.caption)
    calibrate(at)
    assert any("server paths are disabled" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_unknown_timm_model() -> None:
    at = open_app()
    at.radio(key="model_kind").set_value("timm").run()
    at.text_input(key="timm_name").input("vit_tiny_patch16_2244").run()
    calibrate(at)
    assert any("unknown timm model name" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_pretrained_weights_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "vit_tiny_patch16_224"
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    assert hub_id, f"timm no longer names a hub id for {name}"
    if try_to_load_from_cache(hub_id, "model.safetensors") is not None:
        pytest.skip(f"{hub_id} is in the local cache, so it loads offline")
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)  # as on a machine without network
    at = open_app()
    at.radio(key="model_kind").set_value("timm").run()
    at.text_input(key="timm_name").input(name)
    at.checkbox(key="timm_pretrained").check().run()
    calibrate(at)
    assert any("pretrained weights" in e and "no network access" in e for e in errors(at))
    assert_demo_still_shown(at)


def test_real_size_vit_tiny_default_batches_shows_every_view() -> None:
    """timm vit_tiny_patch16_224 (random init, 224²) with the default 4 × 32 batches: the statistics
    keep no activation, so the Layer tab has its histograms and every Compare row is filled."""
    at = open_app()
    at.radio(key="model_kind").set_value("timm").run()
    at.text_input(key="timm_name").input("vit_tiny_patch16_224").run()
    calibrate(at)
    assert not at.exception and not errors(at), errors(at)
    header = next(m.value for m in at.markdown if m.value.startswith("**Model**"))
    assert "vit_tiny_patch16_224" in header and "4 batch(es), 128 images" in header
    select_point(at, 11, "mlp_act")
    assert len(at.get("plotly_chart")) == 4  # histogram, convergence, the two per-channel charts
    table = table_with(at, "observer")
    assert np.isfinite(table["SQNR dB"]).all() and {"clipping MSE", "rounding MSE"} <= set(table.columns)
    show_tab(at, "Compare")
    rows = table_with(at, "least MSE")
    assert len(rows) == 12 * 8 * 4
    assert np.isfinite(rows[["MSE", "SQNR dB", "clipped %"]].to_numpy(dtype=float)).all()


def test_nan_activations_are_reported_per_point(tmp_path: Path) -> None:
    state = load_demo_model().state_dict()
    state["blocks.3.mlp.fc1.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    at = open_app()
    at.radio(key="model_kind").set_value("checkpoint").run()
    at.text_input(key="ckpt_path").input(str(path)).run()
    calibrate(at)
    assert not at.exception, at.exception
    assert any("nan.safetensors" in m.value for m in at.markdown if m.value.startswith("**Model**"))
    assert any("have no statistics" in e.label for e in at.expander)
    select_point(at, 3, "mlp_act")
    assert any("NaN" in e for e in errors(at))


# ----- pure helpers -------------------------------------------------------------------------------


def tuned_values(**changes: object) -> dict[str, object]:
    values = widget_values(load_config(RECOMMENDED).point("mlp_act", 1))
    values.update(changes)
    return values


@pytest.mark.parametrize(("available", "num_batches", "batch_size"), [(1437, 100, 32), (64, 4, 16), (50, 3, 25)])
def test_batches_note_says_what_runs(available: int, num_batches: int, batch_size: int) -> None:
    runs = batched(torch.zeros(available, 1), batch_size, num_batches)
    note = batches_note(available, num_batches, batch_size)
    if len(runs) == num_batches and len(runs[-1]) == batch_size:
        assert note == ""
    else:
        assert f"{num_batches} × {batch_size} runs as **{len(runs)} batch(es)**" in note
        assert (f"the last of {len(runs[-1])}" in note) == (len(runs[-1]) < batch_size)
    assert "Fewer batches" in batches_note(None, num_batches, batch_size)


def test_sidebar_says_how_many_demo_batches_run() -> None:
    at = open_app()
    at.number_input(key="num_batches").set_value(100).run()
    assert at.number_input(key="batch_size").value == 32
    runs = batched(torch.zeros(demo_split_size("train"), 1), 32, 100)
    assert any(f"runs as **{len(runs)} batch(es)**, the last of {len(runs[-1])}" in c.value for c in at.caption)


def test_session_state_keys_are_distinct() -> None:
    """Two names for one key would make two widgets share (and fight over) one value."""
    values = [value for name, value in vars(keys).items() if name.isupper()]
    assert len(values) == len(set(values))
    assert {param_key(name) for name in all_params()}.isdisjoint(values)  # a parameter named "bits" would clash


def test_draft_point_reads_only_the_chosen_observers_parameters() -> None:
    current = load_config(RECOMMENDED).point("mlp_act", 1)
    draft = draft_point(current, tuned_values(tune_observer="KLObserver", tune_percentile_alpha=0.9, tune_kl_bins=1024))
    assert draft.observer_type == "KLObserver" and draft.kl_bins == 1024
    assert draft.percentile_alpha == current.percentile_alpha  # a KL draft ignores the alpha widget
    assert draft_point(current, tuned_values(tune_percentile_alpha=0.99950000000001)).percentile_alpha == 0.9995
    with pytest.raises(ConfigError, match="kl_bins"):
        draft_point(current, tuned_values(tune_observer="KLObserver", tune_bits=16))


def test_point_changes_and_apply_point() -> None:
    config = load_config(RECOMMENDED)
    current = config.point("mlp_act", 1)
    draft = draft_point(current, tuned_values(tune_bits=4, tune_mode="layer_wise"))
    changes = point_changes(current, draft)
    assert changes == {"calibration_mode": "layer_wise", "bit_type": {"bits": 4, "signed": True, "name": "int4"}}
    one = apply_point(config, "mlp_act", 1, draft)
    assert one.point("mlp_act", 1) == draft and one.point("mlp_act", 2) == current
    everywhere = apply_point(one, "mlp_act", None, draft.replace(percentile_alpha=0.99))
    assert not everywhere.blocks
    assert all(everywhere.point("mlp_act", b).percentile_alpha == 0.99 for b in range(4))
    assert apply_point(config, "mlp_act", 1, current) == config  # nothing to change


def facts(outlier_ratio: float, extreme: list[tuple[int, float]], low: float) -> DistributionFacts:
    return DistributionFacts(
        numel=1000,
        min=low,
        max=12.0,
        p9999_abs=12.0 / outlier_ratio,
        outlier_ratio=outlier_ratio,
        channel_min=np.zeros(4),
        channel_max=np.ones(4),
        extreme_channels=extreme,
    )


def test_explain_facts_in_plain_sentences() -> None:
    heavy = explain_facts(facts(12.0, [(2, 8.0)], -3.0), channel_wise=False)
    assert any("12.0× beyond the 99.99th percentile stretch MinMax's range" in s for s in heavy)
    assert any("Channel(s) 2 (8.0×)" in s and "channel_wise would help" in s for s in heavy)
    assert not any("≥ 0" in s for s in heavy)
    calm = explain_facts(facts(1.1, [], 0.0), channel_wise=True)
    assert any("No heavy tail" in s for s in calm)
    assert any("No channel spans" in s for s in calm)
    assert not any("uint" in s for s in calm)  # no bit type given: no type named
    int4 = explain_facts(facts(1.1, [], 0.0), channel_wise=True, bit_type=BitType(4, True))
    assert any("uint4 (unsigned, same 4 bits)" in s for s in int4) and not any("uint8" in s for s in int4)
    unsigned = explain_facts(facts(1.1, [], 0.0), channel_wise=True, bit_type=BitType(8, False))
    assert not any("doubles" in s for s in unsigned)
    signed_with_negatives = explain_facts(facts(1.1, [], -1.0), channel_wise=True, bit_type=BitType(8, True))
    assert not any("uint" in s for s in signed_with_negatives)


def test_minmax_gaps_only_when_material() -> None:
    sqnr = pd.DataFrame(
        {"MinMax": [28.5, 31.0], "Percentile": [30.0, 40.0], "OMSE": [29.0, 39.0], "KL": [30.0, 40.0]},
        index=pd.MultiIndex.from_tuples([(0, "mlp_act"), (1, "intSoft")]),
    )
    text = minmax_gaps(sqnr)
    assert "block 1 · intSoft" in text and "9.0 dB below Percentile" in text and "mlp_act" not in text  # 1.5 dB
    sqnr["MinMax"] = [29.0, 38.0]
    assert "no point has a material gap" in minmax_gaps(sqnr)


def test_metrics_table_gives_a_failed_observer_its_reason_and_no_numbers() -> None:
    run = run_calibration(load_demo_model(), demo_batches("train", 8, 1), load_config(RECOMMENDED))
    key = (0, "intSoft")
    fitted = point_summary(run, key, run.point_config("MinmaxObserver", key))
    table = metrics_table({"MinMax": fitted, "KL": FitFailure("no negative half")}, FitFailure("bad draft"))
    assert list(table.columns[:2]) == ["observer", "failed because"]
    assert list(table["failed because"]) == ["", "no negative half"]
    assert table.loc[0, "MSE"] == fitted.mse and table.iloc[1, 2:].isna().all()
    assert "failed because" not in metrics_table({"MinMax": fitted}, FitFailure("bad draft")).columns
