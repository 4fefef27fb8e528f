"""The preprocessing contract: what a model's input is, from a file on disk to the tensor its net
sees. Training, evaluation and every inference path apply this one chain::

    decode -> mono / resample -> [train-only transforms] -> crop or pad -> normalise

The first four steps run on the data side (:mod:`deepfake_detect.data.dataset`, in the loader
workers); **normalisation is applied to exactly what the model scores in one pass**: the training
crop, the evaluation utterance (whole, or capped by ``eval_max_len``), and each window when a
long utterance is scored in windows (longer than ``max_eval_len``) or when ``detect`` and the
streaming scorer cut a recording into windows. It runs in the scorer
(:class:`deepfake_detect.models.scorer.SpoofScorer`), per item and with padding masked, so a
padded utterance normalises as it does alone and an exported model carries it.

The settings are one :class:`Preprocessing` record. Training stores it in the checkpoint's
hyper-parameters (``preprocessing``); evaluation and inference read it back from there
(:func:`resolve_preprocessing` refuses a data config that contradicts it unless told to).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

DEFAULT_SAMPLE_RATE = 16_000
NORMALIZATIONS = ("zscore", "peak", "none")
PAD_MODES = ("repeat", "zero", "none")
TRIM_MODES = ("none", "edges", "all")
"""Silence trimming (:mod:`deepfake_detect.data.vad`): ``none``, leading / trailing non-speech
(``edges``), or every pause (``all``)."""
SILENCE_PEAK = 1e-4
"""An utterance whose down-mixed peak stays below this (-80 dBFS: digital silence, dither only,
or stereo channels that cancel) is flagged *silent*: scored, but counted and named in reports."""

CONTRACT_KEYS = ("sample_rate", "normalize", "min_len", "max_eval_len", "trim_silence")
"""The settings a trained model depends on: an evaluation that sets one of them to another value
than the checkpoint's is refused (unless ``override_preprocessing``)."""

WaveTransform = Callable[[Tensor, int, np.random.Generator], Tensor]
"""A train-only waveform transform: ``(mono wave [T], sample_rate, rng) -> wave [T']``.
It runs after resampling and before the crop; ``rng`` is the item's own generator, so a
transform is reproducible whatever worker runs it."""


