"""Reverberation: the clip convolved with a room impulse response, from a folder of measured
RIRs or from simulated shoebox rooms (pyroomacoustics' image-source method; absorption and
reflection order from Sabine's formula for an RT60 drawn from ``rt60``).

Simulated rooms form a bank built once (``rooms`` of them, seeded by ``seed``) when the
augmentation is prepared in the main process; the loader workers inherit it. The output is
aligned on the RIR's direct path (its peak), so reverberation does not shift the clip, and keeps
the input's length and RMS level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy import signal

from deepfake_detect.augment.base import (
    Augmentation,
    AugmentConfigError,
    AugmentContext,
    check_range,
    signal_power,
)
from deepfake_detect.augment.noise import audio_files

MAX_RIR_SECONDS = 2.0


def simulate_rooms(
    count: int,
    sample_rate: int,
    rt60: tuple[float, float] = (0.2, 0.7),
    size: tuple[Sequence[float], Sequence[float]] = ((3.0, 3.0, 2.4), (10.0, 8.0, 4.0)),
    seed: int = 0,
) -> list[np.ndarray]:
    """``count`` RIRs of random shoebox rooms (dimensions within ``size``, source and microphone
    at least 0.5 m from the walls)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    low, high = np.asarray(size[0], dtype=float), np.asarray(size[1], dtype=float)
    for _ in range(count):
        dims = rng.uniform(low, high)
        target = float(rng.uniform(*rt60))
        try:
            absorption, order = pra.inverse_sabine(target, dims)
        except ValueError:  # a room too small for that RT60: take the largest room
            dims = high
            absorption, order = pra.inverse_sabine(target, dims)
        room = pra.ShoeBox(
            dims, fs=sample_rate, materials=pra.Material(absorption), max_order=int(order)
        )
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rirs.append(np.asarray(room.rir[0][0], dtype=np.float32))
    return rirs


def read_rir(path: object, sample_rate: int) -> np.ndarray:
    """The first :data:`MAX_RIR_SECONDS` of an RIR file, mono, at ``sample_rate``, without
    its trailing zeros."""
    info = sf.info(str(path))
    frames = int(MAX_RIR_SECONDS * info.samplerate)
    data, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = AF.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return np.trim_zeros(mono, "b")


def apply_rir(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``, aligned on the direct path, same length and RMS as ``x``."""
    rir = rir[: int(np.argmax(np.abs(rir))) + len(x) + 1]
    delay = int(np.argmax(np.abs(rir)))
    wet = signal.fftconvolve(x, rir)[delay : delay + len(x)]
    power_x, power_w = signal_power(x), signal_power(wet)
    if power_w > 0:
        wet = wet * np.sqrt(power_x / power_w)
    return wet.astype(np.float32)


class Reverb(Augmentation):
    """Reverberation by an RIR from ``folder`` (any tree of audio files, e.g. the RIRS_NOISES
    collection's ``simulated_rirs`` or ``real_rirs_isotropic_noises``), or, without a folder,
    by one of ``rooms`` simulated rooms with RT60 in ``rt60`` seconds."""

    name = "reverb"

    def __init__(
        self,
        p: float = 1.0,
        folder: str | None = None,
        rooms: int = 32,
        rt60: Sequence[float] = (0.2, 0.7),
        seed: int = 0,
    ) -> None:
        super().__init__(p)
        self.rt60 = check_range("rt60", rt60, low=0.05, high=3.0)
        if int(rooms) < 1:
            raise AugmentConfigError("rooms", f"must be at least 1, got {rooms!r}")
        self.rooms = int(rooms)
        self.seed = int(seed)
        self.folder = folder
        self.files = audio_files(folder, "RIR") if folder else []
        self.rirs: list[np.ndarray] = []
        self._rate: int | None = None

    def prepare(self, context: AugmentContext) -> None:
        self._load(context.sample_rate)

    def _load(self, sample_rate: int) -> None:
        if self._rate == sample_rate and self.rirs:
            return
        if self.files:
            self.rirs = [read_rir(f, sample_rate) for f in self.files]
            self.rirs = [r for r in self.rirs if len(r) and np.abs(r).max() > 0]
            if not self.rirs:
                raise AugmentConfigError("folder", f"every RIR file under {self.folder} is silent")
        else:
            self.rirs = simulate_rooms(self.rooms, sample_rate, self.rt60, seed=self.seed)
        self._rate = sample_rate

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        self._load(sample_rate)
        return apply_rir(x, self.rirs[int(rng.integers(len(self.rirs)))])

    def __repr__(self) -> str:
        source = f"{self.folder!r}" if self.folder else f"{self.rooms} simulated rooms"
        return f"Reverb({source}, p={self.p:g})"
