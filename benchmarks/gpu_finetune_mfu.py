"""Full fine-tuning of the Wav2Vec2-base architecture on a GPU: samples/s, peak memory and model
FLOPs utilisation (MFU) at the largest batch that fits, bf16-mixed, 4 s crops.

The net: ``transformers.Wav2Vec2Model(Wav2Vec2Config())`` (base size: 7 conv layers, 12
transformer layers of 768; random weights, nothing downloaded) with ``layerdrop=0`` (so every
step does the same work), mean pooling and a linear 2-class head; the whole net trains (the
project's ``freeze=none``), AdamW, cross-entropy, ``torch.autocast(bfloat16)``.

Batch sizes double from ``--start-batch`` until one runs out of memory (or ``--max-batch``);
each that fits is timed over ``--steps`` optimizer steps after ``--warmup``. FLOPs of one
forward + backward are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions, attention; the optimizer step and element-wise work are not counted, as usual for
MFU; a grouped convolution's backward by :func:`conv_backward_flops`, see there) and divided by
the measured step time and the GPU's peak dense bf16 FLOPS (H100 SXM / H200: 989 TFLOPS;
detected from ``torch.cuda.get_device_name``, or ``--peak-tflops``).

    python benchmarks/gpu_finetune_mfu.py                 # on a CUDA machine
    python benchmarks/gpu_finetune_mfu.py --compile       # torch.compile the model
    python benchmarks/gpu_finetune_mfu.py --dry-run       # CPU: FLOP count of a tiny config
    python benchmarks/gpu_finetune_mfu.py --dry-run --full-size   # ... of the base one

Without CUDA (and without ``--dry-run``) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

SAMPLE_RATE = 16000
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.0}
"""Dense (no sparsity) bf16 tensor-core peak by name fragment; H100 PCIe is lower (756)."""
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32),
    conv_kernel=(10, 4, 4),
    conv_stride=(5, 4, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


class Classifier(nn.Module):
    """Wav2Vec2 encoder, mean over frames, linear 2-class head."""

    def __init__(self, **config: object) -> None:
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        cfg = Wav2Vec2Config(layerdrop=0.0, **config)
        self.encoder = Wav2Vec2Model(cfg)
        self.head = nn.Linear(cfg.hidden_size, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(wave).last_hidden_state.mean(dim=1))


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    out_shape: object,
    **kwargs: object,
) -> int:
    """A convolution's backward: the forward's FLOPs once for the input gradient and once for
    the weight gradient (each asked for). Torch's own formula ignores ``groups`` for the weight
    gradient and counts a grouped convolution's (Wav2Vec2's positional conv: 16 groups) 16
    times over: +16 % on the base model's step, which would inflate the MFU as much."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}
    )


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    if "PCIe" in device_name and "H100" in device_name:
        return 756.0
    for fragment, tflops in PEAK_BF16_TFLOPS.items():
        if fragment in device_name:
            return tflops
    return None


