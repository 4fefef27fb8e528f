"""Audio I/O: decoding whole files or seeking to a window, and the scan that checks every file of
a selection before training starts.

I/O goes through soundfile (torchaudio's loaders need FFmpeg); torchaudio only resamples. What
happens to the samples afterwards is the preprocessing contract
(:mod:`deepfake_detect.data.preprocessing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch

from deepfake_detect.data.manifest import CorpusError, Utterance
from deepfake_detect.data.preprocessing import resample, to_mono

TAIL_FRAMES = 4096
"""The header scan decodes this many frames at the end of every file: a truncated FLAC or WAV
whose header promises more frames than it holds fails here instead of mid-epoch."""


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, empty, truncated, or non-finite samples."""


@dataclass
class ScanReport:
    """What the scan found: the files that cannot be used."""

    bad: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of unreadable, empty, truncated or non-finite files."""


def read_audio(path: str, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Decode ``frames`` frames from ``start`` (all: -1) to float32 ``[frames, channels]``; and
    the file's sample rate. Seeking reads only the window, whatever the file's length."""
    try:
        data, sample_rate = sf.read(
            path, start=start, frames=frames, dtype="float32", always_2d=True
        )
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(f"cannot decode {path}: {exc}") from exc
    return data, sample_rate


def load_mono(
    path: str, target_rate: int, start: int = 0, frames: int = -1, file_rate: int | None = None
) -> torch.Tensor:
    """Decode (a window of) a file, down-mix to mono, check it, resample to ``target_rate``."""
    data, rate = read_audio(path, start, frames)
    if file_rate is not None and rate != file_rate:
        raise AudioError(f"{path}: sample rate {rate} Hz, but the manifest says {file_rate} Hz")
    wave = to_mono(data)
    if wave.numel() == 0:
        raise AudioError(f"{path}: empty audio")
    if not torch.isfinite(wave).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return resample(wave, rate, target_rate)


def _check_tail(path: str, frames: int) -> str | None:
    """None when the last ``TAIL_FRAMES`` frames decode in full, else why not."""
    tail = min(frames, TAIL_FRAMES)
    try:
        with sf.SoundFile(path) as f:
            f.seek(frames - tail)
            got = f.read(tail, dtype="float32", always_2d=True)
    except Exception as exc:
        return f"truncated or corrupt: its last {tail} frames cannot be decoded ({exc})"
    if got.shape[0] < tail:
        return f"truncated: the header promises {frames} frames, the data ends earlier"
    if not np.isfinite(got).all():
        return "contains NaN or infinite samples"
    return None


def scan_manifest(rows: Sequence[Utterance], decode: bool = False) -> ScanReport:
    """Check every file before training starts; collect unusable ones instead of raising.

    Reads every header and decodes every file's last block (truncation); with ``decode`` it
    decodes every sample too (NaN anywhere). Fills ``num_frames`` (at the file's own rate),
    ``sample_rate`` and ``channels`` on each row.
    """
    report = ScanReport()
    for row in rows:
        try:
            info = sf.info(row.path)
        except Exception as exc:
            report.bad.append((row.path, f"unreadable ({exc})"))
            continue
        if info.frames <= 0:
            report.bad.append((row.path, "empty (0 frames)"))
            continue
        row.num_frames, row.sample_rate, row.channels = info.frames, info.samplerate, info.channels
        problem = _check_tail(row.path, info.frames)
        if problem is None and decode:
            try:
                data, _ = read_audio(row.path)
            except AudioError as exc:
                problem = str(exc)
            else:
                if data.shape[0] < info.frames:
                    problem = f"truncated: {data.shape[0]} of {info.frames} frames decode"
                elif not np.isfinite(data).all():
                    problem = "contains NaN or infinite samples"
        if problem is not None:
            report.bad.append((row.path, problem))
    return report


def count_conversions(rows: Sequence[Utterance], target_rate: int) -> tuple[int, int]:
    """How many scanned rows will be resampled and how many down-mixed."""
    resampled = sum(1 for r in rows if r.sample_rate is not None and r.sample_rate != target_rate)
    downmixed = sum(1 for r in rows if (r.channels or 1) > 1)
    return resampled, downmixed


def check_policy(policy: str) -> str:
    if policy not in ("fail", "skip"):
        raise CorpusError(f"data.bad_audio must be 'fail' or 'skip', got {policy!r}")
    return policy
