"""Reliability of the corpus adapters (issue 7): byte-order marks, duplicate utterances, rows
dropped by ``missing_audio: skip``, the files a cached manifest depends on, and each row's origin.

The fixtures are the native-layout builders of ``test_corpora`` (empty audio files).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from test_corpora import (
    make_asvspoof5,
    make_asvspoof2017,
    make_asvspoof2019,
    make_asvspoof2021,
    make_fake_or_real,
    make_in_the_wild,
    make_manifest,
    make_wavefake,
    touch,
    write,
)

from deepfake_detect.data.corpora.asvspoof5 import ASVspoof5
from deepfake_detect.data.corpora.asvspoof2017 import ASVspoof2017
from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.corpora.asvspoof2021 import ASVspoof2021
from deepfake_detect.data.corpora.base import Corpus, check_unique_ids, read_lines
from deepfake_detect.data.corpora.fake_or_real import FakeOrReal
from deepfake_detect.data.corpora.in_the_wild import InTheWild
from deepfake_detect.data.corpora.manifest_csv import ManifestCSV
from deepfake_detect.data.corpora.wavefake import WaveFake
from deepfake_detect.data.manifest import CorpusError, Utterance, read_manifest, write_manifest

BOM = "\ufeff"

# name -> (build the corpus under a folder, open the adapter, split, protocol file or None)
Case = tuple[Callable[[Path], Path], Callable[[Path], Corpus], str, str | None]
CASES: dict[str, Case] = {
    "asvspoof2017": (
        make_asvspoof2017,
        ASVspoof2017,
        "eval",
        "protocol_V2/ASVspoof2017_V2_eval.trl.txt",
    ),
    "asvspoof2019_la": (
        make_asvspoof2019,
        ASVspoof2019,
        "eval",
        "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt",
    ),
    "asvspoof2019_pa": (
        lambda p: make_asvspoof2019(p, "PA"),
        lambda root: ASVspoof2019(root, track="PA"),
        "dev",
        "PA/ASVspoof2019_PA_cm_protocols/ASVspoof2019.PA.cm.dev.trl.txt",
    ),
    "asvspoof2021_la": (
        lambda p: make_asvspoof2021(p, "LA"),
        ASVspoof2021,
        "eval",
        "LA-keys-full/keys/LA/CM/trial_metadata.txt",
    ),
    "asvspoof2021_df": (
        lambda p: make_asvspoof2021(p, "DF"),
        lambda root: ASVspoof2021(root, track="DF"),
        "eval",
        "keys/DF/CM/trial_metadata.txt",
    ),
    "asvspoof5": (
        make_asvspoof5,
        ASVspoof5,
        "dev",
        "ASVspoof5_protocols/ASVspoof5.dev.track_1.tsv",
    ),
    "in_the_wild": (make_in_the_wild, InTheWild, "all", "release_in_the_wild/meta.csv"),
    "manifest_csv": (lambda p: make_manifest(p).parent, ManifestCSV, "all", "manifest.csv"),
    "wavefake": (
        make_wavefake,
        lambda root: WaveFake(root, real_roots=["LJSpeech-1.1"]),
        "all",
        None,
    ),
    "fake_or_real": (
        lambda p: make_fake_or_real(p, "for-norm"),
        FakeOrReal,
        "train",
        None,
    ),
}
PROTOCOL_CASES = sorted(name for name, case in CASES.items() if case[3] is not None)


def text_fields(row: Utterance) -> list[str]:
    return [row.utt_id, row.path, row.label, row.attack, row.speaker, *row.extra.values()]


def prepend_bom(path: Path) -> None:
    path.write_bytes(BOM.encode() + path.read_bytes())


def first_data_line(protocol: Path) -> tuple[int, str]:
    """The first row of a protocol (after a CSV header) as ``(line number, text)``."""
    lines = protocol.read_text(encoding="utf-8-sig").splitlines()
    skip = 1 if protocol.suffix == ".csv" else 0
    return skip + 1, lines[skip]


# --- 1. a UTF-8 byte-order mark ---------------------------------------------------------------


@pytest.mark.parametrize("name", PROTOCOL_CASES)
def test_a_byte_order_mark_stays_out_of_the_rows(tmp_path: Path, name: str) -> None:
    build, open_corpus, split, protocol = CASES[name]
    root = build(tmp_path)
    plain = open_corpus(root).load(split)
    prepend_bom(root / protocol)
    rows = open_corpus(root).load(split)
    assert [text_fields(r) for r in rows] == [text_fields(r) for r in plain]
    assert not any(BOM in field for row in rows for field in text_fields(row))


def test_read_lines_drops_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "protocol.txt"
    path.write_bytes(f"{BOM}LA_0001 LA_T_1 - - bonafide\r\nLA_0002 LA_T_2 - A01 spoof\n".encode())
    assert read_lines(path) == [
        (1, ["LA_0001", "LA_T_1", "-", "-", "bonafide"]),
        (2, ["LA_0002", "LA_T_2", "-", "A01", "spoof"]),
    ]


def test_asvspoof2021_asv_files_with_byte_order_marks(tmp_path: Path) -> None:
    root = make_asvspoof2021(tmp_path, "LA")
    asv = root / "LA-keys-full" / "keys" / "LA" / "ASV"
    write(
        asv / "trial_metadata.txt",
        [
            "LA_0001-alaw-ita_tx LA_E_5000001-alaw-ita_tx alaw ita_tx bonafide target notrim eval",
            "LA_0001-alaw-ita_tx LA_E_5000002-alaw-ita_tx alaw ita_tx A07 spoof notrim eval",
        ],
    )
    write(
        asv / "ASVTorch_Kaldi" / "score.txt",
        [
            "LA_0001-alaw-ita_tx LA_E_5000001-alaw-ita_tx 2.5",
            "LA_0001-alaw-ita_tx LA_E_5000002-alaw-ita_tx 0.5",
        ],
    )
    prepend_bom(asv / "ASVTorch_Kaldi" / "score.txt")  # its first speaker must match the keys'
    scores = ASVspoof2021(root).asv_scores("eval")
    assert scores is not None
    assert (scores["target"].tolist(), scores["spoof"].tolist()) == ([2.5], [0.5])


# --- 2. every row says where it came from; no utterance is listed twice ----------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_adapter_fills_the_origin(tmp_path: Path, name: str) -> None:
    build, open_corpus, split, protocol = CASES[name]
    root = build(tmp_path)
    rows = open_corpus(root).load(split)
    assert rows and all(row.origin for row in rows)
    if protocol is None:  # the folder listing is the protocol: the origin is the file itself
        assert all(row.origin == row.path for row in rows)
        return
    lineno, _ = first_data_line(root / protocol)
    origins = [row.origin for row in rows]
    assert f"{root / protocol}:{lineno}" in origins
    assert all(re.fullmatch(rf"{re.escape(str(root / protocol))}:\d+", o) for o in origins)
    assert len(set(origins)) == len(origins)


@pytest.mark.parametrize("name", PROTOCOL_CASES)
def test_a_repeated_protocol_line_is_an_error_naming_both_lines(tmp_path: Path, name: str) -> None:
    build, open_corpus, split, protocol = CASES[name]
    root = build(tmp_path)
    path = root / protocol
    lineno, line = first_data_line(path)
    total = len(path.read_text().splitlines())
    path.write_text(path.read_text() + line + "\n")
    where = re.escape(str(path))
    with pytest.raises(
        CorpusError,
        match=rf"listed more than once: .*{where}:{lineno} .*"
        rf"and {where}:{total + 1} ",
    ):
        open_corpus(root).load(split)


def test_one_id_as_bona_fide_and_as_spoof_is_an_error(tmp_path: Path) -> None:
    root = make_asvspoof2019(tmp_path)
    protocol = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt"
    protocol.write_text(protocol.read_text() + "LA_0002 LA_E_0000001 - A01 spoof\n")
    with pytest.raises(CorpusError) as error:
        ASVspoof2019(root).load("eval")
    message = str(error.value)
    assert message.startswith("asvspoof2019_la/eval: 1 utterance(s) listed more than once")
    assert f"id 'LA_E_0000001' at {protocol}:1 (bonafide) and {protocol}:5 (spoof A01)" in message


def test_a_duplicate_is_found_even_when_a_speaker_split_would_separate_it(tmp_path: Path) -> None:
    """The same file under two speakers could land in train and test: leakage, not a split."""
    root = make_in_the_wild(tmp_path)
    meta = root / "release_in_the_wild" / "meta.csv"
    meta.write_text(meta.read_text() + "0.wav,Somebody Else,spoof\n")
    for split in ("train", "dev", "test", "all"):
        with pytest.raises(CorpusError, match=rf"id '0' at {re.escape(str(meta))}:2 \(bonafide\)"):
            InTheWild(root).load(split)


def test_one_file_under_two_ids_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path / "a.wav")
    manifest = write(
        tmp_path / "manifest.csv", ["path,label,utt_id", "a.wav,bonafide,one", "a.wav,spoof,two"]
    )
    with pytest.raises(CorpusError, match=rf"file .*a\.wav at {re.escape(str(manifest))}:2"):
        ManifestCSV(manifest).load("all")


def test_folder_corpora_name_both_files(tmp_path: Path) -> None:
    root = make_fake_or_real(tmp_path, "for-norm")
    real = root / "for-norm" / "training" / "real"
    touch(real / "file0.wav_16k.wav_norm.mp3")  # same stem as file0...wav: the same utterance id
    first, second = real / "file0.wav_16k.wav_norm.mp3", real / "file0.wav_16k.wav_norm.wav"
    with pytest.raises(
        CorpusError,
        match=rf"at {re.escape(str(first))} \(bonafide\) and "
        rf"{re.escape(str(second))} \(bonafide\)",
    ):
        FakeOrReal(root).load("train")


def test_check_unique_ids_across_selections(tmp_path: Path) -> None:
    corpus = ASVspoof2019(make_asvspoof2019(tmp_path))
    dev, eval_ = corpus.load("dev"), corpus.load("eval")
    check_unique_ids(dev + eval_, "test set")  # distinct selections: fine
    protocol = tmp_path / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt"
    with pytest.raises(
        CorpusError,
        match=r"test set: 4 utterance\(s\) listed more than once: "
        rf"id 'LA_E_0000001' at {re.escape(str(protocol))}:1 \(bonafide\) and "
        rf"{re.escape(str(protocol))}:1 \(bonafide\)",
    ):
        check_unique_ids(eval_ + dev + eval_, "test set")  # the same selection twice
    no_origin = [Utterance("u1", "/x/1.wav", "spoof"), Utterance("u1", "/x/2.wav", "bonafide")]
    with pytest.raises(CorpusError, match=r"/x/1\.wav \(spoof\) and /x/2\.wav \(bonafide\)"):
        check_unique_ids(no_origin, "rows")  # rows without an origin are named by their path


def test_manifest_tsv_round_trips_the_origin(tmp_path: Path) -> None:
    rows = ASVspoof2019(make_asvspoof2019(tmp_path, "PA"), track="PA").load("dev")
    rows[0].num_frames, rows[0].sample_rate, rows[0].channels = 16000, 16000, 1
    path = write_manifest(rows, tmp_path / "manifest.tsv")
    assert "origin" in path.read_text().splitlines()[0].split("\t")
    again = read_manifest(path)
    assert again == rows and again[0].origin.endswith("ASVspoof2019.PA.cm.dev.trl.txt:1")


# --- 3. rows dropped by missing_audio: skip are logged ----------------------------------------


def test_skipped_rows_are_logged_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_in_the_wild(tmp_path)
    folder = root / "release_in_the_wild"
    gone = [folder / f"{n}.wav" for n in (3, 5, 7, 11, 13, 17, 19)]
    for path in gone:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="deepfake_detect.data.corpora.base"):
        rows = InTheWild(root, missing_audio="skip").load("all")
        corpus = InTheWild(root, missing_audio="skip")
        corpus.load("all")
    assert len(rows) == 113
    message = caplog.records[0].getMessage()
    assert caplog.records[0].levelname == "WARNING"
    assert "in_the_wild/all: dropping 7 of 120 protocol rows that have no audio file" in message
    assert ", ".join(map(str, gone[:5])) + " and 2 more" in message
    assert corpus.report["all"]["missing_audio"] == 7
    assert corpus.report["all"]["missing_examples"] == [str(p) for p in gone[:5]]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepfake_detect.data.corpora.base"):
        InTheWild(make_in_the_wild(tmp_path / "whole")).load("all")
    assert not caplog.records  # nothing dropped, nothing logged


# --- 4. the files a cached manifest depends on ------------------------------------------------


def test_source_files_of_every_adapter(tmp_path: Path) -> None:
    def sources(name: str) -> list[Path]:
        build, open_corpus, split, _ = CASES[name]
        return open_corpus(build(tmp_path / name)).source_files(split)

    la = tmp_path / "asvspoof2019_la" / "LA"
    assert sources("asvspoof2019_la") == [
        la / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt",
        la / "ASVspoof2019_LA_eval" / "flac",
    ]
    base = tmp_path / "asvspoof2017"
    assert sources("asvspoof2017") == [
        base / "protocol_V2" / "ASVspoof2017_V2_eval.trl.txt",
        base / "ASVspoof2017_V2_eval",
    ]
    base = tmp_path / "asvspoof2021_df"
    assert sources("asvspoof2021_df") == [
        base / "keys" / "DF" / "CM" / "trial_metadata.txt",
        base,
        base / "ASVspoof2021_DF_eval_part00" / "ASVspoof2021_DF_eval" / "flac",
        base / "ASVspoof2021_DF_eval_part01" / "ASVspoof2021_DF_eval" / "flac",
    ]
    base = tmp_path / "asvspoof5"
    assert sources("asvspoof5") == [
        base / "ASVspoof5_protocols" / "ASVspoof5.dev.track_1.tsv",
        base / "flac_D",
    ]
    base = tmp_path / "in_the_wild" / "release_in_the_wild"
    assert sources("in_the_wild") == [base / "meta.csv", base]
    base = tmp_path / "manifest_csv"
    assert sources("manifest_csv") == [base / "manifest.csv"] + [
        base / "audio" / f"spk{n}" for n in range(8)
    ]
    base = tmp_path / "wavefake"
    generated = base / "generated_audio"
    assert sources("wavefake") == [
        generated,
        *(generated / g for g in sorted(p.name for p in generated.iterdir())),
        base / "LJSpeech-1.1",
        base / "LJSpeech-1.1" / "wavs",
    ]
    base = tmp_path / "fake_or_real" / "for-norm" / "training"
    assert sources("fake_or_real") == [base / "real", base / "fake"]

    class Plain(Corpus):
        splits = ("all",)

        def _rows(self, split: str) -> list[Utterance]:
            return []

    assert Plain(tmp_path).source_files("all") == [tmp_path]
    with pytest.raises(CorpusError, match="unknown split 'test'"):
        Plain(tmp_path).source_files("test")
    with pytest.raises(CorpusError, match="protocol not found"):
        ASVspoof2019(tmp_path / "asvspoof2019_la", track="PA").source_files("eval")


def test_source_times_change_when_a_row_loses_its_audio(tmp_path: Path) -> None:
    corpus = ASVspoof2019(make_asvspoof2019(tmp_path), missing_audio="skip")
    for path in corpus.source_files("dev"):
        os.utime(path, ns=(10**18, 10**18))  # an old time, so any change shows

    def times() -> list[int]:
        return [p.stat().st_mtime_ns for p in corpus.source_files("dev")]

    before = times()
    (tmp_path / "LA" / "ASVspoof2019_LA_dev" / "flac" / "LA_D_0000002.flac").unlink()
    after = times()
    assert after[0] == before[0] and after[1] != before[1]
    assert len(corpus.load("dev")) == 3


# --- 5. ASVspoof 2021: every trial scored, the metrics on the eval phase -----------------------


def test_asvspoof2021_score_file_covers_every_trial_and_metrics_use_eval(tmp_path: Path) -> None:
    from deepfake_detect.evaluation.scorefile import write_asvspoof2021

    root = make_asvspoof2021(tmp_path, "LA")
    keys = root / "LA-keys-full" / "keys" / "LA" / "CM" / "trial_metadata.txt"
    asv = keys.parent.parent / "ASV"
    write(
        asv / "trial_metadata.txt",
        [
            "LA_0001-alaw-ita_tx LA_E_5000001-alaw-ita_tx alaw ita_tx bonafide target notrim eval",
            "LA_0001-alaw-ita_tx LA_E_5000002-alaw-ita_tx alaw ita_tx A07 spoof notrim progress",
            "LA_0001-alaw-ita_tx LA_E_5000003-alaw-ita_tx alaw ita_tx A07 spoof notrim eval",
        ],
    )
    write(
        asv / "ASVTorch_Kaldi" / "score.txt",
        [
            "LA_0001-alaw-ita_tx LA_E_5000001-alaw-ita_tx 2.5",
            "LA_0001-alaw-ita_tx LA_E_5000002-alaw-ita_tx 0.25",
            "LA_0001-alaw-ita_tx LA_E_5000003-alaw-ita_tx 0.5",
        ],
    )
    corpus = ASVspoof2021(root)  # the defaults of conf/data/corpus/asvspoof2021_la.yaml
    rows = corpus.load("eval")
    score_file = write_asvspoof2021(tmp_path / "scores.txt", rows, [0.0] * len(rows))
    scored = [line.split()[0] for line in score_file.read_text().splitlines()]
    assert scored == [line.split()[1] for line in keys.read_text().splitlines()]
    mask = corpus.metric_mask("eval", rows)
    assert [row.utt_id for row, keep in zip(rows, mask, strict=True) if keep] == [
        "LA_E_9332881",
        "LA_E_5013670",
    ]
    asv_scores = corpus.asv_scores("eval")  # the t-DCF's ASV side: the metric subsets only
    assert asv_scores["spoof"].tolist() == [0.5] and asv_scores["target"].tolist() == [2.5]
    every = ASVspoof2021(root, metric_subsets=None).asv_scores("eval")
    assert sorted(every["spoof"].tolist()) == [0.25, 0.5]
    assert ASVspoof2021(root).metric_mask("eval", []) == []
    with pytest.raises(CorpusError, match="rows without a subset column: u1"):
        corpus.metric_mask("eval", [Utterance("u1", "/x.flac", "spoof")])
    assert Corpus.metric_mask(corpus, "eval", rows) is None  # the base default: every row


def test_asvspoof2021_restricted_subsets_warn_about_the_score_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_asvspoof2021(tmp_path, "LA")
    with caplog.at_level(logging.WARNING, logger="deepfake_detect.data.corpora.asvspoof2021"):
        ASVspoof2021(root).load("eval")
        assert not caplog.records
        rows = ASVspoof2021(root, subsets=["eval"]).load("eval")
    assert len(rows) == 2
    assert "will not cover every trial of the keys" in caplog.records[0].getMessage()
