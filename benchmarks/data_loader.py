"""Data-loader throughput of the training Dataset: 4 s random crops (repeat padding).

Measures ``deepfake_detect.data.dataset.SpoofDataset(rows, sample_rate=16000, max_len=64000,
random_crop=True, pad="repeat")`` read through a ``DataLoader`` (batch 16, shuffled,
``collate_waveforms``) on

- ``short``: the real FLAC clips of ``mini_la`` (ASVspoof 2019 LA train split; 0.3-4 s, mean
  0.9 s, so most are shorter than the crop and read whole), and
- ``60 s``: synthetic 60 s FLAC files (filtered noise + tones, PCM_16, seeded), written by this
  script into a temporary folder, at 16 kHz and (``--rates``) 44.1 kHz, which adds resampling.

``mini_la`` rows come from the cached manifest (``deepfake_detect.data.manifest_cache.
load_selection``, header scan, as ``SpoofDataModule.prepare_data`` builds it; the cache lives in
``--manifest-cache``, a temporary folder by default), so crops are read by seeking to the frame
counts the scan stored; synthetic rows carry ``num_frames``, ``sample_rate`` and ``channels``
from ``soundfile.info``. The page cache is warmed by reading every file once, so the numbers are
decode + preprocessing, not disk.
Each cell: one warm-up batch (worker start-up included there), then the time to the next N clips;
median of ``--repeats`` runs, each with a fresh DataLoader (shuffle seeds seed, seed+1, ...).
``ms/clip`` is wall time per clip (with W workers, W clips are in flight at once);
``clips/s per worker`` is clips/s divided by the worker count (workers=0: the main process, 1).

Evaluation (``--eval-clips``, 0 to skip): the datamodule's evaluation read (whole utterances,
``SpoofDataset(rows, 16000, None)``, zero-padded to the longest of each batch by
``collate_waveforms``) of the ``mini_la`` eval rows in two orders at ``--eval-batch``:
longest first (``longest_first``, what ``SpoofDataModule._eval_loader`` uses) and a seeded random
order. ``padded %``: zero samples / all samples of the batches as collated (the model's wasted
input); ``clips/s``: loading only, one pass (worker start-up included, as in a real test run).

Torch's intra-op threads in the main process are set by ``--threads`` (default 1, as in DataLoader
workers), so ``workers=0`` is the cost of one worker.

Which code is measured is whatever ``import deepfake_detect`` finds; the script prints its path
and git revision. To measure a checkout other than the installed one, put it first on PYTHONPATH:

    PYTHONPATH=/path/to/checkout python benchmarks/data_loader.py
    python benchmarks/data_loader.py --short 1600 --long 100 --workers 0 1 2 --repeats 3
    python benchmarks/data_loader.py --short 320 --long 0 --repeats 1 --eval-clips 320  # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import deepfake_detect
from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.dataset import (
    OrderedSampler,
    SpoofDataset,
    collate_waveforms,
    longest_first,
)
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.data.manifest_cache import load_selection

BATCH = 16
MAX_LEN = 64000  # 4 s at 16 kHz
DEFAULT_MINI_LA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini_la"


def code_revision() -> tuple[str, str]:
    """(package folder, short git revision of the tree it lives in, '+dirty' if it has edits)."""
    pkg = Path(deepfake_detect.__file__).resolve().parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    if git("status", "--porcelain", "--untracked-files=no", "--", "."):
        rev += "+dirty (uncommitted edits in the package)"
    return str(pkg), rev


def with_header(utt_id: str, path: Path, label: str) -> Utterance:
    info = sf.info(str(path))
    row = Utterance(utt_id, str(path), label)
    row.num_frames, row.sample_rate, row.channels = info.frames, info.samplerate, info.channels
    return row


def mini_la_rows(root: Path, split: str, cache_dir: Path) -> tuple[list[Utterance], bool]:
    """The split's rows from the cached manifest (built on first use): (rows, read from cache)."""
    corpus = ASVspoof2019(root)
    manifest = load_selection(corpus, {"root": str(root), "track": "LA"}, split, cache_dir)
    rows = [r for r in manifest.rows if r.num_frames is not None]
    if not rows:
        raise SystemExit(f"no rows with frame counts in {root} ({split})")
    return rows, manifest.cached


