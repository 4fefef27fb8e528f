"""Scoring a live stream: audio pushed in chunks of any size, one event per window as soon as
the window is complete, with the running aggregate, the running decision and an early decision.

A :class:`StreamingScorer` resamples the incoming audio with the block resampler of
:mod:`.blocks` (the contract's resampling, the samples of resampling the whole stream) and cuts
it with the :class:`~.blocks.WindowCutter` that ``detect`` uses: the windows, and so the window
scores, are the ones ``detect`` gives for the same audio (the last window, aligned to the end,
comes when the stream ends). Sources: :meth:`StreamingScorer.run` takes any iterable of numpy
chunks (``[frames]`` or ``[frames, channels]``, float); :func:`file_chunks` reads a file
progressively and :func:`pcm_chunks` reads raw PCM (s16le / f32le) from a binary stream such
as stdin.

Each :class:`StreamEvent` carries the window (start, end in s, score, p_spoof and its own
decision), the running aggregate of all windows so far (``--aggregate`` as in ``detect``), the
running decision (calibration and reject band), and the latency: wall time from the arrival of
the chunk that completed the window to the event. The **early decision** is the first running
decision outside the reject band once the scored windows cover ``min_audio`` seconds; the stream
goes on (and the running decision may change) unless ``stop_early`` is set.

The stream is not silence-trimmed (the contract's ``trim_silence``): trimming must see where
speech ends, and a window is emitted as soon as it is complete. With a trimming checkpoint the
windows are those of the untrimmed audio, so they equal ``detect``'s only for ``none``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from deepfake_detect.data.audio import AudioError
from deepfake_detect.data.preprocessing import SILENCE_PEAK, to_mono
from deepfake_detect.inference.blocks import BlockResampler, WindowCutter
from deepfake_detect.inference.calibration import BONAFIDE, SPOOF, check_reject_band
from deepfake_detect.inference.detect import Detector, aggregate, score_windows
from deepfake_detect.inference.review import ReviewFolder
from deepfake_detect.inference.semantics import AGGREGATES

STREAM_BLOCK_SECONDS = 0.1
"""Resampling block of a stream (input at another rate than the model's): a window completes
once the resampling kernel's reach (a few ms) past its end has arrived, and at most this much
more."""
PCM_FORMATS = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}
"""Raw PCM sample formats: numpy dtype and full scale."""


class StreamError(ValueError):
    """A stream or option the streaming scorer cannot work with."""


@dataclass
class StreamOptions:
    aggregate: str = "mean"
    hop_seconds: float | None = None
    reject_band: float | None = None
    min_audio: float = 2.0
    """Seconds of audio the scored windows must cover before an early decision."""
    stop_early: bool = False
    device: str = "cpu"

    def check(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise StreamError(f"--aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise StreamError(f"--hop must be positive, got {self.hop_seconds}")
        if self.min_audio < 0:
            raise StreamError(f"--min-audio must be >= 0, got {self.min_audio}")
        if self.reject_band is not None:
            check_reject_band(self.reject_band)


@dataclass
class StreamEvent:
    """One scored window and where the stream stands after it."""

    index: int
    start: float
    end: float
    score: float
    p_spoof: float
    window_decision: str
    running_score: float
    running_p_spoof: float
    decision: str
    audio: float
    """Seconds of audio received so far (input rate)."""
    latency: float
    early_decision: str | None = None
    """The early decision once made (None before)."""
    early: bool = False
    """This event made the early decision."""
    silent: bool = False
    """The window's peak is below -80 dBFS (scored as ``detect`` scores it, never saved for
    review)."""

    def record(self) -> dict[str, Any]:
        return {
            "window": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 6),
            "p_spoof": round(self.p_spoof, 6),
            "window_decision": self.window_decision,
            "running_score": round(self.running_score, 6),
            "running_p_spoof": round(self.running_p_spoof, 6),
            "decision": self.decision,
            "audio": round(self.audio, 3),
            "latency_ms": round(1000 * self.latency, 2),
            "early_decision": self.early_decision,
            "early": self.early,
            "silent": self.silent,
        }


@dataclass
class StreamSummary:
    """The whole stream: the decision over all its windows, the early decision, latencies."""

    audio: float = 0.0
    windows: int = 0
    score: float | None = None
    p_spoof: float | None = None
    decision: str | None = None
    early_decision: str | None = None
    early_at: float | None = None
    """End (s) of the window that made the early decision."""
    stopped_early: bool = False
    silent: bool = False
    latencies: list[float] = field(default_factory=list)

    def latency(self, q: float) -> float:
        return float(np.quantile(self.latencies, q)) if self.latencies else float("nan")

    def record(self) -> dict[str, Any]:
        return {
            "audio": round(self.audio, 3),
            "windows": self.windows,
            "score": None if self.score is None else round(self.score, 6),
            "p_spoof": None if self.p_spoof is None else round(self.p_spoof, 6),
            "decision": self.decision,
            "early_decision": self.early_decision,
            "early_at": self.early_at,
            "stopped_early": self.stopped_early,
            "latency_ms_median": round(1000 * self.latency(0.5), 2),
            "latency_ms_p95": round(1000 * self.latency(0.95), 2),
        }

    def lines(self, detector: Detector, elapsed: float) -> list[str]:
        if not self.windows:
            return [f"no window scored ({self.audio:.2f} s of audio received)"]
        early = (
            f"early decision {self.early_decision} at {self.early_at:.2f} s"
            + (" (stopped there)" if self.stopped_early else "")
            if self.early_decision
            else "no early decision (the running decision never left the reject band after "
            "the minimum audio)"
        )
        lines = [
            f"stream: {self.audio:.2f} s of audio, {self.windows} windows in {elapsed:.1f} s: "
            f"{self.decision} (score {self.score:.4g}, p_spoof {self.p_spoof:.3f}); {early}",
            f"latency per window: median {1000 * self.latency(0.5):.1f} ms, p95 "
            f"{1000 * self.latency(0.95):.1f} ms, max {1000 * max(self.latencies):.1f} ms",
            detector.decisions.describe(),
        ]
        if self.silent:
            lines.append("the stream is silent (peak below -80 dBFS): its scores mean little")
        return lines


class StreamingScorer:
    """Push chunks (:meth:`push`), end the stream (:meth:`finish`); or drive it with
    :meth:`run`. ``input_rate``: the chunks' sample rate (resampled to the contract's).
    ``review``: a folder that keeps windows decided spoof or uncertain; ``source``: the name it
    records for them."""

    def __init__(
        self,
        detector: Detector,
        input_rate: int,
        options: StreamOptions | None = None,
        review: ReviewFolder | None = None,
        source: str = "stream",
    ) -> None:
        self.options = options or StreamOptions()
        self.options.check()
        if input_rate <= 0:
            raise StreamError(f"the sample rate must be positive, got {input_rate}")
        self.detector, self.review, self.source = detector, review, source
        self.sample_rate = detector.preprocessing.sample_rate
        self.window = detector.window()
        hop_seconds = self.options.hop_seconds
        rate = self.sample_rate
        self.hop = self.window // 2 if hop_seconds is None else round(hop_seconds * rate)
        if not 1 <= self.hop <= self.window:
            raise StreamError(
                f"--hop must be between 1 sample and the window "
                f"({self.window / self.sample_rate:g} s), got {hop_seconds} s"
            )
        self.input_rate = input_rate
        self.resampler = BlockResampler(input_rate, self.sample_rate, STREAM_BLOCK_SECONDS)
        self.cutter = WindowCutter(self.window, self.hop)
        self.scores: list[float] = []
        self.received = 0
        self.peak = 0.0
        self.summary = StreamSummary()
        self.finished = False
        detector.scorer.to(self.options.device)

    @property
    def stopped(self) -> bool:
        """An early decision was made and ``stop_early`` asks to stop there."""
        return self.options.stop_early and self.summary.early_decision is not None

    def push(self, chunk: np.ndarray | Tensor, arrived: float | None = None) -> list[StreamEvent]:
        """Take a chunk (``[frames]`` or ``[frames, channels]``); the events of the windows it
        completes. ``arrived``: its arrival (``time.perf_counter()``; default: now)."""
        arrived = time.perf_counter() if arrived is None else arrived
        if self.finished:
            raise StreamError("push after the stream ended")
        if self.stopped:
            return []
        wave = to_mono(chunk)
        if not torch.isfinite(wave).all():
            raise AudioError(
                f"{self.source}: NaN or infinite samples in the chunk at "
                f"{self.received / self.input_rate:.2f} s"
            )
        self.received += wave.numel()
        if wave.numel():
            self.peak = max(self.peak, float(wave.abs().max()))
        windows = [w for block in self.resampler.push(wave) for w in self.cutter.push(block)]
        return self._score(windows, arrived)

    def finish(self, arrived: float | None = None) -> list[StreamEvent]:
        """End the stream: the events of its last windows (the one aligned to the end, or the
        whole stream when it is shorter than a window)."""
        arrived = time.perf_counter() if arrived is None else arrived
        if self.finished or self.stopped:
            self.finished = True
            return []
        self.finished = True
        windows = [w for block in self.resampler.finish() for w in self.cutter.push(block)]
        events = self._score(windows, arrived)
        if not self.stopped:
            events += self._score(self.cutter.finish(), arrived)
        self.summary.audio = self.received / self.input_rate
        self.summary.silent = self.received > 0 and self.peak < SILENCE_PEAK
        return events

    def run(self, chunks: Iterable[np.ndarray | Tensor]) -> Iterator[StreamEvent]:
        """Score a whole stream: events as they come, until the chunks end (or the early
        decision, with ``stop_early``). A chunk's arrival is when the iterable yields it."""
        source = iter(chunks)
        while not self.stopped:
            chunk = next(source, None)
            if chunk is None:
                break
            yield from self.push(chunk, time.perf_counter())
        yield from self.finish(time.perf_counter())

    def _score(self, windows: list[tuple[int, Tensor]], arrived: float) -> list[StreamEvent]:
        if not windows:
            return []
        lengths = torch.tensor([w.numel() for _, w in windows])
        wave = torch.zeros(len(windows), int(lengths.max()))
        for row, (_, w) in enumerate(windows):
            wave[row, : w.numel()] = w
        device = torch.device(self.options.device)
        scores = score_windows(self.detector.scorer, wave.to(device), lengths.to(device))
        calibration = self.detector.decisions
        band = self.options.reject_band
        events = []
        for (start, w), score in zip(windows, scores, strict=True):
            if not np.isfinite(score):
                raise StreamError(
                    f"{self.source}: the model gave a non-finite score for the window at "
                    f"{start / self.sample_rate:.2f} s"
                )
            self.scores.append(float(score))
            running, running_p = aggregate(self.scores, self.options.aggregate, calibration)
            p = float(calibration.p_spoof(score))
            end = (start + w.numel()) / self.sample_rate
            event = StreamEvent(
                index=len(self.scores) - 1,
                start=start / self.sample_rate,
                end=end,
                score=float(score),
                p_spoof=p,
                window_decision=calibration.decide(p, band)[0],
                running_score=running,
                running_p_spoof=running_p,
                decision=calibration.decide(running_p, band)[0],
                audio=self.received / self.input_rate,
                latency=0.0,
                silent=w.numel() == 0 or float(w.abs().max()) < SILENCE_PEAK,
            )
            self._decide_early(event)
            events.append(event)
            review = self.review
            if review is not None and not event.silent and review.wants(event.window_decision):
                review.add_wave(
                    w,
                    source=self.source,
                    kind="window",
                    start=event.start,
                    end=event.end,
                    score=event.score,
                    p_spoof=event.p_spoof,
                    decision=event.window_decision,
                )
            if self.stopped:
                break
        done = time.perf_counter()
        for event in events:
            event.latency = done - arrived
            self.summary.latencies.append(event.latency)
        self._update_summary(events[-1])
        return events

    def _decide_early(self, event: StreamEvent) -> None:
        summary = self.summary
        if summary.early_decision is None and event.decision in (BONAFIDE, SPOOF):
            if event.end >= self.options.min_audio - 1e-9:
                summary.early_decision, summary.early_at = event.decision, event.end
                summary.stopped_early = self.options.stop_early
                event.early = True
        event.early_decision = summary.early_decision

    def _update_summary(self, last: StreamEvent) -> None:
        s = self.summary
        s.audio, s.windows = last.audio, len(self.scores)
        s.score, s.p_spoof, s.decision = last.running_score, last.running_p_spoof, last.decision


