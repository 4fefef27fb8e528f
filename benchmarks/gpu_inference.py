"""GPU inference speed of the Wav2Vec2-base architecture (random weights: the architecture's
cost, no download): bf16 eager, ``torch.compile`` (bf16) and onnxruntime's CUDA provider (fp32
graph) at batch 1 and 32 on 4 s clips. Prints one table: ms per batch, real-time factor,
clips/s, peak GPU memory. On a machine without CUDA it says so and exits 0.

    python benchmarks/gpu_inference.py                 # batch 1 and 32, 4 s, all paths
    python benchmarks/gpu_inference.py --batch 1 8 --seconds 8 --repeats 50 --skip-onnx
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SAMPLE_RATE = 16000


def _timed(run: Callable[[], object], sync: Callable[[], None], warmup: int, repeats: int) -> float:
    """Median seconds of ``run`` after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_inference: no CUDA device on this machine; nothing measured (skipped)")
        return 0
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = Wav2Vec2Model(Wav2Vec2Config()).eval().to(device)  # base size, random weights
    samples = int(args.seconds * SAMPLE_RATE)
    sync = torch.cuda.synchronize
    rows: list[tuple[str, int, float, float]] = []

    def record(path: str, batch: int, run: Callable[[], object]) -> None:
        torch.cuda.reset_peak_memory_stats()
        seconds = _timed(run, sync, args.warmup, args.repeats)
        rows.append((path, batch, seconds, torch.cuda.max_memory_allocated() / 2**20))
        print(f"  {path:28s} batch {batch:3d}: {1000 * seconds:8.2f} ms", flush=True)

    for batch in args.batch:
        wave = torch.randn(batch, samples, device=device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            record("eager bf16", batch, lambda w=wave: model(w).last_hidden_state)
        with torch.inference_mode():
            record("eager fp32 (tf32)", batch, lambda w=wave: model(w).last_hidden_state)

    if not args.skip_compile:
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)
        for batch in args.batch:
            wave = torch.randn(batch, samples, device=device)
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                compiled(wave)
                sync()
                print(
                    f"  torch.compile first call, batch {batch}: "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )
                record("torch.compile bf16", batch, lambda w=wave: compiled(w).last_hidden_state)

    if not args.skip_onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        providers = ort.get_available_providers() if ort else []
        if "CUDAExecutionProvider" not in providers:
            print(
                f"  onnxruntime CUDA provider not available (providers: {providers}); "
                "pip install onnxruntime-gpu to measure it"
            )
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "w2v2_base.onnx"
                cpu_model = Wav2Vec2Model(Wav2Vec2Config()).eval()
                cpu_model.load_state_dict(model.state_dict())
                torch.onnx.export(
                    cpu_model,
                    (torch.randn(1, samples),),
                    str(path),
                    input_names=["waveform"],
                    output_names=["hidden"],
                    dynamic_shapes={"input_values": {0: torch.export.Dim("batch", max=1024)}},
                    dynamo=True,
                )
                session = ort.InferenceSession(
                    str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                )
                name = session.get_inputs()[0].name
                for batch in args.batch:
                    feed = {name: torch.randn(batch, samples).numpy()}
                    torch.cuda.reset_peak_memory_stats()
                    seconds = _timed(
                        lambda f=feed: session.run(None, f), sync, args.warmup, args.repeats
                    )
                    rows.append(("onnxruntime CUDA fp32", batch, seconds, float("nan")))
                    print(
                        f"  onnxruntime CUDA fp32        batch {batch:3d}: "
                        f"{1000 * seconds:8.2f} ms",
                        flush=True,
                    )

    name = torch.cuda.get_device_name(0)
    print(
        f"\nWav2Vec2-base architecture, {args.seconds:g} s clips, {name}, torch "
        f"{torch.__version__}, median of {args.repeats} after {args.warmup} warm-up calls"
    )
    print("| path | batch | ms / batch | RTF | clips/s | peak GPU MiB |")
    print("|---|---|---|---|---|---|")
    for path, batch, seconds, peak in rows:
        rtf = seconds / (batch * args.seconds)
        peak_text = "n/a (onnxruntime arena)" if peak != peak else f"{peak:.0f}"
        print(
            f"| {path} | {batch} | {1000 * seconds:.2f} | {rtf:.5f} | "
            f"{batch / seconds:.1f} | {peak_text} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
