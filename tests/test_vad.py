"""Silence trimming (the contract's ``trim_silence``, :mod:`deepfake_detect.data.vad`): real
speech padded with silence or low noise comes back as the speech; ``none`` changes nothing;
audio without speech is kept and flagged; the setting travels in checkpoints, eval adopts it,
and ``detect`` trims with a trimming checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import compose_config, la_data_overrides, write_la_corpus
from scipy.signal import correlate

from deepfake_detect.data.audio import load_mono
from deepfake_detect.data.dataset import SpoofDataset
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.data.preprocessing import (
    CONTRACT_KEYS,
    Preprocessing,
    PreprocessingMismatch,
    resample,
    resolve_preprocessing,
)
from deepfake_detect.data.vad import EDGE_MARGIN, speech_segments, trim_silence
from deepfake_detect.inference.detect import DetectOptions, load_model, score_files
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.pipeline import evaluate

RATE = 16000
WILD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini_wild"
WILD_AUDIO = WILD / "release_in_the_wild"


def bonafide_speech(n: int = 3, min_seconds: float = 2.0) -> list[np.ndarray]:
    """The first ``n`` bona fide mini_wild files of at least ``min_seconds`` (skips when the
    corpus is absent)."""
    meta = WILD_AUDIO / "meta.csv"
    if not meta.is_file():
        pytest.skip(f"mini_wild not found at {WILD} (real speech for the VAD tests)")
    found = []
    with meta.open() as f:
        for row in csv.DictReader(f):
            if row["label"] != "bona-fide":
                continue
            wave, rate = sf.read(WILD_AUDIO / row["file"], dtype="float32")
            if rate == RATE and wave.ndim == 1 and wave.size >= min_seconds * RATE:
                found.append(wave)
            if len(found) == n:
                return found
    pytest.skip("mini_wild holds too few long bona fide files")


def padded(speech: np.ndarray, seconds: float = 1.0, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    pad = int(seconds * RATE)
    out = np.concatenate([np.zeros(pad), speech, np.zeros(pad)]).astype(np.float32)
    if noise:
        out += rng.normal(0, noise, out.size).astype(np.float32)
    return torch.from_numpy(out), pad


def best_alignment(trimmed: torch.Tensor, speech: np.ndarray) -> float:
    """The correlation of ``trimmed`` with ``speech`` where they overlap, at the shift that
    aligns them best (the overlap must be most of the speech)."""
    x, y = trimmed.numpy().astype(np.float64), speech.astype(np.float64)
    shift = int(np.argmax(correlate(x, y, mode="full", method="fft"))) - (y.size - 1)
    start, end = max(shift, 0), min(x.size, shift + y.size)  # the overlap, in x
    assert end - start > 0.8 * y.size, (start, end, y.size)
    return float(np.corrcoef(x[start:end], y[start - shift : end - shift])[0, 1])


# -- trimming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.0, 3e-4])  # digital silence; low noise (about -70 dBFS)
def test_edges_removes_the_padding_and_keeps_the_speech(noise: float) -> None:
    for i, speech in enumerate(bonafide_speech()):
        wave, pad = padded(speech, noise=noise, seed=i)
        trimmed = trim_silence(wave, RATE, "edges")
        assert not trimmed.no_speech
        # the speech plus at most its margins (and at most the files' own 0.1 s lead-in cut)
        n = trimmed.wave.numel()
        assert speech.size - 0.25 * RATE <= n <= speech.size + 2 * EDGE_MARGIN * RATE + 1, n
        assert trimmed.removed == wave.numel() - n >= 2 * pad - 2 * EDGE_MARGIN * RATE - 1
        assert best_alignment(trimmed.wave, speech) > 0.95


def test_all_removes_the_pauses_too() -> None:
    first, second = bonafide_speech(2)
    gap = np.zeros(RATE, dtype=np.float32)
    wave = torch.from_numpy(np.concatenate([gap, first, gap, second, gap]))
    edges = trim_silence(wave, RATE, "edges").wave
    every = trim_silence(wave, RATE, "all").wave
    assert every.numel() < edges.numel() - 0.8 * RATE  # the 1 s pause in the middle went
    assert abs(every.numel() - (first.size + second.size)) < 0.5 * RATE
    # what went was (nearly) silent: the speech's energy is kept
    assert every.square().sum() > 0.97 * wave.square().sum()


def test_segments_are_found_at_any_rate() -> None:
    (speech,) = bonafide_speech(1)
    wave, pad = padded(speech)
    at_16k = speech_segments(wave, RATE)
    wave_44k = resample(wave, RATE, 44100)
    at_44k = speech_segments(wave_44k, 44100)
    assert at_16k and at_44k
    assert at_44k[0][0] / 44100 == pytest.approx(at_16k[0][0] / RATE, abs=0.02)
    assert at_44k[-1][1] / 44100 == pytest.approx(at_16k[-1][1] / RATE, abs=0.02)
    assert at_16k[0][0] >= pad - 0.2 * RATE and at_16k[-1][1] <= pad + speech.size + 0.2 * RATE


def test_none_is_the_input_itself() -> None:
    wave = torch.randn(RATE)
    out = trim_silence(wave, RATE, "none")
    assert out.wave is wave and not out.no_speech and out.removed == 0
    with pytest.raises(ValueError, match="trim_silence must be one of"):
        trim_silence(wave, RATE, "some")


@pytest.mark.parametrize("mode", ["edges", "all"])
def test_no_speech_keeps_the_audio_and_flags_it(mode: str) -> None:
    rng = np.random.default_rng(0)
    for wave in (torch.zeros(RATE), torch.from_numpy(rng.normal(0, 1e-3, 2 * RATE)).float()):
        out = trim_silence(wave, RATE, mode)
        assert out.no_speech and out.removed == 0 and torch.equal(out.wave, wave)
    empty = trim_silence(torch.zeros(0), RATE, mode)
    assert empty.no_speech and empty.wave.numel() == 0


def test_trimming_is_deterministic() -> None:
    (speech,) = bonafide_speech(1)
    wave, _ = padded(speech, noise=3e-4)
    assert torch.equal(trim_silence(wave, RATE, "all").wave, trim_silence(wave, RATE, "all").wave)


# -- the data side ----------------------------------------------------------------------------
def write_padded(folder: Path, seconds: float = 1.0) -> tuple[Path, np.ndarray]:
    (speech,) = bonafide_speech(1)
    wave, _ = padded(speech, seconds)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "padded.wav"
    sf.write(path, wave.numpy(), RATE, subtype="FLOAT")
    return path, speech


def row(path: Path, frames: int) -> Utterance:
    return Utterance("u1", str(path), "bonafide", num_frames=frames, sample_rate=RATE)


def test_dataset_trims_before_the_crop(tmp_path: Path) -> None:
    path, speech = write_padded(tmp_path)
    frames = sf.info(path).frames
    plain = SpoofDataset([row(path, frames)], RATE)
    assert torch.equal(plain[0]["wave"], load_mono(str(path), RATE))  # none: as before
    same = SpoofDataset([row(path, frames)], RATE, trim_silence="none")
    assert torch.equal(same[0]["wave"], plain[0]["wave"])
    trimmed = SpoofDataset([row(path, frames)], RATE, trim_silence="edges")[0]["wave"]
    assert trimmed.numel() <= speech.size + 2 * EDGE_MARGIN * RATE + 1
    # training: crops of the trimmed audio (the seeking read of the untrimmed file is not used)
    train = SpoofDataset(
        [row(path, frames)], RATE, max_len=RATE, random_crop=True, trim_silence="edges"
    )
    crops = [train[(0, seed)]["wave"] for seed in range(8)]
    assert all(c.numel() == RATE for c in crops)
    head = trimmed.numpy()
    for crop in crops:  # each crop is a stretch of the trimmed audio
        starts = [s for s in range(head.size - RATE + 1) if head[s] == crop[0].item()]
        assert any(np.array_equal(head[s : s + RATE], crop.numpy()) for s in starts)


# -- the contract -----------------------------------------------------------------------------
def test_the_contract_holds_trim_silence_and_old_checkpoints_load_as_none() -> None:
    assert "trim_silence" in CONTRACT_KEYS
    old = Preprocessing().to_dict()
    del old["trim_silence"]
    assert Preprocessing.from_dict(old).trim_silence == "none"
    with pytest.raises(ValueError, match="trim_silence must be one of"):
        Preprocessing(trim_silence="yes")
    trained = Preprocessing(trim_silence="edges")
    assert resolve_preprocessing(trained, {"trim_silence": None}).trim_silence == "edges"
    with pytest.raises(PreprocessingMismatch, match="trim_silence"):
        resolve_preprocessing(trained, {"trim_silence": "none"})
    forced = resolve_preprocessing(trained, {"trim_silence": "all"}, override=True)
    assert forced.trim_silence == "all"


@pytest.fixture(scope="module")
def trimming_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LCNN saved as training saves it, with ``trim_silence: edges`` and 0.5 s
    crops."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = compose_config(out / "run", "model=lcnn")
    torch.manual_seed(0)
    model = SpoofDetector(**{k: v for k, v in cfg.model.items() if k[0] != "_"})
    model.set_preprocessing(Preprocessing(max_len=8000, trim_silence="edges"))
    path = out / "lcnn.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


def test_eval_adopts_the_checkpoints_trimming(trimming_ckpt: Path, tmp_path: Path) -> None:
    stored = torch.load(trimming_ckpt, map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["preprocessing"]["trim_silence"] == "edges"
    root = write_la_corpus(tmp_path / "corpus", {"eval": {"-": 2, "A07": 2}})

    def config(out: str, *overrides: str):
        return compose_config(
            tmp_path / out,
            *la_data_overrides(root),
            "data.test=[asvspoof2019_la:eval]",
            f"ckpt_path={trimming_ckpt}",
            *overrides,
            config_name="eval",
        )

    evaluate(config("as_trained"))
    saved = json.loads((tmp_path / "as_trained" / "metrics.json").read_text())
    assert saved["provenance"]["preprocessing"]["trim_silence"] == "edges"
    with pytest.raises(PreprocessingMismatch, match="data.trim_silence=none"):
        evaluate(config("refused", "data.trim_silence=none"))
    evaluate(config("forced", "data.trim_silence=none", "override_preprocessing=true"))
    saved = json.loads((tmp_path / "forced" / "metrics.json").read_text())
    assert saved["provenance"]["preprocessing"]["trim_silence"] == "none"


def test_detect_trims_with_a_trimming_checkpoint(trimming_ckpt: Path, tmp_path: Path) -> None:
    path, speech = write_padded(tmp_path, seconds=1.5)
    detector = load_model(trimming_ckpt)
    assert detector.preprocessing.trim_silence == "edges"
    (result,) = score_files(detector, [str(path)], DetectOptions(batch_size=4))
    assert result.scored and result.duration == pytest.approx(speech.size / RATE + 3.0)
    scored_seconds = result.timeline[-1].end
    assert scored_seconds <= speech.size / RATE + 2 * EDGE_MARGIN + 1e-3
    assert scored_seconds >= speech.size / RATE - 0.25
