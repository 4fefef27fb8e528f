"""Running an exported model: :func:`load_exported` checks the file (metadata present, hashes
match) and returns an :class:`ExportedScorer`, which ``detect``, the streaming scorer and
``serve`` use in place of a :class:`~deepfake_detect.models.scorer.SpoofScorer`.

The host side of the contract lives here, as in the scorer: inputs shorter than ``min_len`` are
tiled up to it; a fixed-length model gets each window tiled (shorter) or cut into
half-overlapping windows (longer) to its length, the window scores averaged; inputs longer
than ``max_eval_len`` are scored as the mean of their windows (:meth:`ExportedScorer.forward`).
ONNX files run with onnxruntime (CPU; the CUDA provider on ``device="cuda"`` where installed),
TorchScript files with ``torch.jit.load``.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from deepfake_detect.data.preprocessing import (
    Preprocessing,
    batch_lengths,
    tile_short,
    windows,
)
from deepfake_detect.export.metadata import (
    METADATA_KEY,
    ExportError,
    check,
    onnx_content_sha256,
    onnx_metadata_text,
    sniff,
    torchscript_content_sha256,
)
from deepfake_detect.inference.calibration import Calibration

INSTALL_HINT = 'install the export extra: pip install -e ".[export]"'


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"running ONNX models needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError(f"reading and writing ONNX files needs onnx: {INSTALL_HINT}") from None
    return onnx


class Backend(Protocol):
    device: str

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray: ...

    def to(self, device: str) -> None: ...


class OnnxBackend:
    """An onnxruntime session on the model's bytes (checked once, never re-read)."""

    def __init__(self, model_bytes: bytes, path: str, device: str = "cpu", threads: int = 0):
        self.model_bytes, self.path, self.threads = model_bytes, path, threads
        self.device = ""
        self.to(device)

    def to(self, device: str | torch.device) -> None:
        device = torch.device(device).type
        if device == self.device:
            return
        ort = require_onnxruntime()
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportError(
                    f"{self.path}: device cuda asked, but this onnxruntime has no CUDA provider "
                    f"(available: {', '.join(ort.get_available_providers())}); install "
                    "onnxruntime-gpu or run on the CPU"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            raise ExportError(f"{self.path}: ONNX models run on cpu or cuda, not {device}")
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.model_bytes, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for bad graphs
            raise ExportError(
                f"{self.path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})"
            ) from None
        self.device = device

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"wave": wave, "lengths": lengths})[0]


class TorchScriptBackend:
    def __init__(self, module: torch.jit.ScriptModule, device: str = "cpu") -> None:
        self.module = module.eval()
        self.device = ""
        self.to(device)

    def to(self, device: str | torch.device) -> None:
        self.module.to(device)
        self.device = str(torch.device(device))

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        device = torch.device(self.device)
        with torch.inference_mode():
            out = self.module(
                torch.from_numpy(wave).to(device), torch.from_numpy(lengths).to(device)
            )
        return out.float().cpu().numpy()


