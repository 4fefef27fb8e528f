"""``export_model``: a trained checkpoint to an ONNX or TorchScript file that scores as the
checkpoint does, checked for parity on real clips before it is written.

Steps: read the checkpoint (weights only) -> :class:`~.graph.ScoreGraph` -> export with dynamic
batch and length axes, verified on padded probe batches of other sizes, or at a fixed window
length where the graph cannot be dynamic (the reason is recorded) -> int8 (ONNX only) ->
metadata sealed into the file (:mod:`.metadata`) -> parity: the exported file, loaded as a user
loads it, against the PyTorch scorer on the same windows of real clips. An fp32 export whose
max abs difference reaches :data:`PARITY_BOUND` is not kept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake_detect.data.audio import AudioError, load_mono
from deepfake_detect.data.preprocessing import tile_short, windows
from deepfake_detect.export.graph import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    ScoreGraph,
    example_inputs,
    has_rnn,
    probe_inputs,
)
from deepfake_detect.export.metadata import (
    FORMAT_VERSION,
    FORMATS,
    INT8_MODES,
    METADATA_KEY,
    ExportError,
    file_sha256,
    onnx_set_metadata,
    project_version,
    seal,
    torchscript_content_sha256,
)
from deepfake_detect.export.quantize import CALIBRATION_WINDOWS, as_numpy_windows, quantize
from deepfake_detect.export.runtime import (
    INSTALL_HINT,
    ExportedScorer,
    load_exported,
    require_onnx,
    require_onnxruntime,
)
from deepfake_detect.inference.calibration import stored_calibration
from deepfake_detect.inference.detect import DEFAULT_WINDOW_SECONDS, collect_inputs
from deepfake_detect.inference.semantics import SCORE_SEMANTICS
from deepfake_detect.models.checkpoint import read_checkpoint
from deepfake_detect.models.scorer import SpoofScorer

PARITY_BOUND = 1e-4
"""Max abs score difference an fp32 export may have against the PyTorch model."""
PARITY_CLIPS = 6
PARITY_WINDOWS = 16
DYNAMIC_TOLERANCE = 1e-4
"""A dynamic export must score the probe batches within this of the eager graph."""
SHARED_DATA_CANDIDATES = (
    Path.cwd() / ".." / "shared" / "data",
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
)
MINI_LA_EVAL = "mini_la/LA/ASVspoof2019_LA_eval/flac"

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    path: Path
    format: str
    metadata: dict[str, Any]
    parity_max_abs_diff: float
    fixed_length: int | None
    size_bytes: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        m = self.metadata
        rate = m["sample_rate"]
        axes = (
            "dynamic batch and length"
            if self.fixed_length is None
            else f"dynamic batch, fixed length {self.fixed_length} samples "
            f"({self.fixed_length / rate:g} s): {m['axes_reason']}"
        )
        parity = m["parity"]
        bound = f" (bound {parity['bound']:g})" if parity["bound"] is not None else " (int8 drift)"
        out = [
            f"wrote {self.path} ({self.format}{', int8 ' + m['int8'] if m['int8'] else ''}, "
            f"{self.size_bytes / 1e6:.2f} MB) in {self.seconds:.1f} s",
            f"axes: {axes}",
            f"parity vs PyTorch: max abs diff {self.parity_max_abs_diff:.3g}{bound} on "
            f"{parity['windows']} windows of {parity['clips']} clips ({parity['source']})",
            f"window {m['window'] / rate:g} s, hop {m['hop'] / rate:g} s, {rate} Hz; "
            + ("calibrated" if m["calibration"] else "uncalibrated (threshold: score 0)"),
        ]
        return out + [f"warning: {w}" for w in self.warnings]


# -- clips ---------------------------------------------------------------------------------------
def default_parity_clips(count: int = PARITY_CLIPS) -> list[str]:
    """A handful of ``../shared/data/mini_la`` eval clips, when the corpus is there."""
    for root in SHARED_DATA_CANDIDATES:
        folder = root / MINI_LA_EVAL
        if folder.is_dir():
            files = sorted(folder.glob("*.flac"))
            step = max(1, len(files) // count)
            return [str(p) for p in files[::step][:count]]
    return []


def synthetic_clips(sample_rate: int, count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = int(sample_rate * (1.0 + 1.3 * i))
        t = torch.arange(n) / sample_rate
        tone = sum(torch.sin(2 * torch.pi * 140 * k * t) / k for k in range(1, 6))
        out.append((0.1 * tone + 0.02 * torch.randn(n, generator=g)).float())
    return out


def clip_windows(clips: Sequence[torch.Tensor], window: int, limit: int) -> Iterator[torch.Tensor]:
    """The windows ``detect`` cuts from each clip (half-overlapping), at most ``limit``."""
    count = 0
    for clip in clips:
        for w in windows(clip, window):
            if count >= limit:
                return
            count += 1
            yield w


def read_clips(paths: Sequence[str], sample_rate: int, what: str) -> list[torch.Tensor]:
    clips = []
    for path in paths:
        try:
            clips.append(load_mono(path, sample_rate))
        except AudioError as exc:
            raise ExportError(f"{what} clip {path}: {exc}") from None
    return clips


def padded(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([r.numel() for r in rows])
    wave = torch.zeros(len(rows), int(lengths.max()))
    for i, r in enumerate(rows):
        wave[i, : r.numel()] = r
    return wave, lengths


# -- the PyTorch reference through the same host code ---------------------------------------------
class EagerBackend:
    """The checkpoint's scorer behind the runtime's host code: ``outputs`` + ``score_outputs``,
    exactly as ``detect`` scores a batch of windows."""

    device = "cpu"

    def __init__(self, scorer: SpoofScorer) -> None:
        self.scorer = scorer

    def to(self, device: str) -> None:
        pass

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            w, n = torch.from_numpy(wave), torch.from_numpy(lengths)
            return self.scorer.score_outputs(*self.scorer.outputs(w, n)).numpy()


def reference_scorer(scorer: SpoofScorer, metadata: dict[str, Any]) -> ExportedScorer:
    return ExportedScorer(EagerBackend(scorer), metadata, "pytorch")


def parity(
    exported: ExportedScorer, reference: ExportedScorer, window_rows: Sequence[torch.Tensor]
) -> float:
    """Max abs difference of the two on the windows, in padded batches of 4 (lengths mixed)."""
    worst = 0.0
    for start in range(0, len(window_rows), 4):
        wave, lengths = padded(window_rows[start : start + 4])
        a = exported.score_windows(wave, lengths)
        b = reference.score_windows(wave, lengths)
        worst = max(worst, float((a - b).abs().max()))
    return worst


# -- exporters ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress prints, warnings and registration logs, out of the report."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnx_ir", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _onnx_graph(graph: ScoreGraph, window: int, min_len: int, fixed: bool) -> Any:
    batch = torch.export.Dim("batch", min=1, max=4096)
    wave_dims: dict[int, Any] = {0: batch}
    if not fixed:
        wave_dims[1] = torch.export.Dim("time", min=min_len, max=2**24)
    with _quiet():
        program = torch.onnx.export(
            graph,
            example_inputs(window, fixed),
            dynamo=True,
            dynamic_shapes=(wave_dims, {0: batch}),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            verbose=False,
        )
    return program.model_proto


def _torchscript_bytes(graph: ScoreGraph, window: int, fixed: bool, extra: dict[str, str]) -> bytes:
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(graph, example_inputs(window, fixed), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    # a loaded module saves to the same records every time (a traced one pickles differently):
    # the bytes hashed at export are those of the loaded module the file is written from
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")
    buffer = io.BytesIO()
    torch.jit.save(loaded, buffer, _extra_files=extra)
    return buffer.getvalue()


def _dynamic_error(run: Any, graph: ScoreGraph, min_len: int, window: int) -> float:
    """Max abs difference of ``run(wave, lengths)`` against the eager graph on the probes."""
    worst = 0.0
    for wave, lengths in probe_inputs(window, min_len):
        with torch.inference_mode():
            expected = graph(wave, lengths)
        got = torch.as_tensor(run(wave.numpy(), lengths.numpy())).reshape(-1)
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _onnx_runner(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda w, n: session.run(None, {"wave": w, "lengths": n})[0]


def _ts_runner(data: bytes) -> Any:
    module = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run(w: np.ndarray, n: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(w), torch.from_numpy(n)).numpy()

    return run


def build_graph(
    scorer: SpoofScorer, fmt: str, window: int, fixed_length: int | None
) -> tuple[Any, int | None, str]:
    """The exported graph (``ModelProto`` or TorchScript bytes without metadata), its fixed
    length (None: dynamic) and why it is fixed."""
    min_len = scorer.min_len
    reason = ""
    if fixed_length is None:
        if fmt == "onnx" and has_rnn(scorer.net):
            reason = "packed RNN (torch.export cannot trace pack_padded_sequence)"
        else:
            graph = ScoreGraph(scorer, fixed=False).eval()
            try:
                if fmt == "onnx":
                    model = _onnx_graph(graph, window, min_len, fixed=False)
                    run = _onnx_runner(model)
                else:
                    model = _torchscript_bytes(graph, window, False, {})
                    run = _ts_runner(model)
                error = _dynamic_error(run, graph, min_len, window)
                if error < DYNAMIC_TOLERANCE:
                    return model, None, ""
                reason = (
                    f"the dynamic-length graph scores other lengths {error:.2g} off "
                    "(shapes fixed at trace time)"
                )
            except Exception as exc:  # every exporter failure means: try a fixed length
                reason = f"dynamic length failed ({_first_line(exc)})"
        log.info("exporting at a fixed length: %s", reason)
    else:
        reason = "asked (--window-seconds)"
    length = fixed_length or window
    graph = ScoreGraph(scorer, fixed=True).eval()
    try:
        if fmt == "onnx":
            return _onnx_graph(graph, length, min_len, fixed=True), length, reason
        return _torchscript_bytes(graph, length, True, {}), length, reason
    except Exception as exc:
        raise ExportError(
            f"cannot export {type(scorer.net).__name__} to {fmt} even at a fixed length "
            f"({_first_line(exc)})"
        ) from exc


# -- metadata -------------------------------------------------------------------------------------
def base_metadata(
    checkpoint: dict[str, Any], source: Path, scorer: SpoofScorer, fmt: str, window: int
) -> dict[str, Any]:
    calibration = stored_calibration(checkpoint)
    cal = calibration.to_dict() if calibration is not None else None
    p = scorer.preprocessing
    return {
        "format_version": FORMAT_VERSION,
        "producer": "deepfake-detect",
        "project_version": project_version(),
        "torch_version": torch.__version__,
        "format": fmt,
        "inputs": {"wave": "float32 [batch, time]", "lengths": "int64 [batch]"},
        "outputs": {"score": "float32 [batch]"},
        "sample_rate": p.sample_rate,
        "window": window,
        "hop": window // 2,
        "preprocessing": p.to_dict(),
        "min_len": scorer.min_len,
        "net": type(scorer.net).__name__,
        "objective": type(scorer.objective).__name__,
        "uses_logits": scorer.uses_logits,
        "score_semantics": SCORE_SEMANTICS,
        "calibration": cal,
        "threshold": None if cal is None else cal.get("threshold"),
        "reject_band": None if cal is None else cal.get("reject_band"),
        "source_checkpoint": source.name,
        "source_sha256": file_sha256(source),
    }


def detect_window(scorer: SpoofScorer) -> int:
    """The window ``detect`` and streaming cut (``Detector.window``)."""
    p = scorer.preprocessing
    return int(p.max_len or p.max_eval_len or DEFAULT_WINDOW_SECONDS * p.sample_rate)


def _write_atomically(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the entry point ------------------------------------------------------------------------------
def export_model(
    checkpoint_path: str | Path,
    output_path: str | Path,
    format: str = "onnx",  # noqa: A002 - the brief's and the CLI's name
    int8: str | None = None,
    calibration: Sequence[str | Path] | str | Path | None = None,
    parity_clips: Sequence[str | Path] | None = None,
    window_seconds: float | None = None,
) -> ExportReport:
    """Export ``checkpoint_path`` to ``output_path`` (see the module docstring).

    ``int8``: None, ``"dynamic"`` or ``"static"`` (ONNX only); ``calibration``: audio files, a
    folder or a manifest for static int8; ``parity_clips``: audio to check parity on (default:
    a few ``mini_la`` eval clips when present, else synthetic clips with a warning);
    ``window_seconds``: export at this fixed window length (default: a dynamic length where
    the model allows it, else the training crop, ``detect``'s window)."""
    with warnings.catch_warnings():  # torch.jit.* are deprecated: their FutureWarnings
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return _export(
            checkpoint_path, output_path, format, int8, calibration, parity_clips, window_seconds
        )


def _export(
    checkpoint_path: str | Path,
    output_path: str | Path,
    format: str,  # noqa: A002
    int8: str | None,
    calibration: Sequence[str | Path] | str | Path | None,
    parity_clips: Sequence[str | Path] | None,
    window_seconds: float | None,
) -> ExportReport:
    started = time.perf_counter()
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {FORMATS}, got {format!r}")
    if int8 is not None and int8 not in INT8_MODES:
        raise ExportError(f"--int8 must be one of {INT8_MODES}, got {int8!r}")
    if int8 is not None and format != "onnx":
        raise ExportError(
            "int8 export is an onnxruntime path: use --format onnx with --int8 (TorchScript "
            "int8 would need torch.ao.quantization, which is deprecated)"
        )
    if int8 == "static" and not calibration:
        raise ExportError("--int8 static needs --calibration PATH (audio files, folder, manifest)")
    if format == "onnx":
        require_onnx()
        require_onnxruntime()  # the dynamic-length probe and the parity check run the file
        if importlib.util.find_spec("onnxscript") is None:
            raise ExportError(f"ONNX export needs onnxscript: {INSTALL_HINT}")
    source = Path(checkpoint_path).expanduser()
    output = Path(output_path).expanduser()
    checkpoint = read_checkpoint(source)
    scorer = SpoofScorer.from_checkpoint_dict(checkpoint, source)
    window = detect_window(scorer)
    rate = scorer.preprocessing.sample_rate
    fixed = None
    if window_seconds is not None:
        fixed = round(window_seconds * rate)
        if fixed < scorer.min_len:
            raise ExportError(
                f"--window-seconds {window_seconds} is shorter than the model's minimum input "
                f"({scorer.min_len / rate:g} s)"
            )
    metadata = base_metadata(checkpoint, source, scorer, format, window)
    notes: list[str] = []

    # parity clips first: a bad path fails before minutes of export
    if parity_clips:
        clips = read_clips([str(p) for p in parity_clips], rate, "parity")
        clip_source = "given clips"
    elif paths := default_parity_clips():
        clips = read_clips(paths, rate, "parity")
        clip_source = "mini_la eval"
    else:
        clips = synthetic_clips(rate)
        clip_source = "synthetic tones"
        notes.append(
            "parity checked on synthetic tones (no ../shared/data/mini_la, no --parity-clips): "
            "pass real clips with --parity-clips"
        )
    cal_windows = None
    if int8 == "static":
        files = collect_inputs(
            [str(calibration)]
            if isinstance(calibration, (str, Path))
            else [str(c) for c in calibration or []]
        )
        cal_clips = read_clips(files[: 4 * CALIBRATION_WINDOWS], rate, "calibration")
        cal_windows = list(clip_windows(cal_clips, fixed or window, CALIBRATION_WINDOWS))

    graph, fixed_length, reason = build_graph(scorer.eval(), format, window, fixed)
    metadata.update(
        fixed_length=fixed_length,
        axes_reason=reason if fixed_length else "",
        int8=int8,
        max_batch=4096,
    )

    reference = reference_scorer(scorer, {**metadata, "format": "pytorch"})
    if cal_windows is not None:
        prepared = [prepare_row(w, reference) for w in cal_windows]
        cal_windows = as_numpy_windows([p for p, _ in prepared], [n for _, n in prepared])
    if format == "onnx" and int8 is not None:
        graph = quantize(graph, int8, cal_windows)

    rows = list(clip_windows(clips, window, PARITY_WINDOWS))
    with tempfile.TemporaryDirectory(
        prefix="dfd-export-", dir=output.parent if output.parent.is_dir() else None
    ) as tmp:
        staged = Path(tmp) / output.name
        bound = PARITY_BOUND if int8 is None else None
        metadata["parity"] = {
            "max_abs_diff": None,
            "bound": bound,
            "clips": len(clips),
            "windows": len(rows),
            "source": clip_source,
        }
        # the parity result goes into the metadata: write, measure on the file, write again
        data = _serialize(graph, metadata, format)
        staged.write_bytes(data)
        exported = load_exported(staged)
        diff = parity(exported, reference, rows)
        if bound is not None and not diff < bound:
            raise ExportError(
                f"parity check failed: the {format} export of {source} scores {diff:.3g} off "
                f"the PyTorch model (max abs diff over {len(rows)} windows of {len(clips)} "
                f"clips, bound {bound:g}); nothing written to {output}"
            )
        metadata["parity"]["max_abs_diff"] = diff
        data = _serialize(graph, metadata, format)
    _write_atomically(data, output)
    final = load_exported(output).metadata
    return ExportReport(
        path=output,
        format=format,
        metadata=final,
        parity_max_abs_diff=diff,
        fixed_length=fixed_length,
        size_bytes=output.stat().st_size,
        seconds=time.perf_counter() - started,
        warnings=notes,
    )


def prepare_row(wave: torch.Tensor, host: ExportedScorer) -> tuple[torch.Tensor, int]:
    """One window as the runtime hands it to the graph: tiled up to ``min_len``, and to the
    fixed length of a fixed-length model (a longer window: its first ``fixed_length``)."""
    lengths = torch.tensor([wave.numel()])
    tiled, n = tile_short(wave[None], lengths, host.min_len)
    row = tiled[0, : int(n[0])]
    size = host.fixed_length
    if size is not None:
        row = row.repeat((size + row.numel() - 1) // row.numel())[:size]
    return row, row.numel()


def _serialize(graph: Any, metadata: dict[str, Any], fmt: str) -> bytes:
    import json

    if fmt == "onnx":
        model = type(graph)()
        model.CopyFrom(graph)
        onnx_set_metadata(model, metadata)
        return model.SerializeToString()
    sealed = seal(metadata, torchscript_content_sha256(graph))
    module = torch.jit.load(io.BytesIO(graph), map_location="cpu")
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={METADATA_KEY: json.dumps(sealed, sort_keys=True)})
    return buffer.getvalue()
