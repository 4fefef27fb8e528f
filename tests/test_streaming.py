"""Streaming: scores equal to the offline windows whatever the chunking and input rate, the
event sequence, the early decision, raw PCM on stdin through the command; and the review
folder: its size bound, disk failures, and its manifest back through the own-data adapter."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import compose_config, tone
from hydra.utils import instantiate
from test_detect import RATE, WINDOW, energy_detector, tiny_ckpt, write  # noqa: F401

from deepfake_detect.cli import main
from deepfake_detect.data.corpora.manifest_csv import ManifestCSV
from deepfake_detect.data.manifest import CorpusError
from deepfake_detect.inference.calibration import Calibration
from deepfake_detect.inference.detect import DetectOptions, load_model, score_files
from deepfake_detect.inference.review import INDEX, ReviewFolder
from deepfake_detect.inference.semantics import SCORE_SEMANTICS
from deepfake_detect.inference.streaming import (
    StreamingScorer,
    StreamOptions,
    file_chunks,
    pcm_chunks,
)


def chunked(samples: np.ndarray, rate: int, seconds: float) -> Iterator[np.ndarray]:
    step = round(seconds * rate)
    for i in range(0, len(samples), step):
        yield samples[i : i + step]


def speech(seconds: float, rate: int, stereo: bool = False) -> np.ndarray:
    """A tone plus noise whose loudness swells and fades (window scores vary a lot)."""
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * rate)) / rate
    mono = tone(seconds, rate, seed=3) + rng.normal(0, 0.02, t.size)
    mono = (mono * (0.1 + np.abs(np.sin(2 * np.pi * 0.4 * t)))).astype(np.float32)
    return np.stack([mono, tone(seconds, rate, seed=8)], axis=1) if stereo else mono


def half_loud(loud_first: bool = True, seconds: float = 3.0) -> np.ndarray:
    """Loud noise (bona fide for the energy stub) for half the clip, quiet (spoof) after."""
    rng = np.random.default_rng(1)
    half = int(seconds / 2 * RATE)
    loud, quiet = rng.normal(0, 0.5, half), rng.normal(0, 0.01, half)
    parts = [loud, quiet] if loud_first else [quiet, loud]
    return np.concatenate(parts).astype(np.float32)


# -- streaming equals offline -------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "stereo"), [(16000, False), (22050, True)])
def test_stream_scores_equal_the_offline_window_scores(
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
    rate: int,
    stereo: bool,
) -> None:
    samples = speech(3.3, rate, stereo)
    path = write(tmp_path / "clip.wav", samples, rate, "FLOAT")
    options = StreamOptions(hop_seconds=0.2)
    for detector in (load_model(tiny_ckpt), energy_detector()):
        (offline,) = score_files(detector, [str(path)], DetectOptions(hop_seconds=0.2))
        expected = np.array([(w.start, w.end, w.score) for w in offline.timeline])
        assert len(expected) == 15  # starts 0, 0.2, ..., 2.6, then 2.8 (aligned to the end)
        for seconds in (0.37, 0.05, 1.0):  # none divides the 0.5 s window or the 0.2 s hop
            chunks = chunked(samples, rate, seconds)
            events = list(StreamingScorer(detector, rate, options).run(chunks))
            got = np.array([(e.start, e.end, e.score) for e in events])
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        # a file read progressively gives the same
        file_rate, chunks = file_chunks(path, 0.37)
        events = list(StreamingScorer(detector, file_rate, options).run(chunks))
        np.testing.assert_allclose([e.score for e in events], expected[:, 2], atol=1e-5)
        assert events[-1].running_score == pytest.approx(offline.score, abs=1e-5)
        assert events[-1].decision == offline.decision
    # the stub's window scores differ by far more than the tolerance: a window misplaced by a
    # few samples, or audio resampled otherwise, would show
    assert np.abs(np.diff(expected[:, 2])).min() > 1e-3


# -- the event sequence -------------------------------------------------------------------------
def test_events_come_when_their_window_is_complete() -> None:
    """2.1 s at 16 kHz in 0.3 s chunks, 0.5 s windows, hop 0.25 s: windows start at 0, 0.25,
    ..., 1.5 and the last at 1.6 (aligned to the end, when the stream ends)."""
    detector = energy_detector()
    samples = speech(2.1, RATE)
    scorer = StreamingScorer(detector, RATE, StreamOptions(min_audio=0.0))
    pushed, seen = [], []
    for i, chunk in enumerate(chunked(samples, RATE, 0.3)):
        for event in scorer.push(chunk):
            pushed.append(i)
            seen.append(event)
    final = scorer.finish()
    assert len(final) == 1 and final[0].start == pytest.approx(1.6)
    events = seen + final
    assert [e.index for e in events] == list(range(8))
    starts = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.6]
    assert [e.start for e in events] == pytest.approx(starts)
    assert [e.end for e in events] == pytest.approx([s + 0.5 for s in starts])
    # each window comes with the chunk that completes it: the first chunk whose end >= its end
    assert pushed == [int(np.ceil(e.end / 0.3 - 1e-9)) - 1 for e in seen]
    assert [e.audio for e in seen] == pytest.approx([0.3 * (i + 1) for i in pushed])
    assert final[0].audio == pytest.approx(2.1)
    assert all(e.latency >= 0 for e in events)
    assert scorer.summary.windows == 8 and scorer.summary.latencies == [e.latency for e in events]
    # a stream shorter than a window: one window, the whole stream, when it ends
    short = StreamingScorer(detector, RATE)
    assert short.push(samples[:4800]) == []
    (only,) = short.finish()
    assert (only.start, only.end) == (0.0, pytest.approx(0.3))


# -- the early decision -------------------------------------------------------------------------
def test_early_decision_after_the_minimum_audio() -> None:
    detector = energy_detector(Calibration(reject_band=0.1))  # threshold score 0
    samples = half_loud(loud_first=True)  # bona fide for 1.5 s, then spoof
    scorer = StreamingScorer(detector, RATE, StreamOptions(min_audio=1.0))
    events = list(scorer.run(chunked(samples, RATE, 0.37)))
    assert [e.decision for e in events[:3]] == ["bonafide"] * 3
    first = next(i for i, e in enumerate(events) if e.early)
    assert events[first].end == pytest.approx(1.0)  # not before 1 s of audio, though sure before
    assert [e.early_decision for e in events[:first]] == [None] * first
    assert {e.early_decision for e in events[first:]} == {"bonafide"}
    assert sum(e.early for e in events) == 1
    assert events[-1].window_decision == "spoof" and events[-1].decision != "bonafide"
    summary = scorer.summary
    assert (summary.early_decision, summary.early_at, summary.stopped_early) == (
        "bonafide",
        pytest.approx(1.0),
        False,
    )
    # --stop-early: the stream stops reading there
    consumed = []

    def source() -> Iterator[np.ndarray]:
        for chunk in chunked(samples, RATE, 0.37):
            consumed.append(len(chunk))
            yield chunk

    options = StreamOptions(min_audio=1.0, stop_early=True)
    stopped = StreamingScorer(detector, RATE, options)
    events = list(stopped.run(source()))
    assert events[-1].early and events[-1].end == pytest.approx(1.0) and len(events) == 3
    assert len(consumed) == 3 and stopped.summary.stopped_early  # 1.11 s of 3 s read
    # quiet first: spoof as soon as allowed; a band wider than any confidence: never
    quiet_first = half_loud(loud_first=False)
    early = StreamingScorer(detector, RATE, StreamOptions(min_audio=0.0))
    events = list(early.run(chunked(quiet_first, RATE, 0.37)))
    assert events[0].early and events[0].early_decision == "spoof"
    wide = StreamingScorer(detector, RATE, StreamOptions(min_audio=0.0, reject_band=0.49))
    assert not any(e.early for e in wide.run(chunked(quiet_first, RATE, 0.37)))
    assert wide.summary.early_decision is None


# -- the command: raw PCM on stdin --------------------------------------------------------------
def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))


def lines_of(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_stdin_pcm_scores_as_the_file(
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    rate = 22050
    stereo = speech(2.2, rate, stereo=True)
    pcm16 = np.round(stereo * 32767).astype("<i2")
    path = write(tmp_path / "clip.wav", pcm16, rate, "PCM_16")
    review = tmp_path / "review"
    args = ["stream", str(tiny_ckpt), str(path), "--chunk", "0.37", "--review-dir", str(review)]
    assert main([*args, "--review-max-items", "2"]) == 0
    captured = capsys.readouterr()
    from_file = lines_of(captured.out)
    assert len(from_file) == 8  # 0.5 s windows, hop 0.25 s over 2.2 s
    # the untrained model: p_spoof ~0.515, uncertain; the newest two windows are kept
    assert {e["window_decision"] for e in from_file} == {"uncertain"}
    assert [(e["start"], e["source"]) for e in index_of(review)] == [
        (1.5, str(path)),
        (1.7, str(path)),
    ]
    assert "8 saved, 2 held" in captured.err and "6 oldest dropped" in captured.err
    fake_stdin(monkeypatch, pcm16.tobytes())
    args = ["stream", str(tiny_ckpt), "-", "--rate", str(rate), "--channels", "2"]
    assert main([*args, "--chunk", "0.37"]) == 0
    captured = capsys.readouterr()
    from_stdin = lines_of(captured.out)
    assert [e["start"] for e in from_stdin] == [e["start"] for e in from_file]
    assert [e["score"] for e in from_stdin] == pytest.approx(
        [e["score"] for e in from_file], abs=1e-5
    )
    assert "stream: 2.20 s of audio, 8 windows" in captured.err and "latency" in captured.err
    assert set(from_stdin[0]) >= {"running_p_spoof", "decision", "latency_ms", "early_decision"}
    # f32le, mono, another chunk size: the same windows as detect cuts
    mono = stereo.mean(axis=1).astype("<f4")
    fake_stdin(monkeypatch, mono.tobytes() + b"\x01\x02")  # a trailing partial frame: dropped
    args = ["stream", str(tiny_ckpt), "--rate", str(rate), "--format", "f32le", "--chunk", "1"]
    assert main(args) == 0
    streamed = lines_of(capsys.readouterr().out)
    (offline,) = score_files(
        load_model(tiny_ckpt), [str(write(tmp_path / "m.wav", mono, rate, "FLOAT"))]
    )
    assert [e["score"] for e in streamed] == pytest.approx(
        [w.score for w in offline.timeline], abs=1e-5
    )

    # Ctrl-C ends a live stream as the end of the input does: the last window, the summary
    class Interrupted:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, n: int) -> bytes:
            if not self.data:
                raise KeyboardInterrupt
            out, self.data = self.data[:n], self.data[n:]
            return out

    monkeypatch.setattr(
        sys, "stdin", SimpleNamespace(buffer=Interrupted(pcm16[: 13 * rate // 10].tobytes()))
    )
    assert main(["stream", str(tiny_ckpt), "--rate", str(rate), "--channels", "2"]) == 0
    captured = capsys.readouterr()
    assert [e["start"] for e in lines_of(captured.out)] == [0.0, 0.25, 0.5, 0.75, 0.8]
    assert captured.err.startswith("interrupted: the stream ends here\nstream: 1.30 s")
    # too little audio: nothing scored, exit 1; a bad option: one line, exit 2
    fake_stdin(monkeypatch, b"")
    assert main(["stream", str(tiny_ckpt)]) == 1
    assert "no window scored" in capsys.readouterr().err
    assert main(["stream", str(tiny_ckpt), "--rate", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --rate must be positive")


def test_stream_help_states_the_score_semantics(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stream", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and SCORE_SEMANTICS.splitlines()[1].strip() in out
    assert "--stop-early" in out and "--review-max-mb" in out


def test_pcm_reader_reassembles_short_reads() -> None:
    class Trickle(io.RawIOBase):
        """A pipe that hands out 3 bytes at a time."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            out, self.data = self.data[:3], self.data[3:]
            return out

    values = np.arange(-50, 51, dtype="<i2") * 300
    chunks = list(pcm_chunks(Trickle(values.tobytes()), 1, "s16le", 16))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [16] * 6 + [5]
    np.testing.assert_array_equal(np.concatenate(chunks)[:, 0], values / 32768)


