"""Test-set summaries, report files, figures, challenge score files and the W&B upload."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest

from deepfake_detect.data.manifest import Utterance
from deepfake_detect.evaluation.record import build_result
from deepfake_detect.evaluation.report import (
    BENCHMARK_FIELDS,
    log_run_files,
    write_test_report,
)
from deepfake_detect.evaluation.scorefile import read_asvspoof_scores
from deepfake_detect.evaluation.summary import breakdown_columns, metric_key_part
from deepfake_detect.metrics import (
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
)

BONA, SPOOF = 1, 0


def summarize_test_set(scores, labels, rows, asv=None) -> dict[str, float]:
    """A set's metrics, as its result record holds them."""
    return build_result("set", rows, scores, labels, asv=asv).metrics


def utt(utt_id: str, label: str, attack: str = "-", **extra: str) -> Utterance:
    return Utterance(utt_id, f"{utt_id}.flac", label, attack, extra=extra)


# Hand-made set: codec is a condition (both classes), vocoder a spoof attribute (bona fide rows
# hold the placeholder "bonafide"), gender has a single value (no breakdown).
HAND = [
    # utt_id, label, attack, codec, vocoder, score
    ("b1", "bonafide", "-", "mp3", "bonafide", 2.0),
    ("b2", "bonafide", "-", "mp3", "bonafide", -1.0),
    ("b3", "bonafide", "-", "none", "bonafide", 3.0),
    ("b4", "bonafide", "-", "none", "bonafide", 1.0),
    ("s1", "spoof", "A01", "mp3", "hifigan", -2.0),
    ("s2", "spoof", "A01", "none", "hifigan", 0.5),
    ("s3", "spoof", "A02", "mp3", "waveglow", 0.0),
    ("s4", "spoof", "A02", "none", "waveglow", -3.0),
]


def hand_set() -> tuple[np.ndarray, np.ndarray, list[Utterance]]:
    rows = [utt(u, lab, att, codec=c, vocoder=v, gender="f") for u, lab, att, c, v, _ in HAND]
    scores = np.array([h[-1] for h in HAND])
    labels = np.array([BONA if h[1] == "bonafide" else SPOOF for h in HAND])
    return scores, labels, rows


def test_summary_breakdowns_on_a_hand_made_set() -> None:
    scores, labels, rows = hand_set()
    m = summarize_test_set(scores, labels, rows)
    bona, spoof = scores[labels == BONA], scores[labels == SPOOF]

    assert m["n_bonafide"] == 4 and m["n_spoof"] == 4
    assert m["acc"] == pytest.approx(5 / 8)  # b2 (-1) rejected, s2 (0.5) and s3 (0.0) accepted
    assert m["eer"] == compute_eer(bona, spoof)[0]
    assert m["min_dcf"] == compute_min_dcf(bona, spoof)[0]
    assert m["act_dcf"] == compute_act_dcf(bona, spoof)[0]
    assert m["cllr"] == compute_cllr(bona, spoof)
    assert m["min_cllr"] == compute_min_cllr(bona, spoof)
    assert "min_tdcf" not in m  # no ASV scores

    # condition: mp3 bona fide (2, -1) vs mp3 spoofs (-2, 0): at t=0 frr = far = 1/2
    assert m["eer_codec=mp3"] == 0.5
    # none bona fide (3, 1) vs none spoofs (0.5, -3): separable
    assert m["eer_codec=none"] == 0.0
    # attacks and the spoof attribute: each group's spoofs against all four bona fide
    assert m["eer_A01"] == compute_eer(bona, [-2.0, 0.5])[0]
    assert m["eer_A02"] == compute_eer(bona, [0.0, -3.0])[0]
    assert m["eer_vocoder=hifigan"] == m["eer_A01"]
    assert m["eer_vocoder=waveglow"] == m["eer_A02"]
    breakdown_keys = {k for k in m if k.startswith("eer_")}
    assert breakdown_keys == {
        "eer_A01",
        "eer_A02",
        "eer_codec=mp3",
        "eer_codec=none",
        "eer_vocoder=hifigan",
        "eer_vocoder=waveglow",
    }


def test_condition_value_without_both_classes_is_skipped() -> None:
    rows = [
        utt("b1", "bonafide", codec="mp3"),
        utt("b2", "bonafide", codec="ogg"),  # no ogg spoof
        utt("s1", "spoof", "A01", codec="mp3"),
        utt("s2", "spoof", "A01", codec="aac"),  # no aac bona fide
    ]
    m = summarize_test_set(np.array([1.0, 2.0, 0.0, -1.0]), np.array([1, 1, 0, 0]), rows)
    assert m["eer_codec=mp3"] == 0.0
    assert "eer_codec=ogg" not in m and "eer_codec=aac" not in m


