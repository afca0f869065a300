"""Tests for explorer.data: demo data and model, timm/checkpoint loading, calibration inputs."""

from __future__ import annotations

import io
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from explorer.data import (
    DEMO_ARCH,
    DataLoadError,
    ModelLoadError,
    batched,
    batches_used,
    demo_batches,
    demo_images,
    demo_split,
    demo_split_size,
    load_checkpoint,
    load_demo_model,
    load_demo_spec,
    load_image_folder,
    load_tensor_file,
    load_timm_model,
    load_uploaded_images,
    model_input_config,
)
from explorer.data.models import _hub_reachable

MEAN = (0.5, 0.25, 0.5)
STD = (0.5, 0.25, 0.125)


@pytest.fixture(scope="module")
def demo_model() -> nn.Module:
    """The embedded demo ViT (loaded once for the module)."""
    return load_demo_model()


@pytest.fixture(scope="module")
def demo_state() -> dict[str, Tensor]:
    """A copy of the demo model's state dict."""
    return {k: v.clone() for k, v in load_demo_model().state_dict().items()}


def _png_bytes(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    """A solid-colour PNG of ``size`` (width, height)."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# --- demo data -------------------------------------------------------------------------


def test_demo_split_sizes_and_determinism() -> None:
    train_x, train_y = demo_split("train")
    test_x, test_y = demo_split("test")
    assert train_x.shape == (1437, 3, 16, 16) and test_x.shape == (360, 3, 16, 16)
    assert train_y.shape == (1437,) and test_y.shape == (360,)
    assert (demo_split_size("train"), demo_split_size("test")) == (len(train_y), len(test_y))
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert torch.bincount(test_y, minlength=10).min() >= 35  # stratified: ~36 per class
    again_x, again_y = demo_split("test")
    assert torch.equal(test_x, again_x) and torch.equal(test_y, again_y)


def test_demo_split_is_normalised_from_unit_range() -> None:
    raw, _ = demo_images("train")
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    assert torch.equal(raw[:, 0], raw[:, 1]) and torch.equal(raw[:, 0], raw[:, 2])
    spec = load_demo_spec()
    x, _ = demo_split("train")
    expected = (raw - spec.mean[0]) / spec.std[0]
    torch.testing.assert_close(x, expected)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05


def test_demo_split_rejects_unknown_split() -> None:
    with pytest.raises(ValueError, match="'train' or 'test'"):
        demo_split("val")  # type: ignore[arg-type]


def test_demo_batches() -> None:
    batches = demo_batches("train", batch_size=100, num_batches=3)
    assert [b.shape[0] for b in batches] == [100, 100, 100]
    all_batches = demo_batches("test", batch_size=100)
    assert [b.shape[0] for b in all_batches] == [100, 100, 100, 60]
    torch.testing.assert_close(torch.cat(all_batches), demo_split("test")[0])


# --- demo model ------------------------------------------------------------------------


@torch.no_grad()
def test_demo_model_accuracy(demo_model: nn.Module) -> None:
    assert not demo_model.training
    x, y = demo_split("test")
    accuracy = float((demo_model(x).argmax(dim=1) == y).float().mean())
    assert accuracy >= 0.95


def test_demo_model_input_config(demo_model: nn.Module) -> None:
    spec = load_demo_spec()
    size, mean, std = model_input_config(demo_model)
    assert size == (3, 16, 16)
    assert mean == spec.mean and std == spec.std


# --- checkpoints -----------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(
    tmp_path: Path, suffix: str, demo_model: nn.Module, demo_state: dict[str, Tensor]
) -> None:
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(demo_state, path)
    else:
        torch.save({"state_dict": demo_state, "epoch": 3}, path)
    model = load_checkpoint(path, DEMO_ARCH)
    assert not model.training
    x = demo_split("test")[0][:16]
    torch.testing.assert_close(model(x), demo_model(x))


@torch.no_grad()
def test_checkpoint_timm_name_infers_num_classes(tmp_path: Path) -> None:
    source = load_timm_model("vit_tiny_patch16_224", num_classes=7)
    path = tmp_path / "tiny.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = load_checkpoint(path, "vit_tiny_patch16_224")
    x = torch.randn(1, 3, 224, 224)
    assert model(x).shape == (1, 7)
    torch.testing.assert_close(model(x), source(x))
    size, mean, std = model_input_config(model)
    assert size == (3, 224, 224) and len(mean) == 3 and len(std) == 3


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_checkpoint_names_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match=f"broken{suffix}"):
        load_checkpoint(path, DEMO_ARCH)


def test_pickled_module_is_refused(tmp_path: Path, demo_model: nn.Module) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(demo_model, path)
    with pytest.raises(ModelLoadError, match="whole_model.pth.*state_dict"):
        load_checkpoint(path, DEMO_ARCH)


def test_checkpoint_shape_mismatch_names_key(tmp_path: Path, demo_state: dict[str, Tensor]) -> None:
    state = dict(demo_state)
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(128, 64)
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"blocks\.1\.mlp\.fc1\.weight.*\(128, 64\)"):
        load_checkpoint(path, DEMO_ARCH)


def test_checkpoint_missing_and_unexpected_keys(tmp_path: Path, demo_state: dict[str, Tensor]) -> None:
    state = dict(demo_state)
    del state["norm.weight"]
    state["extra.bias"] = torch.zeros(3)
    path = tmp_path / "keys.safetensors"
    save_file(state, path)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path, DEMO_ARCH)
    assert "missing keys (1): norm.weight" in str(info.value)
    assert "unexpected keys (1): extra.bias" in str(info.value)


def test_checkpoint_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="weights.onnx.*unsupported"):
        load_checkpoint(path, DEMO_ARCH)


# --- timm models -----------------------------------------------------------------------


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(ModelLoadError, match="unknown timm model name.*did you mean.*vit_tiny_patch16_224"):
        load_timm_model("vit_tiny_patch16_22")


def test_non_vit_timm_model_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="ResNet.*only ViT blocks are supported"):
        load_timm_model("resnet18")


def test_pretrained_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _hub_reachable():
        pytest.skip("the Hugging Face hub is reachable: offline behaviour cannot be tested")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    offline_before = hf_constants.HF_HUB_OFFLINE
    with pytest.raises(ModelLoadError, match="pretrained weights for vit_tiny_patch16_224 could not be downloaded"):
        load_timm_model("vit_tiny_patch16_224", pretrained=True)
    assert hf_constants.HF_HUB_OFFLINE == offline_before  # the temporary offline switch is undone


# --- image folders and uploads ---------------------------------------------------------


def test_image_folder_shape_order_and_normalisation(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(_png_bytes((0, 255, 0), (20, 10)))
    (tmp_path / "a.png").write_bytes(_png_bytes((255, 0, 255), (8, 8)))
    (tmp_path / "c.jpg").write_bytes(_png_bytes((0, 0, 0), (5, 9)))  # decoded by content, not extension
    (tmp_path / "labels.txt").write_text("not an image, ignored by extension")
    x = load_image_folder(tmp_path, (3, 8, 8), MEAN, STD)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32
    first = torch.tensor([(1 - m) / s if on else -m / s for on, m, s in zip((1, 0, 1), MEAN, STD, strict=True)])
    torch.testing.assert_close(x[0], first.view(3, 1, 1).expand(3, 8, 8))  # a.png comes first
    torch.testing.assert_close(x[1, 1], torch.full((8, 8), (1 - MEAN[1]) / STD[1]))
    assert load_image_folder(tmp_path, (3, 8, 8), MEAN, STD, max_images=2).shape[0] == 2


def test_image_folder_grey_channel(tmp_path: Path) -> None:
    (tmp_path / "g.png").write_bytes(_png_bytes((255, 255, 255), (12, 12)))
    x = load_image_folder(tmp_path, (1, 6, 4), (0.5,), (0.5,))
    torch.testing.assert_close(x, torch.ones(1, 1, 6, 4))


def test_fake_png_names_file(tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(_png_bytes((1, 2, 3), (8, 8)))
    (tmp_path / "notes.png").write_text("this is text, not a PNG")
    with pytest.raises(DataLoadError, match="notes.png.*not a readable image"):
        load_image_folder(tmp_path, (3, 8, 8), MEAN, STD)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="no image files"):
        load_image_folder(tmp_path, (3, 8, 8), MEAN, STD)
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataLoadError, match="no image files.*readme.md"):
        load_image_folder(tmp_path, (3, 8, 8), MEAN, STD)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="not a folder"):
        load_image_folder(tmp_path / "nope", (3, 8, 8), MEAN, STD)


def test_bad_image_config() -> None:
    with pytest.raises(DataLoadError, match="mean and std"):
        load_uploaded_images([("a.png", _png_bytes((0, 0, 0), (4, 4)))], (3, 4, 4), (0.5,), (0.5,))


def test_uploaded_images(tmp_path: Path) -> None:
    files = [("z.png", _png_bytes((255, 255, 255), (8, 8))), ("a.png", _png_bytes((0, 0, 0), (8, 8)))]
    x = load_uploaded_images(files, (3, 4, 4), MEAN, STD)
    assert x.shape == (2, 3, 4, 4)
    assert float(x[0, 0, 0, 0]) == pytest.approx((1 - MEAN[0]) / STD[0])  # upload order kept
    with pytest.raises(DataLoadError, match="broken.png"):
        load_uploaded_images([*files, ("broken.png", b"\x89PNG garbage")], (3, 4, 4), MEAN, STD)
    with pytest.raises(DataLoadError, match="no images"):
        load_uploaded_images([], (3, 4, 4), MEAN, STD)


# --- tensor files ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".safetensors"])
def test_tensor_file_round_trip(tmp_path: Path, suffix: str) -> None:
    images = torch.randn(5, 3, 16, 16)
    path = tmp_path / f"images{suffix}"
    if suffix == ".pt":
        torch.save({"images": images, "labels": torch.arange(5)}, path)
    elif suffix == ".npy":
        np.save(path, images.numpy())
    else:
        save_file({"data": images}, path)
    loaded = load_tensor_file(path, input_size=(3, 16, 16))
    torch.testing.assert_close(loaded, images)


def test_tensor_file_adds_batch_dim_and_converts_dtype(tmp_path: Path) -> None:
    path = tmp_path / "one.pth"
    torch.save(torch.ones(3, 4, 4, dtype=torch.float16), path)
    loaded = load_tensor_file(path)
    assert loaded.shape == (1, 3, 4, 4) and loaded.dtype == torch.float32


def test_tensor_file_nan_reports_count(tmp_path: Path) -> None:
    images = torch.zeros(2, 3, 4, 4)
    images[0, 0, 0, :2] = float("nan")
    images[1, 2, 3, 3] = float("inf")
    path = tmp_path / "nan.npy"
    np.save(path, images.numpy())
    with pytest.raises(DataLoadError, match=r"nan.npy: 3 of 96 values are NaN or infinite"):
        load_tensor_file(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (torch.zeros(2, 3, 4, 4, dtype=torch.int64), "floating-point"),
        (torch.zeros(2, 3), r"\[N, C, H, W\]"),
        (torch.zeros(2, 3, 8, 8), "does not match the model input"),
        ({"a": torch.zeros(1, 3, 4, 4), "b": torch.zeros(1, 3, 4, 4)}, "'images' or 'data'"),
    ],
)
def test_tensor_file_rejects_bad_content(tmp_path: Path, content: object, pattern: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(DataLoadError, match=f"bad.pt.*{pattern}"):
        load_tensor_file(path, input_size=(3, 4, 4))


def test_tensor_file_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DataLoadError, match="junk.safetensors"):
        load_tensor_file(path)
    with pytest.raises(DataLoadError, match="unsupported"):
        load_tensor_file(tmp_path / "images.csv")


# --- batching --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "batch_size", "num_batches"), [(10, 4, 2), (10, 4, 10), (10, 50, 3), (1437, 32, 100)]
)
def test_batches_used_counts_what_batched_gives(images: int, batch_size: int, num_batches: int) -> None:
    assert batches_used(images, batch_size, num_batches) == len(
        batched(torch.zeros(images, 1), batch_size, num_batches)
    )


def test_batched() -> None:
    x = torch.arange(10.0).view(10, 1)
    assert [b.shape[0] for b in batched(x, 4)] == [4, 4, 2]
    assert [b.shape[0] for b in batched(x, 4, num_batches=2)] == [4, 4]
    assert [b.shape[0] for b in batched(x, 4, num_batches=10)] == [4, 4, 2]
    assert [b.shape[0] for b in batched(x, 50)] == [10]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DataLoadError, match="batch_size"):
            batched(x, bad)  # type: ignore[arg-type]
    with pytest.raises(DataLoadError, match="num_batches"):
        batched(x, 2, num_batches=0)
    with pytest.raises(DataLoadError, match="at least one sample"):
        batched(torch.zeros(0, 3), 2)
