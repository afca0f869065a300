"""Hostile and extreme input: every case ends in its typed error naming the problem, before the
memory is spent.

The cases run in one spawned worker process whose address space is capped (``RLIMIT_AS``) at
its size after the imports plus :data:`MEMORY_CAP_BYTES`: a case that tried to materialise what
a hostile file claims would fail with a different error (or MemoryError) instead of passing.
Each case's time and added peak memory are printed (``-s`` shows them); they are reported, not
asserted, apart from that generous cap.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import resource
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_inputs import alias_bomb, expanded_images, png_header
from safetensors.torch import save_file

from explorer.bit_type import BitType
from explorer.config import ConfigError, load_config
from explorer.data import DataLoadError, ModelLoadError, load_checkpoint, load_tensor_file, load_uploaded_images
from explorer.data.models import architecture, calibration_bounds, load_demo_model
from explorer.observers import MinmaxObserver
from explorer.ui.serving import PATHS_DISABLED, ROOTS_ENV, SERVE_ENV, PathPolicy, path_policy

MEMORY_CAP_BYTES = 1 << 30
"""Address space a case may add to the worker (generous: the targets are ≤ 2 s and ≤ 200 MB)."""
Action = Callable[[], object]
Prepare = Callable[[Path], Action]


class _Pwned:
    """Pickles to a call of ``os.system``: a file that would run code if it were unpickled in full."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo pwned",))


