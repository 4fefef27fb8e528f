"""What each compression path costs in EER, next to what it saves in size and time: a trained
checkpoint (fp32), its ONNX export (fp32, int8 dynamic, int8 static), a quantization-aware
fine-tuning of it exported int8 (``experiment=qat``), and a 50 %-pruned fine-tuning
(``callbacks=pruning``), scored on the same clips of ``mini_la`` eval and ``mini_wild``.

Checkpoints are scored by ``SpoofScorer.from_checkpoint``, exported files by
``deepfake_detect.export.load_exported`` (the path ``detect`` takes), both on whole utterances
(``scorer(waves, lengths)``), and EERs are computed by ``deepfake_detect.metrics.compute_eer``.
Rows marked "front end float" are quantized here (``quantize_dynamic`` with the MatMuls before
the first Conv excluded: the LCNN's filter bank and DCT) and run through the export's host.
Speed: batch 1, a 4 s clip, ``--threads`` threads, median of ``--repeats``.

    python benchmarks/compression_eer.py --ckpt <run>/checkpoints/last.ckpt \
        --qat-ckpt <qat run>/checkpoints/last.ckpt --pruned-ckpt <pruned run>/checkpoints/last.ckpt
    python benchmarks/compression_eer.py --ckpt best.ckpt --subset 0     # every mini_la eval clip

``--subset N`` scores a seeded, label-stratified sample of N ``mini_la`` eval clips (0: all
of them); ``mini_wild`` is always scored whole.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLE_RATE = 16000


def test_rows(data_dir: Path) -> dict[str, list[Any]]:
    """The utterance rows of ``mini_la`` eval and ``mini_wild`` (through the data module)."""
    import tempfile

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    overrides = [
        "data=mini",
        f"paths.data_dir={data_dir}",
        "data.test=[asvspoof2019_la:eval,in_the_wild:all]",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):  # no Hydra run here: a scratch output folder
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="dfd-eer-")
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    return dict(datamodule.test_sets)


def stratified(rows: list[Any], count: int, seed: int = 0) -> list[Any]:
    """``count`` rows with the set's bona fide / spoof proportions (seeded)."""
    if count <= 0 or count >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for label in sorted({r.label for r in rows}):
        group = [r for r in rows if r.label == label]
        take = round(count * len(group) / len(rows))
        out += [group[i] for i in sorted(rng.choice(len(group), take, replace=False))]
    return out


def load_audio(rows: list[Any]) -> list[np.ndarray]:
    import soundfile as sf

    waves = []
    for row in rows:
        wave, rate = sf.read(row.path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{row.path}: {rate} Hz, the benchmark expects {SAMPLE_RATE}")
        waves.append(wave.mean(axis=1))
    return waves


def score_all(scorer: Any, waves: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """Scores of every clip, in batches of similar lengths (padding masked by ``lengths``)."""
    import torch

    order = np.argsort([len(w) for w in waves])
    scores = np.empty(len(waves), dtype=np.float64)
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        lengths = torch.tensor([len(waves[i]) for i in index])
        padded = torch.zeros(len(index), int(lengths.max()))
        for row, i in enumerate(index):
            padded[row, : len(waves[i])] = torch.from_numpy(waves[i])
        with torch.inference_mode():
            out = scorer(padded, lengths)
        scores[index] = np.asarray(out, dtype=np.float64).reshape(-1)
    return scores


def eer_percent(scores: np.ndarray, labels: np.ndarray) -> float:
    from deepfake_detect.metrics import compute_eer

    return 100 * compute_eer(scores[labels == 1], scores[labels == 0])[0]


def seconds_per_clip(scorer: Any, threads: int, repeats: int) -> float:
    import torch

    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (1, 4 * SAMPLE_RATE)))
    wave, lengths = wave.float(), torch.tensor([4 * SAMPLE_RATE])
    with torch.inference_mode():
        for _ in range(3):
            scorer(wave, lengths)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            scorer(wave, lengths)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def front_end_matmuls(model: Any) -> list[str]:
    """The MatMul nodes before the graph's first Conv: a spectral front end's filter bank and
    DCT (graph nodes are in topological order)."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            break
        if node.op_type == "MatMul":
            names.append(node.name)
    return names


class _RawOnnx:
    """A backend for the export's host (``ExportedScorer``) over an ONNX file quantized here
    (no export metadata of its own: it borrows its fp32 source's)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def to(self, device: str) -> None:
        if device != "cpu":
            raise ValueError("CPU only")

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"wave": wave, "lengths": lengths})[0]