def synth_file(path: Path, seconds: float, rate: int, rng: np.random.Generator) -> None:
    """Band-limited noise with a slow envelope plus a few gliding tones, about -20 dBFS RMS."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    lo, hi = rng.uniform(80, 300), rng.uniform(3000, min(7500, rate / 2 - 100))
    shape = 1 / np.sqrt(np.maximum(freqs, 1.0))  # pinkish
    shape[(freqs < lo) | (freqs > hi)] *= 0.05
    noise = np.fft.irfft(spec * shape, n)
    noise *= 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)  # syllable-rate envelope
    tones = np.zeros(n)
    for _ in range(3):
        f0 = rng.uniform(100, 1200)
        glide = f0 * 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t)
        tones += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * np.cumsum(f0 + glide) / rate)
    x = noise / noise.std() + 0.5 * tones / tones.std()
    x *= 0.1 / x.std()
    sf.write(str(path), np.clip(x, -1, 1).astype(np.float32), rate, subtype="PCM_16")


def synth_rows(folder: Path, count: int, seconds: float, rate: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng([seed, rate])
    rows = []
    for i in range(count):
        path = folder / f"synth_{rate}_{i:03d}.flac"
        synth_file(path, seconds, rate, rng)
        rows.append(with_header(path.stem, path, "bonafide" if i % 2 else "spoof"))
    return rows


def warm_page_cache(rows: list[Utterance]) -> None:
    for row in rows:
        Path(row.path).read_bytes()


def tiled(rows: list[Utterance], n: int) -> list[Utterance]:
    """At least ``n`` rows, cycling through ``rows`` (so one epoch covers warm-up + N clips)."""
    out = []
    for i in range(n):
        src = rows[i % len(rows)]
        out.append(dataclasses.replace(src, utt_id=f"{src.utt_id}#{i // len(rows)}"))
    return out


def clips_per_second(rows: list[Utterance], clips: int, workers: int, seed: int) -> float:
    dataset = SpoofDataset(rows, sample_rate=16000, max_len=MAX_LEN, random_crop=True, pad="repeat")
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_waveforms,
        generator=torch.Generator().manual_seed(seed),
    )
    torch.manual_seed(seed)  # crop positions in the main process
    it = iter(loader)
    first = next(it)  # warm-up (and worker start-up)
    assert first["wave"].shape[-1] == MAX_LEN, first["wave"].shape
    done = 0
    start = time.perf_counter()
    while done < clips:
        batch = next(it)
        done += len(batch["label"])
    elapsed = time.perf_counter() - start
    del it
    return done / elapsed


def eval_pass(
    rows: list[Utterance], order: list[int], batch: int, workers: int
) -> tuple[float, float]:
    """(clips/s, padded fraction) of one pass of the evaluation read over ``rows`` in
    ``order``."""
    dataset = SpoofDataset(rows, sample_rate=16000, max_len=None, random_crop=False)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=OrderedSampler(order),
        num_workers=workers,
        collate_fn=collate_waveforms,
    )
    padded = total = clips = 0
    start = time.perf_counter()
    for collated in loader:
        n, width = collated["wave"].shape
        total += n * width
        padded += n * width - int(collated["lengths"].sum())
        clips += n
    return clips / (time.perf_counter() - start), padded / total


def eval_table(rows: list[Utterance], batch: int, workers: list[int], seed: int) -> list[str]:
    orders = {
        "longest first": longest_first(rows),
        "random": [int(i) for i in np.random.default_rng(seed).permutation(len(rows))],
    }
    lines = [
        "| order | batch | workers | padded % | clips/s | clips/s per worker |",
        "|---|---|---|---|---|---|",
    ]
    for name, order in orders.items():
        for w in workers:
            cps, padded = eval_pass(rows, order, batch, w)
            lines.append(
                f"| {name} | {batch} | {w} | {100 * padded:.1f} | {cps:.1f} | "
                f"{cps / max(w, 1):.1f} |"
            )
            print(f"  eval {name}, workers={w}: {cps:.1f} clips/s, {100 * padded:.1f} % padded")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", type=int, default=1600, help="clips timed on mini_la files")
    parser.add_argument("--long", type=int, default=100, help="clips timed on 60 s files")
    parser.add_argument("--long-files", type=int, default=20, help="synthetic 60 s files")
    parser.add_argument("--long-seconds", type=float, default=60.0)
    parser.add_argument(
        "--rates",
        type=int,
        nargs="+",
        default=[16000, 44100],
        help="sample rates of the synthetic long files",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, main process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mini-la", type=Path, default=DEFAULT_MINI_LA)
    parser.add_argument(
        "--manifest-cache", type=Path, help="manifest cache folder (default: a temporary one)"
    )
    parser.add_argument(
        "--eval-clips", type=int, default=-1, help="eval rows read (-1: all, 0: skip)"
    )
    parser.add_argument("--eval-batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pkg, rev = code_revision()
    print(f"package: {pkg}")
    print(f"git revision: {rev}")
    print(
        f"torch {torch.__version__}, soundfile {sf.__version__}, libsndfile "
        f"{sf.__libsndfile_version__}, python {platform.python_version()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"SpoofDataset(rows, sample_rate=16000, max_len={MAX_LEN}, random_crop=True, "
        f"pad='repeat'); DataLoader batch {BATCH}, shuffle, collate_waveforms; median of "
        f"{args.repeats} runs after one warm-up batch"
    )
    print()

    sets: list[tuple[str, str, list[Utterance], int]] = []
    with tempfile.TemporaryDirectory(prefix="bench_data_loader_") as tmp:
        cache = args.manifest_cache or Path(tmp) / "manifests"
        if args.short > 0:
            rows, cached = mini_la_rows(args.mini_la, "train", cache)
            secs = [r.num_frames / r.sample_rate for r in rows]
            name = (
                f"mini_la train, {len(rows)} files "
                f"{min(secs):.1f}-{max(secs):.1f} s (mean {statistics.mean(secs):.1f} s)"
            )
            print(
                f"mini_la train manifest: {'cached' if cached else 'built and cached'} in {cache}"
            )
            rate = ",".join(str(r) for r in sorted({r.sample_rate for r in rows}))
            sets.append((name, rate, rows, args.short))
        if args.long > 0:
            for rate in args.rates:
                rows = synth_rows(Path(tmp), args.long_files, args.long_seconds, rate, args.seed)
                name = f"synthetic, {len(rows)} files x {args.long_seconds:g} s"
                sets.append((name, str(rate), rows, args.long))

        lines = [
            "| files | sample rate | workers | clips/s | ms/clip | clips/s per worker |",
            "|---|---|---|---|---|---|",
        ]
        for name, rate, rows, clips in sets:
            warm_page_cache(rows)
            rows = tiled(rows, max(len(rows), clips + 3 * BATCH))
            for workers in args.workers:
                runs = [
                    clips_per_second(rows, clips, workers, args.seed + r)
                    for r in range(args.repeats)
                ]
                cps = statistics.median(runs)
                lines.append(
                    f"| {name} | {rate} | {workers} | {cps:.1f} | {1000 / cps:.2f} | "
                    f"{cps / max(workers, 1):.1f} |"
                )
                print(
                    f"  {name} @ {rate} Hz, workers={workers}: "
                    + ", ".join(f"{r:.1f}" for r in runs)
                    + " clips/s",
                    flush=True,
                )
        eval_lines = []
        if args.eval_clips != 0:
            rows, _ = mini_la_rows(args.mini_la, "eval", cache)
            if args.eval_clips > 0:
                rows = rows[: args.eval_clips]
            warm_page_cache(rows)
            secs = [r.num_frames / r.sample_rate for r in rows]
            print(
                f"\nevaluation read, mini_la eval: {len(rows)} files "
                f"{min(secs):.1f}-{max(secs):.1f} s (mean {statistics.mean(secs):.1f} s)"
            )
            eval_lines = eval_table(rows, args.eval_batch, args.workers, args.seed)
    print()
    print("\n".join(lines))
    if eval_lines:
        print()
        print("\n".join(eval_lines))


if __name__ == "__main__":
    main()
