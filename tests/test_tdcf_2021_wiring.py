"""ASVspoof 2021 LA: the organisers' ASV scores from the keys package -> the revised min t-DCF.

The fixture is the ``LA-keys-full`` layout: ``keys/LA/CM/trial_metadata.txt`` (CM keys),
``keys/LA/ASV/trial_metadata.txt`` (ASV keys, 8 columns, KEY target / nontarget / spoof, SUBSET
last) and ``keys/LA/ASV/ASVTorch_Kaldi/score.txt`` (``CLAIMED_SPEAKER TRIAL SCORE``, line by line
with the ASV keys), plus empty flac files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.corpora.asvspoof2021 import ASVspoof2021
from deepfake_detect.data.datamodule import SpoofDataModule
from deepfake_detect.data.manifest import LABEL_TO_INDEX, CorpusError
from deepfake_detect.evaluation.record import build_result
from deepfake_detect.metrics import compute_tdcf_2021, compute_tdcf_legacy

CODECS = [("alaw", "ita_tx"), ("none", "loc_tx"), ("g722", "sin_tx"), ("gsm", "mad_tx")]
ASV_MEANS = {"target": 3.0, "nontarget": -2.0, "spoof": 1.5}


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_la_keys(root: Path, with_asv: bool = True) -> dict[str, dict[str, list[float]]]:
    """The corpus under ``root``; returns the ASV scores written, by subset then key."""
    rng = np.random.default_rng(0)
    cm = []
    for n in range(24):
        codec, tx = CODECS[n % 4]
        bona = n % 3 == 0
        subset = "progress" if n % 4 == 3 else "eval"
        attack, key = ("bonafide", "bonafide") if bona else (f"A{7 + n % 13:02d}", "spoof")
        cm.append(f"LA_{n % 5:04d} LA_E_{1000000 + n} {codec} {tx} {attack} {key} notrim {subset}")
    write(root / "keys" / "LA" / "CM" / "trial_metadata.txt", cm)
    for line in cm:
        (root / "ASVspoof2021_LA_eval" / "flac").mkdir(parents=True, exist_ok=True)
        (root / "ASVspoof2021_LA_eval" / "flac" / f"{line.split()[1]}.flac").touch()
    written: dict[str, dict[str, list[float]]] = {
        s: {k: [] for k in ASV_MEANS} for s in ("eval", "progress")
    }
    if not with_asv:
        return written
    meta, scores = [], []
    for n in range(90):
        codec, tx = CODECS[n % 4]
        key = ("target", "nontarget", "spoof")[n % 3]
        subset = "progress" if n % 5 == 4 else "eval"
        attack = f"A{7 + n % 13:02d}" if key == "spoof" else "bonafide"
        speaker = f"LA_{n % 7:04d}-{codec}-{tx}"
        trial = f"LA_E_{5000000 + n}-{codec}-{tx}"
        score = round(float(rng.normal(ASV_MEANS[key], 1.5)), 6)
        meta.append(f"{speaker} {trial} {codec} {tx} {attack} {key} notrim {subset}")
        scores.append(f"{speaker} {trial} {score:.6f}")
        written[subset][key].append(score)
    write(root / "keys" / "LA" / "ASV" / "trial_metadata.txt", meta)
    write(root / "keys" / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt", scores)
    return written


def test_asv_scores_are_read_and_restricted_to_the_subsets(tmp_path: Path) -> None:
    written = make_la_keys(tmp_path)
    asv = ASVspoof2021(tmp_path).asv_scores("eval")  # default subsets: [eval]
    assert asv is not None and asv["tdcf"] == "2021"
    for key in ASV_MEANS:
        assert asv[key].dtype == np.float64
        np.testing.assert_array_equal(asv[key], written["eval"][key])
    every = ASVspoof2021(tmp_path, metric_subsets=None).asv_scores("eval")
    both = ASVspoof2021(tmp_path, metric_subsets=["progress", "eval"]).asv_scores("eval")
    for key in ASV_MEANS:
        assert sorted(every[key]) == sorted(written["eval"][key] + written["progress"][key])
        np.testing.assert_array_equal(every[key], both[key])


def test_no_asv_files_no_tdcf(tmp_path: Path) -> None:
    make_la_keys(tmp_path, with_asv=False)
    corpus = ASVspoof2021(tmp_path)
    assert corpus.asv_scores("eval") is None
    rows = corpus.load("eval")  # the CM side is unaffected: every trial, eval ones counted
    assert len(rows) == 24 and sum(corpus.metric_mask("eval", rows)) == 18
    (tmp_path / "keys" / "LA" / "ASV").mkdir()
    write(tmp_path / "keys" / "LA" / "ASV" / "trial_metadata.txt", ["x"])  # keys, no scores
    assert corpus.asv_scores("eval") is None
    # a subset the ASV keys do not hold: no t-DCF rather than one over other trials
    make_la_keys(tmp_path / "other")
    assert ASVspoof2021(tmp_path / "other", metric_subsets=["hidden"]).asv_scores("eval") is None


def test_asv_files_found_in_the_unpacked_package_and_by_setting(tmp_path: Path) -> None:
    written = make_la_keys(tmp_path / "a")
    package = tmp_path / "b" / "LA-keys-full"  # the keys archive unpacked as it comes
    package.mkdir(parents=True)
    (tmp_path / "a" / "keys").rename(package / "keys")
    (tmp_path / "a" / "ASVspoof2021_LA_eval").rename(tmp_path / "b" / "ASVspoof2021_LA_eval")
    asv = ASVspoof2021(tmp_path / "b").asv_scores("eval")
    np.testing.assert_array_equal(asv["spoof"], written["eval"]["spoof"])
    moved = tmp_path / "elsewhere.txt"
    (package / "keys" / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt").rename(moved)
    assert ASVspoof2021(tmp_path / "b").asv_scores("eval") is None
    asv = ASVspoof2021(tmp_path / "b", asv_scores_file=moved).asv_scores("eval")
    np.testing.assert_array_equal(asv["target"], written["eval"]["target"])


def test_df_has_no_tdcf(tmp_path: Path) -> None:
    write(
        tmp_path / "keys" / "DF" / "CM" / "trial_metadata.txt",
        ["LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim eval traditional_vocoder - - - -"],
    )
    assert ASVspoof2021(tmp_path, track="DF").asv_scores("eval") is None


def test_mismatched_asv_score_file_is_an_error(tmp_path: Path) -> None:
    make_la_keys(tmp_path)
    path = tmp_path / "keys" / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt"
    lines = path.read_text().splitlines()
    write(path, lines[1:2] + lines[0:1] + lines[2:])
    with pytest.raises(CorpusError, match=r"score\.txt:1: .*pair line by line"):
        ASVspoof2021(tmp_path).asv_scores("eval")
    write(path, lines[:-1])
    with pytest.raises(CorpusError, match="89 ASV scores but .* 90 ASV trials"):
        ASVspoof2021(tmp_path).asv_scores("eval")


def summarize_test_set(scores, labels, rows, asv=None) -> dict[str, float]:
    return build_result("t", rows, scores, labels, asv=asv).metrics


def test_summary_uses_the_2021_tdcf(tmp_path: Path) -> None:
    make_la_keys(tmp_path)
    corpus = ASVspoof2021(tmp_path)
    asv = corpus.asv_scores("eval")
    all_rows = corpus.load("eval")  # every trial of the keys is scored...
    all_labels = np.array([LABEL_TO_INDEX[row.label] for row in all_rows])
    is_bona = all_labels == LABEL_TO_INDEX["bonafide"]
    all_scores = np.random.default_rng(1).normal(0, 1, len(all_rows)) + np.where(is_bona, 1, -1)
    counted = np.array(corpus.metric_mask("eval", all_rows))  # ...the eval subset is counted
    result = build_result("la21", all_rows, all_scores, all_labels, asv=asv, counted=counted)
    metrics = result.metrics
    assert metrics["n_bonafide"] + metrics["n_spoof"] == counted.sum() < len(all_rows)
    rows = [row for row, keep in zip(all_rows, counted, strict=True) if keep]
    scores, labels, bona = all_scores[counted], all_labels[counted], is_bona[counted]
    asv_arrays = (asv["target"], asv["nontarget"], asv["spoof"])
    revised = compute_tdcf_2021(scores[bona], scores[~bona], *asv_arrays)[0]
    legacy = compute_tdcf_legacy(scores[bona], scores[~bona], *asv_arrays)[0]
    assert metrics["min_tdcf"] == pytest.approx(revised, abs=1e-12)
    assert abs(revised - legacy) > 1e-3
    as_2019 = summarize_test_set(scores, labels, rows, {**asv, "tdcf": "2019"})
    assert metrics["eer"] == as_2019["eer"]
    assert as_2019["min_tdcf"] == pytest.approx(legacy, abs=1e-12)
    without_tag = {key: asv[key] for key in ASV_MEANS}  # a bare dict: the 2019 t-DCF
    assert summarize_test_set(scores, labels, rows, without_tag)["min_tdcf"] == as_2019["min_tdcf"]
    with pytest.raises(ValueError, match="unknown t-DCF definition '2015'"):
        summarize_test_set(scores, labels, rows, {**asv, "tdcf": "2015"})


def test_datamodule_asks_the_corpus(tmp_path: Path) -> None:
    written = make_la_keys(tmp_path)
    target = "deepfake_detect.data.corpora.asvspoof2021.ASVspoof2021"
    dm = SpoofDataModule(
        corpora={"asvspoof2021_la": {"_target_": target, "root": str(tmp_path)}},
        test="asvspoof2021_la:eval",
    )
    asv = dm.asv_scores(dm.test_names[0])
    assert asv["tdcf"] == "2021"
    np.testing.assert_array_equal(asv["nontarget"], written["eval"]["nontarget"])


def test_asvspoof2019_default_reads_the_2019_file(tmp_path: Path) -> None:
    track = tmp_path / "LA"
    asv_dir = track / "ASVspoof2019_LA_asv_scores"
    write(
        asv_dir / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt",
        ["bonafide target 3.5", "bonafide nontarget -1.25", "A13 spoof 0.5"],
    )
    asv = ASVspoof2019(tmp_path).asv_scores("eval")
    assert asv["tdcf"] == "2019"
    assert (asv["target"].tolist(), asv["nontarget"].tolist(), asv["spoof"].tolist()) == (
        [3.5],
        [-1.25],
        [0.5],
    )
    assert ASVspoof2019(tmp_path).asv_scores("dev") is None
    assert ASVspoof2019(tmp_path).asv_scores("train") is None