def float_front_end_int8(fp32: Path, out: Path, conv: bool) -> Path:
    """``quantize_dynamic`` of the exported fp32 graph with the front end's MatMuls kept in
    float (and Conv int8 when ``conv``): the variant that keeps the LCNN's features intact."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not out.is_file():
        ops = ["MatMul", "Gemm", *(["Conv"] if conv else [])]
        quantize_dynamic(
            fp32,
            out,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=front_end_matmuls(onnx.load(fp32)),
        )
    return out


def gzip_mb(path: Path) -> float:
    return len(gzip.compress(path.read_bytes(), compresslevel=6)) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="the trained fp32 checkpoint")
    parser.add_argument("--qat-ckpt", type=Path, help="its experiment=qat fine-tuning")
    parser.add_argument("--pruned-ckpt", type=Path, help="its callbacks=pruning fine-tuning")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dfd_compression_eer"))
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--subset", type=int, default=600, help="mini_la eval clips (0: all)")
    parser.add_argument("--calibration", type=int, default=32, help="static int8 clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from deepfake_detect.export import ExportedScorer, export_model, load_exported
    from deepfake_detect.models.scorer import SpoofScorer

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    sets = test_rows(args.data_dir)
    la_name = next(n for n in sets if "asvspoof" in n or "la" in n.lower())
    sets[la_name] = stratified(sets[la_name], args.subset)
    audio = {name: load_audio(rows) for name, rows in sets.items()}
    labels = {
        name: np.array([1 if r.label == "bonafide" else 0 for r in rows])
        for name, rows in sets.items()
    }
    print(
        "clips: "
        + ", ".join(f"{n} {len(r)} ({int(labels[n].sum())} bona fide)" for n, r in sets.items()),
        flush=True,
    )
    train_clips = sorted((args.data_dir / "mini_la").rglob("*train*/**/*.flac"))
    calibration = [str(p) for p in train_clips[:: max(1, len(train_clips) // args.calibration)]]
    calibration = calibration[: args.calibration]

    def exported(source: Path, key: str, int8: str | None) -> Path | None:
        out = args.workdir / f"{source.parent.parent.name}_{source.stem}_{key}.onnx"
        if not out.is_file():
            try:
                report = export_model(
                    source,
                    out,
                    format="onnx",
                    int8=int8,
                    calibration=calibration if int8 == "static" else None,
                )
                print("\n".join(report.lines()), flush=True)
            except Exception as exc:
                print(f"{key}: export failed: {str(exc).splitlines()[0][:200]}", flush=True)
                return None
        return out

    def front_float(source: Path, prefix: str) -> list[tuple[str, Path | None, str]]:
        fp32 = exported(source, "fp32", None)
        if fp32 is None:
            return []
        stem = fp32.with_suffix("").name
        return [
            (
                f"{prefix}int8 dynamic, front end float (here)",
                float_front_end_int8(
                    fp32, args.workdir / f"{stem}_dyn_frontfloat.onnx", conv=False
                ),
                "raw",
            ),
            (
                f"{prefix}int8 dynamic, front end float, Conv int8 (here)",
                float_front_end_int8(
                    fp32, args.workdir / f"{stem}_dyn_frontfloat_conv.onnx", conv=True
                ),
                "raw",
            ),
        ]

    variants: list[tuple[str, Path | None, str]] = [
        ("fp32 checkpoint (PyTorch)", args.ckpt, "ckpt"),
        ("ONNX fp32 (export)", exported(args.ckpt, "fp32", None), "onnx"),
        ("ONNX int8 dynamic (export)", exported(args.ckpt, "int8_dynamic", "dynamic"), "onnx"),
        ("ONNX int8 static (export)", exported(args.ckpt, "int8_static", "static"), "onnx"),
        *front_float(args.ckpt, ""),
    ]
    if args.qat_ckpt:
        variants += [
            ("QAT fp32 checkpoint", args.qat_ckpt, "ckpt"),
            (
                "QAT, ONNX int8 dynamic (export)",
                exported(args.qat_ckpt, "int8_dynamic", "dynamic"),
                "onnx",
            ),
            (
                "QAT, ONNX int8 static (export)",
                exported(args.qat_ckpt, "int8_static", "static"),
                "onnx",
            ),
            *front_float(args.qat_ckpt, "QAT, "),
        ]
    if args.pruned_ckpt:
        variants += [
            ("pruned 50 % checkpoint", args.pruned_ckpt, "ckpt"),
            ("pruned 50 %, ONNX fp32", exported(args.pruned_ckpt, "fp32", None), "onnx"),
        ]

    rows = []
    for label, path, kind in variants:
        if path is None:
            rows.append((label, None))
            continue
        if kind == "ckpt":
            scorer: Any = SpoofScorer.from_checkpoint(path)
        elif kind == "onnx":
            scorer = load_exported(path, threads=args.threads)
        else:  # quantized here: the export's host, its fp32 source's metadata
            source = path.parent / (path.name.split("_dyn_")[0] + ".onnx")
            host = load_exported(source, threads=args.threads)
            scorer = ExportedScorer(_RawOnnx(path, args.threads), host.metadata, str(path))
        eers = {n: eer_percent(score_all(scorer, audio[n]), labels[n]) for n in sets}
        speed = seconds_per_clip(scorer, args.threads, args.repeats)
        rows.append((label, (path, eers, speed)))
        print(
            f"  {label}: "
            + ", ".join(f"{n} {e:.2f} %" for n, e in eers.items())
            + f", {1000 * speed:.1f} ms / 4 s clip",
            flush=True,
        )

    base = rows[0][1]
    names = list(sets)
    print(
        f"\nEER (%) on {', '.join(f'{n} ({len(sets[n])} clips)' for n in names)}; "
        f"speed: batch 1, 4 s clip, {args.threads} threads; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    head = " | ".join(f"{n} EER (Δ)" for n in names)
    print(f"| variant | {head} | file MB | gzip MB | ms / clip | RTF |")
    print("|---|" + "---|" * (len(names) + 4))
    for label, result in rows:
        if result is None:
            print(f"| {label} | export failed |" + " |" * (len(names) + 3))
            continue
        path, eers, speed = result
        cells = " | ".join(
            f"{eers[n]:.2f} ({eers[n] - base[1][n]:+.2f})" if base else f"{eers[n]:.2f}"
            for n in names
        )
        print(
            f"| {label} | {cells} | {path.stat().st_size / 1e6:.2f} | {gzip_mb(path):.2f} | "
            f"{1000 * speed:.1f} | {speed / 4:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
