"""What every corpus adapter is: a corpus root in its native layout -> manifest rows per split.

An adapter parses protocol / metadata files and lists folders; it never decodes audio. The base
class owns the checks every corpus shares: unknown split, an utterance listed twice (error,
naming both lines), protocol rows without an audio file (error, or skip-count-and-warn), audio
files that no protocol row lists (counted, never an error: ASVspoof dev/eval folders also hold
the ASV enrolment files), and, for corpora without an official split, the seeded
speaker-disjoint split (:mod:`deepfake_detect.data.splits`). Every protocol and metadata file is
opened through :func:`open_text`, which drops a UTF-8 byte-order mark.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance
from deepfake_detect.data.splits import SpeakerSplit

log = logging.getLogger(__name__)

MAX_NAMED = 5
"""How many offending files an error message names before it only counts the rest."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")

CM_LABELS: Mapping[str, str] = {BONAFIDE: BONAFIDE, SPOOF: SPOOF}
"""The countermeasure key column as most protocols write it (``bonafide`` / ``spoof``)."""


class CorpusPathError(CorpusError):
    """A configured corpus folder that does not exist. ``setting`` names the adapter setting
    that gave the path; ``key``, once known, the config key (:meth:`configured_by`)."""

    def __init__(self, what: str, path: Path, setting: str, detail: str = "") -> None:
        self.what, self.path, self.setting = what, path, setting
        self.key: str | None = None
        detail = detail or f"check the corpus `{setting}` setting"
        super().__init__(f"{what} not found: {path} ({detail})")

    def configured_by(self, key: str, value: Any) -> CorpusPathError:
        """The same error naming the config ``key`` to change, or, when its unresolved
        ``value`` interpolates other keys (``${paths.data_dir}/mini_wild``), those keys."""
        values = value if isinstance(value, (list, tuple)) else [value]
        refs = [r for v in values if isinstance(v, str) for r in re.findall(r"\$\{([\w.]+)\}", v)]
        relative = "" if self.path.is_absolute() else f"; relative paths start at {os.getcwd()}"
        if refs:
            detail = (
                f"{key} is {value}: set {' / '.join(dict.fromkeys(refs))} to the folder that "
                f"holds the corpora, or {key} itself{relative}"
            )
        elif self.setting == "root":
            detail = f"set {key}=/path/to/corpus{relative}"
        else:
            detail = f"check {key}, the corpus `{self.setting}` setting{relative}"
        error = CorpusPathError(self.what, self.path, self.setting, detail)
        error.key = key
        return error


def require_dir(path: str | Path, what: str, setting: str = "root") -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CorpusPathError(what, path, setting)
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


def open_text(path: str | Path) -> TextIO:
    """Open a protocol or metadata file for reading: UTF-8, a leading byte-order mark dropped.

    Editors (Excel, Notepad) save UTF-8 with a BOM; read as plain UTF-8 it would become part of
    the first row's first field (a speaker or file id). ``newline=""`` suits :mod:`csv` readers
    and still splits lines at ``\\n``, ``\\r\\n`` and ``\\r``.
    """
    return Path(path).open(encoding="utf-8-sig", newline="")


