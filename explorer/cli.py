"""``observer-explorer`` (also ``python -m explorer``): calibrate where the model and data are,
then report on or export a saved run anywhere.

- ``calibrate`` writes a run file (under ``torchrun``, every process calibrates its share of the
  batches and rank 0 writes the combined run);
- ``report`` writes a self-contained HTML page of a run;
- ``export`` writes the quantization parameters of a config for every point (JSON or safetensors).

Progress goes to stderr, a one-line summary to stdout. Exit status: 0 done, 2 bad usage or input
(one line, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from explorer.analysis import ExplorerRun, RunFileError, run_calibration
from explorer.analysis.distributed import Ranks, gather, join, leave, shard
from explorer.analysis.export import parameters_json, parameters_safetensors
from explorer.analysis.provenance import DataIdentity, ModelIdentity, RunSource, file_sha256
from explorer.analysis.runfile import read_header
from explorer.config import ConfigError, ConfigWarning, QuantConfig, load_config
from explorer.data import DEMO_ARCH, DataLoadError, ModelLoadError, batched, model_input_config
from explorer.data.models import CHECKPOINT_EXTENSIONS
from explorer.stats import DEFAULT_ALPHA_FLOOR
from explorer.ui.sources import DataSource, ModelSource, load_images, load_model  # the app's loaders (no Streamlit)

PROG = "observer-explorer"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recommended_config.yaml"
EXPORT_SUFFIXES = (".json", ".safetensors")
BAR_WIDTH = 30


class UsageError(Exception):
    """Bad arguments or input: reported in one line, exit status 2."""


INPUT_ERRORS = (UsageError, ConfigError, DataLoadError, ModelLoadError, RunFileError, OSError, ValueError)
"""What bad usage or input raises (ConfigError and RunFileError are ValueErrors, a missing file an OSError)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line, exit 2) instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


