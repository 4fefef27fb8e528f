"""``deepfake-detect detect MODEL PATHS...``: score files, folders and manifests; one CSV row or
JSON line per file (stdout, or ``--output``); a summary on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from deepfake_detect.cli.common import (
    add_review_options,
    add_scoring_options,
    review_folder,
    scoring_options,
)
from deepfake_detect.inference.semantics import SCORE_SEMANTICS

DESCRIPTION = """\
Score audio files with a trained checkpoint. PATHS are audio files, folders (searched
recursively for .wav .flac .mp3 .ogg .m4a) or manifests (.csv / .tsv with a `path` column, or a
.txt list of one path a line). One row per file: path, duration (s), score, p_spoof, decision,
windows, spoof_windows (the fraction of windows decided spoof), and the reason for a file that
could not be scored (unreadable, unsupported, empty, silent, NaN samples); JSON lines add the
per-window timeline (start s, end s, score, p_spoof). Exit status 0 when at least one file was
scored, 1 when none could be, 2 for a usage error (missing checkpoint, folder without audio)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="score files, folders or manifests",
        description=DESCRIPTION,
        epilog=SCORE_SEMANTICS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a checkpoint (.ckpt) written by training, or a file from `deepfake-detect export` "
        "(.onnx, TorchScript)",
    )
    parser.add_argument("paths", metavar="PATHS", nargs="+", help="files, folders or manifests")
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        help="output format (default: jsonl for an --output ending in .jsonl, else csv)",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--reject-band",
        type=float,
        metavar="P",
        help="uncertain when |p_spoof - 0.5| < P (default: the calibration's, 0.1)",
    )
    add_scoring_options(parser)
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress line on a terminal's stderr"
    )
    add_review_options(parser, "files")
    parser.set_defaults(run=run)


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower() if args.output else ""
    return "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else "csv"


def run(args: argparse.Namespace) -> int:
    from deepfake_detect.inference.detect import (
        DetectError,
        Progress,
        ResultWriter,
        Summary,
        collect_inputs,
        load_model,
        score_files,
    )

    options = scoring_options(args, reject_band=args.reject_band)
    detector = load_model(args.model)
    files = collect_inputs(args.paths)
    if not files:
        raise DetectError("no audio to score: the manifests list no files")
    review = review_folder(args, detector)
    started = time.monotonic()
    summary = Summary()
    progress = Progress(len(files), enabled=False if args.no_progress else None)
    results = score_files(detector, files, options, progress.audio)  # checks the options
    stream = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        writer = ResultWriter(stream, output_format(args))
        for result in results:
            writer.write(result)
            summary.add(result)
            if review is not None:
                review.add_result(result)
            progress.update(result)
    finally:
        progress.close()
        if stream is not sys.stdout:
            stream.close()
    lines = summary.lines(detector, time.monotonic() - started)
    if review is not None:
        lines += review.lines()
    if args.output:
        lines.append(f"written to {args.output}")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0 if sum(summary.decisions.values()) else 1
