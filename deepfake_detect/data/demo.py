"""A small synthetic anti-spoofing corpus in the ASVspoof 2019 LA layout, generated on demand.

``python train.py`` with no arguments trains on this corpus, so the demo exercises the same
adapter (:class:`~deepfake_detect.data.corpora.asvspoof2019.ASVspoof2019`) as real data.

Bona fide "speech" is synthesised procedurally with a source-filter model: a Rosenberg glottal
pulse train with jitter and shimmer along a smooth F0 contour (declination, pitch accents, slow
drift), glottally modulated aspiration noise, a cascade of five time-varying formant resonators
moving between vowel, nasal and liquid targets, and band-passed noise for fricatives and stop
bursts. Speakers differ in F0, pitch range, vocal-tract length (formant scaling), jitter,
shimmer, breathiness, open quotient and speaking rate.

A spoof is a copy-synthesis: a fresh bona fide-like utterance of a target speaker of the same
split is passed through one attack (analysis uses the synthesiser's true F0 and voicing, i.e. a
perfect pitch tracker):

- **A01** Griffin-Lim: 80-band mel magnitude (1024-point STFT, hop 256) -> non-negative linear
  magnitude (multiplicative NNLS) -> 4 Griffin-Lim iterations from random phase.
- **A02** parametric vocoder: order-10 LPC envelope every 5 ms, excited by a jitter-free impulse
  train on a smoothed F0 (noise when unvoiced, hard voicing decisions).
- **A03** phase vocoder: 2048-point STFT time-stretched by a random factor (0.5-0.7 or
  1.4-2.0) and back, without phase locking: phasiness and smeared transients.
- **A04** (eval only, an unseen sinusoidal family) harmonic-plus-noise vocoder: zero-phase
  harmonics of a smoothed F0 up to 4 kHz on a liftered cepstral envelope, envelope-shaped noise
  above that and in unvoiced frames.

Every attack's output is then equalised in broad bands to its source's long-term spectrum and
gated to the source's speech span (plus 30 ms), so bandwidth, tilt and energy smeared into the
margins are no cue. Both classes then go through the same finishing chain: a random channel
(high-pass + low-pass), RMS normalisation to a random level, background noise added after the
attack, and 16-bit quantisation. Clip durations and silent margins are drawn from the same
distributions for both classes. What is left to learn are the attacks' artefacts: phase
incoherence, jitter-free or buzzy excitation, phasiness, smeared harmonics.

Generation is deterministic: every utterance draws from its own ``numpy`` generator seeded by
``(seed, split, class/attack, index)``.

The cache (``root``, e.g. ``~/.cache/deepfake-detect/demo_la``) holds one folder per setting, so
that generating with another seed or size never touches files a running job reads::

    root/.lock                    serialises generation across processes (DDP ranks, parallel jobs)
    root/<version>-seed<N>-<hash>/   one complete corpus: LA/..., .complete (marker: version, seed,
                                  sizes), .in_use (shared locks of the processes using it)
    root/LA -> <folder>/LA        the most recently ensured corpus (``ASVspoof2019(root)`` reads it)

A corpus is generated into ``root/.tmp-*`` and renamed into place when complete. A process that
gets a corpus from :func:`ensure_demo_corpus` holds a shared lock on its ``.in_use`` until it
exits; generation deletes only the other corpora no process holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import soundfile as sf
from scipy import sparse
from scipy.linalg import solve_toeplitz
from scipy.signal import butter, lfilter, sosfilt

from deepfake_detect.data.manifest import CorpusError

SAMPLE_RATE = 16_000
DEMO_VERSION = "demo-la-2"
"""Bump whenever the generated audio changes, so cached corpora are regenerated."""
MARKER = ".complete"
OWNER = ".demo_corpus"
"""Written before anything else: proves a folder was made by this module, so it may be wiped."""
IN_USE = ".in_use"
"""Each process using a corpus folder holds a shared ``flock`` on this file until it exits."""
TMP_PREFIX = ".tmp-"

SPLITS = ("train", "dev", "eval")
SPLIT_LETTER = {"train": "T", "dev": "D", "eval": "E"}
PROTOCOL_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
TRAIN_ATTACKS = ("A01", "A02", "A03")
EVAL_ATTACKS = ("A01", "A02", "A03", "A04")
SPLIT_ATTACKS = {"train": TRAIN_ATTACKS, "dev": TRAIN_ATTACKS, "eval": EVAL_ATTACKS}

CLIP_SECONDS = (1.0, 1.6)
MARGIN_SECONDS = (0.1, 0.2)
"""Leading and trailing silence, each drawn independently."""
LEVEL_DBFS = (-34.0, -26.0)
NOISE_DBFS = (-76.0, -64.0)

BLOCK = 80
"""Control rate of the synthesiser and the vocoders: 5 ms."""
N_FFT = 512
HOP = 128


@dataclass(frozen=True)
class DemoSizes:
    """How many files and speakers each split gets (spoof counts are per attack)."""

    train_bonafide: int = 90
    train_spoof_per_attack: int = 60
    train_speakers: int = 10
    dev_bonafide: int = 40
    dev_spoof_per_attack: int = 27
    dev_speakers: int = 6
    eval_bonafide: int = 60
    eval_spoof_per_attack: int = 35
    eval_speakers: int = 8

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            minimum = 1 if name.endswith("speakers") else 0
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"demo corpus size {name} must be an integer >= {minimum}")

    def bonafide(self, split: str) -> int:
        return getattr(self, f"{split}_bonafide")

    def spoof_per_attack(self, split: str) -> int:
        return getattr(self, f"{split}_spoof_per_attack")

    def speakers(self, split: str) -> int:
        return getattr(self, f"{split}_speakers")


# ---------------------------------------------------------------- speakers and utterance plans


@dataclass(frozen=True)
class Speaker:
    speaker_id: str
    f0_hz: float
    f0_span_st: float
    formant_scale: float
    jitter: float
    shimmer: float
    breathiness: float
    open_quotient: float
    rate: float


def make_speaker(rng: np.random.Generator, speaker_id: str) -> Speaker:
    female = rng.random() < 0.5
    return Speaker(
        speaker_id=speaker_id,
        f0_hz=rng.uniform(170, 240) if female else rng.uniform(90, 140),
        f0_span_st=rng.uniform(2.0, 5.0),
        formant_scale=rng.uniform(1.06, 1.2) if female else rng.uniform(0.88, 1.0),
        jitter=rng.uniform(0.005, 0.015),
        shimmer=rng.uniform(0.03, 0.08),
        breathiness=rng.uniform(0.02, 0.1),
        open_quotient=rng.uniform(0.5, 0.7),
        rate=rng.uniform(0.85, 1.15),
    )


# F1-F3 (Hz) of an adult male voice; the speaker's formant scale shifts them.
VOWELS = {
    "i": (270, 2290, 3010),
    "I": (390, 1990, 2550),
    "e": (480, 1850, 2600),
    "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
    "U": (440, 1020, 2240),
    "V": (640, 1190, 2390),
    "er": (490, 1350, 1690),
}
VOICED_CONSONANTS = {
    "m": ((250, 1100, 2300), 0.35),
    "n": ((250, 1500, 2500), 0.35),
    "l": ((360, 1300, 2900), 0.6),
    "r": ((420, 1300, 1600), 0.6),
    "w": ((300, 700, 2200), 0.55),
}
FRICATIVES = {
    "s": ((3800, 7400), 0.3),
    "sh": ((2000, 5500), 0.35),
    "f": ((1200, 7400), 0.1),
    "h": ((500, 4000), 0.12),
}
BURSTS = {"p": (500, 3000), "t": (3000, 7000), "k": (1500, 4000)}
HIGHER_FORMANTS = (3500.0, 4500.0)
BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 260.0])


@dataclass
class Segment:
    seconds: float
    formants: tuple[float, float, float] | None = None
    voicing: float = 0.0
    gain: float = 1.0
    noise_band: tuple[float, float] | None = None
    noise_gain: float = 0.0
    burst: bool = False


def _consonant(rng: np.random.Generator, rate: float) -> list[Segment]:
    kind = rng.choice(["voiced", "fricative", "stop"], p=[0.4, 0.3, 0.3])
    if kind == "voiced":
        formants, gain = VOICED_CONSONANTS[rng.choice(list(VOICED_CONSONANTS))]
        return [Segment(rng.uniform(0.05, 0.08) / rate, formants, voicing=1.0, gain=gain)]
    if kind == "fricative":
        band, noise_gain = FRICATIVES[rng.choice(list(FRICATIVES))]
        voicing = 0.35 if rng.random() < 0.3 else 0.0
        return [Segment(rng.uniform(0.06, 0.12) / rate, None, voicing, 0.5, band, noise_gain)]
    band = BURSTS[rng.choice(list(BURSTS))]
    voicing = 0.15 if rng.random() < 0.4 else 0.0
    return [
        Segment(rng.uniform(0.03, 0.06) / rate, None, voicing, 0.3),
        Segment(rng.uniform(0.012, 0.02) / rate, None, 0.0, 0.0, band, 0.5, burst=True),
        Segment(rng.uniform(0.01, 0.03) / rate, None, 0.0, 0.0, (800, 6000), 0.12),
    ]


def plan_utterance(rng: np.random.Generator, speaker: Speaker, seconds: float) -> list[Segment]:
    """Syllables ([C]V[C]) until ``seconds`` is filled, then rescaled to fill it exactly."""
    segments: list[Segment] = []
    while sum(s.seconds for s in segments) < seconds:
        if rng.random() < 0.75:
            segments += _consonant(rng, speaker.rate)
        vowel = VOWELS[rng.choice(list(VOWELS))]
        segments.append(Segment(rng.uniform(0.08, 0.18) / speaker.rate, vowel, voicing=1.0))
        if rng.random() < 0.35:
            segments += _consonant(rng, speaker.rate)
    scale = seconds / sum(s.seconds for s in segments)
    for s in segments:
        s.seconds *= scale
    return segments


# ---------------------------------------------------------------- bona fide synthesis


@dataclass
class Speech:
    """A clean clip and the synthesiser's ground truth, which the attacks use as analysis."""

    wave: np.ndarray
    f0: np.ndarray
    """Per sample, Hz (defined everywhere; meaningful where ``voicing`` is high)."""
    voicing: np.ndarray
    """Per sample, 0..1."""
    start: int
    end: int
    """The speech span; the clip is silent outside it."""


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(x, (width, width), mode="edge")
    return np.convolve(padded, kernel, mode="same")[width:-width]


