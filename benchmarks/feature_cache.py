"""The frozen-encoder feature cache: wall time of a frozen Wav2Vec2-base run (random init, the
wav2vec2-base architecture, ``model.freeze=all``) with and without ``data.feature_cache``, end to
end (process start to exit, the cache's fill in the first epoch included), and of a head sweep
(different head learning rate / dropout per trial) with and without one cache shared by all
trials. Every run is one ``python train.py`` process, one after another; the table is printed.

    python benchmarks/feature_cache.py --data-dir ../shared/data
    python benchmarks/feature_cache.py --data-dir ../shared/data --limit 32 --trials 10 \\
        --uncached-trials 1 --out /tmp/feature_cache_bench

``--limit N`` keeps a seeded N-utterance subset of each selection (``data.limit_per_set``; train
and dev), ``--trials`` the cached sweep's trials, ``--uncached-trials`` how many uncached trials
are actually run (the rest of an uncached sweep is the same run again with another head: its
time is given as trials x the measured mean, marked as extrapolated; 0: the single uncached
run stands for one trial). Testing is off in every run
(``test=false``, ``data.test=[]``): it is the same waveform scoring with or without the cache.
The manifests are scanned once before the timed runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def base_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        "data=mini",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        "data.test=[]",
        "test=false",
        "model=w2v2_linear",
        "model.net.pretrained=false",
        "model.freeze=all",
        "trainer=cpu",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        f"data.limit_per_set={args.limit}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"data.cache_dir={out / 'manifests'}",
        f"seed={args.seed}",
    ]


def run(name: str, overrides: list[str], out: Path) -> dict:
    run_dir = out / name
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"{name}: train.py failed ({result.returncode})")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    fill = next((line for line in log.splitlines() if "feature cache on:" in line), "")
    row = {"name": name, "wall_s": wall, "val_eer": metrics.get("val/eer"), "fill": fill}
    print(f"{name}: {wall:.1f} s, val/eer {row['val_eer']}  {fill[-110:]}", flush=True)
    return row


def warm_manifests(args: argparse.Namespace, out: Path) -> None:
    """Scan the selections once (the manifest cache), so no timed run pays for it."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=base_overrides(args, out))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "warm")
    instantiate(cfg.data).prepare_data()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=None, help="run folder (default: a new temp folder)")
    parser.add_argument("--limit", type=int, default=32, help="utterances per selection")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--uncached-trials", type=int, default=10)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["single", "sweep", "uncached", "cached"]
    )
    args = parser.parse_args()
    out = Path(args.out or f"/tmp/feature_cache_bench_{int(time.time())}")
    out.mkdir(parents=True, exist_ok=True)
    warm_manifests(args, out)
    common = base_overrides(args, out)
    cache = "data.feature_cache.enabled=true"
    rows: list[dict] = []
    if "single" not in args.skip:
        if "uncached" not in args.skip:
            rows.append(run("uncached", common, out))
        single_dir = f"data.feature_cache.dir={out / 'features_single'}"
        if "cached" not in args.skip:
            rows.append(run("cached_cold", [*common, cache, single_dir], out))
            rows.append(run("cached_warm", [*common, cache, single_dir], out))
    sweep: dict[str, list[dict]] = {"cached": [], "uncached": []}
    if "sweep" not in args.skip:
        rng = random.Random(args.seed)
        heads = [
            (10 ** rng.uniform(-4, -2), round(rng.uniform(0.0, 0.5), 2)) for _ in range(args.trials)
        ]
        sweep_dir = f"data.feature_cache.dir={out / 'features_sweep'}"
        for i, (lr, dropout) in enumerate(heads):
            head = [f"model.optimizer.lr={lr:.2e}", f"model.net.dropout={dropout}"]
            sweep["cached"].append(
                run(f"sweep_cached_{i}", [*common, cache, sweep_dir, *head], out)
            )
        for i, (lr, dropout) in enumerate(heads[: args.uncached_trials]):
            head = [f"model.optimizer.lr={lr:.2e}", f"model.net.dropout={dropout}"]
            sweep["uncached"].append(run(f"sweep_uncached_{i}", [*common, *head], out))

    print(
        f"\n{args.limit} train + {args.limit} dev utterances of mini_la, {args.epochs} epochs, "
        f"batch {args.batch_size}, wav2vec2-base architecture (random init, frozen)\n"
    )
    print("| run | wall (s) | speed-up | val EER |")
    print("|---|---|---|---|")
    base = rows[0]["wall_s"] if rows and rows[0]["name"] == "uncached" else None
    for row in rows:
        speed = f"{base / row['wall_s']:.1f}x" if base else ""
        print(f"| {row['name']} | {row['wall_s']:.0f} | {speed} | {row['val_eer']:.4f} |")
    if sweep["cached"]:
        cached_total = sum(r["wall_s"] for r in sweep["cached"])
        n = len(sweep["cached"])
        print(f"\n| {n}-trial head sweep | wall (s) | per trial (s) |")
        print("|---|---|---|")
        print(
            f"| cached (one cache, shared) | {cached_total:.0f} | "
            f"{statistics.mean(r['wall_s'] for r in sweep['cached']):.0f} "
            f"(first {sweep['cached'][0]['wall_s']:.0f}, then "
            f"{statistics.mean(r['wall_s'] for r in sweep['cached'][1:] or sweep['cached']):.0f}) |"
        )
        uncached = sweep["uncached"] or [r for r in rows if r["name"] == "uncached"]
        if uncached:
            mean = statistics.mean(r["wall_s"] for r in uncached)
            measured = len(uncached)
            total = mean * n
            note = "" if measured == n else f" (extrapolated from {measured} measured)"
            print(f"| uncached | {total:.0f}{note} | {mean:.0f} |")
            print(f"\nsweep speed-up: {total / cached_total:.1f}x")
    (out / "results.json").write_text(json.dumps({"single": rows, "sweep": sweep}, indent=1))
    print(f"\nruns: {out}")


if __name__ == "__main__":
    main()
