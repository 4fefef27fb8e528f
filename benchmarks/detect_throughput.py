"""``detect`` throughput (audio hours per CPU hour) and peak memory on one long file.

    python benchmarks/detect_throughput.py [--models lcnn w2v2_linear] [--seconds 3600]
        [--threads 2] [--batch-size 16] [--hop SECONDS]

Each model runs in a fresh subprocess: it is built from its config in conf/model with random
weights (Wav2Vec2 encoders with ``pretrained=false``: the wav2vec2-base architecture, nothing
downloaded), saved as a checkpoint and loaded back the way ``deepfake-detect detect`` loads it;
then a synthetic file of ``--seconds`` (16 kHz PCM_16, written in blocks) is scored with
:func:`deepfake_detect.inference.detect.score_files`: windows of the 4 s training crop, half
overlapping, batched. Reported: windows scored, wall and CPU seconds (user + system, all
threads), audio hours per CPU hour, the real-time factor (wall / audio), and the process's peak
resident memory (``ru_maxrss``, libraries and weights included) next to the memory after
loading: the difference is what scoring the file costs (a 1-hour file is 230 MB as float32 at
16 kHz; ``detect`` reads it in blocks, so the difference stays far below that). Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GIB = 1024**3
RATE = 16000


def write_long_file(path: Path, seconds: float) -> None:
    """Speech-like noise (a drifting harmonic tone plus noise), written a minute at a time."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = int(seconds * RATE)
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
        for start in range(0, total, 60 * RATE):
            n = min(60 * RATE, total - start)
            t = (start + np.arange(n)) / RATE
            f0 = 120 + 30 * np.sin(2 * np.pi * 0.1 * t)
            wave = 0.1 * np.sin(2 * np.pi * np.cumsum(f0) / RATE) + rng.normal(0, 0.02, n)
            f.write(wave.astype(np.float32))


def build_checkpoint(model: str, out: Path) -> Path:
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["~experiment", f"model={model}"]
        cfg = compose(config_name="train", overrides=overrides)
        if cfg.model.net.get("pretrained"):
            cfg = compose(config_name="train", overrides=[*overrides, "model.net.pretrained=false"])
    detector = instantiate(cfg.model)
    path = out / f"{model}.ckpt"
    checkpoint = {
        "state_dict": detector.state_dict(),
        "hyper_parameters": dict(detector.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(checkpoint, path)
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(model: str, seconds: float, threads: int, batch: int, hop: float | None) -> dict:
    import torch

    from deepfake_detect.inference.detect import DetectOptions, load_model, score_files

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "long.wav"
        write_long_file(audio, seconds)
        path = build_checkpoint(model, Path(tmp))
        detector = load_model(path)
        loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        options = DetectOptions(batch_size=batch, hop_seconds=hop)
        cpu, wall = cpu_seconds(), time.perf_counter()
        (result,) = score_files(detector, [str(audio)], options)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    if result.reason:
        raise RuntimeError(f"{model}: {result.reason}")
    return {
        "model": model,
        "audio": result.duration,
        "windows": len(result.timeline),
        "wall": wall,
        "cpu": cpu,
        "loaded": loaded,
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def run_child(args: argparse.Namespace, model: str) -> dict | None:
    command = [
        sys.executable,
        __file__,
        "--child",
        model,
        "--seconds",
        str(args.seconds),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.hop:
        command += ["--hop", str(args.hop)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"{model}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lcnn", "w2v2_linear"])
    parser.add_argument("--seconds", type=float, default=3600.0, help="length of the test file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hop", type=float, help="seconds (default: half the window)")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.seconds, args.threads, args.batch_size, args.hop)
        print(json.dumps(result))
        return
    print(
        f"{args.threads} threads, batch {args.batch_size}, one {args.seconds:g} s file "
        f"({os.cpu_count()} CPUs on this machine)\n"
    )
    print(
        "| model | audio (s) | windows | wall (s) | CPU (s) | audio h / CPU h | RTF "
        "| peak RSS (GiB) | RSS after loading (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        r = run_child(args, model)
        if r is None:
            continue
        print(
            f"| {r['model']} | {r['audio']:.0f} | {r['windows']} | {r['wall']:.1f} "
            f"| {r['cpu']:.1f} | {r['audio'] / r['cpu']:.1f} | {r['wall'] / r['audio']:.4f} "
            f"| {r['peak'] / GIB:.2f} | {r['loaded'] / GIB:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
