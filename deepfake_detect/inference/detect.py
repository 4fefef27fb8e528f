"""Scoring files, folders and manifests with a trained model: what ``deepfake-detect detect``
runs (and ``calibrate`` for its dev scores).

Every file is read in blocks and cut into windows of the model's training crop
(:mod:`deepfake_detect.inference.blocks`); windows of consecutive files share batches; each file
gets the window scores, their aggregate, ``p_spoof`` and a decision from the checkpoint's
calibration (:mod:`deepfake_detect.inference.calibration`; :mod:`.semantics` says what they
mean). A file that cannot be scored (unreadable, unsupported, empty, silent, NaN) gets a
reason instead and never stops the batch.

A checkpoint trained with silence trimming (``trim_silence``, :mod:`deepfake_detect.data.vad`)
has it applied here to each decoded block (``--block-seconds``, 30 s by default) before the
windows are cut: a file up to a block long is trimmed exactly as training and evaluation trim
it; a longer one is trimmed block by block (with ``edges``, non-speech at block boundaries goes
too), and its timeline's times are then positions in the trimmed audio.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile as sf
import torch

from deepfake_detect.data.audio import AudioError
from deepfake_detect.data.corpora.base import AUDIO_EXTENSIONS, list_audio, open_text
from deepfake_detect.data.preprocessing import SILENCE_PEAK, Preprocessing
from deepfake_detect.data.vad import trim_silence
from deepfake_detect.export.runtime import ExportedScorer, exported_format, load_exported
from deepfake_detect.inference.blocks import (
    BLOCK_SECONDS,
    BlockStats,
    WindowCutter,
    resampled_blocks,
)
from deepfake_detect.inference.calibration import (
    BONAFIDE,
    SPOOF,
    UNCALIBRATED,
    UNCERTAIN,
    Calibration,
    check_reject_band,
    stored_calibration,
)
from deepfake_detect.inference.semantics import AGGREGATES
from deepfake_detect.models.checkpoint import CheckpointError, read_checkpoint
from deepfake_detect.models.scorer import SpoofScorer

FORMATS = ("csv", "jsonl")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")
CSV_COLUMNS = (
    "path",
    "duration",
    "score",
    "p_spoof",
    "decision",
    "windows",
    "spoof_windows",
    "reason",
)
DEFAULT_WINDOW_SECONDS = 4.0
"""The window of a model trained on whole utterances (``max_len: null``) and not windowed."""


class DetectError(ValueError):
    """Inputs or options ``detect`` cannot work with (a folder without audio, a bad manifest)."""


# -- the model ----------------------------------------------------------------------------------
@dataclass
class Detector:
    """A scorer (a checkpoint's, or an exported file's :class:`ExportedScorer`), its
    calibration (None: none stored) and where it came from."""

    scorer: SpoofScorer | ExportedScorer
    calibration: Calibration | None
    path: str

    @property
    def preprocessing(self) -> Preprocessing:
        return self.scorer.preprocessing

    @property
    def decisions(self) -> Calibration:
        return self.calibration or UNCALIBRATED

    def window(self) -> int:
        """Window length in samples: the training crop (``max_len``); for a model trained on
        whole utterances, the evaluation window (``max_eval_len``)."""
        p = self.preprocessing
        return int(p.max_len or p.max_eval_len or DEFAULT_WINDOW_SECONDS * p.sample_rate)


def load_model(path: str | Path) -> Detector:
    """A checkpoint's scorer (eval mode) and calibration, read once, without Lightning; or an
    exported model (ONNX or TorchScript, recognised by content) with the calibration its
    metadata carries (:func:`deepfake_detect.export.load_exported`)."""
    if Path(path).expanduser().is_file() and exported_format(Path(path).expanduser()):
        exported = load_exported(path)
        return Detector(exported, exported.calibration, str(path))
    checkpoint = read_checkpoint(path)
    scorer = SpoofScorer.from_checkpoint_dict(checkpoint, path)
    try:
        calibration = stored_calibration(checkpoint)
    except TypeError as exc:
        raise CheckpointError(f"{path}: unreadable calibration ({exc})") from None
    return Detector(scorer, calibration, str(path))


# -- inputs -------------------------------------------------------------------------------------
def read_path_list(manifest: Path) -> list[str]:
    """The audio paths a manifest lists: a CSV / TSV with a ``path`` column (other columns
    ignored), or a ``.txt`` list of one path a line (``#`` comments); relative paths are taken
    from the manifest's folder."""
    base = manifest.parent
    with open_text(manifest) as f:
        if manifest.suffix.lower() == ".txt":
            entries = [line.strip() for line in f]
            entries = [e for e in entries if e and not e.startswith("#")]
        else:
            delimiter = "\t" if manifest.suffix.lower() == ".tsv" else ","
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns:
                raise DetectError(
                    f"{manifest}:1: no `path` column (header: {', '.join(columns) or 'empty'})"
                )
            reader.fieldnames = columns
            entries = [(row.get("path") or "").strip() for row in reader]
            entries = [e for e in entries if e]
    return [str(p if (p := Path(e).expanduser()).is_absolute() else base / p) for e in entries]


def collect_inputs(paths: Iterable[str | Path]) -> list[str]:
    """Files to score from files, folders (searched recursively for audio) and manifests. A
    path that does not exist stays in the list (its row says so); a folder without audio is an
    error."""
    files: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = list_audio(path, recursive=True)
            if not found:
                raise DetectError(
                    f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder or "
                    "below"
                )
            files.extend(str(p) for p in found)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            files.extend(read_path_list(path))
        else:
            files.append(str(path))
    return files


# -- results ------------------------------------------------------------------------------------
@dataclass
class WindowScore:
    start: float
    end: float
    score: float
    p_spoof: float


@dataclass
class FileResult:
    """One file's row: the aggregate, the decision and the window timeline; or a ``reason``."""

    path: str
    duration: float | None = None
    score: float | None = None
    p_spoof: float | None = None
    decision: str | None = None
    spoof_windows: float | None = None
    timeline: list[WindowScore] = field(default_factory=list)
    reason: str | None = None

    @property
    def scored(self) -> bool:
        return self.reason is None

    def row(self) -> dict[str, Any]:
        def num(x: float | None, digits: int = 6) -> float | None:
            return None if x is None else round(float(x), digits)

        return {
            "path": self.path,
            "duration": num(self.duration, 3),
            "score": num(self.score),
            "p_spoof": num(self.p_spoof),
            "decision": self.decision,
            "windows": len(self.timeline) if self.scored else None,
            "spoof_windows": num(self.spoof_windows, 4),
            "reason": self.reason,
        }

    def record(self) -> dict[str, Any]:
        """The JSON line: the row and the timeline (start s, end s, score, p_spoof)."""
        timeline = [
            {
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "score": round(w.score, 6),
                "p_spoof": round(w.p_spoof, 6),
            }
            for w in self.timeline
        ]
        return {**self.row(), "timeline": timeline}


def aggregate(
    window_scores: Sequence[float], how: str, calibration: Calibration
) -> tuple[float, float]:
    """A file's score and p_spoof from its window scores (see :mod:`.semantics`)."""
    scores = np.asarray(window_scores, dtype=np.float64)
    if how == "mean":
        score = float(scores.mean())
    elif how == "min":
        score = float(scores.min())
    elif how == "spoof_fraction":
        spoof = calibration.p_spoof(scores) > 0.5
        return float(np.median(scores)), float(spoof.mean())
    else:
        raise DetectError(f"aggregate must be one of {AGGREGATES}, got {how!r}")
    return score, float(calibration.p_spoof(score))


# -- scoring ------------------------------------------------------------------------------------
@dataclass
class DetectOptions:
    aggregate: str = "mean"
    hop_seconds: float | None = None
    batch_size: int = 16
    reject_band: float | None = None
    block_seconds: float = BLOCK_SECONDS
    device: str = "cpu"

    def check(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise DetectError(f"--aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.batch_size < 1:
            raise DetectError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise DetectError(f"--hop must be positive, got {self.hop_seconds}")
        if self.reject_band is not None:
            check_reject_band(self.reject_band)


@dataclass
class _Pending:
    """A file being scored: its windows' starts and scores (None until its batch runs)."""

    path: str
    stats: BlockStats = field(default_factory=BlockStats)
    rate: int = 0
    header_frames: int = 0
    starts: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    read: bool = False
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.read and (self.reason is not None or None not in self.scores)


def _file_windows(
    pending: _Pending,
    sample_rate: int,
    window: int,
    hop: int,
    block_seconds: float,
    on_audio: Callable[[float], None] | None = None,
    trim: str = "none",
) -> Iterator[torch.Tensor]:
    if not Path(pending.path).is_file():
        raise AudioError("not found" if not Path(pending.path).exists() else "not a file")
    try:
        handle = sf.SoundFile(pending.path)
    except Exception as exc:  # soundfile raises several types for unreadable files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if detail.startswith("Error opening"):  # libsndfile repeats the path
            detail = detail.rsplit(": ", 1)[-1].rstrip(".")
        raise AudioError(f"unreadable or unsupported audio ({detail})") from None
    with handle as f:
        pending.rate, pending.header_frames = f.samplerate, max(f.frames, 0)
        cutter = WindowCutter(window, hop)
        for block in resampled_blocks(f, sample_rate, block_seconds, pending.stats):
            if on_audio is not None:
                on_audio(block.numel() / sample_rate)
            if trim != "none":
                block = trim_silence(block, sample_rate, trim).wave
            for start, wave in cutter.push(block):
                pending.starts.append(start)
                yield wave
        for start, wave in cutter.finish():
            pending.starts.append(start)
            yield wave


def _reason(exc: AudioError, path: str) -> str:
    text = str(exc)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


def score_windows(
    scorer: SpoofScorer | ExportedScorer, wave: torch.Tensor, lengths: torch.Tensor
) -> list[float]:
    """Scores of a padded batch of windows, each scored in one pass (no further windowing):
    what ``detect`` and the streaming scorer give every window."""
    with torch.inference_mode():
        if isinstance(scorer, ExportedScorer):
            return scorer.score_windows(wave, lengths).tolist()
        embedding, logits = scorer.outputs(wave, lengths)
        return scorer.score_outputs(embedding, logits).cpu().tolist()


class _Batch:
    def __init__(self, scorer: SpoofScorer | ExportedScorer, device: str) -> None:
        self.scorer = scorer
        self.device = torch.device(device)
        self.items: list[tuple[_Pending, int, torch.Tensor]] = []

    def add(self, pending: _Pending, wave: torch.Tensor) -> None:
        pending.scores.append(None)
        pending.lengths.append(wave.numel())
        self.items.append((pending, len(pending.scores) - 1, wave))

    def run(self) -> None:
        if not self.items:
            return
        lengths = torch.tensor([w.numel() for _, _, w in self.items])
        wave = torch.zeros(len(self.items), int(lengths.max()))
        for row, (_, _, w) in enumerate(self.items):
            wave[row, : w.numel()] = w
        scores = score_windows(self.scorer, wave.to(self.device), lengths.to(self.device))
        for (pending, index, _), score in zip(self.items, scores, strict=True):
            pending.scores[index] = float(score)
        self.items = []


def _finish(pending: _Pending, detector: Detector, options: DetectOptions) -> FileResult:
    rate = pending.rate
    frames = pending.header_frames if pending.reason else pending.stats.frames
    duration = frames / rate if rate else None
    result = FileResult(pending.path, duration=duration)
    if pending.reason is not None:
        result.reason = pending.reason
    elif pending.stats.frames == 0:
        result.reason = "empty (0 frames)"
    elif pending.stats.peak < SILENCE_PEAK:
        result.reason = "silent (peak below -80 dBFS)"
    elif any(not math.isfinite(s) for s in pending.scores):  # type: ignore[arg-type]
        result.reason = "the model gave a non-finite score"
    if not result.scored:
        return result
    calibration = detector.decisions
    scores = [float(s) for s in pending.scores]  # type: ignore[arg-type]
    sample_rate = detector.preprocessing.sample_rate
    p_windows = calibration.p_spoof(scores)
    result.timeline = [
        WindowScore(start / sample_rate, (start + n) / sample_rate, score, float(p))
        for start, n, score, p in zip(
            pending.starts, pending.lengths, scores, p_windows, strict=True
        )
    ]
    result.score, result.p_spoof = aggregate(scores, options.aggregate, calibration)
    result.decision = calibration.decide(result.p_spoof, options.reject_band)[0]
    result.spoof_windows = float(np.mean(p_windows > 0.5))
    return result


def score_files(
    detector: Detector,
    files: Sequence[str],
    options: DetectOptions | None = None,
    on_audio: Callable[[float], None] | None = None,
) -> Iterator[FileResult]:
    """Score ``files`` in order, one :class:`FileResult` each (as soon as it is complete).
    ``on_audio`` is called with the seconds of each block read (progress within long files).
    Bad options raise here, before anything is scored."""
    options = options or DetectOptions()
    options.check()
    sample_rate = detector.preprocessing.sample_rate
    window = detector.window()
    hop = window // 2 if options.hop_seconds is None else round(options.hop_seconds * sample_rate)
    if not 1 <= hop <= window:
        raise DetectError(
            f"--hop must be between 1 sample and the window ({window / sample_rate:g} s), got "
            f"{options.hop_seconds} s"
        )
    detector.scorer.to(options.device)
    return _scored(detector, files, options, window, hop, on_audio)


def _scored(
    detector: Detector,
    files: Sequence[str],
    options: DetectOptions,
    window: int,
    hop: int,
    on_audio: Callable[[float], None] | None,
) -> Iterator[FileResult]:
    sample_rate = detector.preprocessing.sample_rate
    batch = _Batch(detector.scorer, options.device)
    queue: deque[_Pending] = deque()

    def ready() -> Iterator[FileResult]:
        while queue and queue[0].done:
            yield _finish(queue.popleft(), detector, options)

    for path in files:
        pending = _Pending(path)
        queue.append(pending)
        try:
            cut = _file_windows(
                pending,
                sample_rate,
                window,
                hop,
                options.block_seconds,
                on_audio,
                detector.preprocessing.trim_silence,
            )
            for wave in cut:
                batch.add(pending, wave)
                if len(batch.items) >= options.batch_size:
                    batch.run()
                    yield from ready()
        except AudioError as exc:
            pending.reason = _reason(exc, path)
        pending.read = True
        yield from ready()
    batch.run()
    yield from ready()


# -- output -------------------------------------------------------------------------------------
class ResultWriter:
    """CSV (the row) or JSON lines (the row and the window timeline), one file per line."""

    def __init__(self, stream: TextIO, fmt: str = "csv") -> None:
        if fmt not in FORMATS:
            raise DetectError(f"--format must be one of {FORMATS}, got {fmt!r}")
        self.stream, self.fmt = stream, fmt
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(CSV_COLUMNS)

    def write(self, result: FileResult) -> None:
        if self.csv is not None:
            row = result.row()
            self.csv.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        else:
            self.stream.write(json.dumps(result.record()) + "\n")
        self.stream.flush()


@dataclass
class Summary:
    """Counts per decision and the files skipped, for the end of a run."""

    decisions: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: FileResult) -> None:
        if result.scored:
            self.decisions[result.decision or ""] += 1
            self.seconds += result.duration or 0.0
        else:
            self.skipped.append((result.path, result.reason or ""))

    @property
    def files(self) -> int:
        return sum(self.decisions.values()) + len(self.skipped)

    def lines(self, detector: Detector, elapsed: float) -> list[str]:
        counts = ", ".join(f"{d} {self.decisions.get(d, 0)}" for d in (BONAFIDE, SPOOF, UNCERTAIN))
        audio = self.seconds / 3600
        lines = [
            f"scored {sum(self.decisions.values())} of {self.files} files ({audio:.3g} h of "
            f"audio) in {elapsed:.1f} s: {counts}",
            detector.decisions.describe(),
        ]
        if self.skipped:
            by_reason = Counter(reason.split(" (")[0] for _, reason in self.skipped)
            lines.append(
                f"skipped {len(self.skipped)}: "
                + "; ".join(f"{reason} {n}" for reason, n in by_reason.most_common())
            )
            lines.extend(f"  {path}: {reason}" for path, reason in self.skipped[:20])
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (see the output's reason)")
        return lines


class Progress:
    """One self-rewriting line on a terminal's stderr (files done, audio read, elapsed),
    redrawn at most twice a second; silent when stderr is not a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done, self.seconds = total, 0, 0.0
        self.start = time.monotonic()
        self.shown = -1.0

    def audio(self, seconds: float) -> None:
        """Audio read (resampled seconds), for progress within a long file."""
        self.seconds += seconds
        self._show()

    def update(self, result: FileResult) -> None:
        self.done += 1
        self._show(force=self.done == self.total)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.shown > 0.5):
            self.shown = now
            audio = time.strftime("%H:%M:%S", time.gmtime(self.seconds))
            self.stream.write(
                f"\rdetect: {self.done}/{self.total} files, {audio} of audio read, "
                f"{now - self.start:.0f} s"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.shown >= 0:
            self.stream.write("\n")
            self.stream.flush()
