"""Additive noise at a sampled SNR: generated coloured noise (the default), noise files from a
folder (MUSAN layout or any tree of audio files), and babble made of the training corpus's own
bona fide speech.

The SNR is the ratio of the signal's power to the added noise's power over the whole clip,
``10 log10(P_signal / P_noise)`` (:func:`mix_at_snr`). Adding noise to every class takes away the
cue the mini corpora (and many real ones) leave: bona fide recordings carry a noise floor, TTS
output is digitally clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from deepfake_detect.augment.base import (
    Augmentation,
    AugmentConfigError,
    AugmentContext,
    check_choices,
    check_range,
    signal_power,
    uniform,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".sph")
COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0, "violet": -2.0}
"""Noise colour -> exponent ``a`` of its power spectral density ``1 / f^a``."""


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x + g * noise`` with ``g`` such that ``10 log10(P(x) / P(g * noise)) == snr_db``
    (``noise`` is cropped or tiled to ``x``'s length). Silent ``x`` or ``noise``: ``x``."""
    noise = tile_to(noise, len(x))
    power_x, power_n = signal_power(x), signal_power(noise)
    if power_x <= 0 or power_n <= 0:
        return x
    gain = np.sqrt(power_x / (power_n * 10 ** (snr_db / 10)))
    return (x + gain * noise).astype(np.float32)


def tile_to(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) >= length:
        return x[:length]
    if len(x) == 0:
        return np.zeros(length, dtype=np.float32)
    return np.tile(x, -(-length // len(x)))[:length]


def colored_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectral density falls as ``1 / f^exponent`` (0 white,
    1 pink, 2 brown), shaped in the frequency domain; unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0
    spectrum *= freqs ** (-exponent / 2)
    noise = np.fft.irfft(spectrum, n=length)
    std = noise.std()
    return (noise / std if std > 0 else noise).astype(np.float32)


class ColoredNoise(Augmentation):
    """Generated noise of a colour picked from ``colors`` at an SNR drawn from ``snr_db``."""

    name = "colored_noise"

    def __init__(
        self,
        p: float = 1.0,
        snr_db: Sequence[float] = (5.0, 30.0),
        colors: Sequence[str] = ("white", "pink", "brown"),
    ) -> None:
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db)
        self.colors = check_choices("colors", colors, list(COLORS))

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        color = self.colors[int(rng.integers(len(self.colors)))]
        noise = colored_noise(len(x), COLORS[color], rng)
        return mix_at_snr(x, noise, uniform(rng, self.snr_db))


def audio_files(folder: str | Path, what: str) -> list[Path]:
    """Every audio file under ``folder`` (recursively), checked readable: a missing or empty
    folder or an unreadable file is an :class:`AugmentConfigError` naming it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AugmentConfigError("folder", f"{what} folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AugmentConfigError(
            "folder", f"{what} folder {root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})"
        )
    for path in files:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AugmentConfigError("folder", f"unreadable {what} file {path}: {exc}") from None
        if info.frames <= 0:
            raise AugmentConfigError("folder", f"{what} file {path} holds no samples")
    return files


def read_segment(
    path: Path, length: int, sample_rate: int, rng: np.random.Generator | None
) -> np.ndarray:
    """A mono segment of ``length`` samples at ``sample_rate`` from a random offset of ``path``
    (the start when ``rng`` is None), tiled when the file is shorter."""
    info = sf.info(str(path))
    need = int(np.ceil(length * info.samplerate / sample_rate)) + 1
    start = 0
    if rng is not None and info.frames > need:
        start = int(rng.integers(0, info.frames - need + 1))
    data, rate = sf.read(str(path), start=start, frames=need, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = AF.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return tile_to(mono, length)


class FolderNoise(Augmentation):
    """Noise files from ``folder`` (e.g. MUSAN's ``noise/`` or ``music/``; any tree of audio
    files), a random excerpt added at an SNR drawn from ``snr_db``. The folder is listed and
    every file's header read when the config is built, so a bad folder fails before training."""

    name = "folder_noise"

    def __init__(self, folder: str, p: float = 1.0, snr_db: Sequence[float] = (5.0, 20.0)) -> None:
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db)
        self.files = audio_files(folder, "noise")
        self.folder = str(folder)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        path = self.files[int(rng.integers(len(self.files)))]
        noise = read_segment(path, len(x), sample_rate, rng)
        return mix_at_snr(x, noise, uniform(rng, self.snr_db))

    def __repr__(self) -> str:
        return f"FolderNoise({self.folder!r}, {len(self.files)} files, p={self.p:g})"


class Babble(Augmentation):
    """Babble: the sum of ``talkers`` (a range) bona fide training utterances, each a random
    excerpt at its own level, added at an SNR drawn from ``snr_db``. The talkers come from the
    training rows the data module binds (:meth:`prepare`); only bona fide speech is used, so no
    spoofed audio leaks into a bona fide item."""

    name = "babble"

    def __init__(
        self,
        p: float = 1.0,
        snr_db: Sequence[float] = (10.0, 25.0),
        talkers: Sequence[int] = (3, 7),
    ) -> None:
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db)
        lo, hi = check_range("talkers", talkers, low=1)
        self.talkers = (int(lo), int(hi))
        self.sources: list[Path] = []

    def prepare(self, context: AugmentContext) -> None:
        self.sources = [Path(r.path) for r in context.train_rows if getattr(r, "target", 0) == 1]
        if not self.sources:
            raise AugmentConfigError("babble", "the training data holds no bona fide utterances")

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        if not self.sources:
            raise RuntimeError("Babble needs prepare() with the training rows before use")
        count = int(rng.integers(self.talkers[0], self.talkers[1] + 1))
        babble = np.zeros(len(x), dtype=np.float32)
        for _ in range(count):
            talker = read_segment(
                self.sources[int(rng.integers(len(self.sources)))], len(x), sample_rate, rng
            )
            rms = np.sqrt(signal_power(talker))
            if rms > 0:
                babble += talker / rms * float(10 ** (rng.uniform(-3, 3) / 20))
        return mix_at_snr(x, babble, uniform(rng, self.snr_db))