def test_breakdown_columns_need_2_to_30_values() -> None:
    rows = [
        utt(f"u{i}", "bonafide" if i % 2 else "spoof", pair=f"p{i}", room=f"r{i % 3}", one="x")
        for i in range(31)
    ]
    rows[0].extra["room"] = "-"  # no value: not counted, never a key
    assert breakdown_columns(rows) == ["room"]
    assert breakdown_columns(rows[:30]) == ["pair", "room"]
    labels = np.array([BONA if r.label == "bonafide" else SPOOF for r in rows])
    m = summarize_test_set(np.linspace(-1, 1, 31), labels, rows)
    assert {k for k in m if "=" in k} == {"eer_room=r0", "eer_room=r1", "eer_room=r2"}


def test_metric_keys_are_sanitised() -> None:
    assert metric_key_part("mp3 128k/s") == "mp3_128k_s"
    rows = [utt("b", "bonafide", codec="a b"), utt("s", "spoof", "A/1", codec="a b")]
    rows += [utt("b2", "bonafide", codec="c"), utt("s2", "spoof", "A/1", codec="c")]
    m = summarize_test_set(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1, 0, 1, 0]), rows)
    assert {"eer_A_1", "eer_codec=a_b", "eer_codec=c"} <= set(m)


def test_one_class_set_has_counts_and_accuracy_only() -> None:
    rows = [utt("b1", "bonafide"), utt("b2", "bonafide")]
    m = summarize_test_set(np.array([1.0, -1.0]), np.array([1, 1]), rows)
    assert m == {"n_bonafide": 2.0, "n_spoof": 0.0, "acc": 0.5}


def test_hard_decisions_skip_min_tdcf_with_a_warning(caplog) -> None:
    rows = [utt("b1", "bonafide"), utt("b2", "bonafide"), utt("s1", "spoof", "A01")]
    asv = {
        "target": np.array([3.0, 2.5]),
        "nontarget": np.array([-2.0, -1.0]),
        "spoof": np.array([1.0, 0.5]),
    }
    with caplog.at_level(logging.WARNING):
        m = summarize_test_set(np.array([1.0, 1.0, -1.0]), np.array([1, 1, 0]), rows, asv)
    assert "min_tdcf" not in m and m["eer"] == 0.0
    assert "soft scores" in caplog.text


# ---------------------------------------------------------------------------------------------
# report files
# ---------------------------------------------------------------------------------------------