class ExportedScorer:
    """An exported model with the host side of the contract; scorer-like for ``Detector``."""

    def __init__(self, backend: Backend, metadata: dict[str, Any], path: str) -> None:
        self.backend, self.metadata, self.path = backend, metadata, path
        self.preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        self.min_len = int(metadata["min_len"])
        self.fixed_length: int | None = metadata.get("fixed_length")
        self.format: str = metadata["format"]
        self.int8: str | None = metadata.get("int8")
        self.batch_limit = int(metadata.get("max_batch") or 0) or None

    @property
    def calibration(self) -> Calibration | None:
        values = self.metadata.get("calibration")
        return Calibration.from_dict(values) if isinstance(values, dict) else None

    def to(self, device: str | torch.device) -> ExportedScorer:
        self.backend.to(str(device))
        return self

    def eval(self) -> ExportedScorer:
        return self

    def _run(self, wave: Tensor, lengths: Tensor) -> Tensor:
        w = np.ascontiguousarray(wave.detach().float().cpu().numpy())
        n = np.ascontiguousarray(lengths.detach().cpu().numpy().astype(np.int64))
        step = self.batch_limit or len(w)
        parts = [
            np.asarray(self.backend.run(w[i : i + step], n[i : i + step]), dtype=np.float32)
            for i in range(0, len(w), step)
        ]
        return torch.from_numpy(np.concatenate(parts).reshape(-1))

    def score_windows(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Scores ``[B]`` of a padded batch of windows, each scored in one pass as
        ``SpoofScorer.outputs`` + ``score_outputs`` score it (a fixed-length model: tiled or
        windowed to its length)."""
        lengths = batch_lengths(wave, lengths).cpu()
        wave = wave.cpu()
        if wave.shape[0] == 0:
            return torch.zeros(0)
        wave, lengths = tile_short(wave, lengths, self.min_len)
        if self.fixed_length is None:
            width = int(lengths.max())
            return self._run(wave[:, :width], lengths)
        size = self.fixed_length
        rows, owner = [], []
        for i, n in enumerate(lengths.tolist()):
            row = wave[i, :n]
            if n <= 0:
                cut = torch.zeros(1, size)
            elif n <= size:
                cut = row.repeat((size + n - 1) // n)[:size][None]
            else:
                cut = windows(row, size)
            rows.append(cut)
            owner += [i] * cut.shape[0]
        batch = torch.cat(rows)
        full = torch.full((batch.shape[0],), size, dtype=torch.long)
        scores = self._run(batch, full)
        index = torch.tensor(owner)
        total = torch.zeros(wave.shape[0]).index_add_(0, index, scores)
        return total / torch.bincount(index, minlength=wave.shape[0]).float()

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Bona fide scores ``[B]`` as ``SpoofScorer.forward`` gives them: inputs longer than
        ``max_eval_len`` scored as the mean of half-overlapping windows."""
        lengths = batch_lengths(wave, lengths).cpu()
        cap = self.preprocessing.max_eval_len
        long = [cap is not None and n > cap for n in lengths.tolist()]
        if not any(long):
            return self.score_windows(wave, lengths)
        scores = torch.empty(wave.shape[0])
        keep = [i for i, is_long in enumerate(long) if not is_long]
        if keep:
            width = int(lengths[keep].max())
            scores[keep] = self.score_windows(wave[keep, :width], lengths[keep])
        for i in (i for i, is_long in enumerate(long) if is_long):
            cut = windows(wave[i, : int(lengths[i])].cpu(), int(cap))  # type: ignore[arg-type]
            scores[i] = torch.cat([self.score_windows(c) for c in cut.split(16)]).mean()
        return scores

    __call__ = forward

    def describe(self) -> str:
        axes = (
            "dynamic batch and length"
            if self.fixed_length is None
            else f"dynamic batch, fixed length {self.fixed_length} samples"
        )
        quant = f", int8 {self.int8}" if self.int8 else ""
        return f"{self.format}{quant}, {axes}"


# -- loading --------------------------------------------------------------------------------------
def _load_onnx(path: Path, device: str, threads: int) -> ExportedScorer:
    onnx = require_onnx()
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(
            f"cannot read ONNX file {path}: truncated or corrupt ({str(exc).splitlines()[0][:160]})"
        ) from None
    if not model.graph.node:
        raise ExportError(f"cannot read ONNX file {path}: truncated or corrupt (no graph)")
    metadata = check(onnx_metadata_text(model), onnx_content_sha256(model), path)
    return ExportedScorer(OnnxBackend(data, str(path), device, threads), metadata, str(path))


def _load_torchscript(path: Path, device: str) -> ExportedScorer:
    data = path.read_bytes()
    extra = {METADATA_KEY: ""}
    try:
        content = torchscript_content_sha256(data)
        with warnings.catch_warnings():  # torch.jit.* are deprecated (FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except (RuntimeError, zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExportError(
            f"cannot read TorchScript file {path}: truncated or corrupt "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    metadata = check(extra[METADATA_KEY] or None, content, path)
    return ExportedScorer(TorchScriptBackend(module, device), metadata, str(path))


def exported_format(path: str | Path) -> str | None:
    """``"onnx"`` or ``"torchscript"`` for a file that is (or claims by its suffix to be) an
    exported model, else None (a checkpoint, or something else)."""
    path = Path(path)
    kind = sniff(path)
    if kind in ("onnx", "torchscript"):
        return kind
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".ts", ".torchscript", ".jit") and kind is None:
        return "torchscript"
    return None


def load_exported(path: str | Path, device: str = "cpu", threads: int = 0) -> ExportedScorer:
    """An exported model, checked (metadata present, hashes match), ready to score on
    ``device``. ``threads``: onnxruntime's intra-op threads (0: its default)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"exported model not found: {path}")
    kind = exported_format(path)
    if kind == "onnx":
        return _load_onnx(path, device, threads)
    if kind == "torchscript":
        return _load_torchscript(path, device)
    if sniff(path) == "checkpoint" and not path.suffix.lower() == ".pt":
        raise ExportError(
            f"{path} is a training checkpoint, not an exported model: export it with "
            "`deepfake-detect export`, or load it with deepfake_detect.inference.load_model"
        )
    if path.suffix.lower() == ".pt":  # a damaged TorchScript archive reads as no archive
        return _load_torchscript(path, device)
    raise ExportError(
        f"{path} is neither an ONNX file nor a TorchScript archive exported by deepfake-detect"
    )