# -- the review folder --------------------------------------------------------------------------
def audio_on_disk(folder: Path) -> list[str]:
    return sorted(f"audio/{p.name}" for p in (folder / "audio").iterdir())


def write_rows(manifest: Path, rows: list[dict]) -> None:
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def index_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / INDEX).read_text().splitlines()]


def test_the_review_folder_keeps_its_bound(tmp_path: Path) -> None:
    folder = tmp_path / "review"
    window_bytes = 44 + 2 * WINDOW  # a 0.5 s window, PCM_16 WAV
    review = ReviewFolder(folder, RATE, "energy-stub", max_bytes=3 * window_bytes + 100)
    quiet = np.random.default_rng(0).normal(0, 0.01, 6 * RATE).astype(np.float32)
    scorer = StreamingScorer(energy_detector(), RATE, review=review, source="mic")
    events = list(scorer.run(chunked(quiet, RATE, 0.37)))
    assert len(events) == 23 and all(e.window_decision == "spoof" for e in events)
    index = index_of(folder)
    assert [e["id"] for e in index] == [f"{i:08d}" for i in (21, 22, 23)]  # the newest three
    assert [e["audio"] for e in index] == audio_on_disk(folder)
    assert review.counts.saved == 23 and review.counts.dropped == 20
    assert review.total_bytes == 3 * window_bytes
    last = index[-1]
    assert (last["start"], last["end"]) == (5.5, 6.0) and last["decision"] == "spoof"
    assert last["source"] == "mic" and last["kind"] == "window" and last["model"] == "energy-stub"
    assert last["score"] == pytest.approx(events[-1].score, abs=1e-6)
    saved, rate = sf.read(folder / last["audio"], dtype="float32")
    assert rate == RATE and np.abs(saved - quiet[-WINDOW:]).max() < 1 / 32768 + 1e-7
    # reopened with a tighter bound in items: the oldest go, numbering goes on
    review = ReviewFolder(folder, RATE, max_items=2)
    assert [i.id for i in review.items] == ["00000022", "00000023"]
    manifest_paths = [r["path"] for r in csv.DictReader((folder / "manifest.csv").open())]
    assert manifest_paths == audio_on_disk(folder) == [e["audio"] for e in index_of(folder)]
    item = review.add_wave(torch.zeros(100), score=0.0, p_spoof=0.5, decision="uncertain")
    assert item is not None and item.id == "00000024"
    assert [e["audio"] for e in index_of(folder)] == audio_on_disk(folder)
    assert len(audio_on_disk(folder)) == 2
    # an item larger than the whole bound is skipped, not a crash
    small = ReviewFolder(tmp_path / "small", RATE, max_bytes=1000)
    assert small.add_wave(torch.zeros(RATE), score=0.0, p_spoof=0.6, decision="spoof") is None
    assert small.counts.too_large == 1 and small.items == type(small.items)()
    # silent windows are scored (as detect scores them) but never saved for review
    hushed = ReviewFolder(tmp_path / "silence", RATE)
    scorer = StreamingScorer(energy_detector(), RATE, review=hushed)
    events = list(scorer.run([np.zeros(RATE, np.float32)]))
    assert len(events) == 3 and all(e.silent and e.window_decision == "spoof" for e in events)
    assert hushed.counts.saved == 0 and scorer.summary.silent


