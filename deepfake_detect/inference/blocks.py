"""Long audio without holding it: a file decoded in blocks, down-mixed and resampled block by
block to exactly the samples that resampling it whole gives (:func:`resampled_blocks`, over a
:class:`BlockResampler` that also takes a live stream in pieces of any size), and a stream of
samples cut into the windows :func:`~deepfake_detect.data.preprocessing.window_starts`
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
    margin of input on both sides, cut at whole resampling periods (:class:`BlockResampler`).
    Raises :class:`~deepfake_detect.data.audio.AudioError` for undecodable or non-finite data."""
    stats = stats if stats is not None else BlockStats()
    rate = f.samplerate
    name = str(f.name)
    if rate == target_rate:
        yield from _mono_blocks(f, max(1, int(block_seconds * rate)), stats, name)
        return
    resampler = BlockResampler(rate, target_rate, block_seconds)
    for piece in _mono_blocks(f, resampler.block, stats, name):
        yield from resampler.push(piece)
    yield from resampler.finish()


class BlockResampler:
    """Resamples a mono stream pushed in pieces of any size: the concatenation of what
    :meth:`push` and :meth:`finish` return equals ``resample(whole stream)`` (up to float
    rounding), whatever the pieces. Input is resampled in blocks of ``block`` frames (whole
    resampling periods, about ``block_seconds``) with ``margin`` frames of context on each side,
    so a block comes out once ``margin`` frames past its end have arrived; the samples do not
    depend on how the input was pieced, only on ``block_seconds``. At equal rates pieces pass
    through."""

    def __init__(self, rate: int, target_rate: int, block_seconds: float = BLOCK_SECONDS) -> None:
        self.rate, self.target_rate = rate, target_rate
        g = math.gcd(rate, target_rate)
        self.orig, self.new = rate // g, target_rate // g
        self.margin = _margin(self.orig, self.new) if rate != target_rate else 0
        self.block = self.orig * max(1, int(block_seconds * rate) // self.orig)
        self.buffer = torch.empty(0)
        self.buffer_start = 0  # input frame of buffer[0]
        self.start = 0  # input frame of the next block to emit (a multiple of orig)
        self.done = False

    def _block(self, available: int, final: bool) -> Tensor:
        first = max(self.start - self.margin, 0)
        last = min(self.start + self.block + self.margin, available)
        segment = self.buffer[first - self.buffer_start : last - self.buffer_start]
        out = resample(segment, self.rate, self.target_rate)
        skip = (self.start - first) // self.orig * self.new
        return out[skip:] if final else out[skip : skip + self.block // self.orig * self.new]

    def _advance(self) -> None:
        self.start += self.block
        keep_from = max(self.start - self.margin, 0)
        self.buffer = self.buffer[keep_from - self.buffer_start :]
        self.buffer_start = keep_from

    def push(self, piece: Tensor) -> list[Tensor]:
        """Resampled blocks that the input so far completes (possibly none)."""
        if self.done:
            raise RuntimeError("BlockResampler: push after finish")
        piece = piece.reshape(-1).float()
        if self.rate == self.target_rate:
            return [piece] if piece.numel() else []
        self.buffer = torch.cat([self.buffer, piece])
        out = []
        while self.buffer_start + self.buffer.numel() >= self.start + self.block + self.margin:
            out.append(self._block(self.buffer_start + self.buffer.numel(), final=False))
            self._advance()
        return out

    def finish(self) -> list[Tensor]:
        """The rest, once the input has ended."""
        self.done = True
        if self.rate == self.target_rate:
            return []
        out = []
        available = self.buffer_start + self.buffer.numel()
        while self.start < available:
            final = self.start + self.block >= available
            out.append(self._block(available, final))
            if final:
                break
            self._advance()
        return out


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
