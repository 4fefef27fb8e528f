"""Data-loader throughput with training-time augmentation: clips/s of one worker (``--workers
0``: the main process is the worker) and of W workers, for no augmentation, each family alone,
and a chain, on the real ``mini_la`` train clips (1.5 s random crops, repeat-padded, as
``experiment=mini_best``); and the per-batch cost of SpecAugment, which runs in the net on the
model's device.

    python benchmarks/augment_loader.py --clips 480 --workers 0 2
    python benchmarks/augment_loader.py --chains none rawboost "rawboost,noise,codec,reverb"

Each cell: one warm-up batch, then the time to the next N clips; median of ``--repeats``.
Torch runs at one thread in the main process (as in a DataLoader worker).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_loader import DEFAULT_MINI_LA, code_revision, mini_la_rows  # noqa: E402

from deepfake_detect.augment import AugmentContext, SpecAugment, build_augmentation  # noqa: E402
from deepfake_detect.data.dataset import SpoofDataset, collate_waveforms  # noqa: E402
from deepfake_detect.data.sampling import EpochSampler  # noqa: E402

ROOT = HERE.parent
BATCH = 32
MAX_LEN = 24000


def chain(names: str, rows: list) -> list:
    choice = "none" if names == "none" else f"[{names}]"
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train.yaml", overrides=[f"augment={choice}"])
    waves, _ = build_augmentation(cfg.augment)
    for wave in waves:
        wave.prepare(AugmentContext(16000, rows))
    return waves


def clips_per_second(rows: list, transforms: list, clips: int, workers: int, seed: int) -> float:
    dataset = SpoofDataset(
        rows, 16000, MAX_LEN, random_crop=True, pad="repeat", transforms=transforms
    )
    sampler = EpochSampler(len(dataset), seed)
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_waveforms,
    )
    it = iter(loader)
    next(it)
    done, start = 0, time.perf_counter()
    while done < clips:
        done += len(next(it)["label"])
    elapsed = time.perf_counter() - start
    del it
    return done / elapsed


def specaugment_ms(repeats: int) -> float:
    """SpecAugment on one batch of LCNN features (32 x 151 frames x 60 dims), ms."""
    masking = SpecAugment()
    features = torch.randn(BATCH, MAX_LEN // 160 + 1, 60)
    frames = torch.full((BATCH,), features.shape[1])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        masking(features, frames)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=480)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chains",
        nargs="+",
        default=[
            "none",
            "rawboost",
            "noise",
            "babble",
            "reverb",
            "codec",
            "channel",
            "rawboost,noise,codec,reverb",
        ],
    )
    parser.add_argument("--mini-la", type=Path, default=DEFAULT_MINI_LA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pkg, rev = code_revision()
    print(f"package: {pkg}\ngit revision: {rev}")
    rows = mini_la_rows(args.mini_la)
    print(
        f"mini_la train, {len(rows)} files; crops of {MAX_LEN} samples, batch {BATCH}; "
        f"median of {args.repeats}\n"
    )
    head = [
        "augment",
        *(f"clips/s, {w} workers" if w else "clips/s, 1 (in-process)" for w in args.workers),
        "ms/clip (1 worker)",
    ]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for names in args.chains:
        transforms = chain(names, rows)
        rates = []
        for workers in args.workers:
            runs = [
                clips_per_second(rows, transforms, args.clips, workers, seed)
                for seed in range(args.repeats)
            ]
            rates.append(statistics.median(runs))
        one = rates[args.workers.index(0)] if 0 in args.workers else float("nan")
        cells = [names, *(f"{r:.0f}" for r in rates), f"{1000 / one:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(
        f"\nSpecAugment per batch on the model's device (CPU here): "
        f"{specaugment_ms(20):.2f} ms / batch of {BATCH}"
    )


if __name__ == "__main__":
    main()
