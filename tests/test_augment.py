"""Training-time augmentation (deepfake_detect/augment/): what each transform does to the audio,
measured; determinism and finiteness of every transform; train-only application; config errors
that name their key; the conf/augment/ group; the preview command."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import CONF, compose_config, la_data_overrides, tone
from hydra.utils import instantiate

import deepfake_detect.augment as augment_pkg
from deepfake_detect.augment import (
    Augmentation,
    AugmentConfigError,
    AugmentContext,
    Babble,
    Codec,
    ColoredNoise,
    FolderNoise,
    Gain,
    OneOf,
    RawBoost,
    Reverb,
    SpecAugment,
    Speed,
    Telephone,
    build_augmentation,
)
from deepfake_detect.augment.base import MIN_SAMPLES
from deepfake_detect.augment.codec import CODECS, codec_round_trip
from deepfake_detect.augment.noise import COLORS, colored_noise, mix_at_snr
from deepfake_detect.augment.preview import main as preview_main
from deepfake_detect.augment.spec import mask_spans
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.errors import ConfigError
from deepfake_detect.models.lcnn import LCNN

SR = 16_000
RNG = np.random.default_rng


def power(x: np.ndarray | torch.Tensor) -> float:
    return float(np.mean(np.square(np.asarray(x, dtype=np.float64))))


def measured_snr(out: np.ndarray | torch.Tensor, clean: np.ndarray | torch.Tensor) -> float:
    """dB of the clean signal's power over that of what was added (``out - clean``)."""
    added = np.asarray(out, dtype=np.float64) - np.asarray(clean, dtype=np.float64)
    return 10 * np.log10(power(clean) / power(added))


def band_energy(x: np.ndarray, low: float, high: float, rate: int = SR) -> float:
    """Energy of ``x`` between ``low`` and ``high`` Hz (FFT bins)."""
    spectrum = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def band_ratio(out: np.ndarray, x: np.ndarray, low: float, high: float, rate: int = SR) -> float:
    """How much of ``x``'s energy in a band ``out`` still has there (1: all of it)."""
    return band_energy(out, low, high, rate) / band_energy(x, low, high, rate)


def relative_error(out: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm(out - x) / np.linalg.norm(x))


def white(seconds: float = 1.0, seed: int = 0, rate: int = SR) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(
        np.float32
    )


def speech(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """conftest's harmonic-plus-noise test signal, scaled to peak 1."""
    x = tone(seconds, SR, seed)
    return torch.from_numpy(x / np.abs(x).max())


def write_wavs(folder: Path, count: int, rate: int = SR, channels: int = 1, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        data = 0.2 * rng.standard_normal((int(rate * (0.3 + 0.2 * i)), channels))
        sf.write(folder / f"noise_{rate}_{i}.wav", data.astype(np.float32), rate)


def rir_folder(folder: Path) -> Path:
    """Two synthetic RIRs: a direct path after a delay, then an exponential tail."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(2):
        rir = np.zeros(4000, dtype=np.float32)
        rir[40 + 10 * i] = 1.0
        tail = rng.standard_normal(3900) * np.exp(-np.arange(3900) / (300 + 200 * i))
        rir[60 + 10 * i : 3960 + 10 * i] += 0.3 * tail.astype(np.float32)
        sf.write(folder / f"rir_{i}.wav", rir, SR)
    return folder


def babble_rows(folder: Path) -> list[Utterance]:
    """Bona fide rows whose audio is a 500 Hz tone, spoofed rows a 3 kHz tone (plus a touch of
    noise), so babble made of spoofed speech would show at 3 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    t = np.arange(int(0.7 * SR)) / SR
    rng = np.random.default_rng(5)
    for i in range(6):
        bona = i % 2 == 0
        freq = 500.0 if bona else 3000.0
        wave = 0.3 * np.sin(2 * np.pi * freq * t + i) + 0.001 * rng.standard_normal(t.size)
        path = folder / f"utt{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        label = "bonafide" if bona else "spoof"
        rows.append(Utterance(f"utt{i}", str(path), label, num_frames=t.size, sample_rate=SR))
    return rows


# -- additive noise: the SNR is what was asked for ------------------------------------------------
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 35.0])
def test_mix_at_snr_hits_the_requested_snr(snr: float) -> None:
    x = speech().numpy()
    short_noise = white(0.1, seed=1)  # tiled up to the clip's length
    out = mix_at_snr(x, short_noise, snr)
    assert out.shape == x.shape and out.dtype == np.float32
    assert abs(measured_snr(out, x) - snr) < 0.5
    assert np.array_equal(mix_at_snr(np.zeros(100, np.float32), short_noise, snr), np.zeros(100))
    assert np.array_equal(mix_at_snr(x, np.zeros(50, np.float32), snr), x)  # silent noise


