"""Peak memory (RSS) of one CPU training step per model, and the batch that fits a budget.

    python benchmarks/model_memory.py [--batches 1 2 4] [--models aasist lcnn] [--budget-gib 8]

Each measurement is a fresh subprocess that builds the model from its config in conf/model
(Wav2Vec2 encoders with ``pretrained=false``: the same architecture, nothing downloaded), then
runs two training steps on a batch of 4 s crops (forward, loss, backward, the config's
optimizer step; the second with the optimizer's state allocated, as in training) and reports the
peak resident memory (``ru_maxrss``: libraries and weights included) and the second step's
time. Per model, a straight line through the points (peak = fixed + per_sample x batch) gives
the largest batch whose peak stays under the budget; measure that batch to confirm it (the line
is fitted on small batches). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CROP = 64000  # 4 s at 16 kHz: data.max_len's default
GIB = 1024**3


def models() -> list[str]:
    return sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def measure(model: str, batch: int, threads: int) -> dict[str, float]:
    """One training step of ``model`` on ``batch`` crops, in this process."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["~experiment", f"model={model}"]
        cfg = compose(config_name="train", overrides=overrides)
        if cfg.model.net.get("pretrained"):
            cfg = compose(config_name="train", overrides=[*overrides, "model.net.pretrained=false"])
    detector = instantiate(cfg.model).train()
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.model.optimizer)(params=params)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    waves = 0.1 * torch.randn(batch, CROP)
    lengths = torch.full((batch,), CROP)
    labels = torch.arange(batch) % 2
    for _ in range(2):  # the second step runs with the optimizer's state allocated
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = detector.loss_and_score(waves, lengths, labels)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"built": built, "peak": peak, "seconds": seconds}


def run_child(model: str, batch: int, threads: int) -> dict[str, float] | None:
    out = subprocess.run(
        [sys.executable, __file__, "--child", model, str(batch), "--threads", str(threads)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode != 0:
        print(f"{model} batch {batch}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line peak = fixed + per_sample * batch."""
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_p = sum(p for _, p in points) / n
    var = sum((b - mean_b) ** 2 for b, _ in points)
    slope = sum((b - mean_b) * (p - mean_p) for b, p in points) / var if var else 0.0
    return mean_p - slope * mean_b, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--models", nargs="+", choices=models(), default=models())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.threads)))
        return

    print("| model | batch | peak RSS (GiB) | after building (GiB) | 2nd step (s) |")
    print("|---|---|---|---|---|")
    summary = []
    for model in args.models:
        points = []
        for batch in args.batches:
            result = run_child(model, batch, args.threads)
            if result is None:
                continue
            points.append((batch, result["peak"]))
            print(
                f"| {model} | {batch} | {result['peak'] / GIB:.2f} | "
                f"{result['built'] / GIB:.2f} | {result['seconds']:.2f} |",
                flush=True,
            )
        if len(points) >= 2:
            fixed, per_sample = fit(points)
            fits = int((args.budget_gib * GIB - fixed) // per_sample) if per_sample > 0 else 0
            summary.append((model, fixed, per_sample, fits))

    print(f"\n| model | fixed (GiB) | per 4 s sample (MiB) | batch under {args.budget_gib:g} GiB |")
    print("|---|---|---|---|")
    for model, fixed, per_sample, fits in summary:
        print(f"| {model} | {fixed / GIB:.2f} | {per_sample / 2**20:.0f} | {max(fits, 0)} |")


if __name__ == "__main__":
    main()