def step_flops(model: nn.Module, batch: int, samples: int, device: str) -> int:
    """FLOPs of one forward + backward (bf16 autocast on CUDA) at ``batch`` crops."""
    wave = torch.randn(batch, samples, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    with flop_counter() as counter:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = nn.functional.cross_entropy(model(wave), labels)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def linear_flops_check(batch: int = 8, sizes: tuple[int, ...] = (64, 128, 32)) -> tuple[int, int]:
    """(counted, analytic) FLOPs of forward + backward through bias-free Linear layers on an
    input that needs no gradient: forward 2·B·in·out per layer; backward 2·B·in·out for each
    weight gradient and again for each input gradient except the first layer's."""
    pairs = list(zip(sizes, sizes[1:], strict=False))
    layers = nn.Sequential(*(nn.Linear(a, b, bias=False) for a, b in pairs))
    x = torch.randn(batch, sizes[0])
    with flop_counter() as counter:
        layers(x).sum().backward()
    analytic = sum(2 * batch * a * b for a, b in pairs)  # forward
    analytic += sum(2 * batch * a * b for a, b in pairs)  # weight gradients
    analytic += sum(2 * batch * a * b for a, b in pairs[1:])  # input gradients
    return counter.get_total_flops(), analytic


@dataclass
class Row:
    batch: int
    samples_per_s: float
    step_ms: float
    peak_gib: float
    tflops: float
    mfu: float | None


def measure(model: nn.Module, batch: int, samples: int, steps: int, warmup: int,
            flops_per_sample: float, peak: float | None, compiled: nn.Module) -> Row:  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    wave = torch.randn(batch, samples, device="cuda")
    labels = torch.randint(0, 2, (batch,), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(compiled(wave), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    achieved = flops_per_sample * batch / seconds / 1e12
    return Row(
        batch,
        batch / seconds,
        seconds * 1000,
        torch.cuda.max_memory_allocated() / 2**30,
        achieved,
        achieved / peak if peak else None,
    )


def dry_run(crop_seconds: float, full_size: bool = False) -> int:
    """CPU: check the counter on Linear layers, then count the FLOPs of one forward + backward
    of the tiny config (or, ``full_size``, of the base one: about a minute on 2 cores)."""
    counted, analytic = linear_flops_check()
    print(f"Linear-only check: counted {counted} FLOPs, analytic {analytic}")
    model = Classifier() if full_size else Classifier(**TINY)
    samples = int(crop_seconds * SAMPLE_RATE)
    flops = step_flops(model, 1, samples, "cpu")
    params = sum(p.numel() for p in model.parameters())
    name = "base" if full_size else "tiny"
    print(f"{name} Wav2Vec2 ({params} params), 1 x {crop_seconds:g} s: {flops / 1e9:.3f} "
          "GFLOPs per forward + backward")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop-seconds", type=float, default=4.0)
    parser.add_argument("--start-batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak")
    parser.add_argument("--dry-run", action="store_true", help="CPU: count FLOPs, tiny config")
    parser.add_argument("--full-size", action="store_true", help="--dry-run on the base config")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run(args.crop_seconds, args.full_size)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run it on a GPU machine; --dry-run on CPU)")
        return 0

    torch.manual_seed(0)
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    samples = int(args.crop_seconds * SAMPLE_RATE)
    model = Classifier().cuda().train()
    params = sum(p.numel() for p in model.parameters())
    flops_per_sample = step_flops(model, 2, samples, "cuda") / 2
    compiled = torch.compile(model) if args.compile else model
    print(f"{name}; peak bf16 {peak or '?'} TFLOPS; torch {torch.__version__}")
    print(f"Wav2Vec2-base ({params / 1e6:.1f} M params, all trained), {args.crop_seconds:g} s "
          f"crops, bf16 autocast, AdamW fused, compile={args.compile}; "
          f"{flops_per_sample / 1e9:.1f} GFLOPs per sample (fwd + bwd)")  # fmt: skip
    print(f"mean of {args.steps} steps after {args.warmup} warm-up steps", flush=True)
    rows: list[Row] = []
    batch = args.start_batch
    while batch <= args.max_batch:
        try:
            row = measure(model, batch, samples, args.steps, args.warmup, flops_per_sample,
                          peak, compiled)  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of memory", flush=True)
            break
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        rows.append(row)
        mfu = f"{100 * row.mfu:.1f} %" if row.mfu is not None else "n/a"
        print(f"batch {batch}: {row.samples_per_s:.1f} samples/s, MFU {mfu}", flush=True)
        batch *= 2
    print()
    print("| batch | samples/s | step ms | peak GiB | TFLOPS | MFU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r.mfu:.1f} %" if r.mfu is not None else "n/a (give --peak-tflops)"
        print(f"| {r.batch} | {r.samples_per_s:.1f} | {r.step_ms:.1f} | {r.peak_gib:.1f} | "
              f"{r.tflops:.1f} | {mfu} |")  # fmt: skip
    if rows:
        print(f"\nlargest batch that fits (of those tried): {rows[-1].batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