@pytest.mark.parametrize("color", sorted(COLORS))
def test_colored_noise_adds_its_colour_at_the_fixed_snr(color: str) -> None:
    x = speech()
    for seed in range(3):
        out = ColoredNoise(snr_db=12, colors=[color])(x, SR, np.random.default_rng(seed))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert abs(measured_snr(out, x) - 12) < 0.5
    # the colour: power spectral density ~ 1 / f^a, so an octave's energy ~ f^(1 - a): ten
    # times higher, 10 (1 - a) dB more (white +10, pink 0, brown -10); unit variance
    noise = colored_noise(2**16, COLORS[color], np.random.default_rng(0))
    assert abs(noise.std() - 1) < 1e-3
    per_decade = 10 * np.log10(band_energy(noise, 400, 800) / band_energy(noise, 40, 80))
    assert abs(per_decade - 10 * (1 - COLORS[color])) < 1.0


def test_folder_noise_mixes_files_at_the_fixed_snr(tmp_path: Path) -> None:
    write_wavs(tmp_path / "noise", 2)  # 16 kHz mono
    write_wavs(tmp_path / "noise" / "sub", 1, rate=8000, channels=2)  # resampled, down-mixed
    (tmp_path / "noise" / "README.txt").write_text("not audio")
    transform = FolderNoise(str(tmp_path / "noise"), snr_db=[7, 7])
    assert len(transform.files) == 3
    x = speech(1.2)  # longer than every noise file: they are tiled
    for seed in range(6):
        out = transform(x, SR, np.random.default_rng(seed))
        assert out.shape == x.shape
        assert abs(measured_snr(out, x) - 7) < 0.5


def test_babble_uses_only_bona_fide_talkers_at_the_fixed_snr(tmp_path: Path) -> None:
    rows = babble_rows(tmp_path / "corpus")
    babble = Babble(snr_db=[15, 15], talkers=[2, 4])
    with pytest.raises(RuntimeError, match="prepare"):
        babble(speech(), SR, np.random.default_rng(0))
    babble.prepare(AugmentContext(SR, rows))
    assert [p.name for p in babble.sources] == ["utt0.wav", "utt2.wav", "utt4.wav"]
    x = torch.from_numpy(white(1.0, seed=9))
    for seed in range(4):
        out = babble(x, SR, np.random.default_rng(seed))
        assert out.shape == x.shape
        assert abs(measured_snr(out, x) - 15) < 0.5
        added = (out - x).numpy()
        # the 500 Hz talkers are there, nothing of the 3 kHz spoofed rows
        assert band_energy(added, 450, 550) > 1000 * band_energy(added, 2950, 3050)
    with pytest.raises(AugmentConfigError, match="no bona fide"):
        Babble().prepare(AugmentContext(SR, [r for r in rows if r.label == "spoof"]))


# -- codecs and channels --------------------------------------------------------------------------
def round_trip(x: np.ndarray, rate: int, codec: str, quality: float) -> np.ndarray:
    if codec == "telephone":
        return Telephone()(torch.from_numpy(x), rate, RNG(int(quality * 100))).numpy()
    return codec_round_trip(x, rate, codec, quality)


