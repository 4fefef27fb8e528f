"""Using a trained detector: calibration (the LLR map, the threshold rules, the reject band),
long audio in blocks and windows, bad inputs, and the ``deepfake-detect`` command end to end
(``detect`` and ``calibrate``), plus the calibration that training stores."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_SIZES, compose_config, la_data_overrides, tone, write_la_corpus
from torch import Tensor

from deepfake_detect.callbacks.calibration import StoreCalibration
from deepfake_detect.cli import main
from deepfake_detect.data.audio import load_mono
from deepfake_detect.data.preprocessing import Preprocessing, windows
from deepfake_detect.inference.calibration import (
    CALIBRATION_KEY,
    Calibration,
    fit_calibration,
    stored_calibration,
)
from deepfake_detect.inference.detect import (
    DetectOptions,
    Detector,
    Progress,
    collect_inputs,
    load_model,
    score_files,
)
from deepfake_detect.inference.semantics import SCORE_SEMANTICS
from deepfake_detect.models.interface import SpoofNet
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.models.scorer import SpoofScorer
from deepfake_detect.pipeline import train

RATE = 16000
WINDOW = 8000  # 0.5 s: the tiny checkpoint's training crop, so detect's window


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LCNN saved as training saves it (no calibration), 0.5 s crops."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = compose_config(out / "run", "model=lcnn")
    torch.manual_seed(0)
    model = SpoofDetector(**{k: v for k, v in cfg.model.items() if k[0] != "_"})
    model.set_preprocessing(Preprocessing(max_len=WINDOW))
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


def write(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


class EnergyNet(SpoofNet):
    """A stub whose score is the window's log10 RMS + 1: loud (> 0.1 RMS) is bona fide."""

    embedding_dim = 1

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        n = waveform.shape[-1] if lengths is None else lengths.clamp(min=1)
        power = waveform.square().sum(dim=-1) / n
        return torch.log10(power.sqrt() + 1e-6)[:, None] + 1.0

    def classify(self, embedding: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(embedding), embedding], dim=-1)


def energy_detector(calibration: Calibration | None = None) -> Detector:
    pre = Preprocessing(max_len=WINDOW, normalize="none")
    return Detector(SpoofScorer(EnergyNet(), None, pre).eval(), calibration, "energy-stub")


