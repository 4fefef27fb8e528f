"""Options that subcommands share: how files are cut and scored (``detect``, ``calibrate``), and
the review folder (``detect``, ``stream``)."""

from __future__ import annotations

import argparse
from typing import Any

from deepfake_detect.inference.semantics import AGGREGATES


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default="mean",
        help="how a file's window scores make its score (default: mean)",
    )
    parser.add_argument(
        "--hop",
        type=float,
        metavar="SECONDS",
        help="hop between windows (default: half the window, the model's training crop)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="windows per forward pass (default: 16)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def scoring_options(args: argparse.Namespace, **extra: Any) -> Any:
    from deepfake_detect.inference.detect import DetectOptions

    options = DetectOptions(
        aggregate=args.aggregate,
        hop_seconds=args.hop,
        batch_size=args.batch_size,
        device=args.device,
        **extra,
    )
    options.check()
    return options


def add_review_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("review folder")
    group.add_argument(
        "--review-dir",
        metavar="DIR",
        help=f"save {what} decided spoof or uncertain here (audio, index.jsonl, and a "
        "manifest.csv to label and train on)",
    )
    group.add_argument(
        "--review-max-mb",
        type=float,
        metavar="MB",
        help="at most this much audio in the review folder (10^6 bytes); oldest dropped first",
    )
    group.add_argument(
        "--review-max-items",
        type=int,
        metavar="N",
        help="at most this many items in the review folder; oldest dropped first",
    )


def review_folder(args: argparse.Namespace, detector: Any) -> Any:
    """The review folder the options ask for (None without --review-dir)."""
    from deepfake_detect.inference.review import ReviewError, ReviewFolder

    if not args.review_dir:
        if args.review_max_mb is not None or args.review_max_items is not None:
            raise ReviewError("--review-max-mb / --review-max-items need --review-dir")
        return None
    max_bytes = None if args.review_max_mb is None else round(args.review_max_mb * 1e6)
    return ReviewFolder(
        args.review_dir,
        detector.preprocessing.sample_rate,
        model=str(detector.path),
        max_bytes=max_bytes,
        max_items=args.review_max_items,
    )
