"""Options that ``detect`` and ``calibrate`` share (how files are cut and scored)."""

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
