"""Long audio without holding it: a file decoded in blocks, down-mixed and resampled block by
block to exactly the samples that resampling it whole gives (:func:`resampled_blocks`), and a
stream of samples cut into the windows :func:`~deepfake_detect.data.preprocessing.window_starts`
gives for the whole length (:class:`WindowCutter`). Memory stays at a block plus a window,
whatever the file's length; the streaming scorer feeds a :class:`WindowCutter` the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from deepfake_detect.data.audio import AudioError
from deepfake_detect.data.preprocessing import resample, to_mono

BLOCK_SECONDS = 30.0
"""Seconds of audio decoded at a time."""
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
"""torchaudio's resampling defaults, which :func:`~deepfake_detect.data.preprocessing.resample`
uses: they set how far the resampling kernel reaches."""


@dataclass
class BlockStats:
    """What was decoded so far: frames at the file's rate and the peak of the mono signal."""

    frames: int = 0
    peak: float = 0.0


def _margin(orig: int, new: int) -> int:
    """Input frames of context on each side of a block (a whole number of resampling periods,
    ``orig`` frames each, covering the kernel's half-width)."""
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))
    return orig * (math.ceil(width / orig) + 2)


def _mono_blocks(f: sf.SoundFile, frames: int, stats: BlockStats, name: str) -> Iterator[Tensor]:
    while True:
        try:
            data = f.read(frames, dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises several types for corrupt data
            raise AudioError(
                f"{name}: truncated or corrupt (decoding fails past frame {stats.frames}: {exc})"
            ) from exc
        if data.shape[0] == 0:
            return
        if not np.isfinite(data).all():
            raise AudioError(f"{name}: contains NaN or infinite samples")
        wave = to_mono(data)
        stats.frames += wave.numel()
        stats.peak = max(stats.peak, float(wave.abs().max()))
        yield wave


def resampled_blocks(
    f: sf.SoundFile,
    target_rate: int,
    block_seconds: float = BLOCK_SECONDS,
    stats: BlockStats | None = None,
) -> Iterator[Tensor]:
    """Mono blocks of an open file at ``target_rate`` whose concatenation equals
    ``resample(to_mono(whole file))`` (up to float rounding): each block is resampled with a
    margin of input on both sides, cut at whole resampling periods. Raises
    :class:`~deepfake_detect.data.audio.AudioError` for undecodable or non-finite data."""
    stats = stats if stats is not None else BlockStats()
    rate = f.samplerate
    name = str(f.name)
    if rate == target_rate:
        yield from _mono_blocks(f, max(1, int(block_seconds * rate)), stats, name)
        return
    g = math.gcd(rate, target_rate)
    orig, new = rate // g, target_rate // g
    margin = _margin(orig, new)
    block = orig * max(1, int(block_seconds * rate) // orig)
    source = _mono_blocks(f, block, stats, name)
    buffer = torch.empty(0)
    buffer_start = 0  # input frame of buffer[0]
    start = 0  # input frame of the next block to emit (a multiple of orig)
    ended = False
    while True:
        while not ended and buffer_start + buffer.numel() < start + block + margin:
            piece = next(source, None)
            if piece is None:
                ended = True
            else:
                buffer = torch.cat([buffer, piece])
        available = buffer_start + buffer.numel()
        if start >= available:
            return
        first = max(start - margin, 0)
        last = min(start + block + margin, available)
        segment = buffer[first - buffer_start : last - buffer_start]
        out = resample(segment, rate, target_rate)
        skip = (start - first) // orig * new
        final = ended and start + block >= available
        yield out[skip:] if final else out[skip : skip + block // orig * new]
        if final:
            return
        start += block
        keep_from = max(start - margin, 0)
        buffer = buffer[keep_from - buffer_start :]
        buffer_start = keep_from


class WindowCutter:
    """Cuts a stream of samples into windows of ``window`` samples with hop ``hop``: the
    windows of :func:`~deepfake_detect.data.preprocessing.window_starts` for the stream's final
    length (a short stream gives one short window), without knowing that length in advance.
    :meth:`push` returns the windows complete so far, :meth:`finish` the last one."""

    def __init__(self, window: int, hop: int | None = None) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self.hop = hop or max(1, window // 2)
        self.buffer = torch.empty(0)
        self.buffer_start = 0
        self.total = 0
        self.next_start = 0
        self.last_start: int | None = None

    def _cut(self, start: int) -> Tensor:
        i = start - self.buffer_start
        return self.buffer[i : i + self.window]

    def push(self, samples: Tensor) -> list[tuple[int, Tensor]]:
        self.buffer = torch.cat([self.buffer, samples.reshape(-1).float()])
        self.total += samples.numel()
        out = []
        while self.next_start + self.window <= self.total:
            out.append((self.next_start, self._cut(self.next_start).clone()))
            self.last_start = self.next_start
            self.next_start += self.hop
        keep_from = max(min(self.next_start, self.total - self.window), self.buffer_start, 0)
        self.buffer = self.buffer[keep_from - self.buffer_start :]
        self.buffer_start = keep_from
        return out

    def finish(self) -> list[tuple[int, Tensor]]:
        if self.total == 0:
            return []
        if self.last_start is None:  # shorter than a window: the whole stream
            return [(0, self._cut(0).clone())]
        if self.last_start + self.window < self.total:
            start = self.total - self.window
            self.last_start = start
            return [(start, self._cut(start).clone())]
        return []