def test_review_disk_failures_warn_once_and_scoring_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    folder = tmp_path / "review"
    review = ReviewFolder(folder, RATE)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    quiet = np.random.default_rng(0).normal(0, 0.01, 3 * RATE).astype(np.float32)
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING):
        m.setattr("deepfake_detect.inference.review.sf.write", full_disk)
        scorer = StreamingScorer(energy_detector(), RATE, review=review)
        events = list(scorer.run(chunked(quiet, RATE, 0.37)))
    assert len(events) == 11 and review.counts.failed == 11 and review.counts.saved == 0
    assert caplog.text.count("No space left on device") == 1
    assert audio_on_disk(folder) == []  # no half-written files
    # the audio is written but the index cannot be: the audio goes too (the index is the truth)
    other = tmp_path / "other"
    (other / INDEX).mkdir(parents=True)  # opening it for writing fails, even as root
    review = ReviewFolder(other, RATE)
    for _ in range(3):
        assert review.add_wave(torch.ones(10) / 4, score=0, p_spoof=0.9, decision="spoof") is None
    assert review.counts.failed == 3 and audio_on_disk(other) == []


def test_the_review_manifest_trains_once_labelled(
    tmp_path: Path,
    tiny_ckpt: Path,  # noqa: F811
    capsys,
) -> None:
    folder = tmp_path / "review"
    quiet = np.random.default_rng(0).normal(0, 0.01, 2 * RATE).astype(np.float32)
    review = ReviewFolder(folder, RATE, max_items=5)
    scorer = StreamingScorer(energy_detector(), RATE, review=review, source="call.wav")
    assert len(list(scorer.run(chunked(quiet, RATE, 0.37)))) == 7
    manifest = folder / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert [r["path"] for r in rows] == audio_on_disk(folder) and len(rows) == 5
    assert all(r["label"] == "" for r in rows) and rows[0]["source"] == "call.wav"
    with pytest.raises(CorpusError, match=r"manifest.csv:2: unknown label ''"):
        ManifestCSV(folder).load("all")  # unlabelled rows are refused, naming the line
    # a person labels the rows (and a speaker) and deletes one row they cannot label; two
    # more windows come: the deleted row's item is discarded, not put back, and the oldest goes
    for i, row in enumerate(rows):
        row["label"] = "spoof" if i % 2 else "bonafide"
    rows[-1]["speaker"] = "caller_1"
    write_rows(manifest, rows[:2] + rows[3:])
    for _ in range(2):
        review.add_wave(torch.ones(800) / 8, score=-1.0, p_spoof=0.7, decision="spoof")
    assert (review.counts.discarded, review.counts.dropped) == (1, 3)
    kept = {r["path"]: r for r in csv.DictReader(manifest.open())}
    assert list(kept) == audio_on_disk(folder) == [e["audio"] for e in index_of(folder)]
    assert [kept[r["path"]]["label"] for r in (rows[1], rows[3], rows[4])] == [
        "spoof",
        "spoof",
        "bonafide",
    ]
    assert kept[rows[-1]["path"]]["speaker"] == "caller_1"
    new = list(kept)[3:]
    assert len(new) == 2 and all(kept[p]["label"] == "" for p in new)
    for path in new:
        kept[path]["label"] = "fake"  # the adapter's synonyms work too
    write_rows(manifest, list(kept.values()))
    # through the config, as training reads it: data.corpora.manifest_csv.root=<dir>
    cfg = compose_config(tmp_path / "run", f"data.corpora.manifest_csv.root={folder}")
    corpus = instantiate(cfg.data.corpora.manifest_csv)
    loaded = corpus.load("all")
    assert [Path(u.path) for u in loaded] == [folder / p for p in kept]
    assert [u.label for u in loaded] == ["spoof", "spoof", "bonafide", "spoof", "spoof"]
    assert corpus.report["all"]["unlisted_audio"] == 0
    assert loaded[0].extra["source"] == "call.wav" and loaded[0].extra["kind"] == "window"
    assert all(sf.info(u.path).samplerate == RATE for u in loaded)
    # grouped by recording: the windows of call.wav stay in one split
    by_source = ManifestCSV(folder, split={"group": "source"})
    sources = [[u.extra.get("source") for u in by_source.load(s)] for s in ("train", "dev", "test")]
    assert sorted(x.count("call.wav") for x in sources) == [0, 0, 3]
    # a row deleted while no run holds the folder: discarded when the folder is next opened
    write_rows(manifest, list(kept.values())[:-1])
    reopened = ReviewFolder(folder, RATE)
    assert reopened.counts.discarded == 1 and len(reopened.items) == 4
    assert audio_on_disk(folder) == [e["audio"] for e in index_of(folder)] == list(kept)[:-1]
    # detect --review-dir: whole files, at the model's rate
    clip = write(tmp_path / "in" / "a.wav", speech(1.3, 22050), 22050, "FLOAT")
    out_dir = tmp_path / "detect_review"
    args = ["detect", str(tiny_ckpt), str(clip), "--review-dir", str(out_dir)]
    assert main([*args, "--reject-band", "0.45"]) == 0  # untrained: p ~0.5, uncertain
    assert "review folder" in capsys.readouterr().err
    (item,) = index_of(out_dir)
    assert item["kind"] == "file" and item["source"] == str(clip) and item["end"] == 1.3
    assert item["decision"] == "uncertain" and item["model"] == str(tiny_ckpt)
    assert sf.info(out_dir / item["audio"]).frames == round(1.3 * RATE)
