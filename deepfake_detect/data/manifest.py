"""The utterance table every corpus adapter produces and the one Dataset reads.

A manifest is a plain list of :class:`Utterance` rows. Corpus adapters (``data/corpora``) turn a
corpus's native layout into such a list; nothing downstream knows which corpus a row came from.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

BONAFIDE = "bonafide"
SPOOF = "spoof"
LABELS = (SPOOF, BONAFIDE)
"""Class index = position: spoof -> 0, bona fide -> 1 (bona fide is the positive class)."""
LABEL_TO_INDEX = {label: i for i, label in enumerate(LABELS)}


class CorpusError(ValueError):
    """A corpus root, protocol file or audio file that cannot be used as configured."""


@dataclass
class Utterance:
    utt_id: str
    path: str
    label: str
    attack: str = "-"
    speaker: str = "-"
    split: str = "-"
    extra: dict[str, str] = field(default_factory=dict)
    """Corpus-specific columns (codec, transmission, vocoder, ...), kept for breakdowns."""
    num_frames: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    """Filled by the header scan (:func:`deepfake_detect.data.audio.scan_manifest`)."""
    origin: str = ""
    """Where the row came from, for error messages: ``protocol-file:line`` (``meta.csv:12``), or
    the audio file itself for corpora whose folder listing is the protocol."""

    def __post_init__(self) -> None:
        if self.label not in LABEL_TO_INDEX:
            raise CorpusError(
                f"utterance {self.utt_id!r}: unknown label {self.label!r} "
                f"(expected one of {', '.join(LABELS)})"
            )

    @property
    def target(self) -> int:
        return LABEL_TO_INDEX[self.label]

    @property
    def duration(self) -> float | None:
        if self.num_frames is None or not self.sample_rate:
            return None
        return self.num_frames / self.sample_rate


_BASE_COLUMNS = [f.name for f in fields(Utterance) if f.name != "extra"]


def class_counts(rows: Iterable[Utterance]) -> dict[str, int]:
    counts = Counter(row.label for row in rows)
    return {label: counts.get(label, 0) for label in LABELS}


def write_manifest(rows: Sequence[Utterance], path: str | Path) -> Path:
    """Write rows as a TSV (base columns, then every extra column seen)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra_cols = sorted({key for row in rows for key in row.extra})
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(_BASE_COLUMNS + extra_cols)
        for row in rows:
            base = asdict(row)
            writer.writerow(
                ["" if base[c] is None else base[c] for c in _BASE_COLUMNS]
                + [row.extra.get(c, "") for c in extra_cols]
            )
    return path


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a TSV written by :func:`write_manifest`."""
    rows = []
    with Path(path).open(newline="") as f:
        for record in csv.DictReader(f, delimiter="\t"):
            base = {c: record.pop(c) for c in _BASE_COLUMNS}
            for c in ("num_frames", "sample_rate", "channels"):
                base[c] = int(base[c]) if base[c] else None
            rows.append(Utterance(**base, extra={k: v for k, v in record.items() if v}))
    return rows