@dataclass(frozen=True)
class Preprocessing:
    """The input contract of a model (every length is in samples at ``sample_rate``).

    - ``sample_rate``: every file is resampled to it (mono down-mix first).
    - ``normalize``: ``zscore`` (zero mean, unit variance, as Wav2Vec2's feature extractor),
      ``peak`` (max |x| = 1) or ``none``, applied to what the model scores in one pass.
    - ``max_len``: the training crop (a random window; shorter clips are padded by
      ``train_pad``: ``repeat`` tiles, ``zero`` zero-pads, ``none`` keeps them short; None
      trains on whole utterances). It is also the window length of ``detect`` / streaming.
    - ``eval_max_len``: evaluation reads whole utterances (None) or their first samples.
    - ``min_len``: shorter inputs are tiled up to it (and up to the net's own minimum) before
      scoring, so a 10 ms clip gets a score from its own samples, alone or in a batch.
    - ``max_eval_len``: longer inputs are scored in windows of this length (hop: half of it),
      each normalised alone, and the window scores averaged; None scores any length in one
      pass (a 10-minute clip through a transformer needs tens of GB).
    - ``trim_silence``: non-speech removed by a voice-activity detector right after resampling
      (:mod:`deepfake_detect.data.vad`): ``none``, ``edges`` or ``all``. Checkpoints from before
      this setting load as ``none``.
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    normalize: str = "zscore"
    max_len: int | None = 64_000
    train_pad: str = "repeat"
    eval_max_len: int | None = None
    min_len: int = 1_600
    max_eval_len: int | None = 480_000
    trim_silence: str = "none"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.train_pad not in PAD_MODES:
            raise ValueError(f"train_pad must be one of {PAD_MODES}, got {self.train_pad!r}")
        if self.trim_silence not in TRIM_MODES:
            raise ValueError(f"trim_silence must be one of {TRIM_MODES}, got {self.trim_silence!r}")
        for name in ("sample_rate", "min_len"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_len", "eval_max_len", "max_eval_len"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise ValueError(f"{name} must be positive or null, got {value}")
        if self.max_eval_len is not None and self.max_eval_len < self.min_len:
            raise ValueError(f"max_eval_len ({self.max_eval_len}) < min_len ({self.min_len})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing settings {unknown} (known: {sorted(known)})")
        nullable = ("max_len", "eval_max_len", "max_eval_len")
        return cls(**{k: v for k, v in values.items() if v is not None or k in nullable})


class PreprocessingMismatch(ValueError):
    """A data config that contradicts the preprocessing a checkpoint was trained with."""


def resolve_preprocessing(
    trained: Preprocessing,
    requested: Mapping[str, Any],
    override: bool = False,
    what: str = "the checkpoint",
) -> Preprocessing:
    """The preprocessing to evaluate ``trained``'s model with.

    ``requested`` holds the data config's settings; None (eval.yaml's default) means "as
    trained". A contract setting (:data:`CONTRACT_KEYS`) that differs from the trained one is an
    error, unless ``override`` (then it wins). Other settings (``eval_max_len``) are free.
    """
    changes: dict[str, Any] = {}
    conflicts = []
    for key, value in requested.items():
        if value is None or key in ("max_len", "train_pad"):
            continue
        if key not in CONTRACT_KEYS:
            changes[key] = value
        elif value != getattr(trained, key):
            conflicts.append(f"data.{key}={value} (trained with {getattr(trained, key)})")
            changes[key] = value
    if conflicts and not override:
        raise PreprocessingMismatch(
            f"{what} was trained with other preprocessing: {', '.join(conflicts)}. "
            "Drop these overrides to evaluate as trained, or add override_preprocessing=true "
            "to evaluate with them anyway."
        )
    return Preprocessing(**{**trained.to_dict(), **changes})


# -- the data side: mono / resample, crop or pad --------------------------------------------
def to_mono(samples: np.ndarray | Tensor) -> Tensor:
    """``[frames]`` or ``[frames, channels]`` -> float32 ``[frames]`` (channel mean)."""
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if wave.ndim == 2:
        wave = wave.mean(dim=1)
    elif wave.ndim != 1:
        raise ValueError(f"expected [frames] or [frames, channels], got {tuple(wave.shape)}")
    return wave


def resample(wave: Tensor, from_rate: int, to_rate: int) -> Tensor:
    if from_rate == to_rate:
        return wave
    return AF.resample(wave, from_rate, to_rate)


def frames_needed(samples: int, file_rate: int, target_rate: int) -> int:
    """Frames at ``file_rate`` that yield at least ``samples`` at ``target_rate``."""
    return math.ceil(samples * file_rate / target_rate)


def crop_or_pad(
    wave: Tensor, max_len: int | None, rng: np.random.Generator | None, pad: str
) -> Tensor:
    """Crop ``wave`` to ``max_len`` (a random window with ``rng``, else the leading one), then
    pad it up to ``max_len`` by tiling (``repeat``), with zeros (``zero``), or not (``none``)."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    if max_len is None:
        return wave
    n = wave.shape[-1]
    if n > max_len:
        start = int(rng.integers(0, n - max_len + 1)) if rng is not None else 0
        return wave[start : start + max_len]
    if n == max_len or pad == "none" or n == 0:
        return wave
    if pad == "repeat":
        return wave.repeat((max_len + n - 1) // n)[:max_len]
    return torch.nn.functional.pad(wave, (0, max_len - n))


def is_silent(wave: Tensor) -> bool:
    return wave.numel() == 0 or float(wave.abs().max()) < SILENCE_PEAK


# -- the model side: tile short inputs, window long ones, normalise ---------------------------
def valid_mask(lengths: Tensor, width: int) -> Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def normalize_batch(wave: Tensor, lengths: Tensor, mode: str) -> Tensor:
    """Normalise each row of ``wave`` ``[B, T]`` over its first ``lengths[i]`` samples; padding
    stays zero. Rows are first scaled by their peak, so finite audio of any scale (a float file
    at 1e38) normalises without overflow; an all-zero row stays zero."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "none":
        return wave
    mask = valid_mask(lengths, wave.shape[-1])
    x = wave.float().masked_fill(~mask, 0.0)
    peak = x.abs().amax(dim=-1, keepdim=True)
    x = x / torch.where(peak > 0, peak, torch.ones_like(peak))
    if mode == "peak":
        return x
    count = lengths.clamp(min=1).to(x.dtype)[:, None]
    mean = x.sum(dim=-1, keepdim=True) / count
    centred = (x - mean).masked_fill(~mask, 0.0)
    std = (centred.square().sum(dim=-1, keepdim=True) / count).sqrt()
    return centred / (std + 1e-7)


def tile_short(wave: Tensor, lengths: Tensor, min_len: int) -> tuple[Tensor, Tensor]:
    """Rows shorter than ``min_len`` are tiled (repeated) up to it; others are unchanged."""
    short = (lengths < min_len) & (lengths > 0)
    if not bool(short.any()):
        return wave, lengths
    width = max(wave.shape[-1], min_len)
    out = torch.nn.functional.pad(wave, (0, width - wave.shape[-1]))
    new_lengths = lengths.clone()
    for i in torch.nonzero(short).flatten().tolist():
        n = int(lengths[i])
        out[i, :min_len] = wave[i, :n].repeat((min_len + n - 1) // n)[:min_len]
        new_lengths[i] = min_len
    return out, new_lengths


def window_starts(length: int, window: int, hop: int | None = None) -> list[int]:
    """Start samples of windows of ``window`` covering ``length`` samples with hop ``hop``
    (default half a window); the last window ends at the end."""
    hop = hop or max(1, window // 2)
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def windows(wave: Tensor, window: int, hop: int | None = None) -> Tensor:
    """``wave`` ``[T]`` cut into ``[W, window]`` windows (see :func:`window_starts`)."""
    starts = window_starts(wave.shape[-1], window, hop)
    if len(starts) == 1 and wave.shape[-1] <= window:
        return wave[None]
    return torch.stack([wave[s : s + window] for s in starts])


def batch_lengths(wave: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long, device=wave.device)
    return lengths.to(device=wave.device, dtype=torch.long)


def as_preprocessing(value: Preprocessing | Mapping[str, Any] | None) -> Preprocessing:
    if value is None:
        return Preprocessing()
    if isinstance(value, Preprocessing):
        return value
    return Preprocessing.from_dict(dict(value))


def describe(preprocessing: Preprocessing) -> str:
    p = preprocessing
    cap = "whole utterances" if p.eval_max_len is None else f"the first {p.eval_max_len} samples"
    window = "no limit" if p.max_eval_len is None else f"{p.max_eval_len} samples"
    return (
        f"{p.sample_rate} Hz mono, {p.normalize} per scored input, training crop {p.max_len}, "
        f"evaluation on {cap}, min {p.min_len}, windowed above {window}"
        + ("" if p.trim_silence == "none" else f", silence trimmed ({p.trim_silence})")
    )


__all__: Sequence[str] = (
    "CONTRACT_KEYS",
    "DEFAULT_SAMPLE_RATE",
    "NORMALIZATIONS",
    "PAD_MODES",
    "TRIM_MODES",
    "Preprocessing",
    "PreprocessingMismatch",
    "WaveTransform",
    "as_preprocessing",
    "crop_or_pad",
    "describe",
    "frames_needed",
    "is_silent",
    "normalize_batch",
    "resample",
    "resolve_preprocessing",
    "tile_short",
    "to_mono",
    "window_starts",
    "windows",
)