class Progress:
    """A text progress bar on stderr (silent when ``enabled`` is false, e.g. on ranks other than 0)."""

    def __init__(self, what: str, enabled: bool = True) -> None:
        self.what, self.enabled, self.drawn = what, enabled, False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = BAR_WIDTH * done // max(1, total)
        sys.stderr.write(f"\r{self.what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False


# ----- calibrate --------------------------------------------------------------------------------


def model_source(text: str, arch: str | None, pretrained: bool) -> ModelIdentity:
    """``--model``: ``demo``, a checkpoint path (with ``--arch``, default the demo's) or a timm name."""
    if text == "demo":
        if arch or pretrained:
            raise UsageError("--arch and --pretrained do not apply to --model demo")
        return ModelIdentity("demo")
    path = Path(text)
    if path.suffix.lower() in CHECKPOINT_EXTENSIONS or path.exists():
        if pretrained:
            raise UsageError("--pretrained applies to timm names, not to a checkpoint file")
        if not path.is_file():
            raise UsageError(f"--model {text}: no such checkpoint file")
        return ModelIdentity("checkpoint", arch or DEMO_ARCH, path=str(path.resolve()))
    if arch:
        raise UsageError("--arch applies to a checkpoint file (it names the checkpoint's architecture)")
    return ModelIdentity("timm", text, pretrained=pretrained)


def data_source(text: str) -> DataIdentity:
    """``--data``: ``demo``, an image folder or a tensor file."""
    if text == "demo":
        return DataIdentity("demo")
    path = Path(text)
    if path.is_dir():
        return DataIdentity("folder", str(path.resolve()), f"images in {path}")
    if path.is_file():
        return DataIdentity("tensor", str(path.resolve()), f"tensor file {path.name}")
    raise UsageError(f"--data {text}: no such folder or file; give demo, an image folder or a tensor file")


def _config(path: str | None) -> QuantConfig:
    if path is not None:
        return load_config(Path(path))
    return load_config(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else load_config({})


def _writable(path: str) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise UsageError(f"--out {path}: the folder {out.parent} does not exist")
    return out


def calibrate(args: argparse.Namespace, ranks: Ranks) -> str | None:
    """Calibrate this rank's batches; rank 0 writes the combined run and returns the summary."""
    start = time.perf_counter()
    out = _writable(args.out)
    identity, data = model_source(args.model, args.arch, args.pretrained), data_source(args.data)
    config = _config(args.config)
    source = ModelSource(identity.kind, identity.name, identity.pretrained, identity.path)
    model = load_model(source, ranks.device)
    images = load_images(DataSource(data.kind, data.path), model_input_config(model), args.batches * args.batch_size)
    batches = batched(images, args.batch_size, args.batches)
    if len(batches) < ranks.world:
        raise UsageError(f"{len(batches)} batch(es) for {ranks.world} processes: give at least one batch per process")
    bar = Progress(f"calibrating on {ranks.world} process(es)" if ranks.world > 1 else "calibrating", ranks.is_main)
    mine = shard(batches, ranks)
    try:
        run = run_calibration(
            model,
            [b.to(ranks.device) for b in mine],
            config,
            args.alpha_floor,
            lambda done: bar(done, len(mine)),
        )
    finally:
        bar.close()
    merging = time.perf_counter()
    capture = gather(run.capture, ranks, args.alpha_floor)
    if capture is None:
        return None
    merged = f" (merging the ranks {time.perf_counter() - merging:.1f} s)" if ranks.world > 1 else ""
    if identity.kind == "checkpoint":
        identity = dataclasses.replace(identity, sha256=file_sha256(identity.path))
    run = dataclasses.replace(run, capture=capture, source=RunSource(identity, data, args.batch_size))
    run.save(out)
    refused = f", {len(capture.errors)} refused" if capture.errors else ""
    return (
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {identity.describe()}, {run.batches} batch(es) of "
        f"{args.batch_size}, {run.num_blocks} blocks, {len(capture.stats)} points{refused}, "
        f"{time.perf_counter() - start:.1f} s on {ranks.world} process(es){merged}"
    )


# ----- report and export ------------------------------------------------------------------------


def _load(path: str) -> ExplorerRun:
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such run file")
    return ExplorerRun.load(path)


def report(args: argparse.Namespace) -> str:
    """Write the HTML report of a run file."""
    from explorer.report import report_html  # plotly and the charts only when reporting

    run, out = _load(args.run_file), _writable(args.out)
    bar = Progress("scoring the observers")
    try:
        page = report_html(
            run, f"Observer Explorer — {Path(args.run_file).name}", read_header(Path(args.run_file)), bar
        )
    finally:
        bar.close()
    out.write_text(page, encoding="utf-8")
    return f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(run.points)} points of {run.num_blocks} blocks"


def export(args: argparse.Namespace) -> str:
    """Write the quantization parameters of ``--config`` for every point of a run file."""
    out = _writable(args.out)
    if out.suffix.lower() not in EXPORT_SUFFIXES:
        raise UsageError(f"--out {args.out}: the file must end in {' or '.join(EXPORT_SUFFIXES)}")
    run, config = _load(args.run_file), load_config(Path(args.config))
    if out.suffix.lower() == ".json":
        out.write_text(parameters_json(run, config), encoding="utf-8")
    else:
        out.write_bytes(parameters_safetensors(run, config))
    return f"wrote {out}: the parameters of {args.config} for the {len(run.points)} points of {args.run_file}"


# ----- entry point ------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line: ``calibrate``, ``report`` and ``export``."""
    top = _Parser(prog=PROG, description="Calibrate ViT quantization observers anywhere; explore, report, export.")
    commands = top.add_subparsers(dest="command", required=True)
    cal = commands.add_parser("calibrate", help="calibrate a model and write a run file")
    cal.add_argument("--model", default="demo", help="demo, a timm name, or a checkpoint path (default demo)")
    cal.add_argument("--arch", help="architecture of a checkpoint: demo or a timm name (default demo)")
    cal.add_argument("--pretrained", action="store_true", help="timm models: load pretrained weights")
    cal.add_argument("--data", default="demo", help="demo, an image folder, or a tensor file (default demo)")
    cal.add_argument("--batches", type=_positive, default=4, help="calibration batches (default 4)")
    cal.add_argument("--batch-size", type=_positive, default=32, help="images per batch (default 32)")
    cal.add_argument("--config", help=f"base config YAML (default {DEFAULT_CONFIG.name})")
    cal.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to calibrate (default cpu)")
    cal.add_argument(
        "--alpha-floor",
        type=float,
        default=DEFAULT_ALPHA_FLOOR,
        help=f"lowest percentile_alpha the run can be refitted at, in (0.5, 1] (default {DEFAULT_ALPHA_FLOOR})",
    )
    cal.add_argument("--out", required=True, help="the run file to write")
    rep = commands.add_parser("report", help="write a self-contained HTML report of a run file")
    rep.add_argument("run_file")
    rep.add_argument("--out", required=True, help="the HTML file to write")
    exp = commands.add_parser("export", help="write a config's quantization parameters for every point")
    exp.add_argument("run_file")
    exp.add_argument("--config", required=True, help="the config YAML whose parameters to export")
    exp.add_argument("--out", required=True, help="PARAMS.json or PARAMS.safetensors")
    return top


def _run(args: argparse.Namespace) -> str | None:
    if args.command == "report":
        return report(args)
    if args.command == "export":
        return export(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no usable GPU here; use --device cpu")
    ranks = join(args.device)
    try:
        return calibrate(args, ranks)
    finally:
        leave()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    where = f" (rank {os.environ.get('RANK', '?')} of {world})" if world > 1 else ""
    try:
        args = parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)  # advice on the config, not problems with the input
            summary = _run(args)
    except INPUT_ERRORS as exc:
        print(f"{PROG}: error{where}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error: show where it happened
        traceback.print_exc()
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if summary is not None:
        print(summary)
    return 0
