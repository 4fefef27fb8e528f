"""Training step time and peak memory of the Wav2Vec2 classifier per freeze mode.

Uses the wav2vec2-base architecture with random weights (timing does not depend on the weights,
and nothing is downloaded). Batch 4 x 4 s, AdamW, as in the seed's set-up.

    python benchmarks/w2v2_step_time.py              # CPU, fp32
    python benchmarks/w2v2_step_time.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch
from transformers import Wav2Vec2Config

from deepfake_detect.models.wav2vec2 import Wav2Vec2Classifier


def step_time(mode: str, device: str, precision: str, batch: int, seconds: float, steps: int):
    torch.manual_seed(0)
    net = Wav2Vec2Classifier(pretrained=False, config=Wav2Vec2Config().to_dict()).to(device)
    net.set_freeze(mode)
    net.train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    wave = torch.randn(batch, int(16000 * seconds), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = (
        torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(wave).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    memory = (
        "peak GPU memory GiB" if args.device.startswith("cuda") else "peak RSS GiB (cumulative)"
    )
    print(
        f"wav2vec2-base architecture, batch {args.batch} x {args.seconds:g} s, "
        f"{args.device}, {args.precision}, median of {args.steps} steps"
    )
    print(f"| freeze | s/step | {memory} |\n|---|---|---|")
    for mode in ("all", "feature_encoder", "none"):
        seconds, peak = step_time(
            mode, args.device, args.precision, args.batch, args.seconds, args.steps
        )
        print(f"| {mode} | {seconds:.3f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
