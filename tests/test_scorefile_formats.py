"""Challenge score files, line by line, as the official ASVspoof tools read them.

- ASVspoof 2019 CM scores (``evaluate_tDCF_asvspoof19.py`` reads them with ``np.genfromtxt``,
  columns 0, 2, 3): ``utt_id source key score``, no header.
- ASVspoof 2021 (``main.py`` / ``evaluate.py`` read them with pandas ``read_csv(sep=' ')``, two
  columns ``trial score``, no header) and accept only a file that scores every key trial once.
- ASVspoof 5 track 1: tab-separated, header ``filename<TAB>cm-score``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfake_detect.data.manifest import Utterance
from deepfake_detect.evaluation.scorefile import (
    TrialCoverage,
    check_asvspoof2021_trials,
    read_asvspoof_scores,
    write_asvspoof5,
    write_asvspoof2019_cm,
    write_asvspoof2021,
)

ROWS = [
    Utterance("LA_E_1000001", "a.flac", "bonafide"),
    Utterance("LA_E_1000002", "b.flac", "spoof", attack="A11"),
    Utterance("LA_E_1000003", "c.flac", "spoof", attack="-"),
    Utterance("LA_E_1000004", "d.flac", "spoof", attack="two words"),
]
SCORES = [1.5, -3.0125, 0.1 + 0.2, 2e-7]
SCORE_TEXT = ["1.5", "-3.0125", "0.30000000000000004", "2e-07"]


def lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")  # one newline per line, no blank
    return text.split("\n")[:-1]


def test_asvspoof2019_cm_lines(tmp_path: Path) -> None:
    path = write_asvspoof2019_cm(tmp_path / "cm.txt", ROWS, SCORES)
    assert lines(path) == [
        "LA_E_1000001 - bonafide 1.5",
        "LA_E_1000002 A11 spoof -3.0125",
        "LA_E_1000003 - spoof 0.30000000000000004",
        "LA_E_1000004 - spoof 2e-07",  # an attack id with whitespace cannot be a column
    ]
    for line in lines(path):  # what genfromtxt splits: four fields, key and score in 2 and 3
        fields = line.split()
        assert len(fields) == 4 and fields[2] in ("bonafide", "spoof")
        float(fields[3])


def test_asvspoof2021_lines(tmp_path: Path) -> None:
    path = write_asvspoof2021(tmp_path / "scores.txt", ROWS, SCORES)
    expected = [f"{row.utt_id} {text}" for row, text in zip(ROWS, SCORE_TEXT, strict=True)]
    assert lines(path) == expected
    for line in lines(path):  # sep=' ': exactly one space, no header, no trailing blank
        trial, score = line.split(" ")
        assert trial.startswith("LA_E_") and float(score) == float(score)


def test_asvspoof2021_reads_as_the_official_pandas_call(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    path = write_asvspoof2021(tmp_path / "scores.txt", ROWS, SCORES)
    frame = pandas.read_csv(
        path, sep=" ", names=["trial", "score"], index_col="trial", skipinitialspace=True
    )
    assert list(frame.index) == [row.utt_id for row in ROWS]
    assert list(frame["score"]) == SCORES


def test_asvspoof5_lines(tmp_path: Path) -> None:
    path = write_asvspoof5(tmp_path / "scores.tsv", ROWS, SCORES)
    assert lines(path) == [
        "filename\tcm-score",
        *(f"{row.utt_id}\t{text}" for row, text in zip(ROWS, SCORE_TEXT, strict=True)),
    ]


@pytest.mark.parametrize("write", [write_asvspoof2019_cm, write_asvspoof2021, write_asvspoof5])
def test_scores_read_back_to_the_same_floats(tmp_path: Path, write) -> None:
    path = write(tmp_path / "scores.txt", ROWS, SCORES)
    assert read_asvspoof_scores(path) == {
        row.utt_id: score for row, score in zip(ROWS, SCORES, strict=True)
    }
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("write", [write_asvspoof2019_cm, write_asvspoof2021, write_asvspoof5])
def test_rewriting_replaces_the_file(tmp_path: Path, write) -> None:
    path = write(tmp_path / "scores.txt", ROWS, SCORES)
    write(path, ROWS[:1], SCORES[:1])
    assert len(read_asvspoof_scores(path)) == 1


@pytest.mark.parametrize("write", [write_asvspoof2019_cm, write_asvspoof2021, write_asvspoof5])
def test_writers_refuse_what_the_format_cannot_hold(tmp_path: Path, write) -> None:
    with pytest.raises(ValueError, match="4 rows but 3 scores"):
        write(tmp_path / "scores.txt", ROWS, SCORES[:3])
    with pytest.raises(ValueError, match="whitespace"):
        write(tmp_path / "scores.txt", [Utterance("LA E 1", "a.flac", "bonafide")], [0.0])


# ---------------------------------------------------------------------------------------------
# check_asvspoof2021_trials
# ---------------------------------------------------------------------------------------------

KEY = ["LA_E_1", "LA_E_2", "LA_E_3", "LA_E_4"]


def test_complete_coverage_in_any_order() -> None:
    coverage = check_asvspoof2021_trials(reversed(KEY), iter(KEY))
    assert coverage == TrialCoverage(4, 4, (), (), ())
    assert coverage.complete
    assert coverage.describe() == "all 4 key trials scored once"


@pytest.mark.parametrize(
    ("score_ids", "missing", "extra", "duplicated", "message"),
    [
        # an eval-subset-only file: the official tool wants every trial of the key
        (KEY[:3], ("LA_E_4",), (), (), "3 scores for 4 key trials; missing: LA_E_4"),
        (
            [*KEY, "LA_E_9"],
            (),
            ("LA_E_9",),
            (),
            "5 scores for 4 key trials; not in the key: LA_E_9",
        ),
        # right count, wrong ids
        (
            [*KEY[:3], "LA_E_9"],
            ("LA_E_4",),
            ("LA_E_9",),
            (),
            "4 scores for 4 key trials; missing: LA_E_4; not in the key: LA_E_9",
        ),
        (
            [*KEY, "LA_E_2"],
            (),
            (),
            ("LA_E_2",),
            "5 scores for 4 key trials; scored more than once: LA_E_2",
        ),
        (
            [*KEY[:3], "LA_E_2"],
            ("LA_E_4",),
            (),
            ("LA_E_2",),
            "4 scores for 4 key trials; missing: LA_E_4; scored more than once: LA_E_2",
        ),
        (
            [],
            tuple(KEY),
            (),
            (),
            "0 scores for 4 key trials; missing: LA_E_1, LA_E_2, LA_E_3, ... (4 in all)",
        ),
    ],
)
def test_incomplete_coverage(score_ids, missing, extra, duplicated, message) -> None:
    coverage = check_asvspoof2021_trials(score_ids, KEY)
    assert not coverage.complete
    assert (coverage.missing, coverage.extra, coverage.duplicated) == (missing, extra, duplicated)
    assert coverage.n_scores == len(score_ids) and coverage.n_key == 4
    assert coverage.describe() == message


def test_describe_counts_long_lists() -> None:
    coverage = check_asvspoof2021_trials([], [f"LA_E_{i}" for i in range(10)])
    assert coverage.describe(shown=2).endswith("missing: LA_E_0, LA_E_1, ... (10 in all)")


def test_a_key_with_a_repeated_trial_is_never_complete() -> None:
    coverage = check_asvspoof2021_trials(KEY, [*KEY, "LA_E_1"])
    assert (coverage.missing, coverage.extra, coverage.duplicated) == ((), (), ())
    assert not coverage.complete and coverage.n_key == 5


def test_coverage_of_a_written_file(tmp_path: Path) -> None:
    path = write_asvspoof2021(tmp_path / "scores.txt", ROWS, SCORES)
    written = [line.split(" ")[0] for line in lines(path)]
    assert check_asvspoof2021_trials(written, [row.utt_id for row in ROWS]).complete
    assert not check_asvspoof2021_trials(written[1:], [row.utt_id for row in ROWS]).complete