def _checkpoint_with(tmp: Path, name: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    """The demo checkpoint with one weight replaced by ``change(weight)``."""
    state = {k: v.contiguous() for k, v in load_demo_model().state_dict().items()}
    state["blocks.0.mlp.fc1.weight"] = change(state["blocks.0.mlp.fc1.weight"]).contiguous()
    path = tmp / name
    save_file(state, path)
    return path


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@dataclass(frozen=True)
class Case:
    """A hostile input: ``prepare(tmp)`` writes what it needs and returns the action to measure, which
    must raise ``error`` (None: must succeed, a large but legal input) with ``fragment`` in its message."""

    prepare: Prepare
    error: type[BaseException] | None
    fragment: str


CASES: dict[str, Case] = {}


def case(name: str, error: type[BaseException] | None, fragment: str = "") -> Callable[[Prepare], None]:
    """Register ``prepare`` as the case ``name``."""

    def register(prepare: Prepare) -> None:
        CASES[name] = Case(prepare, error, fragment)

    return register


@case("config: alias bomb, 8 levels (~800 bytes)", ConfigError, "CONFIG_MAX_NODES")
def _(tmp: Path) -> Action:
    return lambda: load_config(alias_bomb(8))


@case("config: 5000-deep [[[…]]]", ConfigError, "CONFIG_MAX_DEPTH")
def _(tmp: Path) -> Action:
    return lambda: load_config("[" * 5000 + "]" * 5000)


@case("config: 120 KB flat list of 60,001 items", ConfigError, "CONFIG_MAX_NODES")
def _(tmp: Path) -> Action:
    return lambda: load_config("[" + "1," * 60_000 + "1]")


@case("config: NUL character", ConfigError, "invalid YAML: character #x0000")
def _(tmp: Path) -> Action:
    return lambda: load_config("default: {}\x00")


@case("config: 300 KB file", ConfigError, "CONFIG_MAX_BYTES")
def _(tmp: Path) -> Action:
    path = _written(tmp / "big.yaml", b"default: {}\n#" + b"x" * 300_000 + b"\n")
    return lambda: load_config(path)


@case("config: recursive alias", ConfigError, "recursive")
def _(tmp: Path) -> Action:
    return lambda: load_config("default: &a\n  x: *a\n")


@case("config: two merge keys", ConfigError, "duplicate merge key")
def _(tmp: Path) -> Action:
    return lambda: load_config("a: &a {bits: 8}\nb: &b {signed: true}\ndefault:\n  bit_type:\n    <<: *a\n    <<: *b\n")


@case("tensor: 1.6 KB expanded [1e6, 3, 16, 16]", DataLoadError, "TENSOR_MAX_ELEMENTS")
def _(tmp: Path) -> Action:
    path = expanded_images(tmp)
    return lambda: load_tensor_file(path)


@case("tensor: the same, first 384 images (legal)", None)
def _(tmp: Path) -> Action:
    path = expanded_images(tmp)
    return lambda: load_tensor_file(path, (3, 16, 16), max_images=384)


@case("tensor: .npy header claims 77 G values", DataLoadError, "cannot be read")
def _(tmp: Path) -> Action:
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 3, 16, 16), }".ljust(117) + b"\n"
    path = _written(tmp / "huge.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    return lambda: load_tensor_file(path)


@case("tensor: raw protocol-4 pickle", DataLoadError, "not a torch.save archive")
def _(tmp: Path) -> Action:
    path = _written(tmp / "raw.pt", pickle.dumps({"images": [1.0, 2.0]}, protocol=4))
    return lambda: load_tensor_file(path)


@case("tensor: pickled os.system", DataLoadError, "posix.system")
def _(tmp: Path) -> Action:
    path = tmp / "evil.pt"
    torch.save({"images": _Pwned()}, path)
    return lambda: load_tensor_file(path)


@case("image: 13000 × 13000 PNG", DataLoadError, "IMAGE_MAX_PIXELS")
def _(tmp: Path) -> Action:
    upload = [("big.png", png_header(13000, 13000))]
    return lambda: load_uploaded_images(upload, (3, 16, 16), (0.5,) * 3, (0.5,) * 3)


@case("checkpoint: complex64 weight", ModelLoadError, "complex64")
def _(tmp: Path) -> Action:
    path = _checkpoint_with(tmp, "complex.safetensors", lambda w: w.to(torch.complex64) * (1 + 1j))
    return lambda: load_checkpoint(path, "demo")


@case("checkpoint: int64 weight", ModelLoadError, "int64")
def _(tmp: Path) -> Action:
    path = _checkpoint_with(tmp, "int.safetensors", lambda w: (w * 100).to(torch.int64))
    return lambda: load_checkpoint(path, "demo")


@case("checkpoint: pickled os.system", ModelLoadError, "posix.system")
def _(tmp: Path) -> Action:
    path = tmp / "evil.pth"
    torch.save({"state_dict": _Pwned()}, path)
    return lambda: load_checkpoint(path, "demo")


@case("checkpoint: raw protocol-4 pickle", ModelLoadError, "not a torch.save archive")
def _(tmp: Path) -> Action:
    path = _written(tmp / "raw.pth", pickle.dumps({"w": 1}, protocol=4))
    return lambda: load_checkpoint(path, "demo")


@case("observer: MinMax uint8 on [-3e38, 3e38]", ValueError, "not a finite float32")
def _(tmp: Path) -> Action:
    return lambda: _minmax_params(-3e38, 3e38)


@case("batch: 4096 on the demo ViT", ValueError, "CALIBRATION_MEMORY_BYTES")
def _(tmp: Path) -> Action:
    bounds = calibration_bounds(architecture("demo"))
    return lambda: bounds.check(4096, 4)


@case("batch: 100000 batches of 8 on ViT-B/16", ValueError, "CALIBRATION_INPUT_BYTES")
def _(tmp: Path) -> Action:
    bounds = calibration_bounds(architecture("vit_base_patch16_224"))
    return lambda: bounds.check(8, 100_000)


def _minmax_params(lo: float, hi: float) -> object:
    observer = MinmaxObserver(BitType(8, False, "uint8"), "activation", "layer_wise")
    observer.update(torch.tensor([[lo, hi]]))
    return observer.get_quantization_params()


@dataclass(frozen=True)
class Outcome:
    """What a case raised (None: nothing), with its message, seconds and added peak resident memory."""

    error: type[BaseException] | None
    message: str
    seconds: float
    peak_mib: float


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmSize, VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _cap_memory() -> None:
    """Worker start: one thread, then cap the address space at its current size plus the cap."""
    torch.set_num_threads(1)
    limit = _status_kib("VmSize") * 1024 + MEMORY_CAP_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _run_case(name: str, tmp: str) -> Outcome:
    """In the worker: prepare case ``name``, then time its action and measure its peak resident memory."""
    action = CASES[name].prepare(Path(tmp))
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size, to the current one
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    error: type[BaseException] | None = None
    message = ""
    try:
        action()
    except Exception as exc:  # every failure is the outcome under test, MemoryError included
        error, message = type(exc), str(exc)
    seconds = time.perf_counter() - start
    return Outcome(error, message, seconds, (_status_kib("VmHWM") - before) / 1024)


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessPoolExecutor]:
    """One spawned process, memory-capped after its imports, that runs every case in turn."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_cap_memory) as pool:
        yield pool


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # refused before decoding anyway
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_case_ends_in_its_typed_error(name: str, worker: ProcessPoolExecutor, tmp_path: Path) -> None:
    outcome = worker.submit(_run_case, name, str(tmp_path)).result()
    print(f"\n{name}: {outcome.seconds * 1000:.1f} ms, +{outcome.peak_mib:.1f} MiB — {outcome.message[:160]}")
    expected = CASES[name]
    assert outcome.error is expected.error, outcome.message
    assert expected.fragment in outcome.message
    assert "weights_only" not in outcome.message  # never advise loading code from a data file


# ----- server paths while serving: refused paths answer alike -------------------------------------


def test_paths_outside_the_roots_answer_like_missing_ones(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "images").mkdir()
    (root / "escape").symlink_to("/etc")
    policy = PathPolicy((root.resolve(),))
    assert policy.resolve(str(root / "images"), DataLoadError) == (root / "images").resolve()

    def refusal(text: str) -> str:
        with pytest.raises(DataLoadError) as info:
            policy.resolve(text, DataLoadError)
        return str(info.value).replace(text, "<path>")

    refusals = {
        refusal(text)
        for text in ("/etc", "/etc/passwd", "/etc/no-such-file", str(root / "missing"), str(root / "escape"), "../..")
    }
    assert len(refusals) == 1, refusals
    assert "allowed data folders" in refusals.pop()


def test_path_policy_from_the_environment(tmp_path: Path) -> None:
    assert path_policy({}) == PathPolicy(None)
    assert path_policy({SERVE_ENV: "1"}) == PathPolicy(())
    assert path_policy({SERVE_ENV: "1", ROOTS_ENV: f"{tmp_path}{os.pathsep}"}).roots == (tmp_path.resolve(),)
    with pytest.raises(ModelLoadError, match="disabled"):
        path_policy({SERVE_ENV: "yes"}).resolve("/etc/passwd", ModelLoadError)
    assert PATHS_DISABLED.startswith("server paths are disabled")


def test_numpy_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataLoadError, match="cannot be read"):
        load_tensor_file(path)