def _block_tracks(
    segments: list[Segment], n_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Formants F1-F3 (n_blocks, 3), voicing and gain per 5 ms block."""
    edges = np.round(np.cumsum([0.0] + [s.seconds for s in segments]) * SAMPLE_RATE / BLOCK)
    edges = edges.astype(int)
    edges[-1] = n_blocks
    formants = np.full((n_blocks, 3), np.nan)
    voicing = np.zeros(n_blocks)
    gain = np.zeros(n_blocks)
    for seg, a, b in zip(segments, edges[:-1], edges[1:], strict=True):
        if seg.formants is not None:
            formants[a:b] = seg.formants
        voicing[a:b] = seg.voicing
        gain[a:b] = seg.gain
    # Consonants without their own targets take the next vowel's (anticipatory coarticulation).
    for i in range(n_blocks - 2, -1, -1):
        if np.isnan(formants[i, 0]):
            formants[i] = formants[i + 1]
    for i in range(1, n_blocks):
        if np.isnan(formants[i, 0]):
            formants[i] = formants[i - 1]
    formants = np.stack([_smooth(formants[:, k], 9) for k in range(3)], axis=1)
    return formants, _smooth(voicing, 3), _smooth(gain, 3)


def _f0_contour(rng: np.random.Generator, speaker: Speaker, n: int) -> np.ndarray:
    """Declination, one or two pitch accents and slow drift, in semitones around the speaker F0."""
    t = np.arange(n) / SAMPLE_RATE
    u = t / t[-1]
    semitones = rng.uniform(0.5, 1.5) - rng.uniform(1.5, 3.0) * u
    for _ in range(rng.integers(1, 3)):
        centre = rng.uniform(0.1, 0.8) * t[-1]
        width = rng.uniform(0.06, 0.15)
        semitones += (
            speaker.f0_span_st * rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
        )
    for _ in range(3):
        semitones += rng.uniform(0.1, 0.3) * np.sin(
            2 * np.pi * rng.uniform(1.0, 4.0) * t + rng.uniform(0, 2 * np.pi)
        )
    semitones += rng.uniform(-1.0, 1.0)
    return speaker.f0_hz * 2.0 ** (semitones / 12.0)


def _glottal_flow(rng: np.random.Generator, speaker: Speaker, f0: np.ndarray) -> np.ndarray:
    """Rosenberg flow pulses at fractional positions, with jitter and shimmer."""
    n = len(f0)
    flow = np.zeros(n)
    opening = speaker.open_quotient * 0.65
    closing = speaker.open_quotient * 0.35
    start = rng.uniform(0, SAMPLE_RATE / f0[0])
    while start < n:
        period = SAMPLE_RATE / f0[int(start)] * (1 + speaker.jitter * rng.standard_normal())
        amplitude = 1 + speaker.shimmer * rng.standard_normal()
        idx = np.arange(int(np.ceil(start)), min(n, int(start + period * (opening + closing)) + 1))
        tau = (idx - start) / period
        rising = tau < opening
        pulse = np.where(
            rising,
            0.5 * (1 - np.cos(np.pi * tau / opening)),
            np.cos(0.5 * np.pi * np.clip((tau - opening) / closing, 0, 1)),
        )
        flow[idx] += amplitude * pulse
        start += period
    return flow


def _formant_filter(source: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of unity-DC-gain resonators, coefficients updated every block, state carried."""
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    a1 = -2 * r * np.cos(2 * np.pi * formants / SAMPLE_RATE)
    a2 = np.broadcast_to(r * r, a1.shape)
    sos = np.zeros(formants.shape + (6,))
    sos[..., 0] = 1 + a1 + a2
    sos[..., 3] = 1
    sos[..., 4] = a1
    sos[..., 5] = a2
    out = np.empty_like(source)
    state = np.zeros((formants.shape[1], 2))
    for i in range(formants.shape[0]):
        block = slice(i * BLOCK, (i + 1) * BLOCK)
        out[block], state = sosfilt(sos[i], source[block], zi=state)
    return out


def _band_noise(
    rng: np.random.Generator, n: int, band: tuple[float, float], burst: bool
) -> np.ndarray:
    sos = butter(2, band, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n + 64))[64:]
    if burst:
        envelope = np.exp(-np.arange(n) / (0.3 * n))
    else:
        ramp = max(1, n // 4)
        envelope = np.ones(n)
        envelope[:ramp] = np.linspace(0, 1, ramp)
        envelope[n - ramp :] = np.linspace(1, 0, ramp)
    return noise * envelope


def synthesize_speech(
    rng: np.random.Generator,
    speaker: Speaker,
    seconds: float,
    lead_seconds: float,
    trail_seconds: float,
) -> Speech:
    """One clean utterance of ``seconds``, with silent margins, at an arbitrary level."""
    n = round(seconds * SAMPLE_RATE)
    start = round(lead_seconds * SAMPLE_RATE)
    span = n - start - round(trail_seconds * SAMPLE_RATE)
    n_blocks = -(-span // BLOCK)
    segments = plan_utterance(rng, speaker, span / SAMPLE_RATE)
    formants3, voicing_b, gain_b = _block_tracks(segments, n_blocks)
    higher = np.broadcast_to(HIGHER_FORMANTS, (n_blocks, 2))
    formants = np.concatenate([formants3, higher], axis=1) * speaker.formant_scale
    bandwidths = BANDWIDTHS * rng.uniform(0.8, 1.25, size=5)

    padded = n_blocks * BLOCK
    block_centres = (np.arange(n_blocks) + 0.5) * BLOCK
    sample_t = np.arange(padded)
    voicing = np.interp(sample_t, block_centres, voicing_b)
    amplitude = voicing * np.interp(sample_t, block_centres, gain_b)
    edge = round(0.02 * SAMPLE_RATE)
    taper = np.ones(padded)
    taper[:edge] = np.linspace(0, 1, edge)
    taper[span - edge : span] = np.linspace(1, 0, edge)
    taper[span:] = 0
    amplitude *= taper

    f0 = _f0_contour(rng, speaker, padded)
    flow = _glottal_flow(rng, speaker, f0)
    excitation = np.diff(flow, prepend=0.0)
    excitation /= np.sqrt(np.mean(excitation**2)) + 1e-12
    aspiration = rng.standard_normal(padded) * (0.3 + flow / (flow.max() + 1e-12))
    source = (excitation + 4 * speaker.breathiness * aspiration) * amplitude
    voiced = _formant_filter(source, formants, bandwidths)

    reference = np.sqrt(np.mean(voiced[amplitude > 0.5] ** 2)) if np.any(amplitude > 0.5) else 1
    noise = np.zeros(padded)
    edges = np.round(np.cumsum([0.0] + [s.seconds for s in segments]) * SAMPLE_RATE).astype(int)
    for seg, a, b in zip(segments, edges[:-1], edges[1:], strict=True):
        if seg.noise_band is not None and b > a:
            noise[a:b] += seg.noise_gain * _band_noise(rng, b - a, seg.noise_band, seg.burst)
    speech = (voiced + reference * noise * taper)[:span]

    wave = np.zeros(n)
    wave[start : start + span] = speech
    full_f0 = np.full(n, f0[0])
    full_f0[start : start + span] = f0[:span]
    full_f0[start + span :] = f0[span - 1]
    full_voicing = np.zeros(n)
    full_voicing[start : start + span] = (voicing * taper)[:span]
    return Speech(wave, full_f0, full_voicing, start, start + span)


# ---------------------------------------------------------------- STFT helpers


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Centred, zero-padded STFT (frames, n_fft // 2 + 1) with a periodic Hann window."""
    window = np.hanning(n_fft + 1)[:-1]
    pad = n_fft // 2
    n_frames = 1 + (len(x) + 2 * pad - n_fft + hop - 1) // hop
    padded = np.zeros((n_frames - 1) * hop + n_fft)
    padded[pad : pad + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * window, axis=-1)


def istft(spec: np.ndarray, length: int, hop: int = HOP) -> np.ndarray:
    """Least-squares inverse of :func:`stft` (weighted overlap-add), cut to ``length``."""
    n_fft = 2 * (spec.shape[1] - 1)
    window = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    n_frames = frames.shape[0]
    hops_per_frame = n_fft // hop
    out = np.zeros((n_frames + hops_per_frame - 1) * hop)
    norm = np.zeros_like(out)
    square = (window**2).reshape(hops_per_frame, hop)
    for j in range(hops_per_frame):
        chunk = slice(j * hop, j * hop + n_frames * hop)
        out[chunk] += frames[:, j * hop : (j + 1) * hop].reshape(-1)
        norm[chunk] += np.tile(square[j], n_frames)
    out = out / np.maximum(norm, 1e-8)
    pad = n_fft // 2
    result = np.zeros(length)
    available = out[pad : pad + length]
    result[: len(available)] = available
    return result


def mel_filterbank(n_fft: int, n_mels: int = 80) -> sparse.csr_array:
    """Triangular HTK-mel filters (n_mels, n_fft // 2 + 1) over 0-8 kHz, unit peak.

    Sparse, because multithreaded BLAS on tiny matrices crawls on a busy 2-core machine.
    """
    mel = np.linspace(0, 2595 * np.log10(1 + (SAMPLE_RATE / 2) / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.linspace(0, SAMPLE_RATE / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return sparse.csr_array(np.maximum(0, np.minimum(rising, falling)))


# ---------------------------------------------------------------- attacks

GL_N_FFT, GL_HOP, GL_ITERATIONS = 1024, 256, 4
LPC_ORDER = 10
PV_N_FFT, PV_HOP = 2048, 512
PV_RATES = ((0.5, 0.7), (1.4, 2.0))
HNM_MAX_VOICED_HZ = 4000.0
HNM_LIFTER = 30


def griffin_lim_attack(rng: np.random.Generator, speech: Speech) -> np.ndarray:
    """A01: mel magnitude -> linear magnitude (multiplicative NNLS) -> Griffin-Lim."""
    fb = mel_filterbank(GL_N_FFT)
    fb_t = fb.T.tocsr()
    mel = fb @ np.abs(stft(speech.wave, GL_N_FFT, GL_HOP)).T
    target = fb_t @ mel
    estimate = target.copy()
    for _ in range(20):
        estimate *= target / (fb_t @ (fb @ estimate) + 1e-10)
    estimate = estimate.T
    phase = np.exp(2j * np.pi * rng.random(estimate.shape))
    n = len(speech.wave)
    for _ in range(GL_ITERATIONS):
        rebuilt = stft(istft(estimate * phase, n, GL_HOP), GL_N_FFT, GL_HOP)
        phase = rebuilt / np.maximum(np.abs(rebuilt), 1e-10)
    return istft(estimate * phase, n, GL_HOP)


def lpc_vocoder_attack(rng: np.random.Generator, speech: Speech) -> np.ndarray:
    """A02: per-5-ms LPC envelope, jitter-free impulse train on a smoothed F0, noise if unvoiced."""
    order = LPC_ORDER
    x = lfilter([1, -0.97], [1], speech.wave)
    n = len(x)
    n_blocks = -(-n // BLOCK)
    win_len = 400
    window = np.hanning(win_len)
    padded = np.zeros(n_blocks * BLOCK + win_len)
    padded[win_len // 2 - BLOCK // 2 : win_len // 2 - BLOCK // 2 + n] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, win_len)[::BLOCK][:n_blocks]
    power = np.abs(np.fft.rfft(frames * window, n=1024, axis=-1)) ** 2
    autocorr = np.fft.irfft(power, axis=-1)[:, : order + 1]
    lag_window = np.exp(-0.5 * (2 * np.pi * 40 * np.arange(order + 1) / SAMPLE_RATE) ** 2)
    window_energy = np.sum(window**2)

    f0 = _smooth(speech.f0, 481)
    voiced = speech.voicing > 0.5
    excitation = rng.standard_normal(n)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
    pulse_train = np.zeros(n)
    pulse_train[pulses] = np.sqrt(SAMPLE_RATE / f0[pulses])
    excitation[voiced] = pulse_train[voiced] + 0.05 * excitation[voiced]

    out = np.zeros(n_blocks * BLOCK)
    excitation = np.pad(excitation, (0, len(out) - n))
    state = np.zeros(order)
    for i in range(n_blocks):
        r = autocorr[i] * lag_window
        block = slice(i * BLOCK, (i + 1) * BLOCK)
        if r[0] <= 1e-10:
            state[:] = 0
            continue
        r[0] *= 1.0001
        coeffs = solve_toeplitz(r[:order], r[1:])
        gain = np.sqrt(max(r[0] - coeffs @ r[1:], 0.0) / window_energy)
        denominator = np.concatenate([[1.0], -coeffs])
        out[block], state = lfilter([gain], denominator, excitation[block], zi=state)
    return lfilter([1], [1, -0.97], out[:n])


def _phase_vocoder(spec: np.ndarray, rate: float, hop: int) -> np.ndarray:
    n_fft = 2 * (spec.shape[1] - 1)
    omega = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft
    steps = np.arange(0, spec.shape[0] - 1, rate)
    out = np.empty((len(steps), spec.shape[1]), dtype=complex)
    magnitude = np.abs(spec)
    angle = np.angle(spec)
    phase = angle[0].copy()
    for i, step in enumerate(steps):
        t = int(step)
        frac = step - t
        out[i] = ((1 - frac) * magnitude[t] + frac * magnitude[t + 1]) * np.exp(1j * phase)
        delta = angle[t + 1] - angle[t] - omega
        delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
        phase += omega + delta
    return out


def phase_vocoder_attack(rng: np.random.Generator, speech: Speech) -> np.ndarray:
    """A03: phase-vocoder time stretch by a random factor, then back to the original length."""
    rate = rng.uniform(*PV_RATES[int(rng.integers(2))])
    spec = stft(speech.wave, PV_N_FFT, PV_HOP)
    spec = _phase_vocoder(_phase_vocoder(spec, rate, PV_HOP), 1 / rate, PV_HOP)
    return istft(spec, len(speech.wave), PV_HOP)


def harmonic_noise_attack(rng: np.random.Generator, speech: Speech) -> np.ndarray:
    """A04: harmonic-plus-noise sinusoidal vocoder on a liftered cepstral envelope.

    Zero-phase harmonics of a smoothed F0 up to 4 kHz; envelope-shaped noise above that and in
    unvoiced frames.
    """
    n = len(speech.wave)
    spec = stft(speech.wave)
    cepstrum = np.fft.irfft(np.log(np.abs(spec) + 1e-9), axis=-1)
    cepstrum[:, HNM_LIFTER : N_FFT - HNM_LIFTER + 1] = 0
    envelope = np.exp(np.fft.rfft(cepstrum, axis=-1).real)
    window = np.hanning(N_FFT + 1)[:-1]
    frame_pos = np.arange(spec.shape[0]) * HOP
    frame_f0 = _smooth(speech.f0, 481)[np.minimum(frame_pos, n - 1)]
    frame_voiced = speech.voicing[np.minimum(frame_pos, n - 1)] > 0.5
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)

    n_harmonics = int(HNM_MAX_VOICED_HZ // frame_f0.min())
    harmonic_hz = frame_f0[:, None] * np.arange(1, n_harmonics + 1)
    amplitude = np.stack(
        [np.interp(harmonic_hz[t], bins, envelope[t]) for t in range(len(frame_pos))]
    )
    amplitude *= (harmonic_hz < HNM_MAX_VOICED_HZ) * frame_voiced[:, None]
    amplitude *= 2 / window.sum()
    samples = np.arange(n)
    f0 = _smooth(speech.f0, 481)
    phase = 2 * np.pi * np.cumsum(f0 / SAMPLE_RATE)
    harmonics = np.zeros(n)
    for k in range(n_harmonics):
        track = np.interp(samples, frame_pos, amplitude[:, k])
        harmonics += track * np.cos((k + 1) * phase)

    noise_band = np.where(frame_voiced[:, None], bins[None, :] >= HNM_MAX_VOICED_HZ, True)
    noise_spec = stft(rng.standard_normal(n)) / np.sqrt(np.sum(window**2))
    noise = istft(noise_spec * envelope * noise_band, n)
    return harmonics + noise


BALANCE_BANDS_HZ = (0, 250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000)


def match_spectral_balance(wave: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Zero-phase broad-band EQ giving ``wave`` the long-term band energies of ``reference``.

    Applied to every attack's output, so that spectral tilt and bandwidth are no cue and only
    the finer vocoder artefacts (phase, harmonic structure, temporal smearing) remain.
    """
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    edges = np.asarray(BALANCE_BANDS_HZ, dtype=float)
    band = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, len(edges) - 2)
    centres = (edges[:-1] + edges[1:]) / 2
    target = np.bincount(band, np.abs(np.fft.rfft(reference)) ** 2, len(centres))
    # The interpolated gain curve leaks between neighbouring bands: a few passes converge.
    for _ in range(3):
        power = np.bincount(band, np.abs(spectrum) ** 2, len(centres))
        log_gain = 0.5 * np.log(np.maximum(target, 1e-20) / np.maximum(power, 1e-20))
        spectrum = spectrum * np.exp(np.interp(freqs, centres, log_gain))
    return np.fft.irfft(spectrum, n=len(wave))


ATTACKS = {
    "A01": griffin_lim_attack,
    "A02": lpc_vocoder_attack,
    "A03": phase_vocoder_attack,
    "A04": harmonic_noise_attack,
}


# ---------------------------------------------------------------- finishing chain and corpus


GATE_SECONDS = (0.03, 0.02)
"""Hold and fade after the speech span; the silent margins are at least 0.1 s."""


def _speech_gate(n: int, start: int, end: int) -> np.ndarray:
    """Silence around the speech span, as in bona fide clips: long-window vocoders (the
    phase vocoder's 128 ms frames) smear energy into the margins, which would be a cue."""
    hold, fade = (round(x * SAMPLE_RATE) for x in GATE_SECONDS)
    t = np.arange(n)
    distance = np.maximum(start - hold - t, t - end - hold)
    return np.clip(1 - distance / fade, 0, 1)


def finish(rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
    """Channel, level and background noise: the same random chain for both classes."""
    highpass = butter(2, rng.uniform(50, 100), btype="highpass", fs=SAMPLE_RATE, output="sos")
    lowpass = butter(6, rng.uniform(6800, 7600), btype="lowpass", fs=SAMPLE_RATE, output="sos")
    wave = sosfilt(lowpass, sosfilt(highpass, wave))
    level = 10 ** (rng.uniform(*LEVEL_DBFS) / 20)
    wave = wave * level / (np.sqrt(np.mean(wave**2)) + 1e-12)
    spectrum = np.fft.rfft(rng.standard_normal(len(wave)))
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, 20.0) ** (-rng.uniform(0.0, 0.5))
    noise = np.fft.irfft(spectrum, n=len(wave))
    noise *= 10 ** (rng.uniform(*NOISE_DBFS) / 20) / np.sqrt(np.mean(noise**2))
    return wave + noise


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def render_utterance(
    seed: int, split: str, attack: str, index: int, speaker: Speaker
) -> np.ndarray:
    """One finished clip (float, about -30 dBFS) of ``attack`` (``"-"`` for bona fide)."""
    kinds = ("-",) + EVAL_ATTACKS
    if attack not in kinds:
        raise ValueError(f"unknown demo attack {attack!r} (expected one of {', '.join(kinds)})")
    rng = _rng(seed, SPLITS.index(split), kinds.index(attack), index)
    seconds = rng.uniform(*CLIP_SECONDS)
    lead, trail = rng.uniform(*MARGIN_SECONDS, size=2)
    speech = synthesize_speech(rng, speaker, seconds, lead, trail)
    if attack == "-":
        wave = speech.wave
    else:
        wave = match_spectral_balance(ATTACKS[attack](rng, speech), speech.wave)
        wave *= _speech_gate(len(wave), speech.start, speech.end)
    return finish(rng, wave)


def _speakers(seed: int, sizes: DemoSizes) -> dict[str, list[Speaker]]:
    rng = _rng(seed, 1000)
    total = sum(sizes.speakers(split) for split in SPLITS)
    numbers = rng.choice(np.arange(1, 10_000), size=total, replace=False)
    speakers: dict[str, list[Speaker]] = {}
    offset = 0
    for split in SPLITS:
        ids = numbers[offset : offset + sizes.speakers(split)]
        offset += len(ids)
        speakers[split] = [make_speaker(rng, f"LA_{i:04d}") for i in ids]
    return speakers


def _file_numbers(seed: int, count: int) -> np.ndarray:
    return _rng(seed, 1001).choice(np.arange(1_000_000, 10_000_000), size=count, replace=False)


def _marker_text(seed: int, sizes: DemoSizes) -> str:
    return json.dumps({"version": DEMO_VERSION, "seed": seed, "sizes": asdict(sizes)}, indent=1)


def _write_split(
    root: Path,
    seed: int,
    split: str,
    sizes: DemoSizes,
    speakers: list[Speaker],
    file_numbers: Iterator[int],
) -> list[str]:
    letter = SPLIT_LETTER[split]
    audio_dir = root / "LA" / f"ASVspoof2019_LA_{split}" / "flac"
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = [("-", i) for i in range(sizes.bonafide(split))]
    for attack in SPLIT_ATTACKS[split]:
        jobs += [(attack, i) for i in range(sizes.spoof_per_attack(split))]
    rows = []
    for attack, index in jobs:
        speaker = speakers[index % len(speakers)]
        file_id = f"LA_{letter}_{next(file_numbers)}"
        wave = render_utterance(seed, split, attack, index, speaker)
        sf.write(audio_dir / f"{file_id}.flac", to_pcm16(wave), SAMPLE_RATE, subtype="PCM_16")
        key = "bonafide" if attack == "-" else "spoof"
        rows.append(f"{speaker.speaker_id} {file_id} - {attack} {key}")
    order = _rng(seed, 1002, SPLITS.index(split)).permutation(len(rows))
    return [rows[i] for i in order]


def _write_corpus(folder: Path, seed: int, sizes: DemoSizes) -> None:
    """Write one complete corpus into the empty ``folder``; its marker goes last."""
    folder.mkdir(parents=True)
    (folder / OWNER).write_text("written by deepfake_detect.data.demo; safe to delete\n")
    speakers = _speakers(seed, sizes)
    total = sum(
        sizes.bonafide(s) + sizes.spoof_per_attack(s) * len(SPLIT_ATTACKS[s]) for s in SPLITS
    )
    numbers = iter(int(i) for i in _file_numbers(seed, total))
    protocol_dir = folder / "LA" / "ASVspoof2019_LA_cm_protocols"
    protocol_dir.mkdir(parents=True)
    for split in SPLITS:
        rows = _write_split(folder, seed, split, sizes, speakers[split], numbers)
        protocol = protocol_dir / f"ASVspoof2019.LA.cm.{PROTOCOL_SUFFIX[split]}.txt"
        protocol.write_text("\n".join(rows) + "\n")
    (folder / MARKER).write_text(_marker_text(seed, sizes))


def demo_corpus_dir(root: str | Path, seed: int = 0, **sizes: int) -> Path:
    """The folder under ``root`` that holds the corpus of these settings (it may not exist yet)."""
    marker = _marker_text(seed, DemoSizes(**sizes))
    digest = hashlib.sha256(marker.encode()).hexdigest()[:12]
    return Path(root).expanduser() / f"{DEMO_VERSION}-seed{seed}-{digest}"


def _is_complete(folder: Path, seed: int, sizes: DemoSizes) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(seed, sizes)


def is_demo_corpus_complete(root: str | Path, seed: int = 0, **sizes: int) -> bool:
    return _is_complete(demo_corpus_dir(root, seed, **sizes), seed, DemoSizes(**sizes))


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise generation across processes (e.g. DDP ranks that all build the datamodule)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_HELD: dict[str, TextIO] = {}
"""Corpus folders this process uses -> the open ``.in_use`` file it holds a shared lock on."""


def _hold(folder: Path) -> None:
    if str(folder) not in _HELD:
        handle = open(folder / IN_USE, "a")  # closed when the process exits
        fcntl.flock(handle, fcntl.LOCK_SH)
        _HELD[str(folder)] = handle


def _claim(root: Path, folder: Path, seed: int, sizes: DemoSizes) -> None:
    """Check that ``root`` is the demo cache (refuse anything else), and move a corpus of the
    layout before per-setting folders (``root/LA`` a real folder) out of the way."""
    link, owner = root / "LA", root / OWNER
    if (link.exists() or link.is_symlink()) and not owner.is_file():
        raise CorpusError(
            f"{link} exists but was not written by the demo corpus generator; "
            "refusing to overwrite it (point the demo corpus `root` at an empty directory)"
        )
    owner.write_text("written by deepfake_detect.data.demo; safe to delete\n")
    if link.is_symlink() or not link.is_dir():
        return
    legacy = root / MARKER
    if legacy.is_file() and legacy.read_text() == _marker_text(seed, sizes) and not folder.exists():
        folder.mkdir()
        (folder / OWNER).write_text(owner.read_text())
        link.rename(folder / "LA")
        legacy.rename(folder / MARKER)
    else:
        shutil.rmtree(link)
        legacy.unlink(missing_ok=True)


def _generate(root: Path, folder: Path, seed: int, sizes: DemoSizes) -> None:
    """(Re)write ``folder`` whole: generated beside it, then renamed into place. A folder being
    replaced (same settings, so the same bytes) keeps its ``.in_use`` and thus its holders."""
    staging = root / f"{TMP_PREFIX}{folder.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _write_corpus(staging, seed, sizes)
    if not folder.exists():
        staging.rename(folder)
        return
    old = root / f"{TMP_PREFIX}old-{folder.name}-{os.getpid()}"
    folder.rename(old)
    staging.rename(folder)
    if (old / IN_USE).exists():
        (old / IN_USE).rename(folder / IN_USE)
    shutil.rmtree(old)


def _point_link(root: Path, folder: Path) -> None:
    """Make ``root/LA`` point at ``folder/LA`` (an atomic rename of a new link over the old)."""
    link, target = root / "LA", Path(folder.name) / "LA"
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    staging = root / f"{TMP_PREFIX}LA-{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(target, target_is_directory=True)
    os.replace(staging, link)


def _prune(root: Path, keep: Path) -> None:
    """Delete the other corpus folders that no process holds, and leftovers of interrupted
    generations (only the holder of the root lock generates, so none is in progress)."""
    for entry in sorted(root.iterdir()):
        if entry == keep or entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if not (entry / OWNER).is_file():
            continue
        with open(entry / IN_USE, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running process reads this corpus
            shutil.rmtree(entry)


def _provide(root: str | Path, seed: int, sizes: dict[str, int], regenerate: bool) -> Path:
    root = Path(root).expanduser()
    demo_sizes = DemoSizes(**sizes)
    folder = demo_corpus_dir(root, seed, **sizes)
    with _locked(root):
        _claim(root, folder, seed, demo_sizes)
        if regenerate or not _is_complete(folder, seed, demo_sizes):
            _generate(root, folder, seed, demo_sizes)
        _point_link(root, folder)
        _hold(folder)
        _prune(root, keep=folder)
    return folder


def generate_demo_corpus(root: str | Path, seed: int = 0, **sizes: int) -> Path:
    """(Re)generate the corpus of these settings under ``root``; return its folder.

    ``sizes`` override :class:`DemoSizes` fields (``train_bonafide=12``, ...). The folder is
    :func:`demo_corpus_dir`; ``root/LA`` then points at its ``LA/``. Corpora of other settings
    are left alone while a process uses them.
    """
    return _provide(root, seed, sizes, regenerate=True)


def ensure_demo_corpus(root: str | Path, seed: int = 0, **sizes: int) -> Path:
    """The folder holding the corpus of these settings under ``root``, generated first unless a
    matching marker says it is complete. This process holds it (no other process deletes it)
    until it exits; ``root/LA`` points at its ``LA/``."""
    return _provide(root, seed, sizes, regenerate=False)
