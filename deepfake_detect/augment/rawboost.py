"""RawBoost (Tak, Kamble, Patino, Todisco, Evans: "RawBoost: a raw data boosting and
augmentation method applied to automatic speaker verification anti-spoofing", ICASSP 2022),
written here from the paper: no maintained package implements it.

Three kinds of nuisance, each drawn afresh per item:

1. **Linear and non-linear convolutive noise** (:func:`lnl_convolutive_noise`): the sum of
   ``n_f`` FIR-filtered powers of the signal, ``y = sum_j h_j * x^j`` (j = 1..n_f), each filter
   a cascade of ``n_bands`` random notch (band-stop) filters; the non-linear terms are
   attenuated by a random gain. Models a transmission channel and its non-linear distortion.
2. **Impulsive signal-dependent additive noise** (:func:`isd_additive_noise`): a random ``P``
   percent of the samples get ``x[t] * g_sd * u1 * u2`` added (u ~ U(-1, 1)). Models clipping
   and quantisation artefacts.
3. **Stationary signal-independent additive noise** (:func:`ssi_additive_noise`): white noise
   coloured by a random notch-filter cascade, added at a random SNR in
   ``[snr_min, snr_max]`` dB. Models microphone and electrical noise.

``algo`` selects what the reference recipes call algorithms 1-8: 1, 2, 3 alone; 4 = 1, 2, 3 in
series; 5 = 1, 2; 6 = 1, 3; 7 = 2, 3 (series); 8 = 1 and 2 in parallel (their sum). The
ASVspoof 2019 LA -> 2021 LA recipe of the SSL anti-spoofing paper uses 5, its DF recipe 3.
The defaults of every parameter are the paper's.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from deepfake_detect.augment.base import (
    Augmentation,
    AugmentConfigError,
    check_range,
    signal_power,
    uniform,
)

ALGORITHMS = {
    1: ("lnl",),
    2: ("isd",),
    3: ("ssi",),
    4: ("lnl", "isd", "ssi"),
    5: ("lnl", "isd"),
    6: ("lnl", "ssi"),
    7: ("isd", "ssi"),
    8: ("lnl+isd",),
}


def _peak_limit(y: np.ndarray) -> np.ndarray:
    """Scale down to peak 1 only when the peak exceeds 1 (the reference's normalisation)."""
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    return y / peak if peak > 1.0 else y


def bandstop_fir(taps: int, low: float, high: float, sample_rate: int) -> np.ndarray:
    """A ``taps``-long (odd) Hamming-window band-stop FIR for ``low``-``high`` Hz with unit
    gain at DC: ``scipy.signal.firwin(taps, [low, high], window="hamming", fs=sample_rate)``,
    the same coefficients (to 1e-12; tested), computed directly: three times faster, and
    RawBoost designs 25 of them per item."""
    nyquist = sample_rate / 2
    lo, hi = low / nyquist, high / nyquist
    m = np.arange(taps) - (taps - 1) / 2
    h = lo * np.sinc(lo * m) + np.sinc(m) - hi * np.sinc(hi * m)
    h *= np.hamming(taps)
    return h / h.sum()


def notch_filter(
    rng: np.random.Generator,
    sample_rate: int,
    n_bands: int = 5,
    freq: tuple[float, float] = (20.0, 8000.0),
    bandwidth: tuple[float, float] = (100.0, 1000.0),
    taps: tuple[int, int] = (10, 100),
    gain_db: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A random FIR cascade of ``n_bands`` band-stop filters (Hamming-window design, odd number
    of taps), scaled so that its peak magnitude response is ``gain_db``."""
    nyquist = sample_rate / 2
    coeffs = np.ones(1)
    for _ in range(n_bands):
        centre = uniform(rng, freq)
        width = uniform(rng, bandwidth)
        n = int(rng.integers(taps[0], taps[1] + 1))
        n += 1 - n % 2  # a band-stop FIR needs an odd length
        low = min(max(centre - width / 2, 1e-3), nyquist - 2e-3)
        high = min(max(centre + width / 2, low + 1e-3), nyquist - 1e-3)
        band = bandstop_fir(n, low, high, sample_rate)
        coeffs = np.convolve(band, coeffs)
    _, response = signal.freqz(coeffs, 1, fs=sample_rate)
    gain = 10 ** (uniform(rng, gain_db) / 20)
    return gain * coeffs / max(float(np.max(np.abs(response))), 1e-12)


def fir_same(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """``x`` filtered by ``coeffs`` with the group delay removed (same length as ``x``)."""
    full = signal.fftconvolve(x, coeffs)
    start = (len(coeffs) - 1) // 2
    return full[start : start + len(x)]


def lnl_convolutive_noise(
    x: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    n_f: int = 5,
    n_bands: int = 5,
    freq: tuple[float, float] = (20.0, 8000.0),
    bandwidth: tuple[float, float] = (100.0, 1000.0),
    taps: tuple[int, int] = (10, 100),
    gain_db: tuple[float, float] = (0.0, 0.0),
    bias_db: tuple[float, float] = (5.0, 20.0),
) -> np.ndarray:
    """Algorithm 1: ``sum_{j=1..n_f} h_j * x^j`` with random notch cascades ``h_j``; from the
    second term on, the filter gain range is lowered by ``bias_db`` (the non-linear terms are
    weaker)."""
    y = np.zeros(len(x))
    lo, hi = gain_db
    for j in range(n_f):
        if j == 1:
            lo, hi = lo - bias_db[1], hi - bias_db[0]
        coeffs = notch_filter(rng, sample_rate, n_bands, freq, bandwidth, taps, (lo, hi))
        y += fir_same(np.power(x, j + 1, dtype=np.float64), coeffs)
    y -= y.mean()
    return _peak_limit(y)


def isd_additive_noise(
    x: np.ndarray, rng: np.random.Generator, percent: float = 10.0, g_sd: float = 2.0
) -> np.ndarray:
    """Algorithm 2: ``x[t] * g_sd * u1 * u2`` (u ~ U(-1, 1)) added to a random ``U(0, percent)``
    percent of the samples."""
    y = np.array(x, dtype=np.float64, copy=True)
    count = int(len(x) * uniform(rng, (0.0, percent)) / 100)
    if count:
        where = rng.permutation(len(x))[:count]
        factor = rng.uniform(-1, 1, count) * rng.uniform(-1, 1, count)
        y[where] += g_sd * y[where] * factor
    return _peak_limit(y)


def ssi_additive_noise(
    x: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    snr_db: tuple[float, float] = (10.0, 40.0),
    n_bands: int = 5,
    freq: tuple[float, float] = (20.0, 8000.0),
    bandwidth: tuple[float, float] = (100.0, 1000.0),
    taps: tuple[int, int] = (10, 100),
    gain_db: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Algorithm 3: white noise through a random notch cascade, added at ``U(snr_db)`` dB."""
    noise = fir_same(
        rng.standard_normal(len(x)),
        notch_filter(rng, sample_rate, n_bands, freq, bandwidth, taps, gain_db),
    )
    power_x, power_n = signal_power(x), signal_power(noise)
    if power_x <= 0 or power_n <= 0:
        return np.asarray(x, dtype=np.float64)
    snr = uniform(rng, snr_db)
    return x + noise * np.sqrt(power_x / (power_n * 10 ** (snr / 10)))


class RawBoost(Augmentation):
    """RawBoost algorithm ``algo`` (1-8, see the module docstring) with the paper's defaults.

    ``freq`` / ``bandwidth`` / ``taps`` / ``gain_db``: the notch filters' centre frequency,
    bandwidth (Hz), number of taps and peak gain ranges; ``n_bands`` filters per cascade;
    ``n_f``: terms of the convolutive noise; ``bias_db``: how much weaker the non-linear terms'
    filters are; ``percent`` / ``g_sd``: the impulsive noise's share of samples and scale;
    ``snr_db``: the stationary noise's SNR range. Frequencies above the Nyquist rate are clipped
    to it.
    """

    name = "rawboost"

    def __init__(
        self,
        algo: int = 5,
        p: float = 1.0,
        n_f: int = 5,
        n_bands: int = 5,
        freq: tuple[float, float] = (20.0, 8000.0),
        bandwidth: tuple[float, float] = (100.0, 1000.0),
        taps: tuple[int, int] = (10, 100),
        gain_db: tuple[float, float] = (0.0, 0.0),
        bias_db: tuple[float, float] = (5.0, 20.0),
        percent: float = 10.0,
        g_sd: float = 2.0,
        snr_db: tuple[float, float] = (10.0, 40.0),
    ) -> None:
        super().__init__(p)
        if algo not in ALGORITHMS:
            raise AugmentConfigError("algo", f"RawBoost algorithms are 1-8, got {algo!r}")
        self.algo = int(algo)
        for key, value in (("n_f", n_f), ("n_bands", n_bands)):
            if int(value) < 1:
                raise AugmentConfigError(key, f"must be at least 1, got {value!r}")
        self.n_f, self.n_bands = int(n_f), int(n_bands)
        self.freq = check_range("freq", freq, low=0)
        self.bandwidth = check_range("bandwidth", bandwidth, low=0)
        lo, hi = check_range("taps", taps, low=1)
        self.taps = (int(lo), int(hi))
        self.gain_db = check_range("gain_db", gain_db)
        self.bias_db = check_range("bias_db", bias_db)
        self.percent = check_range("percent", percent, 0, 100)[1]
        self.g_sd = check_range("g_sd", g_sd, low=0)[1]
        self.snr_db = check_range("snr_db", snr_db)

    def _filters(self) -> dict[str, object]:
        return {
            "n_bands": self.n_bands,
            "freq": self.freq,
            "bandwidth": self.bandwidth,
            "taps": self.taps,
            "gain_db": self.gain_db,
        }

    def _lnl(self, x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        return lnl_convolutive_noise(x, sr, rng, self.n_f, bias_db=self.bias_db, **self._filters())

    def _isd(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return isd_additive_noise(x, rng, self.percent, self.g_sd)

    def _ssi(self, x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        return ssi_additive_noise(x, sr, rng, self.snr_db, **self._filters())

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        y = np.asarray(x, dtype=np.float64)
        for step in ALGORITHMS[self.algo]:
            if step == "lnl":
                y = self._lnl(y, sample_rate, rng)
            elif step == "isd":
                y = self._isd(y, rng)
            elif step == "ssi":
                y = self._ssi(y, sample_rate, rng)
            else:  # parallel 1 + 2
                y = _peak_limit(self._lnl(y, sample_rate, rng) + self._isd(y, rng))
        return y

    def __repr__(self) -> str:
        return f"RawBoost(algo={self.algo}, p={self.p:g})"
