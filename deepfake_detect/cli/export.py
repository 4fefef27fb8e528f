"""``deepfake-detect export CKPT --format onnx|torchscript [--int8 dynamic|static] --output FILE``:
a trained checkpoint to a file that ``detect``, ``stream`` and ``serve`` run without the
checkpoint (:mod:`deepfake_detect.export`); prints a short report (size, parity, axes, time)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Export a trained checkpoint to ONNX (run with onnxruntime) or TorchScript. The file holds the
model side of the preprocessing contract (per-window normalisation, the net, the score) and
the metadata inference needs: sample rate, window, preprocessing, calibration, threshold and
reject band, the project version, and hashes that make a modified file fail to load. Batch and
length axes are dynamic where the graph allows; other models are exported at a fixed window
length (the report says which and why). Before the file is written its scores are compared
with the PyTorch model's on real clips (a few ../shared/data/mini_la eval clips by default):
fp32 must agree to 1e-4. --int8 (ONNX only) quantizes with onnxruntime: dynamic (MatMul/Gemm
weights) or static (weights and activations, ranges from --calibration clips); the report gives
its score drift. Needs the export extra: pip install -e ".[export]"."""

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (int8 optional)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="a checkpoint (.ckpt) written by training"
    )
    parser.add_argument(
        "--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)"
    )
    parser.add_argument(
        "--int8",
        choices=("dynamic", "static"),
        help="quantize to int8 with onnxruntime (ONNX only); static needs --calibration",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATH",
        help="clips for static int8: audio files' folder or a manifest (.csv/.tsv with a `path` "
        "column, or .txt), e.g. ../shared/data/mini_la/LA/ASVspoof2019_LA_dev/flac",
    )
    parser.add_argument(
        "--parity-clips",
        metavar="AUDIO",
        nargs="+",
        help="audio files to check parity on (default: a few mini_la eval clips when present, "
        "else synthetic tones with a warning)",
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        metavar="S",
        help="export at this fixed window length (default: dynamic length where the model "
        "allows it, else the training crop)",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="where to write (default: CKPT with .onnx, or .pt for TorchScript; int8 adds .int8)",
    )
    parser.set_defaults(run=run)


def default_output(checkpoint: str, fmt: str, int8: str | None) -> Path:
    path = Path(checkpoint)
    stem = path.stem + (".int8" if int8 else "")
    return path.with_name(stem + SUFFIXES[fmt])


def run(args: argparse.Namespace) -> int:
    from deepfake_detect.export import export_model

    output = (
        Path(args.output)
        if args.output
        else default_output(args.checkpoint, args.format, args.int8)
    )
    report = export_model(
        args.checkpoint,
        output,
        format=args.format,
        int8=args.int8,
        calibration=args.calibration,
        parity_clips=args.parity_clips,
        window_seconds=args.window_seconds,
    )
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    return 0
