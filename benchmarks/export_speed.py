"""CPU inference speed of the deployment paths, all in one run so the ratios compare: eager
PyTorch vs TorchScript vs onnxruntime fp32 vs int8 dynamic vs int8 static (vs QAT int8 when a
QAT checkpoint is given), at batch 1 and 8 on 4 s clips, for the Wav2Vec2-base architecture
(random weights: ``model=w2v2_linear model.net.pretrained=false``; no download) and the LCNN of
``experiment=mini_best``. Each measurement runs in its own subprocess (peak RSS is that
process's), on ``--threads`` threads (torch intra-op / onnxruntime intra-op; inter-op 1).

TorchScript and ONNX fp32 come from ``deepfake_detect.export.export_model`` (what a user
ships); int8 dynamic / static from the export's quantizer applied to that fp32 graph (the
``--int8`` settings); extra variants are quantized here from the same graph with
``quantize_dynamic`` (int8 Conv, per-channel, 7-bit weights). Every ONNX file runs on a plain
``InferenceSession`` (all graph optimisations on).

    python benchmarks/export_speed.py                         # both models, all paths
    python benchmarks/export_speed.py --models lcnn --qat-ckpt <qat run>/checkpoints/last.ckpt
    python benchmarks/export_speed.py --workdir /tmp/speed --repeats 5

RTF = seconds per batch / (batch x 4 s); clips/s = batch / seconds per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
SECONDS = 4.0
MODELS = {
    "w2v2_base": ["model=w2v2_linear", "model.net.pretrained=false"],
    "lcnn": ["experiment=mini_best"],
}
CALIBRATION_CLIPS = 32


# -- building the files ---------------------------------------------------------------------------
def build_checkpoint(name: str, path: Path) -> Path:
    """A checkpoint of the model family ``name`` (random weights), as the trainer writes it."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    if path.is_file():
        return path
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=MODELS[name])
    torch.manual_seed(0)
    module = instantiate(cfg.model, _recursive_=False)
    hparams = dict(module.hparams)
    state = {f"scorer.{k}": v for k, v in module.scorer.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def calibration_clips(count: int = CALIBRATION_CLIPS) -> list[str]:
    """Real clips for static int8 (mini_la train, bona fide and spoof), sorted, first ``count``."""
    folder = ROOT.parent / "shared" / "data" / "mini_la"
    clips = sorted(str(p) for p in folder.rglob("*.flac"))
    return clips[:: max(1, len(clips) // count)][:count]


def calibration_windows(samples: int) -> list[tuple[Any, Any]]:
    """Static int8's calibration input: real clips cut or tiled to ``samples``, normalised as
    the scorer does (zscore), one window a batch."""
    import numpy as np
    import soundfile as sf
    import torch

    from deepfake_detect.export.quantize import as_numpy_windows

    waves, lengths = [], []
    for path in calibration_clips():
        wave = sf.read(path, dtype="float32")[0]
        wave = np.resize(wave, samples)  # tiles a short clip
        wave = (wave - wave.mean()) / (wave.std() + 1e-8)
        waves.append(torch.from_numpy(wave.astype(np.float32)))
        lengths.append(samples)
    return as_numpy_windows(waves, lengths)


def export_files(name: str, ckpt: Path, workdir: Path, qat_ckpt: Path | None) -> dict[str, Path]:
    """Every file the table runs, made once (reused from ``workdir`` on a rerun). TorchScript
    and ONNX fp32 through ``export_model``; the int8 files by the export's own quantizer
    (``deepfake_detect.export.quantize.quantize``, the settings ``--int8`` uses) from the
    exported fp32 graph, which saves a graph export each (minutes for Wav2Vec2-base)."""
    import onnx

    from deepfake_detect.export import export_model
    from deepfake_detect.export.quantize import quantize

    files: dict[str, Path] = {}
    plan: list[tuple[str, Path, str]] = [
        ("torchscript", ckpt, "torchscript"),
        ("onnx_fp32", ckpt, "onnx"),
    ]
    if qat_ckpt is not None:
        plan.append(("qat_fp32", qat_ckpt, "onnx"))
    for key, source, fmt in plan:
        out = workdir / f"{name}_{key}.{'pt' if fmt == 'torchscript' else 'onnx'}"
        if not out.is_file():
            start = time.perf_counter()
            try:
                export_model(source, out, format=fmt)
            except Exception as exc:  # a path that fails is a row that says so
                print(f"  {name} {key}: export failed: {str(exc).splitlines()[0][:200]}")
                continue
            print(f"  {name} {key}: exported in {time.perf_counter() - start:.0f} s", flush=True)
        files[key] = out
    int8_plan = [("int8_dynamic", "onnx_fp32", "dynamic"), ("int8_static", "onnx_fp32", "static")]
    int8_plan.append(("qat_int8", "qat_fp32", "dynamic"))
    for key, source, mode in int8_plan:
        if source not in files:
            continue
        out = workdir / f"{name}_{key}.onnx"
        if not out.is_file():
            start = time.perf_counter()
            try:
                graph = onnx.load(files[source])
                samples = graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
                windows = calibration_windows(samples or int(SECONDS * SAMPLE_RATE))
                onnx.save(quantize(graph, mode, windows if mode == "static" else None), out)
            except Exception as exc:
                print(f"  {name} {key}: quantization failed: {str(exc).splitlines()[0][:200]}")
                continue
            print(f"  {name} {key}: quantized in {time.perf_counter() - start:.0f} s", flush=True)
        files[key] = out
    fp32 = files.get("onnx_fp32")
    if fp32 is not None:
        files.update(extra_variants(name, fp32, workdir))
    return files


def extra_variants(name: str, fp32: Path, workdir: Path) -> dict[str, Path]:
    """onnxruntime dynamic int8 variants of the exported fp32 graph, for the speed question
    alone (the exported files above are what users get)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMuls before the first Conv: a spectral front end (the LCNN's filter bank and DCT),
    # whose int8 rounding destroys the features (results_compress.md)
    front: list[str] = []
    for node in onnx.load(fp32).graph.node:
        if node.op_type == "Conv":
            break
        if node.op_type == "MatMul":
            front.append(node.name)
    linear = ["MatMul", "Gemm"]
    variants = {
        "ort_int8_dyn_reduce_range": dict(op_types_to_quantize=linear, reduce_range=True),
        "ort_int8_dyn_per_channel": dict(op_types_to_quantize=linear, per_channel=True),
        "ort_int8_dyn_with_conv": dict(op_types_to_quantize=[*linear, "Conv"]),
        "ort_int8_dyn_front_float_conv": dict(
            op_types_to_quantize=[*linear, "Conv"], nodes_to_exclude=front
        ),
    }
    out = {}
    for key, options in variants.items():
        if key == "ort_int8_dyn_front_float_conv" and not front:
            continue  # no front end MatMul: the same graph as ort_int8_dyn_with_conv
        path = workdir / f"{name}_{key}.onnx"
        if not path.is_file():
            try:
                quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, **options)
            except Exception as exc:
                print(f"  {name} {key}: quantization failed: {str(exc).splitlines()[0][:200]}")
                continue
        out[key] = path
    return out


# -- one measurement (a subprocess) ---------------------------------------------------------------
def _peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (``ru_maxrss`` survives exec on Linux, so a worker
    would report its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(path: str, kind: str, batch: int, threads: int, warmup: int, repeats: int) -> dict:
    """Seconds per batch (median) and peak RSS of one path, in this process."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    rng = np.random.default_rng(0)
    samples = int(SECONDS * SAMPLE_RATE)
    wave = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
    lengths = np.full(batch, samples, dtype=np.int64)
    if kind == "eager" or kind == "eager_channels_last":
        from deepfake_detect.models.scorer import SpoofScorer

        scorer = SpoofScorer.from_checkpoint(path)
        if kind == "eager_channels_last":
            scorer = scorer.to(memory_format=torch.channels_last)
        w, n = torch.from_numpy(wave), torch.from_numpy(lengths)

        def run() -> Any:
            with torch.inference_mode():
                return scorer(w, n)

    elif kind == "torchscript":
        module = torch.jit.load(path, map_location="cpu").eval()
        w, n = torch.from_numpy(wave), torch.from_numpy(lengths)

        def run() -> Any:
            with torch.inference_mode():
                return module(w, n)

    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = {names[0]: wave, **({names[1]: lengths} if len(names) > 1 else {})}

        def run() -> Any:
            return session.run(None, feed)

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_rss_mib": _peak_rss_mib()}


def measure(path: Path, kind: str, batch: int, args: argparse.Namespace, repeats: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [
        sys.executable, __file__, "--worker", str(path), "--kind", kind, "--batch", str(batch),
        "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(repeats),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the table ------------------------------------------------------------------------------------
ROWS = [
    ("eager fp32 (inference_mode)", "eager", None),
    ("eager fp32, channels-last", "eager_channels_last", None),
    ("TorchScript fp32", "torchscript", "torchscript"),
    ("onnxruntime fp32", "onnx", "onnx_fp32"),
    ("onnxruntime int8 dynamic (export)", "onnx", "int8_dynamic"),
    ("onnxruntime int8 static (export)", "onnx", "int8_static"),
    ("onnxruntime QAT int8 (export, dynamic)", "onnx", "qat_int8"),
    ("ort int8 dynamic, 7-bit weights", "onnx", "ort_int8_dyn_reduce_range"),
    ("ort int8 dynamic, per-channel", "onnx", "ort_int8_dyn_per_channel"),
    ("ort int8 dynamic, Conv too", "onnx", "ort_int8_dyn_with_conv"),
    ("ort int8 dynamic, front end float, Conv int8", "onnx", "ort_int8_dyn_front_float_conv"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=0, help="0: 5 for w2v2, 20 for lcnn")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dfd_export_speed"))
    parser.add_argument("--qat-ckpt", type=Path, default=None, help="an LCNN QAT checkpoint")
    parser.add_argument(
        "--lcnn-ckpt", type=Path, default=None, help="a trained LCNN (default: random)"
    )
    parser.add_argument("--skip-channels-last", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        help="measure only these files (eager torchscript onnx_fp32 "
        "int8_dynamic int8_static qat_int8 ort_int8_dyn_...)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(
            json.dumps(
                worker(args.worker, args.kind, args.batch, args.threads, args.warmup, args.repeats)
            )
        )
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, str, int, dict]] = []
    for name in args.models:
        print(f"{name}: building files in {args.workdir}", flush=True)
        if name == "lcnn" and args.lcnn_ckpt:
            ckpt = args.lcnn_ckpt
        else:
            ckpt = build_checkpoint(name, args.workdir / f"{name}.ckpt")
        files = export_files(name, ckpt, args.workdir, args.qat_ckpt if name == "lcnn" else None)
        files["eager"] = files["eager_channels_last"] = ckpt
        repeats = args.repeats or (5 if name == "w2v2_base" else 20)
        for label, kind, key in ROWS:
            key = key or kind
            if key not in files or (kind == "eager_channels_last" and args.skip_channels_last):
                continue
            if args.only and key not in args.only and kind not in args.only:
                continue
            for batch in args.batches:
                reps = max(2, repeats // 2) if batch > 1 and name == "w2v2_base" else repeats
                result = measure(files[key], kind, batch, args, reps)
                results.append((name, label, batch, result))
                shown = result.get("error") or f"{1000 * result['seconds']:.1f} ms"
                print(f"  {name} | {label} | batch {batch}: {shown}", flush=True)

    import onnxruntime
    import torch

    print(
        f"\n{SECONDS:g} s clips, {args.threads} threads, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        "| model | path | batch | ms / batch | RTF | clips/s | vs eager | peak RSS MiB | file MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    eager = {
        (n, b): r["seconds"]
        for n, lab, b, r in results
        if lab.startswith("eager fp32 (") and "seconds" in r
    }
    for name, label, batch, result in results:
        key = next(k for lab, _, k in ROWS if lab == label) or "eager"
        path = args.workdir / next(
            (p.name for p in args.workdir.glob(f"{name}_{key}.*")), f"{name}.ckpt"
        )
        size = path.stat().st_size / 1e6 if path.is_file() else float("nan")
        if "error" in result:
            print(f"| {name} | {label} | {batch} | failed: {result['error']} | | | | | |")
            continue
        seconds = result["seconds"]
        ratio = eager.get((name, batch), float("nan")) / seconds
        print(
            f"| {name} | {label} | {batch} | {1000 * seconds:.1f} | "
            f"{seconds / (batch * SECONDS):.4f} | {batch / seconds:.1f} | {ratio:.2f}x | "
            f"{result['peak_rss_mib']:.0f} | {size:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