# -- calibration ----------------------------------------------------------------------------------
def gaussian_dev(n_bona: int = 1000, n_spoof: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Bona fide ~ N(1, 1), spoof ~ N(-1, 1): the true LLR is 2 * score."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1, 1, n_bona), rng.normal(-1, 1, n_spoof)])
    return scores, np.concatenate([np.ones(n_bona), np.zeros(n_spoof)])


def test_calibration_puts_the_eer_threshold_at_probability_one_half() -> None:
    scores, labels = gaussian_dev()
    cal = fit_calibration(scores, labels)  # unequal class counts: the fit is prior-weighted
    assert cal.scale == pytest.approx(2.0, abs=0.2) and cal.offset == pytest.approx(0.0, abs=0.15)
    assert cal.method == "eer" and cal.dev["eer"] == pytest.approx(0.16, abs=0.02)
    assert cal.p_spoof(cal.threshold) == pytest.approx(0.5, abs=1e-12)
    # the calibrated LLR gives p = 0.5 at the EER point too (symmetric classes)
    assert 1 / (1 + np.exp(cal.llr(cal.threshold))) == pytest.approx(0.5, abs=0.05)
    assert cal.p_spoof(cal.threshold - 3) > 0.99 and cal.p_spoof(cal.threshold + 3) < 0.01
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal and cal.calibrated and not Calibration().calibrated


def test_target_far_and_bayes_thresholds() -> None:
    scores, labels = gaussian_dev()
    spoof, bona = scores[labels == 0], scores[labels == 1]
    cal = fit_calibration(scores, labels, "target_far", 0.01)
    assert np.mean(spoof >= cal.threshold) == pytest.approx(0.01)
    assert cal.dev["far"] == pytest.approx(0.01)
    top = np.sort(spoof)[::-1]
    assert top[30] < cal.threshold <= top[29]  # the lowest such threshold (30 of 3000 accepted)
    assert cal.threshold > fit_calibration(scores, labels).threshold
    bayes = fit_calibration(scores, labels, "bayes", 0.05)
    assert bayes.threshold_llr == pytest.approx(np.log(0.95 / 0.05))
    assert bayes.operating_prior == pytest.approx(0.05)
    # the posterior of spoof at bona fide prior 0.05, from the fitted LLR
    s = 1.7
    posterior = 1 / (1 + np.exp(bayes.llr(s) + np.log(0.05 / 0.95)))
    assert bayes.p_spoof(s) == pytest.approx(posterior)
    fixed = fit_calibration(scores, labels, "fixed", 0.25)
    assert fixed.threshold == 0.25 and fixed.dev["frr"] == pytest.approx(np.mean(bona < 0.25))


def test_calibration_refuses_what_it_cannot_fit() -> None:
    scores, labels = gaussian_dev(50, 50)
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(scores, np.ones_like(labels))
    with pytest.raises(ValueError, match="rank bona fide below spoof"):
        fit_calibration(-scores, labels)
    with pytest.raises(ValueError, match="reject band"):
        fit_calibration(scores, labels, reject_band=0.5)


def test_the_reject_band_makes_uncertain_exactly_inside_it() -> None:
    cal = Calibration(scale=1.0, threshold=0.0, reject_band=0.1)
    p = [0.0, 0.35, 0.3999, 0.4001, 0.5, 0.5999, 0.6001, 0.65, 1.0]
    assert cal.decide(p) == [
        "bonafide",
        "bonafide",
        "bonafide",
        "uncertain",
        "uncertain",
        "uncertain",
        "spoof",
        "spoof",
        "spoof",
    ]
    assert cal.decide([0.5, 0.5001], reject_band=0.0) == ["bonafide", "spoof"]
    assert cal.decide([0.62], reject_band=0.2) == ["uncertain"]
    # uncalibrated: threshold score 0, p = sigmoid(-score)
    assert Calibration().p_spoof(0.0) == 0.5 and Calibration().p_spoof(-2.0) > 0.5


# -- long audio ---------------------------------------------------------------------------------
def test_the_timeline_shows_where_a_clip_turns_spoof(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    clip = np.concatenate([rng.normal(0, 0.5, 2 * RATE), rng.normal(0, 0.01, 2 * RATE)])
    path = write(tmp_path / "half.wav", clip.astype(np.float32), subtype="FLOAT")
    detector = energy_detector()
    (result,) = score_files(detector, [str(path)])
    assert [w.start for w in result.timeline] == [i * 0.25 for i in range(15)]
    for w in result.timeline:
        if w.end <= 2.0:
            assert w.score > 0 and w.p_spoof < 0.5, w
        if w.start >= 2.0:
            assert w.score < 0 and w.p_spoof > 0.5, w
    assert result.spoof_windows == pytest.approx(7 / 15)  # the 7 windows after 2 s
    (low,) = score_files(detector, [str(path)], DetectOptions(aggregate="min"))
    assert low.decision == "spoof" and low.score == min(w.score for w in low.timeline)
    (frac,) = score_files(detector, [str(path)], DetectOptions(aggregate="spoof_fraction"))
    assert frac.p_spoof == pytest.approx(result.spoof_windows)
    assert frac.decision == "uncertain"  # 7/15 = 0.47: inside the default band


def test_blocks_give_the_window_scores_of_the_whole_file(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A 44.1 kHz stereo file read in 0.3 s blocks scores as the file resampled whole."""
    rng = np.random.default_rng(2)
    stereo = np.stack([tone(7.0, 44100, seed=3), rng.normal(0, 0.05, 7 * 44100)], axis=1)
    path = write(tmp_path / "long.wav", stereo.astype(np.float32), 44100, "FLOAT")
    detector = load_model(tiny_ckpt)
    options = DetectOptions(block_seconds=0.3, hop_seconds=0.2, batch_size=5)
    (result,) = score_files(detector, [str(path)], options)
    whole = load_mono(str(path), RATE)
    cut = windows(whole, WINDOW, round(0.2 * RATE))
    with torch.inference_mode():
        expected = detector.scorer.score_outputs(*detector.scorer.outputs(cut))
    got = torch.tensor([w.score for w in result.timeline])
    assert got.shape == expected.shape and torch.allclose(got, expected.float(), atol=1e-4)
    assert result.duration == pytest.approx(7.0)
    assert result.timeline[-1].end == pytest.approx(7.0)


# -- bad input ----------------------------------------------------------------------------------
def bad_and_good_files(folder: Path) -> dict[str, Path]:
    nan = tone(1.0, seed=4)
    nan[500] = np.nan
    garbage = folder / "garbage.wav"
    folder.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"RIFF? no, just bytes " * 50)
    truncated = write(folder / "truncated.flac", tone(3.0, seed=7))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    return {
        "good_a": write(folder / "good_a.wav", tone(1.3, seed=5)),
        "garbage": garbage,
        "empty": write(folder / "empty.wav", np.zeros(0, np.float32)),
        "zeros": write(folder / "zeros.flac", np.zeros(RATE, np.float32)),
        "nan": write(folder / "nan.wav", nan, subtype="FLOAT"),
        "truncated": truncated,
        "good_b": write(folder / "sub" / "good_b.flac", tone(0.2, seed=6, bonafide=False)),
    }


def test_bad_files_are_reported_and_skipped(tiny_ckpt: Path, tmp_path: Path) -> None:
    files = bad_and_good_files(tmp_path / "in")
    order = [str(p) for p in files.values()] + [str(tmp_path / "missing.wav")]
    results = list(score_files(load_model(tiny_ckpt), order, DetectOptions(batch_size=2)))
    assert [r.path for r in results] == order
    reasons = {Path(r.path).stem: r.reason for r in results}
    assert reasons["good_a"] is None and reasons["good_b"] is None
    assert reasons["garbage"].startswith("unreadable or unsupported audio")
    assert reasons["empty"] == "empty (0 frames)"
    assert reasons["zeros"].startswith("silent")
    assert reasons["nan"] == "contains NaN or infinite samples"
    assert reasons["truncated"].startswith("truncated or corrupt")
    assert reasons["missing"] == "not found"
    for r in results:
        assert (r.score is not None) == (r.reason is None)
        assert (r.decision in ("bonafide", "spoof", "uncertain")) == (r.reason is None)


def test_inputs_from_folders_and_manifests(tmp_path: Path) -> None:
    files = bad_and_good_files(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    found = collect_inputs([tmp_path / "in"])
    assert sorted(found) == sorted(str(p) for p in files.values())  # recursive, audio only
    (tmp_path / "list.csv").write_text("label,path\nspoof,in/good_a.wav\nbonafide,in/nan.wav\n")
    (tmp_path / "list.txt").write_text("# a list\nin/good_a.wav\n\n/abs/x.wav\n")
    assert collect_inputs([tmp_path / "list.csv"]) == [
        str(tmp_path / "in" / "good_a.wav"),
        str(tmp_path / "in" / "nan.wav"),
    ]
    assert collect_inputs([tmp_path / "list.txt"]) == [
        str(tmp_path / "in/good_a.wav"),
        "/abs/x.wav",
    ]


# -- the command ----------------------------------------------------------------------------------
class _NotAllowed:
    """A class torch's weights-only unpickler refuses (a pickle that could run code)."""


def test_unreadable_checkpoints_are_corrupt_and_pickles_refused(tmp_path: Path) -> None:
    """Bytes that are no checkpoint (zeros, text, noise) read as corrupt; a pickle of arbitrary
    objects is refused as such, without loading it."""
    from deepfake_detect.models.checkpoint import CheckpointError, read_checkpoint

    rng = np.random.default_rng(0)
    for name, data in (
        ("zeros", bytes(1000)),
        ("text", b"hello, this is no checkpoint"),
        ("noise", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    ):
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="truncated or corrupt") as exc:
            read_checkpoint(path)
        assert str(path) in str(exc.value) and "weights_only" not in str(exc.value)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "payload": _NotAllowed()}, pickled)
    with pytest.raises(CheckpointError, match="never loaded") as exc:
        read_checkpoint(pickled)
    assert "_NotAllowed" in str(exc.value)


def test_user_errors_are_one_line_and_exit_2(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "no_audio"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    assert main(["detect", str(tiny_ckpt), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no audio files" in err
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[:5000])
    wav = write(tmp_path / "a.wav", tone(0.5))
    for model, words in (
        (truncated, "truncated or corrupt"),
        (tmp_path / "nope.ckpt", "not found"),
    ):
        assert main(["detect", str(model), str(wav)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    bad_manifest = tmp_path / "m.csv"
    bad_manifest.write_text("file,label\na.wav,spoof\n")
    assert main(["detect", str(tiny_ckpt), str(bad_manifest)]) == 2
    assert "no `path` column" in capsys.readouterr().err
    assert main(["detect", str(tiny_ckpt), str(wav), "--hop", "9"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--hop must be between" in captured.err  # before any output
    with pytest.raises(SystemExit) as exc:  # argparse: a bad option value
        main(["detect", str(tiny_ckpt), str(wav), "--aggregate", "max"])
    assert exc.value.code == 2


def test_help_states_the_score_semantics() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deepfake_detect.cli", "detect", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert SCORE_SEMANTICS.splitlines()[1].strip() in out and "p_spoof" in out


def test_progress_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress(2, stream, enabled=True)
    path = write(tmp_path / "a.wav", tone(61.0))
    options = DetectOptions(block_seconds=20.0)
    for result in score_files(energy_detector(), [str(path), "gone.wav"], options, progress.audio):
        progress.update(result)
    progress.close()
    last = stream.getvalue().split("\r")[-1]
    assert re.fullmatch(r"detect: 2/2 files, 00:01:01 of audio read, \d+ s\n", last)


def test_detect_writes_csv_and_jsonl(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    files = bad_and_good_files(tmp_path / "in")
    assert main(["detect", str(tiny_ckpt), str(tmp_path / "in"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == len(files)
    assert list(rows[0]) == [
        "path",
        "duration",
        "score",
        "p_spoof",
        "decision",
        "windows",
        "spoof_windows",
        "reason",
    ]
    scored = [r for r in rows if not r["reason"]]
    assert len(scored) == 2 and all(r["decision"] for r in scored)
    assert "scored 2 of 7 files" in captured.err and "uncalibrated" in captured.err
    assert "skipped 5" in captured.err
    out = tmp_path / "out.jsonl"
    good = str(files["good_a"])
    assert main(["detect", str(tiny_ckpt), good, "-o", str(out), "--hop", "0.1"]) == 0
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["path"] == good and line["duration"] == pytest.approx(1.3)
    starts = [w["start"] for w in line["timeline"]]
    assert starts[:3] == [0.0, 0.1, 0.2] and line["timeline"][-1]["end"] == pytest.approx(1.3)
    assert line["windows"] == len(line["timeline"]) == 9  # starts 0, 0.1, ..., 0.8
    assert np.mean([w["score"] for w in line["timeline"]]) == pytest.approx(line["score"], 1e-4)


def test_calibrate_stores_a_calibration_that_detect_uses(
    tiny_ckpt: Path, tmp_path: Path, capsys
) -> None:
    files = [write(tmp_path / "dev" / f"{i}.wav", tone(0.7, seed=10 + i)) for i in range(12)]
    scores = [r.score for r in score_files(load_model(tiny_ckpt), [str(f) for f in files])]
    # labels the untrained model happens to rank right: the top half is "bona fide"
    median = np.median(scores)
    lines = ["path,label"] + [
        f"dev/{f.name},{'bonafide' if s > median else 'spoof'}"
        for f, s in zip(files, scores, strict=True)
    ]
    (tmp_path / "dev.csv").write_text("\n".join(lines) + "\n")
    calibrated = tmp_path / "calibrated.ckpt"
    args = ["calibrate", str(tiny_ckpt), "--data", str(tmp_path / "dev.csv")]
    assert main([*args, "--output", str(calibrated), "--reject-band", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "dev EER: 0.00%" in printed and f"written to {calibrated}" in printed
    saved = torch.load(calibrated, map_location="cpu", weights_only=True)
    cal = stored_calibration(saved)
    assert cal is not None and cal.method == "eer" and cal.reject_band == 0.2
    assert cal.dev["n_bonafide"] == cal.dev["n_spoof"] == 6
    assert load_model(tiny_ckpt).calibration is None  # --output left the original alone
    out = tmp_path / "out.csv"
    assert main(["detect", str(calibrated), str(tmp_path / "dev"), "-o", str(out)]) == 0
    assert "calibrated on 6 bona fide / 6 spoof" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    p = np.array([float(r["p_spoof"]) for r in rows])
    # the untrained model's scores differ by ~1e-4, so the fitted scale is large: the CSV's
    # 6-digit scores reproduce p_spoof to about scale * 1e-6
    tolerance = 1e-6 * cal.scale + 1e-6
    for row, p_row in zip(rows, p, strict=True):
        assert p_row == pytest.approx(float(cal.p_spoof(float(row["score"]))), abs=tolerance)
        assert row["decision"] == cal.decide(p_row)[0]
    assert p.min() < 0.1 and p.max() > 0.9  # uncalibrated, all were ~0.515
    # in place, with a target FAR
    assert main([*args, "--target-far", "0.0"]) == 0
    cal = load_model(tiny_ckpt).calibration
    assert cal is not None and cal.method == "target_far" and cal.dev["far"] == 0.0


def test_training_stores_the_best_epochs_calibration(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "corpus", TINY_SIZES)
    cfg = compose_config(
        tmp_path / "run",
        "~experiment",
        *la_data_overrides(root),
        "model=lcnn",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.batch_size=12",
        "data.max_len=8000",
        "test=false",
        "callbacks.early_stopping=null",
    )
    train(cfg)
    best = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    epoch = int(best.stem.split("_")[1])
    saved = torch.load(best, map_location="cpu", weights_only=True)
    cal = stored_calibration(saved)
    if cal is None:  # an untrained LCNN may rank the dev set the wrong way round
        pytest.skip("the tiny run's dev scores could not be calibrated")
    assert CALIBRATION_KEY in saved and cal.source == f"the dev set at epoch {epoch}"
    assert cal.dev["n_bonafide"] == 6 and cal.dev["n_spoof"] == 12
    assert load_model(best).calibration == cal
    # calibrate with a data config's dev set (scored as detect scores files: in windows)
    copy = tmp_path / "recalibrated.ckpt"
    data = ["--set", f"data.corpora.asvspoof2019_la.root={root}", "--set", "data.num_workers=0"]
    args = ["calibrate", str(best), "--data", "asvspoof2019_la", *data, "-o", str(copy)]
    assert main([*args, "--bayes-prior", "0.5"]) == 0
    again = load_model(copy).calibration
    assert again is not None and again.method == "bayes" and again.source.startswith("data=")
    assert (again.dev["n_bonafide"], again.dev["n_spoof"]) == (6, 12)


def test_the_callback_stores_the_calibration_of_the_saved_step(caplog) -> None:
    callback = StoreCalibration(threshold="target_far", value=0.05, reject_band=0.2)
    trainer = SimpleNamespace(
        sanity_checking=False,
        fast_dev_run=False,
        checkpoint_callbacks=[object()],
        current_epoch=3,
        global_step=40,
    )
    scores, labels = gaussian_dev(200, 300)
    module = SimpleNamespace(val_outputs={"scores": scores, "labels": labels})
    callback.on_validation_end(trainer, module)
    checkpoint: dict = {}
    callback.on_save_checkpoint(trainer, module, checkpoint)
    cal = stored_calibration(checkpoint)
    assert cal == fit_calibration(scores, labels, "target_far", 0.05, 0.2, source=cal.source)
    assert cal.source == "the dev set at epoch 3"
    trainer.global_step = 41  # a checkpoint of another step gets none
    later: dict = {}
    callback.on_save_checkpoint(trainer, module, later)
    assert CALIBRATION_KEY not in later
    module.val_outputs = {"scores": scores, "labels": np.zeros_like(labels)}
    with caplog.at_level("WARNING"):
        for _ in range(3):
            callback.on_validation_end(trainer, module)
    assert caplog.text.count("no calibration stored") == 1
    callback.on_save_checkpoint(trainer, module, later)
    assert CALIBRATION_KEY not in later
