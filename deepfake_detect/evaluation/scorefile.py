"""Score files: one line per utterance, written whole (never appended, so reruns cannot mix).

Besides the project's own TSV (``scores/<set>.tsv``), the challenge formats that the official
ASVspoof scoring tools read (score = log-odds of bona fide, higher = more bona fide; scores are
written as the shortest decimal that reads back to the same float):

- ASVspoof 2019 CM score file (read by the 2019 ``evaluate_tDCF_asvspoof19`` tools): four
  space-separated columns, no header, ``utt_id source key score``; source is the attack id
  (``-`` for bona fide), key ``bonafide`` or ``spoof``: ``LA_E_2834763 A11 spoof -3.0125``.
- ASVspoof 2021 (LA / PA / DF) submission: two space-separated columns, no header,
  ``utt_id score``: ``LA_E_9332881 -3.0125`` (the official ``main.py`` reads it with pandas,
  ``sep=' '``, two named columns, and rejects it unless it scores every trial of the key's
  ``trial_metadata.txt`` exactly once: see :func:`check_asvspoof2021_trials`).
- ASVspoof 5 track 1 submission: tab-separated with the header ``filename<TAB>cm-score``, then
  ``utt_id<TAB>score``: ``E_000001<TAB>-3.0125``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deepfake_detect.data.manifest import BONAFIDE, Utterance

SCORE_COLUMNS = ("utt_id", "score", "label", "attack")
ASVSPOOF5_HEADER = ("filename", "cm-score")


def write_score_file(path: str | Path, rows: Sequence[Utterance], scores: Sequence[float]) -> Path:
    """TSV with a header: utt_id, score (higher = more bona fide), label, attack."""
    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(SCORE_COLUMNS)
        for row, score in zip(rows, scores, strict=True):
            writer.writerow([row.utt_id, repr(float(score)), row.label, row.attack])
    tmp.replace(path)
    return path


def read_score_file(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for line in lines:
            f.write(line + "\n")
    tmp.replace(path)
    return path


def is_token(text: str) -> bool:
    """Whether ``text`` can be one field of a whitespace-separated score file."""
    return bool(text) and not any(c.isspace() for c in text)


def _checked(rows: Sequence[Utterance], scores: Sequence[float]) -> list[tuple[Utterance, str]]:
    """Rows with their scores as text (the shortest decimal that reads back to the same float)."""
    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
    for row in rows:
        if not is_token(row.utt_id):
            raise ValueError(
                f"utterance id {row.utt_id!r} cannot go in a whitespace-separated file"
            )
    return [(row, repr(float(score))) for row, score in zip(rows, scores, strict=True)]


def write_asvspoof2019_cm(
    path: str | Path, rows: Sequence[Utterance], scores: Sequence[float]
) -> Path:
    """ASVspoof 2019 CM score file: ``utt_id source key score`` (source ``-`` for bona fide)."""
    lines = []
    for row, score in _checked(rows, scores):
        spoof_source = row.attack if is_token(row.attack) else "-"
        source = "-" if row.label == BONAFIDE else spoof_source
        lines.append(f"{row.utt_id} {source} {row.label} {score}")
    return _write_lines(path, lines)


def write_asvspoof2021(
    path: str | Path, rows: Sequence[Utterance], scores: Sequence[float]
) -> Path:
    """ASVspoof 2021 submission: ``utt_id score``, no header."""
    return _write_lines(path, (f"{row.utt_id} {score}" for row, score in _checked(rows, scores)))


def write_asvspoof5(path: str | Path, rows: Sequence[Utterance], scores: Sequence[float]) -> Path:
    """ASVspoof 5 track 1 submission: TSV, header ``filename cm-score``, then ``utt_id score``."""
    body = (f"{row.utt_id}\t{score}" for row, score in _checked(rows, scores))
    return _write_lines(path, ["\t".join(ASVSPOOF5_HEADER), *body])


def read_asvspoof_scores(path: str | Path) -> dict[str, float]:
    """Scores by utterance id from a file in any of the three challenge formats above."""
    scores: dict[str, float] = {}
    with Path(path).open() as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or (line_no == 1 and tuple(fields) == ASVSPOOF5_HEADER):
                continue
            if len(fields) not in (2, 4):
                raise ValueError(f"{path}:{line_no}: expected 2 or 4 columns, got {line.strip()!r}")
            scores[fields[0]] = float(fields[-1])
    return scores


@dataclass(frozen=True)
class TrialCoverage:
    """How the trial ids of a score file compare with those of a challenge key."""

    n_scores: int
    n_key: int
    missing: tuple[str, ...]
    """Key trials with no score (sorted)."""
    extra: tuple[str, ...]
    """Scored ids that are not key trials (sorted)."""
    duplicated: tuple[str, ...]
    """Ids scored more than once (sorted)."""

    @property
    def complete(self) -> bool:
        """Every key trial scored exactly once and nothing else: what the official tool accepts."""
        return not (self.missing or self.extra or self.duplicated) and self.n_scores == self.n_key

    def describe(self, shown: int = 3) -> str:
        """One line for an error message or a log."""
        if self.complete:
            return f"all {self.n_key} key trials scored once"
        parts = [f"{self.n_scores} scores for {self.n_key} key trials"]
        for name, ids in (
            ("missing", self.missing),
            ("not in the key", self.extra),
            ("scored more than once", self.duplicated),
        ):
            if ids:
                more = f", ... ({len(ids)} in all)" if len(ids) > shown else ""
                parts.append(f"{name}: {', '.join(ids[:shown])}{more}")
        return "; ".join(parts)


def check_asvspoof2021_trials(score_ids: Iterable[str], key_ids: Iterable[str]) -> TrialCoverage:
    """Compare the ids of an ASVspoof 2021 score file with the trials of the key.

    The official 2021 evaluation (``main.py``) joins the score file with the whole CM key
    (``trial_metadata.txt``, every subset) and stops with "protocol and score seem to mismatch"
    unless both have the same number of lines and every line finds its partner; the CodaLab
    ``evaluate.py`` also compares the line counts. A file is accepted only when
    :attr:`TrialCoverage.complete`.
    """
    scored = Counter(score_ids)
    key = Counter(key_ids)
    return TrialCoverage(
        n_scores=sum(scored.values()),
        n_key=sum(key.values()),
        missing=tuple(sorted(key.keys() - scored.keys())),
        extra=tuple(sorted(scored.keys() - key.keys())),
        duplicated=tuple(sorted(i for i, n in scored.items() if n > 1)),
    )
