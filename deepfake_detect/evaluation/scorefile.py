"""Score files: one line per utterance, written whole (never appended, so reruns cannot mix)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from deepfake_detect.data.manifest import Utterance

SCORE_COLUMNS = ("utt_id", "score", "label", "attack")


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
            writer.writerow([row.utt_id, f"{float(score):.6f}", row.label, row.attack])
    tmp.replace(path)
    return path


def read_score_file(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