def random_set(name: str, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows, scores, labels = [], [], []
    for i in range(n):
        bona = i % 3 == 0
        codec = ("mp3", "none")[i % 2]
        rows.append(utt(f"{name}_{i:04d}", "bonafide" if bona else "spoof",
                        "-" if bona else f"A0{i % 4 + 1}", codec=codec))  # fmt: skip
        scores.append(rng.normal(1.5 if bona else -1.5, 1.0))
        labels.append(BONA if bona else SPOOF)
    return {"index": np.arange(n), "scores": np.array(scores), "labels": np.array(labels),
            "rows": rows, "asv": None}  # fmt: skip


@pytest.fixture
def report_run(tmp_path: Path) -> tuple[Path, dict, dict, str]:
    outputs = {"eval_a": random_set("a", 240, 0), "eval_b": random_set("b", 90, 1)}
    bona_only = [utt("c_0", "bonafide"), utt("c_1", "bonafide")]
    outputs["bona_only"] = {"index": np.arange(2), "scores": np.array([0.3, 1.2]),
                            "labels": np.array([1, 1]), "rows": bona_only, "asv": None}  # fmt: skip
    records = [build_result(n, o["rows"], o["scores"], o["labels"]) for n, o in outputs.items()]
    table = write_test_report(tmp_path, records)
    return tmp_path, {r.name: r.metrics for r in records}, outputs, table


def test_benchmark_files_have_one_row_per_set(report_run) -> None:
    out, results, _, table = report_run
    with (out / "benchmark.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == BENCHMARK_FIELDS
    assert [r["test_set"] for r in rows] == ["eval_a", "eval_b", "bona_only"]
    a = rows[0]
    assert float(a["eer_pct"]) == pytest.approx(100 * results["eval_a"]["eer"], abs=1e-6)
    assert float(a["acc_pct"]) == pytest.approx(100 * results["eval_a"]["acc"], abs=1e-6)
    assert float(a["min_dcf"]) == pytest.approx(results["eval_a"]["min_dcf"], abs=1e-6)
    assert float(a["cllr"]) == pytest.approx(results["eval_a"]["cllr"], abs=1e-6)
    assert (a["n_bonafide"], a["n_spoof"], a["min_tdcf"]) == ("80", "160", "")
    assert rows[2]["eer_pct"] == "" and rows[2]["n_bonafide"] == "2"

    saved = json.loads((out / "benchmark.json").read_text())
    assert [r["test_set"] for r in saved] == ["eval_a", "eval_b", "bona_only"]
    assert saved[1]["n_spoof"] == 60 and saved[2]["eer_pct"] is None
    assert saved[1]["act_dcf"] == pytest.approx(results["eval_b"]["act_dcf"], abs=1e-6)

    md = (out / "benchmark.md").read_text()
    assert md == table
    lines = md.splitlines()
    assert len(lines) == 2 + 3 and lines[0].startswith("| test set | EER % | acc % | min t-DCF")
    assert lines[2].startswith(f"| eval_a | {100 * results['eval_a']['eer']:.2f} |")
    assert lines[4].startswith("| bona_only | – |")


def test_report_md_has_the_breakdown_tables(report_run) -> None:
    out, results, _, table = report_run
    report = (out / "report.md").read_text()
    assert table in report
    assert "![DET curves](det_curves.png)" in report
    for name in ("eval_a", "eval_b"):
        assert f"## {name}" in report
    assert "## bona_only" not in report  # no spoofs: nothing to break down
    section_a = report.split("## eval_a")[1].split("## eval_b")[0]
    assert "### EER per attack" in section_a and "### EER per codec" in section_a
    mp3 = results["eval_a"]["eer_codec=mp3"]
    assert f"| mp3 | 40 | 80 | {100 * mp3:.2f} |" in section_a
    assert f"| A01 | 80 | 40 | {100 * results['eval_a']['eer_A01']:.2f} |" in section_a


def test_figures_are_real_images(report_run) -> None:
    out, *_ = report_run
    det = mpimg.imread(out / "det_curves.png")
    hist = mpimg.imread(out / "score_histograms.png")
    for image in (det, hist):
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert min(image.shape[:2]) >= 300
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 20  # not blank
    assert hist.shape[1] > 2 * hist.shape[0]  # three panels side by side


def test_challenge_score_files_read_back_to_the_scores(report_run) -> None:
    out, _, outputs, _ = report_run
    folder = out / "scores" / "asvspoof"
    for name in ("eval_a", "bona_only"):
        expected = {
            row.utt_id: float(s)
            for row, s in zip(outputs[name]["rows"], outputs[name]["scores"], strict=True)
        }
        for suffix in ("asvspoof2019_cm.txt", "asvspoof2021.txt", "asvspoof5.tsv"):
            assert read_asvspoof_scores(folder / f"{name}.{suffix}") == expected  # exact floats

    lines = (folder / "eval_a.asvspoof2019_cm.txt").read_text().splitlines()
    rows = outputs["eval_a"]["rows"]
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        utt_id, source, key, _ = line.split(" ")
        assert (utt_id, source, key) == (row.utt_id, row.attack, row.label)
    assert lines[0].split()[1:3] == ["-", "bonafide"]

    lines_2021 = (folder / "eval_b.asvspoof2021.txt").read_text().splitlines()
    assert len(lines_2021) == 90 and all(len(line.split(" ")) == 2 for line in lines_2021)
    tsv = (folder / "eval_b.asvspoof5.tsv").read_text().splitlines()
    assert tsv[0] == "filename\tcm-score" and len(tsv) == 91
    assert tsv[1] == f"b_0000\t{float(outputs['eval_b']['scores'][0])!r}"
    assert (folder / "README.txt").is_file()


def test_ids_with_whitespace_get_no_challenge_files(tmp_path: Path, caplog) -> None:
    rows = [utt("my file", "bonafide"), utt("other", "spoof", "A01")]
    record = build_result("odd", rows, np.array([1.0, -1.0]), np.array([1, 0]))
    with caplog.at_level(logging.WARNING):
        write_test_report(tmp_path, [record])
    assert not list((tmp_path / "scores" / "asvspoof").glob("odd.*"))
    assert "whitespace" in caplog.text
    assert (tmp_path / "det_curves.png").is_file()


def test_log_run_files_to_an_offline_wandb_run(report_run, tmp_path: Path) -> None:
    import wandb

    out, *_ = report_run
    (out / "metrics.json").write_text("{}")
    run = wandb.init(mode="offline", dir=tmp_path, project="deepfake-detect-test")
    try:
        artifact = log_run_files(SimpleNamespace(experiment=run), out)
        entries = set(artifact.manifest.entries)
    finally:
        run.finish()
    assert {
        "metrics.json",
        "report.md",
        "benchmark.csv",
        "benchmark.json",
        "det_curves.png",
        "score_histograms.png",
        "scores/asvspoof/eval_a.asvspoof2019_cm.txt",
        "scores/asvspoof/eval_b.asvspoof5.tsv",
    } <= entries
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    assert len(list((run_dir / "files" / "media" / "images").rglob("*.png"))) == 2
    assert len(list((run_dir / "files" / "media" / "table").rglob("*.json"))) == 1
