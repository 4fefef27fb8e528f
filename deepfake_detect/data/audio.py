"""Audio I/O and the one preprocessing function shared by training, evaluation and inference.

I/O goes through soundfile (torchaudio's loaders need FFmpeg); torchaudio only resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from deepfake_detect.data.manifest import CorpusError, Utterance

NORMALIZATIONS = ("zscore", "peak", "none")


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, empty, or with non-finite samples."""


@dataclass
class ScanReport:
    """What the header scan found: files resampled or down-mixed, files that cannot be used."""

    resampled: int = 0
    downmixed: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of unreadable or empty files."""


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``[frames, channels]`` and its sample rate."""
    try:
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(f"cannot decode {path}: {exc}") from exc
    return data, sample_rate


def preprocess(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    target_rate: int = 16000,
    normalize: str = "zscore",
    source: str = "<array>",
) -> torch.Tensor:
    """Raw decoded audio -> the mono float32 waveform every model sees.

    ``samples`` is ``[frames]`` or ``[frames, channels]``. Steps: down-mix to mono, resample to
    ``target_rate``, reject empty / non-finite audio, normalise (``zscore``: zero mean, unit
    variance, as Wav2Vec2's feature extractor does; ``peak``: max |x| = 1; ``none``).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if wave.ndim == 2:
        wave = wave.mean(dim=1)
    elif wave.ndim != 1:
        raise AudioError(f"{source}: expected [frames] or [frames, channels], got {wave.shape}")
    if wave.numel() == 0:
        raise AudioError(f"{source}: empty audio")
    if not torch.isfinite(wave).all():
        raise AudioError(f"{source}: contains NaN or infinite samples")
    if sample_rate != target_rate:
        wave = AF.resample(wave, sample_rate, target_rate)
    if normalize == "zscore":
        wave = (wave - wave.mean()) / (wave.std(unbiased=False) + 1e-7)
    elif normalize == "peak":
        wave = wave / (wave.abs().max() + 1e-7)
    return wave


def load_waveform(path: str, target_rate: int = 16000, normalize: str = "zscore") -> torch.Tensor:
    """Read a file and :func:`preprocess` it."""
    data, sample_rate = read_audio(path)
    return preprocess(data, sample_rate, target_rate, normalize, source=path)


def scan_manifest(
    rows: Sequence[Utterance], target_rate: int = 16000, decode: bool = False
) -> ScanReport:
    """Read every file's header (and with ``decode`` its samples) before training starts.

    Fills ``num_frames`` (at the file's own rate), ``sample_rate`` and ``channels`` on each row and
    collects unusable files instead of raising, so the caller can name them all at once.
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
        report.resampled += info.samplerate != target_rate
        report.downmixed += info.channels > 1
        if decode:
            try:
                load_waveform(row.path, target_rate, normalize="none")
            except AudioError as exc:
                report.bad.append((row.path, str(exc)))
    return report


def check_policy(policy: str) -> str:
    if policy not in ("fail", "skip"):
        raise CorpusError(f"data.bad_audio must be 'fail' or 'skip', got {policy!r}")
    return policy
