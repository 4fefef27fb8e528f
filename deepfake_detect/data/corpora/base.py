"""What every corpus adapter is: a corpus root in its native layout -> manifest rows per split.

An adapter parses protocol / metadata files and lists folders; it never decodes audio. The base
class owns the checks every corpus shares: unknown split, protocol rows without an audio file
(error, or skip-and-count), audio files that no protocol row lists (counted, never an error:
ASVspoof dev/eval folders also hold the ASV enrolment files), and, for corpora without an
official split, the seeded speaker-disjoint split (:mod:`deepfake_detect.data.splits`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance
from deepfake_detect.data.splits import SpeakerSplit

MAX_NAMED = 5
"""How many offending files an error message names before it only counts the rest."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")

CM_LABELS: Mapping[str, str] = {BONAFIDE: BONAFIDE, SPOOF: SPOOF}
"""The countermeasure key column as most protocols write it (``bonafide`` / ``spoof``)."""


def require_dir(path: str | Path, what: str, setting: str = "root") -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CorpusError(f"{what} not found: {path} (check the corpus `{setting}` setting)")
    return path


def require_file(path: str | Path, what: str, hint: str = "") -> Path:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def name_some(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    more = len(items) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def list_audio(
    folder: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS, recursive: bool = False
) -> list[Path]:
    """Audio files in ``folder`` by extension (case-insensitive), sorted; [] if it does not exist.

    ``os.scandir`` rather than ``Path.glob``: corpus folders hold up to 700k files.
    """
    extensions = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    pending = [str(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_file() and entry.name.lower().endswith(extensions):
                        found.append(Path(entry.path))
                    elif recursive and entry.is_dir():
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sorted(found)


def read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of a whitespace-separated protocol as ``(line number, fields)``."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if fields:
                rows.append((lineno, fields))
    return rows


def read_protocol(
    path: Path,
    columns: Sequence[str],
    label_column: str,
    labels: Mapping[str, str] = CM_LABELS,
    *,
    at_least: bool = False,
    qualifier: str = "",
) -> Iterator[tuple[dict[str, str], str]]:
    """Rows of a whitespace-separated protocol as ``({column: field}, label)``.

    A row must have exactly ``len(columns)`` fields (or at least that many with ``at_least``,
    the surplus being dropped); its ``label_column`` field must be a key of ``labels``, and
    the yielded label is what it maps to. ``qualifier`` is appended to the column-count error
    (e.g. `` for LA``).
    """
    for lineno, parts in read_lines(path):
        if len(parts) < len(columns) or (len(parts) > len(columns) and not at_least):
            raise CorpusError(
                f"{path}:{lineno}: expected {'at least ' if at_least else ''}{len(columns)} "
                f"columns '{' '.join(c.upper() for c in columns)}'{qualifier}, "
                f"got {len(parts)}: {' '.join(parts)!r}"
            )
        record = dict(zip(columns, parts, strict=False))
        label = labels.get(record[label_column])
        if label is None:
            raise CorpusError(
                f"{path}:{lineno}: unknown label {record[label_column]!r} "
                f"(expected {' or '.join(labels)})"
            )
        yield record, label


class Corpus(ABC):
    """A corpus adapter. Subclasses parse one native layout; they never read audio samples.

    Subclasses set ``name`` and ``splits`` and implement :meth:`_rows`; they may override
    :meth:`_audio_files` (to have unlisted audio counted) and :meth:`_select` (to keep part of
    the parsed rows, e.g. a subset column). Corpora without an official split set
    ``self.speaker_split`` and ``self.splits = self.speaker_split.names``.
    """

    name: str = "corpus"
    splits: tuple[str, ...] = ()

    def __init__(self, root: str | Path, missing_audio: str = "error") -> None:
        if missing_audio not in ("error", "skip"):
            raise ValueError(f"missing_audio must be 'error' or 'skip', got {missing_audio!r}")
        self.root = Path(root).expanduser()
        self.missing_audio = missing_audio
        self.speaker_split: SpeakerSplit | None = None
        self.report: dict[str, dict[str, int]] = {}
        """Per split (filled by :meth:`load`): ``rows`` in the split, ``missing_audio`` rows
        without a file (dropped when skipping), ``unlisted_audio`` files no protocol row lists."""

    @abstractmethod
    def _rows(self, split: str) -> list[Utterance]:
        """Every protocol row that ``split`` is drawn from (paths may point at missing files)."""

    def _audio_files(self, split: str) -> Iterable[Path] | None:
        """The audio files present where :meth:`_rows` looks for them; None skips the check."""
        return None

    def _select(self, split: str, rows: list[Utterance]) -> list[Utterance]:
        """The rows of ``split`` among :meth:`_rows`: the speaker split, or all of them."""
        if self.speaker_split is not None:
            return self.speaker_split.select(rows, split)
        return rows

    def load(self, split: str) -> list[Utterance]:
        if split not in self.splits:
            raise CorpusError(
                f"{self.name}: unknown split {split!r} (available: {', '.join(self.splits)})"
            )
        parsed = self._rows(split)
        present = self._audio_files(split)
        unlisted = 0
        if present is not None:
            listed = {os.path.normpath(row.path) for row in parsed}
            unlisted = sum(1 for path in present if os.path.normpath(path) not in listed)
        rows = self._select(split, parsed)
        missing = [row for row in rows if not Path(row.path).is_file()]
        if missing and self.missing_audio == "error":
            raise CorpusError(
                f"{self.name}/{split}: {len(missing)} of {len(rows)} protocol rows have no audio "
                f"file: {name_some([r.path for r in missing])}. Fix the corpus root, or set "
                "`missing_audio: skip` on the corpus to drop (and count) these rows."
            )
        missing_ids = {id(r) for r in missing}
        kept = [row for row in rows if id(row) not in missing_ids]
        self.report[split] = {
            "rows": len(rows),
            "missing_audio": len(missing),
            "unlisted_audio": unlisted,
        }
        return kept

    def asv_score_file(self, split: str) -> Path | None:
        """The corpus's ASV score file for ``split`` (for t-DCF), or None when absent."""
        return None

    def asv_scores(self, split: str) -> dict[str, Any] | None:
        """The organisers' ASV scores of ``split`` for the t-DCF, or None when there are none.

        ``{"target", "nontarget", "spoof"}``: float64 arrays; ``"tdcf"``: the t-DCF definition
        that goes with them (``"2019"``: the ASVspoof 2019 legacy one, ``"2021"``: the revised
        one). This default reads :meth:`asv_score_file` in the ASVspoof 2019 format.
        """
        path = self.asv_score_file(split)
        if path is None:
            return None
        from deepfake_detect.metrics.asv_scores import read_asv_scores

        return {**read_asv_scores(path), "tdcf": "2019"}
