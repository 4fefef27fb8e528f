"""The console command ``deepfake-detect`` (``python -m deepfake_detect.cli``): one subcommand
per module of this package (:data:`SUBCOMMANDS`), each with ``add_parser(subparsers)`` and a
``run(args) -> int`` that the parser calls. Subcommand modules import the heavy machinery
(torch, the models) inside ``run``, so ``--help`` answers at once.

A user error (a missing or foreign checkpoint, a folder without audio, a bad option) prints
one line, ``error: <message>``, and exits 2, as argparse does for a bad command line; a bug
keeps its traceback. ``DEEPFAKE_DETECT_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from deepfake_detect.errors import find_user_error

SUBCOMMANDS = ("detect", "stream", "calibrate", "serve", "export", "compare", "cache")
"""Modules of this package, in the order ``--help`` lists them."""
USER_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-detect",
        description="Score audio for spoofing (AI-generated speech) with a trained checkpoint.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        sys.stderr.close()
        return 0
    except Exception as exc:
        found = find_user_error(exc)
        if found is None or os.environ.get("DEEPFAKE_DETECT_TRACEBACK", "") not in ("", "0"):
            raise
        sys.stderr.write(f"error: {found[1]}\n")
        return USER_ERROR_EXIT