def list_dirs(folder: str | Path) -> list[Path]:
    """``folder`` and every folder below it, sorted; [] if it does not exist."""
    found: list[Path] = []
    pending = [str(folder)]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                pending += [entry.path for entry in entries if entry.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.append(Path(current))
    return sorted(found)


def read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of a whitespace-separated protocol as ``(line number, fields)``."""
    rows = []
    with open_text(path) as f:
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
) -> Iterator[tuple[dict[str, str], str, str]]:
    """Rows of a whitespace-separated protocol as ``({column: field}, label, origin)``.

    A row must have exactly ``len(columns)`` fields (or at least that many with ``at_least``,
    the surplus being dropped); its ``label_column`` field must be a key of ``labels``, and
    the yielded label is what it maps to. ``origin`` is ``path:line`` (for
    :attr:`Utterance.origin`). ``qualifier`` is appended to the column-count error
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
        yield record, label, f"{path}:{lineno}"


def _describe(row: Utterance) -> str:
    kind = row.label if row.attack == "-" else f"{row.label} {row.attack}"
    return f"{row.origin or row.path} ({kind})"


def check_unique_ids(rows: Iterable[Utterance], what: str) -> None:
    """Raise :class:`CorpusError` when two rows share an utterance id or an audio file.

    A repeated protocol line scores one utterance twice; the same id listed as bona fide and as
    spoof puts one file in both classes. Neither is accepted silently: the error names both rows
    by their :attr:`~Utterance.origin` (``file:line``) and label, for up to
    :data:`MAX_NAMED` clashes. ``what`` names the row set in the message (``asvspoof2019_la/eval``,
    or a test set built from several selections).
    """
    first_id: dict[str, Utterance] = {}
    first_path: dict[str, Utterance] = {}
    clashes: list[str] = []
    for row in rows:
        earlier = first_id.get(row.utt_id)
        if earlier is not None:
            clashes.append(f"id {row.utt_id!r} at {_describe(earlier)} and {_describe(row)}")
            continue
        first_id[row.utt_id] = row
        path = os.path.normpath(row.path)
        earlier = first_path.get(path)
        if earlier is not None:
            clashes.append(f"file {row.path} at {_describe(earlier)} and {_describe(row)}")
            continue
        first_path[path] = row
    if clashes:
        raise CorpusError(
            f"{what}: {len(clashes)} utterance(s) listed more than once: {name_some(clashes)}. "
            "Each utterance must be listed once: remove the repeated lines (an id listed with "
            "two labels needs the right one chosen)."
        )


class Corpus(ABC):
    """A corpus adapter. Subclasses parse one native layout; they never read audio samples.

    Subclasses set ``name`` and ``splits`` and implement :meth:`_rows` (filling each row's
    ``origin``); they may override :meth:`_audio_files` (to have unlisted audio counted),
    :meth:`_select` (to keep part of the parsed rows, e.g. a subset column),
    :meth:`source_files` (what a cached manifest depends on) and :meth:`metric_mask` (rows that
    are scored but left out of the metrics). Corpora without an official split set
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
        self.report: dict[str, dict[str, Any]] = {}
        """Per split (filled by :meth:`load`): ``rows`` in the split, ``missing_audio`` rows
        without a file (dropped when skipping), ``missing_examples`` up to :data:`MAX_NAMED` of
        their paths, ``unlisted_audio`` files no protocol row lists."""

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

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise CorpusError(
                f"{self.name}: unknown split {split!r} (available: {', '.join(self.splits)})"
            )

    def load(self, split: str) -> list[Utterance]:
        """The rows of ``split`` whose audio file exists (see ``missing_audio``).

        Raises :class:`CorpusError` when an utterance id or audio file is listed twice among
        the rows the split is drawn from (both lines named), and when rows have no audio file
        unless ``missing_audio="skip"``, which drops them with a warning. Fills
        ``self.report[split]``.
        """
        self._check_split(split)
        what = f"{self.name}/{split}"
        parsed = self._rows(split)
        check_unique_ids(parsed, what)
        present = self._audio_files(split)
        unlisted = 0
        if present is not None:
            listed = {os.path.normpath(row.path) for row in parsed}
            unlisted = sum(1 for path in present if os.path.normpath(path) not in listed)
        rows = self._select(split, parsed)
        missing = [row for row in rows if not Path(row.path).is_file()]
        missing_paths = [row.path for row in missing]
        if missing and self.missing_audio == "error":
            raise CorpusError(
                f"{what}: {len(missing)} of {len(rows)} protocol rows have no audio "
                f"file: {name_some(missing_paths)}. Fix the corpus root, or set "
                "`missing_audio: skip` on the corpus to drop (and count) these rows."
            )
        if missing:
            log.warning(
                "%s: dropping %d of %d protocol rows that have no audio file "
                "(missing_audio: skip): %s",
                what,
                len(missing),
                len(rows),
                name_some(missing_paths),
            )
        missing_ids = {id(r) for r in missing}
        kept = [row for row in rows if id(row) not in missing_ids]
        self.report[split] = {
            "rows": len(rows),
            "missing_audio": len(missing),
            "missing_examples": missing_paths[:MAX_NAMED],
            "unlisted_audio": unlisted,
        }
        return kept

    def source_files(self, split: str) -> list[Path]:
        """The files and folders whose modification times key a cached manifest of ``split``.

        The protocol / metadata files the rows are parsed from, and the folders whose listing
        decides which rows there are (corpora listed by folder) or which of them have audio
        (``missing_audio``, unlisted files). A folder's mtime changes when an entry is added,
        removed or renamed in it. Protocol files must exist (:class:`CorpusError` as in
        :meth:`load`); folders are returned whether or not they exist. This default is the
        corpus root.
        """
        self._check_split(split)
        return [self.root]

    def metric_mask(self, split: str, rows: Sequence[Utterance]) -> list[bool] | None:
        """Which of ``rows`` (of ``split``, as loaded and possibly filtered since) the metrics
        are computed on; None: every row counts. Every row is still scored and written to the
        score files. This default is None; ASVspoof 2021 keeps its ``metric_subsets``."""
        return None

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
