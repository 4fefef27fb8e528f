"""Codec and channel transforms: lossy codecs, G.711 companding, telephone band, gain, speed.

Codecs go through **soundfile** (libsndfile 1.2, already the project's audio I/O): an in-memory
encode and decode with LAME / mpg123 (MP3), libvorbis (Ogg Vorbis), libopus (Opus), libgsm
(GSM 06.10, an 8 kHz codec: the clip goes through 8 kHz and back) and G.711 μ-law / A-law.
No extra dependency, no temporary files, and the same library that reads the corpora. The
bitrate is set by libsndfile's ``compression_level`` (0 = best quality, 1 = smallest),
drawn per item from ``quality``. Decoded audio is realigned on the input (MP3 adds an encoder
delay) and cropped or padded to its length, so a round trip keeps length and rate.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy import signal

from deepfake_detect.augment.base import (
    Augmentation,
    check_choices,
    check_range,
    fit_length,
    uniform,
)

CODECS = {
    # name: (container, subtype, uses compression_level)
    "mp3": ("MP3", "MPEG_LAYER_III", True),
    "vorbis": ("OGG", "VORBIS", True),
    "opus": ("OGG", "OPUS", True),
    "gsm": ("WAV", "GSM610", False),
    "mulaw": ("WAV", "ULAW", False),
    "alaw": ("WAV", "ALAW", False),
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
GSM_RATE = 8000
MAX_DELAY = 4096
"""Largest codec delay searched when realigning a decoded clip (MP3's is ~1,100 samples)."""


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return x
    return AF.resample(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), rate, target
    ).numpy()


def realign(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``decoded`` shifted by the lag (0 to :data:`MAX_DELAY`) that best matches ``reference``,
    then cropped or zero-padded to its length."""
    n = min(len(reference), 16_384)
    if len(decoded) > len(reference) and n > 0:
        window = decoded[: n + MAX_DELAY]
        corr = signal.correlate(window, reference[:n], mode="valid", method="fft")
        lag = int(np.argmax(corr)) if len(corr) else 0
        decoded = decoded[lag:]
    return fit_length(decoded, len(reference))


def codec_round_trip(
    x: np.ndarray, sample_rate: int, codec: str, compression: float = 0.5
) -> np.ndarray:
    """Encode ``x`` with ``codec`` (a key of :data:`CODECS`) in memory and decode it: same length
    and rate. The input is scaled to peak 0.9 for the encoder and scaled back."""
    container, subtype, compressed = CODECS[codec]
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0:
        return x
    scaled = (x * (0.9 / peak)).astype(np.float32)
    rate = sample_rate
    if codec == "gsm":
        rate = GSM_RATE
    elif codec == "opus" and rate not in OPUS_RATES:
        rate = 48_000
    encoded = _resample(scaled, sample_rate, rate)
    buffer = io.BytesIO()
    extra = {"compression_level": float(compression)} if compressed else {}
    if codec == "mp3":
        extra["bitrate_mode"] = "CONSTANT"
    sf.write(buffer, encoded, rate, format=container, subtype=subtype, **extra)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    decoded = _resample(decoded, rate, sample_rate)
    return realign(decoded, scaled) * (peak / 0.9)


class Codec(Augmentation):
    """A lossy codec round trip, the codec picked from ``codecs`` (mp3, vorbis, opus, gsm,
    mulaw, alaw) and the compression level (mp3 / vorbis / opus) from ``quality`` (0 = best,
    0.95 = about the smallest bitrate libsndfile accepts)."""

    name = "codec"

    def __init__(
        self,
        p: float = 1.0,
        codecs: Sequence[str] = ("mp3", "vorbis", "opus", "gsm", "mulaw", "alaw"),
        quality: Sequence[float] = (0.3, 0.95),
    ) -> None:
        super().__init__(p)
        self.codecs = check_choices("codecs", codecs, list(CODECS))
        self.quality = check_range("quality", quality, 0.0, 0.95)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        codec = self.codecs[int(rng.integers(len(self.codecs)))]
        return codec_round_trip(x, sample_rate, codec, uniform(rng, self.quality))

    def __repr__(self) -> str:
        return f"Codec({self.codecs}, p={self.p:g})"


def telephone_band(
    x: np.ndarray, sample_rate: int, low: float = 300.0, high: float = 3400.0, rate: int = 8000
) -> np.ndarray:
    """A telephone channel: down to ``rate`` and back (anti-aliasing removes everything above
    its Nyquist), then a 4th-order Butterworth band-pass ``low``-``high`` Hz (zero phase)."""
    narrow = _resample(x, sample_rate, rate) if rate < sample_rate else x
    back = fit_length(_resample(narrow, rate, sample_rate), len(x)) if rate < sample_rate else x
    sos = signal.butter(
        4, [low, min(high, sample_rate / 2 * 0.99)], "bandpass", fs=sample_rate, output="sos"
    )
    # sosfiltfilt's default edge padding (3 * (2 * sections + 1)) needs a longer input
    padlen = min(3 * (2 * len(sos) + 1), len(back) - 1)
    return signal.sosfiltfilt(sos, back, padlen=padlen).astype(np.float32)


class Telephone(Augmentation):
    """Telephone band-limiting: an 8 kHz round trip and a ``low``-``high`` Hz band-pass, with
    the band edges drawn from ``low`` / ``high`` ranges."""

    name = "telephone"

    def __init__(
        self,
        p: float = 1.0,
        low: Sequence[float] = (200.0, 400.0),
        high: Sequence[float] = (3000.0, 3600.0),
        rate: int = 8000,
    ) -> None:
        super().__init__(p)
        self.low = check_range("low", low, low=1.0)
        self.high = check_range("high", high, low=self.low[1])
        self.rate = int(rate)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        high = min(uniform(rng, self.high), min(self.rate, sample_rate) / 2 * 0.99)
        return telephone_band(x, sample_rate, uniform(rng, self.low), high, self.rate)


class Gain(Augmentation):
    """A gain drawn from ``gain_db``; the result is clipped to [-1, 1] like a real recording
    chain (with the zscore or peak normalisation of the contract, only the clipping is seen)."""

    name = "gain"

    def __init__(self, p: float = 1.0, gain_db: Sequence[float] = (-6.0, 6.0)) -> None:
        super().__init__(p)
        self.gain_db = check_range("gain_db", gain_db, -60.0, 60.0)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x * 10 ** (uniform(rng, self.gain_db) / 20), -1.0, 1.0)


class Speed(Augmentation):
    """Speed perturbation by resampling: the clip is resampled by ``factor`` (drawn from
    ``factors``, rounded to a 1 % step) and played at the original rate, so tempo and pitch
    change together (Kaldi's 0.9 / 1.0 / 1.1 recipe). The length changes by ``1 / factor``
    (the crop comes after)."""

    name = "speed"

    def __init__(self, p: float = 1.0, factors: Sequence[float] = (0.9, 1.1)) -> None:
        super().__init__(p)
        self.factors = check_range("factors", factors, 0.5, 2.0)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        factor = round(uniform(rng, self.factors), 2)
        if factor == 1.0:
            return x
        return _resample(x, 100, int(round(100 / factor)))
