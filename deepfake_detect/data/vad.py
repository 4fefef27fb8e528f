"""Silence trimming: the contract's ``trim_silence`` step (see
:mod:`deepfake_detect.data.preprocessing`), run right after decode / resample for training,
evaluation and ``detect`` alike.

Speech is found by Silero VAD (the ``silero-vad`` package, MIT), whose TorchScript model ships
inside the wheel: no download at run time, no runtime but torch. It runs at 16 kHz; other rates
are resampled for the detector only (the trimmed audio keeps its own rate and samples). It is
deterministic: the model's state is reset for every call.

Modes (:data:`TRIM_MODES`):

- ``none``: the audio is returned as it is (the same tensor: nothing runs).
- ``edges``: leading and trailing non-speech is cut, keeping :data:`EDGE_MARGIN` seconds of it
  on each side where the audio has it; pauses inside are kept.
- ``all``: the speech segments, each with :data:`GAP_MARGIN` seconds on each side (overlapping
  ones merged), are concatenated: pauses are removed too.

Audio in which no speech is found is returned unchanged, flagged ``no_speech`` (never empty).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from deepfake_detect.data.preprocessing import TRIM_MODES, resample

VAD_RATE = 16_000
"""The rate the detector runs at."""
EDGE_MARGIN = 0.1
"""Seconds of non-speech kept before the first and after the last speech segment (``edges``)."""
GAP_MARGIN = 0.05
"""Seconds kept on each side of every speech segment (``all``)."""
THRESHOLD = 0.5
"""Silero's speech probability threshold (its default)."""
MIN_SPEECH_MS = 250
"""Shorter detected speech is ignored (Silero's default: clicks and breaths are not speech)."""

_models: dict[int, Any] = {}
_lock = threading.Lock()


class Trimmed(NamedTuple):
    wave: Tensor
    no_speech: bool
    """The detector ran and found no speech: ``wave`` is the input, unchanged."""
    removed: int
    """Samples removed."""


def _silero() -> tuple[Any, Any]:
    """The VAD model of this process (loaded once per process: loader workers load their own)
    and Silero's ``get_speech_timestamps``."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "data.trim_silence needs the silero-vad package: pip install silero-vad"
        ) from exc
    finally:
        torch.set_num_threads(threads)  # silero_vad sets 1 thread for the process on import
    model = _models.get(os.getpid())
    if model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            model = silero_vad.load_silero_vad(onnx=False)
        torch.set_num_threads(threads)
        _models[os.getpid()] = model
    return model, silero_vad.get_speech_timestamps


def speech_segments(wave: Tensor, sample_rate: int) -> list[tuple[int, int]]:
    """Speech in a mono ``wave`` ``[T]``: sorted, disjoint ``(start, end)`` sample ranges at
    ``sample_rate`` (end exclusive); empty when there is none."""
    wave = wave.reshape(-1).float()
    if wave.numel() == 0:
        return []
    vad_wave = resample(wave, sample_rate, VAD_RATE)
    model, get_speech_timestamps = _silero()
    with _lock, torch.inference_mode():
        found = get_speech_timestamps(
            vad_wave,
            model,
            threshold=THRESHOLD,
            sampling_rate=VAD_RATE,
            min_speech_duration_ms=MIN_SPEECH_MS,
            speech_pad_ms=0,
        )
    scale = sample_rate / VAD_RATE
    n = wave.numel()
    segments = []
    for item in found:
        start = min(n, math.floor(item["start"] * scale))
        end = min(n, math.ceil(item["end"] * scale))
        if end > start:
            segments.append((start, end))
    return segments


def _padded(segments: Sequence[tuple[int, int]], margin: int, n: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in segments:
        start, end = max(0, start - margin), min(n, end + margin)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def trim_silence(wave: Tensor, sample_rate: int, mode: str = "none") -> Trimmed:
    """``wave`` ``[T]`` without its non-speech, as ``mode`` says (see the module's docstring)."""
    if mode not in TRIM_MODES:
        raise ValueError(f"trim_silence must be one of {TRIM_MODES}, got {mode!r}")
    if mode == "none":
        return Trimmed(wave, False, 0)
    segments = speech_segments(wave, sample_rate)
    n = wave.shape[-1]
    if not segments:
        return Trimmed(wave, True, 0)
    if mode == "edges":
        margin = round(EDGE_MARGIN * sample_rate)
        start, end = max(0, segments[0][0] - margin), min(n, segments[-1][1] + margin)
        out = wave[..., start:end]
    else:
        margin = round(GAP_MARGIN * sample_rate)
        pieces = _padded(segments, margin, n)
        out = torch.cat([wave[..., s:e] for s, e in pieces], dim=-1)
    return Trimmed(out, False, n - out.shape[-1])


__all__: Sequence[str] = (
    "TRIM_MODES",
    "Trimmed",
    "speech_segments",
    "trim_silence",
)