# -- sources ------------------------------------------------------------------------------------
def file_chunks(path: str | Path, chunk_seconds: float = 1.0) -> tuple[int, Iterator[np.ndarray]]:
    """A file's sample rate and its chunks of ``chunk_seconds``, read as they are consumed."""
    if chunk_seconds <= 0:
        raise StreamError(f"--chunk must be positive, got {chunk_seconds}")
    path = Path(path)
    if not path.is_file():
        raise StreamError(f"{path}: {'not found' if not path.exists() else 'not a file'}")
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types for unreadable files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StreamError(f"{path}: unreadable or unsupported audio ({detail})") from None
    frames = max(1, round(chunk_seconds * handle.samplerate))

    def chunks() -> Iterator[np.ndarray]:
        with handle as f:
            while True:
                try:
                    data = f.read(frames, dtype="float32", always_2d=True)
                except Exception as exc:  # soundfile raises several types for corrupt data
                    raise AudioError(f"{path}: truncated or corrupt ({exc})") from exc
                if data.shape[0] == 0:
                    return
                yield data

    return handle.samplerate, chunks()


def pcm_chunks(
    stream: BinaryIO,
    channels: int = 1,
    fmt: str = "s16le",
    chunk_frames: int = 16000,
) -> Iterator[np.ndarray]:
    """Raw interleaved PCM from a binary stream (stdin) as float32 ``[frames, channels]`` chunks
    of ``chunk_frames``; a trailing partial frame is dropped. A ``KeyboardInterrupt`` while
    reading is raised again once the audio read before it has been yielded."""
    if fmt not in PCM_FORMATS:
        raise StreamError(f"--format must be one of {tuple(PCM_FORMATS)}, got {fmt!r}")
    if channels < 1:
        raise StreamError(f"--channels must be at least 1, got {channels}")
    if chunk_frames < 1:
        raise StreamError(f"the chunk must hold at least one frame, got {chunk_frames}")
    dtype, scale = PCM_FORMATS[fmt]
    frame_bytes = np.dtype(dtype).itemsize * channels
    want = chunk_frames * frame_bytes
    pending = bytearray()
    ended = interrupted = False
    while True:
        while len(pending) < want and not ended:
            try:
                data = stream.read(want - len(pending))  # a pipe may return less: read on
            except KeyboardInterrupt:  # Ctrl-C: what was read still counts
                data, interrupted = b"", True
            if data:
                pending += data
            else:
                ended = True
        take = min(len(pending), want)
        take -= take % frame_bytes
        if not take:
            if interrupted:
                raise KeyboardInterrupt
            return
        samples = np.frombuffer(bytes(pending[:take]), dtype=dtype).astype(np.float32) / scale
        del pending[:take]
        yield samples.reshape(-1, channels)


def check_pcm_options(rate: int, channels: int, fmt: str) -> None:
    if rate <= 0:
        raise StreamError(f"--rate must be positive, got {rate}")
    if channels < 1:
        raise StreamError(f"--channels must be at least 1, got {channels}")
    if fmt not in PCM_FORMATS:
        raise StreamError(f"--format must be one of {tuple(PCM_FORMATS)}, got {fmt!r}")
