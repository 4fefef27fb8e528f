"""`deepfake-detect cache`: the frozen-encoder feature cache's size report and clean-up.

    deepfake-detect cache info [DIR]
    deepfake-detect cache clear [DIR] [--key K] [--older-than DAYS]

DIR defaults to where ``data.feature_cache.dir`` points by default:
``$DEEPFAKE_DETECT_CACHE/features``, else ``~/.cache/deepfake-detect/features``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="size report and clean-up of the frozen-encoder feature cache",
        description="The frozen-encoder feature cache (data.feature_cache): one folder per key "
        "(encoder weights, layers, preprocessing, dtype), one file per utterance.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="size per key: encoder, layers, entries, bytes")
    info.add_argument("dir", nargs="?", help="cache folder (default: the config's)")
    clear = actions.add_parser("clear", help="remove keys (all, or those selected)")
    clear.add_argument("dir", nargs="?", help="cache folder (default: the config's)")
    clear.add_argument("--key", metavar="K", help="only keys whose name starts with K")
    clear.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="only keys no run has used for DAYS days",
    )
    parser.set_defaults(run=run)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _describe(meta: dict[str, Any]) -> tuple[str, str, str]:
    encoder = meta.get("encoder", {})
    arch = encoder.get("architecture", {})
    model = f"{str(encoder.get('encoder', '?'))[:12]} ({arch.get('num_hidden_layers', '?')}x"
    model += f"{arch.get('hidden_size', '?')})"
    pre = meta.get("preprocessing", {})
    preprocessing = (
        f"{pre.get('sample_rate')} Hz, {pre.get('normalize')}, trim {pre.get('trim_silence')}"
    )
    return model, str(encoder.get("states", "?")), preprocessing


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepfake_detect.data.feature_cache import cache_info, clear, default_dir

    root = Path(args.dir) if args.dir else default_dir()
    if args.action == "info":
        infos = cache_info(root)
        if not infos:
            print(f"{root}: no feature cache")
            return 0
        print(f"{root}:")
        header = ("key", "encoder", "states", "preprocessing", "dtype", "entries", "size", "used")
        table = [header]
        for info in infos:
            model, states, preprocessing = _describe(info.meta)
            table.append(
                (
                    info.key,
                    model,
                    states,
                    preprocessing,
                    str(info.meta.get("dtype", "?")),
                    str(info.entries),
                    _size(info.bytes),
                    _when(info.last_used),
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())
        total = sum(info.bytes for info in infos)
        print(f"{len(infos)} keys, {sum(i.entries for i in infos)} entries, {_size(total)}")
        return 0
    removed = clear(root, args.key, args.older_than)
    freed = sum(info.bytes for info in removed)
    print(f"{root}: removed {len(removed)} keys ({_size(freed)})")
    return 0
