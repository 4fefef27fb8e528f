"""Parameter counts and CPU forward time of the baseline networks, built from conf/model.

    python benchmarks/model_zoo_params.py [--repeats 3] [--threads 2] [--models aasist lcnn]

Prints one markdown row per model: parameters, and the median forward time per 4 s clip at
batch 1 and batch 8 (eval mode, ``torch.inference_mode``, after warm-up calls). Other load on
the machine shows up in these numbers: compare rows from one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
CLIP_SAMPLES = 4 * 16000
# name -> (config file, Hydra overrides of its net)
MODELS: dict[str, tuple[str, list[str]]] = {
    "rawnet2": ("rawnet2", []),
    "lcnn": ("lcnn", []),
    "lcnn-small": ("lcnn", ["model.net.width=0.55", "model.net.lstm=false"]),
    "aasist": ("aasist", []),
    "aasist-l": ("aasist_l", []),
}


def build(config_name: str, overrides: list[str]) -> nn.Module:
    """The net of ``model=<config_name>`` as the train config composes it."""
    args = ["~experiment", f"model={config_name}", *overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        config = compose(config_name="train", overrides=args)
    return instantiate(config.model.net).eval()


def ms_per_clip(net: nn.Module, batch: int, repeats: int, warmup: int) -> float:
    waveform = 0.1 * torch.randn(batch, CLIP_SAMPLES)
    with torch.inference_mode():
        for _ in range(warmup):
            net(waveform)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(waveform)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"CPU, {args.threads} threads, median of {args.repeats} after warm-up; 4 s clips")
    print("| model | parameters | batch 1 ms/clip | batch 8 ms/clip |")
    print("|---|---:|---:|---:|")
    for name in args.models:
        net = build(*MODELS[name])
        params = sum(p.numel() for p in net.parameters())
        single = ms_per_clip(net, 1, args.repeats, warmup=2)
        eight = ms_per_clip(net, 8, args.repeats, warmup=1)
        print(f"| {name} | {params:,} | {single:.0f} | {eight:.0f} |", flush=True)


if __name__ == "__main__":
    main()