@pytest.mark.parametrize("rate", [16_000, 22_050])
@pytest.mark.parametrize("codec", [*sorted(CODECS), "telephone"])
def test_codec_round_trip_keeps_length_and_rate(codec: str, rate: int) -> None:
    """A 1 kHz tone stays a 1 kHz tone of the same length (22.05 kHz goes through the 48 kHz
    Opus and the 8 kHz GSM and telephone resampling paths)."""
    n = rate // 2
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate)).astype(np.float32)
    for quality in (0.0, 0.95):
        out = round_trip(x, rate, codec, quality)
        assert out.shape == x.shape and np.isfinite(out).all()
        middle = out[n // 4 : 3 * n // 4] * np.hanning(n // 2)
        peak_hz = np.fft.rfftfreq(n // 2, 1 / rate)[np.argmax(np.abs(np.fft.rfft(middle)))]
        assert abs(peak_hz - 1000) <= rate / (n // 2)  # within one bin
        # realigned on the input (MP3's encoder delay removed): no lag
        assert np.dot(out, x) / np.sqrt(np.dot(out, out) * np.dot(x, x)) > 0.9
    assert np.array_equal(round_trip(np.zeros(400, np.float32), rate, codec, 0.5), np.zeros(400))


def test_gsm_and_telephone_leave_almost_nothing_above_4_khz() -> None:
    """Measured (libsndfile 1.2, white noise): GSM keeps 0.3 % of the energy above 4 kHz, the
    telephone band (300-3400 Hz) far less; both keep most of 500-3000 Hz."""
    x = white(1.0)
    gsm = codec_round_trip(x, SR, "gsm")
    phone = Telephone(low=[300, 300], high=[3400, 3400])(torch.from_numpy(x), SR, RNG()).numpy()
    for out in (gsm, phone):
        assert out.shape == x.shape
        assert band_ratio(out, x, 4000, 8000) < 0.01
        assert band_ratio(out, x, 500, 3000) > 0.5
    assert band_ratio(phone, x, 4000, 8000) < 0.001
    assert band_ratio(phone, x, 0, 150) < 0.05  # the band-pass's low edge


def test_mp3_at_high_compression_removes_the_high_band() -> None:
    """Measured (LAME through libsndfile 1.2, 16 kHz white noise): compression 0-0.7 low-passes
    at about 7.25 kHz, 0.9 at 5.8 kHz, 0.95 (~17 kbit/s) at 5.4 kHz."""
    x = white(1.0)
    best, smallest = codec_round_trip(x, SR, "mp3", 0.0), codec_round_trip(x, SR, "mp3", 0.95)
    assert band_ratio(best, x, 6000, 7000) > 0.5
    assert band_ratio(best, x, 7500, 8000) < 0.1
    assert band_ratio(smallest, x, 6000, 8000) < 0.01
    assert band_ratio(smallest, x, 500, 3000) > 0.5


@pytest.mark.parametrize("codec", ["mp3", "vorbis", "opus"])
def test_compression_level_reaches_the_encoder(codec: str) -> None:
    """Measured relative errors on white noise: mp3 0.31 -> 0.82, vorbis 0.10 -> 0.61,
    opus 0.05 -> 0.68 (compression 0 -> 0.95)."""
    x = white(1.0)
    best = relative_error(codec_round_trip(x, SR, codec, 0.0), x)
    smallest = relative_error(codec_round_trip(x, SR, codec, 0.95), x)
    assert smallest > 0.5 and smallest > 1.5 * best


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_g711_changes_the_signal_only_by_quantisation(codec: str) -> None:
    x = speech().numpy()
    out = codec_round_trip(x, SR, codec)
    assert not np.array_equal(out, x)
    assert 1e-4 < relative_error(out, x) < 0.03  # measured 0.013 (-37 dB)
    assert np.abs(out - x).max() < 0.05


# -- SpecAugment ----------------------------------------------------------------------------------
def test_mask_spans_zeroes_exactly_the_requested_spans() -> None:
    x = torch.arange(1, 2 * 10 * 6 + 1, dtype=torch.float).reshape(2, 10, 6)
    starts = torch.tensor([[1, 7], [0, 4]])
    widths = torch.tensor([[2, 1], [3, 0]])  # item 1's second mask is empty
    out = mask_spans(x, 1, starts, widths)
    expected = x.clone()
    expected[0, 1:3] = 0
    expected[0, 7:8] = 0
    expected[1, 0:3] = 0
    assert torch.equal(out, expected)
    assert x.min() > 0  # a copy: the input is untouched
    out = mask_spans(x, 2, torch.tensor([[4], [0]]), torch.tensor([[2], [1]]), value=-1.0)
    expected = x.clone()
    expected[0, :, 4:6] = -1
    expected[1, :, 0:1] = -1
    assert torch.equal(out, expected)


def test_specaugment_masks_only_valid_frames_within_its_widths() -> None:
    frames = torch.tensor([100, 60, 12, 0])
    masking = SpecAugment(
        time_masks=2, time_width=20, max_time_fraction=0.2, freq_masks=2, freq_width=5
    )
    torch.manual_seed(0)
    seen_time = seen_freq = 0
    for _ in range(50):
        out = masking(torch.ones(4, 100, 30), frames)
        for b, valid in enumerate(frames.tolist()):
            time_masked = (out[b] == 0).all(dim=1).nonzero().flatten()
            freq_masked = (out[b] == 0).all(dim=0).nonzero().flatten()
            cap = min(20, int(valid * 0.2))
            assert all(t < valid for t in time_masked.tolist())  # never the padding
            assert len(time_masked) <= 2 * cap
            seen_time += len(time_masked)
            assert len(freq_masked) <= 2 * 5
            seen_freq += len(freq_masked)
    assert seen_time > 0 and seen_freq > 0
    features = torch.randn(3, 40, 8)
    assert torch.equal(SpecAugment(p=0.0)(features, None), features)
    torch.manual_seed(1)
    first = masking(features, None)
    torch.manual_seed(1)
    assert torch.equal(masking(features, None), first)  # torch's seed decides


def test_lcnn_masks_features_in_training_mode_only() -> None:
    torch.manual_seed(0)
    net = LCNN(width=0.25, lstm=False, dropout=0.0)
    wave, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    calls: list[tuple[tuple[int, ...], list[int]]] = []
    heavy = SpecAugment(
        time_masks=3, time_width=10, max_time_fraction=0.5, freq_masks=3, freq_width=10
    )

    def recording(features: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
        calls.append((tuple(features.shape), frames.tolist() if frames is not None else []))
        return heavy(features, frames)

    net.eval()
    with torch.no_grad():
        clean = net(wave, lengths)
        net.set_feature_augment(recording)
        assert torch.equal(net(wave, lengths), clean)  # eval: unchanged, not even called
        assert calls == []
        net.train()
        net.set_feature_augment(None)
        torch.manual_seed(2)
        plain = net(wave, lengths)
        net.set_feature_augment(recording)
        torch.manual_seed(2)
        masked = net(wave, lengths)
    assert len(calls) == 1
    shape, frames = calls[0]
    assert shape[0] == 2 and frames[0] > frames[1] > 0  # [B, T, F] and each item's valid frames
    assert not torch.allclose(masked, plain)


SMALL_RAWNET2 = [
    "model.net.block_channels=[4,4,8,8,8,8]",
    "model.net.gru_hidden=8",
    "model.net.embedding_dim=8",
]


def test_specaugment_is_refused_by_a_net_without_features(compose_cfg) -> None:
    cfg = compose_cfg("model=rawnet2", "augment=specaugment", *SMALL_RAWNET2)
    net = instantiate(cfg.model.net)
    _, masking = build_augmentation(cfg.augment)
    assert isinstance(masking, SpecAugment)
    with pytest.raises(ValueError, match="SpecAugment does not apply"):
        net.set_feature_augment(masking)
    net.set_feature_augment(None)  # removing one is always fine


def test_the_pipeline_refuses_specaugment_for_rawnet2(compose_cfg, monkeypatch) -> None:
    from deepfake_detect import pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("the pipeline got as far as building a trainer")

    monkeypatch.setattr(pipeline, "_trainer", no_training)
    cfg = compose_cfg("model=rawnet2", "augment=specaugment", *SMALL_RAWNET2)
    with pytest.raises(ConfigError, match="augment: RawNet2 .*SpecAugment does not apply"):
        pipeline.train(cfg)


# -- RawBoost -------------------------------------------------------------------------------------
PEAK_LIMITED = {1, 2, 5, 8}
"""Algorithms whose last step scales the peak down to 1 (the others end by adding the
stationary noise, at 10-40 dB SNR: measured peaks up to 1.71 for a unit-peak input)."""


@pytest.mark.parametrize("algo", range(1, 9))
def test_rawboost_every_algorithm_changes_a_bounded_finite_signal(algo: int) -> None:
    x = speech(0.5)
    bound = 1.0 + 1e-6 if algo in PEAK_LIMITED else 2.5
    transform = RawBoost(algo=algo)
    for seed in range(3):
        out = transform(x, SR, np.random.default_rng(seed))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, x, atol=1e-4)
        assert out.abs().max() <= bound


def test_rawboost_rejects_an_unknown_algorithm() -> None:
    with pytest.raises(ConfigError, match=r"augment\.rawboost\.algo: RawBoost algorithms are 1-8"):
        build_augmentation(
            {"rawboost": {"_target_": "deepfake_detect.augment.RawBoost", "algo": 9}}
        )


# -- every transform: same seed, same audio; never NaN or Inf -------------------------------------
TRANSFORMS: dict[str, Callable[[Path], Augmentation]] = {
    # name: the transform, given a folder holding noise/ and rirs/
    "colored_noise": lambda root: ColoredNoise(),
    "folder_noise": lambda root: FolderNoise(str(root / "noise")),
    "babble": lambda root: Babble(talkers=[1, 3]),
    "reverb_simulated": lambda root: Reverb(rooms=2),
    "reverb_folder": lambda root: Reverb(folder=str(root / "rirs")),
    "codec": lambda root: Codec(),
    "telephone": lambda root: Telephone(),
    "gain": lambda root: Gain(),
    "speed": lambda root: Speed(),
    "one_of": lambda root: OneOf(
        [Gain(gain_db=[-20, -10]), ColoredNoise(), Speed()], weights=[1, 2, 1]
    ),
    **{f"rawboost_{a}": lambda root, a=a: RawBoost(algo=a) for a in (1, 2, 3, 4)},
}


@pytest.fixture(scope="module")
def transforms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Augmentation]:
    root = tmp_path_factory.mktemp("augment")
    write_wavs(root / "noise", 2)
    rir_folder(root / "rirs")
    built = {name: make(root) for name, make in TRANSFORMS.items()}
    context = AugmentContext(SR, babble_rows(root / "corpus"))
    for transform in built.values():
        transform.prepare(context)
    return built


def test_every_transform_class_is_covered(transforms: dict[str, Augmentation]) -> None:
    classes = {
        obj
        for obj in vars(augment_pkg).values()
        if inspect.isclass(obj) and issubclass(obj, Augmentation) and not inspect.isabstract(obj)
    }
    assert classes <= {type(t) for t in transforms.values()}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_same_seed_same_output_another_seed_another(
    transforms: dict[str, Augmentation], name: str
) -> None:
    transform = transforms[name]
    x = speech(0.5)
    first = transform(x, SR, np.random.default_rng(123))
    again = transform(x.clone(), SR, np.random.default_rng(123))
    assert torch.equal(first, again)
    assert torch.equal(x, speech(0.5))  # the input is never modified in place
    others = [transform(x, SR, np.random.default_rng(seed)) for seed in range(6)]
    assert any(o.shape != first.shape or not torch.equal(o, first) for o in others)


EDGE_CASES: dict[str, Callable[[], torch.Tensor]] = {
    "silence": lambda: torch.zeros(8000),
    "5 samples": lambda: torch.tensor([0.1, -0.2, 0.3, 0.0, 0.05]),
    "minimum length": lambda: speech(0.5)[:MIN_SAMPLES],
    "33 samples": lambda: speech(0.5)[:33],
    "spike 1e4": lambda: speech(0.5) + 1e4 * (torch.arange(8000) == 4000),
    "float32 max": lambda: (
        speech(0.5) * (torch.arange(8000) != 4000) + 3e38 * (torch.arange(8000) == 4000)
    ),
}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_never_nan_or_inf(transforms: dict[str, Augmentation], name: str, case: str) -> None:
    x = EDGE_CASES[case]().float()
    for seed in range(2):
        out = transforms[name](x, SR, np.random.default_rng(seed))
        assert out.dtype == torch.float32 and out.ndim == 1
        assert torch.isfinite(out).all(), f"{name} on {case}"
        if case == "5 samples":  # below MIN_SAMPLES: passed through
            assert torch.equal(out, x)
        if case == "silence":  # no level to set noise by, nothing to filter or reverberate
            assert out.abs().max() < 1e-6


def test_probability_and_one_of_weights() -> None:
    x = speech(0.1)
    louder = Gain(p=0.3, gain_db=[-6, -6])
    applied = sum(not torch.equal(louder(x, SR, np.random.default_rng(s)), x) for s in range(400))
    assert 0.22 < applied / 400 < 0.38
    choice = OneOf([Gain(gain_db=[-6, -6]), Gain(gain_db=[-12, -12])], weights=[3, 1])
    outs = [choice(x, SR, np.random.default_rng(s)) for s in range(400)]
    first = sum(torch.allclose(o, x * 10 ** (-6 / 20), atol=1e-6) for o in outs)
    second = sum(torch.allclose(o, x * 10 ** (-12 / 20), atol=1e-6) for o in outs)
    assert first + second == 400 and 0.67 < first / 400 < 0.83


# -- augmentations reach training items only ------------------------------------------------------
class AddConstant(Augmentation):
    """Marks the audio it touches (+10) and records its calls and its prepare context."""

    def __init__(self) -> None:
        super().__init__(p=1.0)
        self.calls = 0
        self.context: AugmentContext | None = None

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        self.calls += 1
        return x + 10.0

    def prepare(self, context: AugmentContext) -> None:
        self.context = context


def test_augmentations_are_absent_from_validation_and_test_batches(
    tiny_la: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        tmp_path / "run",
        "~experiment",
        *la_data_overrides(tiny_la),
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.max_len=4000",
        "data.batch_size=8",
    )
    datamodule = instantiate(cfg.data)
    marker = AddConstant()
    datamodule.transforms.append(marker)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert marker.context is not None
    assert marker.context.sample_rate == 16000
    assert list(marker.context.train_rows) == datamodule.train_rows

    def means(loader) -> list[float]:
        values = []
        for batch in loader:
            for wave, length in zip(batch["wave"], batch["lengths"], strict=True):
                values.append(float(wave[:length].mean()))
        return values

    train = means(datamodule.train_dataloader())
    assert train and all(m > 9 for m in train)  # every training item was marked
    assert marker.calls == len(train)
    marker.calls = 0
    val = means(datamodule.val_dataloader())
    test = [m for loader in datamodule.test_dataloader() for m in means(loader)]
    assert len(val) == len(datamodule.val_rows) and len(test) == 24
    assert all(abs(m) < 1 for m in val + test)
    assert marker.calls == 0


# -- bad input: errors that name the folder, the file or the config key ----------------------------
@pytest.mark.parametrize("kind", ["noise", "rir"])
def test_bad_folders_are_named(tmp_path: Path, kind: str) -> None:
    def make(folder: str) -> Augmentation:
        return FolderNoise(folder) if kind == "noise" else Reverb(folder=folder)

    missing = tmp_path / "missing"
    with pytest.raises(AugmentConfigError, match=f"{missing} does not exist"):
        make(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(AugmentConfigError, match=f"{empty} holds no audio files"):
        make(str(empty))
    garbage = tmp_path / "garbage"
    write_wavs(garbage, 1)
    (garbage / "broken.wav").write_bytes(b"RIFF\x00\x01garbage, not a wave file" * 4)
    with pytest.raises(AugmentConfigError, match=f"unreadable .* file {garbage / 'broken.wav'}"):
        make(str(garbage))
    target = "FolderNoise" if kind == "noise" else "Reverb"
    entry = {"_target_": f"deepfake_detect.augment.{target}", "folder": str(missing)}
    with pytest.raises(ConfigError, match=f"augment.x.folder: .*{missing} does not exist"):
        build_augmentation({"x": entry})


def test_range_and_probability_errors_name_their_key() -> None:
    noise = {"_target_": "deepfake_detect.augment.ColoredNoise", "snr_db": [20, 10]}
    with pytest.raises(ConfigError) as info:
        build_augmentation({"noise": noise})
    assert "augment.noise.snr_db" in str(info.value) and "min 20 > max 10" in str(info.value)
    for name, target in [
        ("noise", "ColoredNoise"),
        ("rb", "RawBoost"),
        ("mask", "SpecAugment"),
        ("codec", "Codec"),
        ("speed", "Speed"),
    ]:
        entry = {"_target_": f"deepfake_detect.augment.{target}", "p": 1.5}
        with pytest.raises(ConfigError, match=rf"augment\.{name}\.p: .*within \[0, 1\]"):
            build_augmentation({name: entry})
    with pytest.raises(ConfigError, match=r"augment\.x\._target_: cannot import"):
        build_augmentation({"x": {"_target_": "deepfake_detect.augment.NoSuchThing"}})
    with pytest.raises(ConfigError, match=r"augment\.x: .*neither"):
        build_augmentation({"x": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(ConfigError, match="only one SpecAugment"):
        mask = {"_target_": "deepfake_detect.augment.SpecAugment"}
        build_augmentation({"a": mask, "b": mask})


def test_hydra_override_errors_name_their_key(compose_cfg) -> None:
    cfg = compose_cfg("augment=noise", "augment.noise.p=1.5")
    with pytest.raises(ConfigError, match=r"augment\.noise\.p: .*1\.5"):
        build_augmentation(cfg.augment)
    cfg = compose_cfg("augment=musan")  # folder: ??? left unset
    with pytest.raises(ConfigError, match=r"augment\.musan\.folder: required, but not set"):
        build_augmentation(cfg.augment)


# -- the conf/augment/ group ----------------------------------------------------------------------
AUGMENT_CONFIGS = sorted(p.stem for p in (CONF / "augment").glob("*.yaml"))


@pytest.mark.parametrize("name", AUGMENT_CONFIGS)
def test_every_augment_config_composes_and_builds(compose_cfg, tmp_path: Path, name: str) -> None:
    overrides = [f"augment={name}"]
    if name == "musan":
        write_wavs(tmp_path / "musan" / "noise", 2)
        overrides.append(f"augment.musan.folder={tmp_path / 'musan'}")
    cfg = compose_cfg(*overrides)
    entries = dict(cfg.augment or {})
    assert (name == "none") == (not entries)
    waves, masking = build_augmentation(cfg.augment)
    built = [*waves, *([masking] if masking else [])]
    assert len(built) == len(entries)
    targets = {entry["_target_"].rsplit(".", 1)[-1] for entry in entries.values()}
    assert {type(b).__name__ for b in built} == targets


def test_augment_chains_compose(compose_cfg) -> None:
    cfg = compose_cfg("augment=[rawboost,codec]")
    assert list(cfg.augment) == ["rawboost", "codec", "telephone"]
    waves, masking = build_augmentation(cfg.augment)
    assert [type(w) for w in waves] == [RawBoost, Codec, Telephone] and masking is None
    cfg = compose_cfg("augment=[rawboost,codec]", "augment.codec=null")
    assert [type(w) for w in build_augmentation(cfg.augment)[0]] == [RawBoost, Telephone]


# -- the preview command --------------------------------------------------------------------------
SMALL_DEMO = {
    "train_bonafide": 3,
    "train_spoof_per_attack": 2,
    "train_speakers": 2,
    "dev_bonafide": 2,
    "dev_spoof_per_attack": 1,
    "dev_speakers": 1,
    "eval_bonafide": 2,
    "eval_spoof_per_attack": 1,
    "eval_speakers": 2,
}


def test_preview_writes_audio_spectrograms_and_an_index(tmp_path: Path, capsys) -> None:
    demo = [f"+data.corpora.demo.{k}={v}" for k, v in SMALL_DEMO.items()]
    common = [
        "augment=[noise,specaugment]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *demo,
        "+preview.count=3",
        "preview.force=true",  # the + is optional
    ]
    out = tmp_path / "preview"
    assert preview_main([*common, f"+preview.out={out}"]) == 0
    assert str(out) in capsys.readouterr().out
    stems = sorted(p.name.removesuffix(".png") for p in out.glob("*.png"))
    assert len(stems) == 3 and stems[0].startswith("00_LA_T_")
    for stem in stems:
        original, rate = sf.read(out / f"{stem}.orig.wav", dtype="float32")
        augmented, aug_rate = sf.read(out / f"{stem}.aug.wav", dtype="float32")
        assert rate == aug_rate == 16000 and original.ndim == 1
        assert 0.5 * rate < len(original) == len(augmented) < 10 * rate
        assert 3 < measured_snr(augmented, original) < 32  # noise, forced, at 5-30 dB
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    index = (out / "index.md").read_text()
    assert "ColoredNoise" in index and "specaugment" in index
    assert index.count("| noise |") == 3 and all(stem in index for stem in stems)
    again = tmp_path / "again"
    assert preview_main([*common, f"preview.out={again}"]) == 0
    for stem in stems:  # the same seed writes the same audio (the headers hold a time stamp)
        first, _ = sf.read(out / f"{stem}.aug.wav", dtype="float32")
        second, _ = sf.read(again / f"{stem}.aug.wav", dtype="float32")
        assert np.array_equal(first, second)


def test_preview_rejects_bad_options(capsys) -> None:
    assert preview_main(["preview.count=0"]) == 1
    assert "preview.count: must be a positive number" in capsys.readouterr().err
    assert preview_main(["preview.colour=red"]) == 1
    assert "unknown option preview.colour" in capsys.readouterr().err
    assert preview_main(["augment=no_such_chain"]) == 1
    assert "no_such_chain" in capsys.readouterr().err


def test_bandstop_fir_equals_scipy_firwin() -> None:
    from scipy import signal

    from deepfake_detect.augment.rawboost import bandstop_fir

    rng = np.random.default_rng(0)
    for _ in range(100):
        taps = int(rng.integers(10, 101)) | 1
        low = float(rng.uniform(1e-3, 7000))
        high = min(low + float(rng.uniform(100, 1000)), 8000 - 1e-3)
        expected = signal.firwin(taps, [low, high], window="hamming", fs=16000)
        np.testing.assert_allclose(bandstop_fir(taps, low, high, 16000), expected, atol=1e-12)


def test_mini_best_chain_and_its_overrides_compose() -> None:
    """experiment=mini_best ships augment=generalize; another augment choice replaces it whole
    (no entry left without a _target_)."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        best = compose("train.yaml", overrides=["experiment=mini_best"])
        plain = compose("train.yaml", overrides=["experiment=mini_best", "augment=none"])
        other = compose("train.yaml", overrides=["experiment=mini_best", "augment=reverb"])
    waves, masking = build_augmentation(best.augment)
    assert [type(w).__name__ for w in waves] == ["RawBoost", "Codec", "Telephone"]
    assert waves[0].p == 0.6 and masking is None
    assert build_augmentation(plain.augment) == ([], None)
    assert [type(w).__name__ for w in build_augmentation(other.augment)[0]] == ["Reverb"]
