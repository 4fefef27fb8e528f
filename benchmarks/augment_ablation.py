"""The augmentation ablation of ``experiment=mini_best``: the same model, seed and budget with no
augmentation, each augmentation family alone, and the chosen chain (and its other seeds); one
``python train.py`` run per row, one after another, then one table (EER %, mini_la eval per
attack, mini_wild, mini_wavefake).

    python benchmarks/augment_ablation.py --data-dir ../shared/data
    python benchmarks/augment_ablation.py --rows none rawboost --seeds 42
    python benchmarks/augment_ablation.py --rows chosen --seeds 42 1 2
    python benchmarks/augment_ablation.py --collect /tmp/ablation   # re-print finished runs

Each run's directory holds its full report; ``--collect`` rebuilds the table from them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS: dict[str, list[str]] = {
    "none": ["augment=none"],
    "rawboost": ["augment=rawboost"],
    "noise": ["augment=[noise,babble]"],
    "reverb": ["augment=reverb"],
    "codec": ["augment=[codec,channel]"],
    "specaugment": ["augment=specaugment"],
    "all": ["augment=[rawboost,noise,babble,reverb,codec,channel,specaugment]"],
    "chosen": [],  # experiment=mini_best as shipped
}
ATTACKS = [f"A0{i}" for i in range(1, 9)]


def run_dir(log_dir: Path, row: str, seed: int) -> Path:
    return log_dir / f"{row}_seed{seed}"


def run_one(row: str, seed: int, data_dir: Path, log_dir: Path, extra: list[str]) -> dict:
    out = run_dir(log_dir, row, seed)
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=mini_best",
        *ROWS[row],
        f"seed={seed}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    (out / "wall_s.txt").write_text(f"{wall:.1f}\n") if out.is_dir() else None
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return {"row": row, "seed": seed, "error": result.returncode}
    return collect_one(out, row, seed)


def collect_one(out: Path, row: str, seed: int) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["metrics"]
    wall = out / "wall_s.txt"
    return {
        "row": row,
        "seed": seed,
        "wall_s": float(wall.read_text()) if wall.is_file() else None,
        "epoch": Path(m.get("best_checkpoint", "")).stem,
        "samples_per_s": m.get("train/samples_per_s"),
        "sets": {name: rec["metrics"] for name, rec in metrics["test_sets"].items()},
    }


def cells(row: dict) -> list[float | None]:
    la = row["sets"].get("asvspoof2019_la", {})
    return [
        la.get("eer"),
        *(la.get(f"eer_{a}") for a in ATTACKS),
        row["sets"].get("in_the_wild", {}).get("eer"),
        row["sets"].get("wavefake", {}).get("eer"),
    ]


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(rows: list[dict]) -> str:
    head = ["augment", "seed", "best", "wall s", "mini_la eval", *ATTACKS, "mini_wild", "wavefake"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['row']} | {row['seed']} | failed ({row['error']}) |")
            continue
        wall = f"{row['wall_s']:.0f}" if row.get("wall_s") else "–"
        values = [pct(v) for v in cells(row)]
        lines.append(
            "| " + " | ".join([row["row"], str(row["seed"]), row["epoch"], wall, *values]) + " |"
        )
    by_row: dict[str, list[dict]] = {}
    for row in rows:
        if "error" not in row:
            by_row.setdefault(row["row"], []).append(row)
    for name, runs in by_row.items():
        if len(runs) < 2:
            continue
        columns = list(zip(*(cells(r) for r in runs), strict=True))
        summary = []
        for column in columns:
            values = [100 * v for v in column if v is not None]
            if not values:
                summary.append("–")
                continue
            mean = statistics.fmean(values)
            spread = (max(values) - min(values)) / 2
            summary.append(f"{mean:.1f} ± {spread:.1f}")
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {name} (mean ± half-range) | {seeds} | | | " + " | ".join(summary) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--collect", type=Path, default=None, help="only re-read finished runs")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every run")
    args = parser.parse_args()
    if args.collect:
        rows = []
        for out in sorted(args.collect.iterdir()):
            if (out / "metrics.json").is_file():
                name, _, seed = out.name.rpartition("_seed")
                rows.append(collect_one(out, name, int(seed)))
        print(table(rows))
        return
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="augment_ablation_"))
    rows = []
    for seed in args.seeds:
        for row in args.rows:
            rows.append(run_one(row, seed, args.data_dir.resolve(), log_dir, args.overrides))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\nexperiment=mini_best per row, runs in {log_dir}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
