"""Streaming latency per chunk on CPU: is ``deepfake-detect stream`` real time?

    python benchmarks/stream_latency.py [--models lcnn w2v2_linear] [--seconds 60]
        [--chunk 1.0] [--hop SECONDS] [--rate 16000] [--threads 2]

Each model runs in a fresh subprocess, built from its config in conf/model with random weights
(Wav2Vec2 encoders with ``pretrained=false``: the wav2vec2-base architecture, nothing
downloaded) and loaded back as ``deepfake-detect`` loads a checkpoint (the helpers of
``detect_throughput.py``). A synthetic stream of ``--seconds`` at ``--rate`` (a rate other than
the model's adds the resampling) is pushed into a
:class:`~deepfake_detect.inference.streaming.StreamingScorer` in chunks of ``--chunk`` seconds,
back to back, after one warm-up window. Reported, per chunk: the wall time of ``push`` (the
chunks that complete no window cost almost nothing; with the default hop of half the 4 s
window, one 1 s chunk in two completes a window) as median, p95 and max; per window event: the
latency from the chunk's arrival to the event (median, p95). Real time means the p95 per chunk
stays below the chunk's duration: the scorer then keeps up with live audio and never builds a
backlog. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect_throughput import build_checkpoint  # noqa: E402


def synthetic_stream(seconds: float, rate: int):  # -> np.ndarray
    """Speech-like noise: a drifting harmonic tone plus noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.1 * t)
    wave = 0.1 * np.sin(2 * np.pi * np.cumsum(f0) / rate) + rng.normal(0, 0.02, t.size)
    return wave.astype(np.float32)


def measure(model: str, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from deepfake_detect.inference.detect import load_model
    from deepfake_detect.inference.streaming import StreamingScorer, StreamOptions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        detector = load_model(build_checkpoint(model, Path(tmp)))
    window = detector.window()
    with torch.inference_mode():  # warm-up: the first forward pass allocates
        detector.scorer.outputs(torch.zeros(1, window))
    scorer = StreamingScorer(detector, args.rate, StreamOptions(hop_seconds=args.hop))
    audio = synthetic_stream(args.seconds, args.rate)
    step = round(args.chunk * args.rate)
    per_chunk, per_window = [], []
    for i in range(0, audio.size, step):
        arrived = time.perf_counter()
        events = scorer.push(audio[i : i + step], arrived)
        per_chunk.append(time.perf_counter() - arrived)
        per_window += [e.latency for e in events]
    events = scorer.finish()
    per_window += [e.latency for e in events]
    rate = detector.preprocessing.sample_rate
    return {
        "model": model,
        "window": window / rate,
        "hop": scorer.hop / rate,
        "chunks": len(per_chunk),
        "windows": len(per_window),
        "chunk_ms": [float(np.quantile(per_chunk, q)) * 1000 for q in (0.5, 0.95, 1.0)],
        "window_ms": [float(np.quantile(per_window, q)) * 1000 for q in (0.5, 0.95)],
    }


def run_child(args: argparse.Namespace, model: str) -> dict | None:
    command = [sys.executable, __file__, "--child", model, "--seconds", str(args.seconds)]
    command += ["--chunk", str(args.chunk), "--rate", str(args.rate)]
    command += ["--threads", str(args.threads)]
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
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the stream")
    parser.add_argument("--chunk", type=float, default=1.0, help="seconds per chunk")
    parser.add_argument("--hop", type=float, help="seconds (default: half the window)")
    parser.add_argument("--rate", type=int, default=16000, help="the stream's sample rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    print(
        f"{args.threads} threads, a {args.seconds:g} s stream at {args.rate} Hz in "
        f"{args.chunk:g} s chunks ({os.cpu_count()} CPUs on this machine)\n"
    )
    print(
        "| model | window (s) | hop (s) | chunks | windows | per chunk: median / p95 / max (ms) "
        "| per window event: median / p95 (ms) | real time (p95 < chunk) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        r = run_child(args, model)
        if r is None:
            continue
        chunk, window = r["chunk_ms"], r["window_ms"]
        print(
            f"| {r['model']} | {r['window']:g} | {r['hop']:g} | {r['chunks']} | {r['windows']} "
            f"| {chunk[0]:.1f} / {chunk[1]:.1f} / {chunk[2]:.1f} "
            f"| {window[0]:.1f} / {window[1]:.1f} "
            f"| {'yes' if chunk[1] < 1000 * args.chunk else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
