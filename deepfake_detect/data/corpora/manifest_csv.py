"""Own data: a CSV / TSV manifest with one row per audio file.

``root`` is the manifest file, or a folder holding ``manifest.csv`` / ``manifest.tsv``. The
delimiter follows the extension (``.tsv`` / ``.tab``: tab, anything else: comma). Columns:

- ``path`` (required): the audio file, relative to the manifest's folder or absolute;
- ``label`` (required, case-insensitive): ``bonafide`` / ``bona-fide`` / ``bona_fide`` /
  ``genuine`` / ``real`` mean bona fide, ``spoof`` / ``fake`` mean spoof;
- ``attack``, ``speaker``, ``utt_id`` (optional; ``utt_id`` defaults to the path without its
  extension);
- ``split`` (optional): when present its values are the corpus's splits (plus ``all``), and every
  row needs one; when absent, ``split`` configures a seeded speaker-disjoint split;
- any other column goes into ``extra``.

Audio files under the manifest's folder that no row lists are counted as unlisted audio
(``count_unlisted: false`` skips that scan when the folder holds more than this corpus).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from deepfake_detect.data.corpora.base import Corpus, list_audio, open_text
from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance
from deepfake_detect.data.splits import ALL, SpeakerSplit

LABEL_MAP = {
    **dict.fromkeys(("bonafide", "bona-fide", "bona_fide", "genuine", "real"), BONAFIDE),
    **dict.fromkeys(("spoof", "fake"), SPOOF),
}
BASE_COLUMNS = ("path", "label", "attack", "speaker", "split", "utt_id")
DEFAULT_NAMES = ("manifest.csv", "manifest.tsv")
SPLIT_ORDER = ("train", "dev", "val", "eval", "test")


class ManifestCSV(Corpus):
    def __init__(
        self,
        root: str | Path,
        name: str = "manifest",
        split: Mapping[str, Any] | None = None,
        count_unlisted: bool = True,
        missing_audio: str = "error",
    ) -> None:
        super().__init__(root, missing_audio)
        self.name = name
        self.split_config = split
        self.count_unlisted = count_unlisted

    @property
    def manifest_file(self) -> Path:
        if self.root.is_file():
            return self.root
        if self.root.is_dir():
            for name in DEFAULT_NAMES:
                if (self.root / name).is_file():
                    return self.root / name
            raise CorpusError(
                f"{self.name}: no {' or '.join(DEFAULT_NAMES)} in {self.root} "
                "(set the corpus `root` to the manifest file)"
            )
        raise CorpusError(
            f"{self.name} manifest not found: {self.root} (check the corpus `root` setting)"
        )

    @cached_property
    def _parsed(self) -> tuple[list[Utterance], bool]:
        """All rows of the manifest, and whether it has a split column."""
        manifest = self.manifest_file
        delimiter = "\t" if manifest.suffix.lower() in (".tsv", ".tab") else ","
        base_dir = manifest.parent
        rows = []
        with open_text(manifest) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise CorpusError(
                    f"{manifest}:1: missing column(s) {', '.join(missing)} "
                    f"(header: {', '.join(columns) or 'empty'}; delimiter {delimiter!r})"
                )
            reader.fieldnames = columns
            has_split = "split" in columns
            for record in reader:
                lineno = reader.line_num
                record = {k: (v or "").strip() for k, v in record.items() if k is not None}
                if not any(record.values()):
                    continue
                label = LABEL_MAP.get(record["label"].lower())
                if label is None:
                    raise CorpusError(
                        f"{manifest}:{lineno}: unknown label {record['label']!r} "
                        f"(expected one of {', '.join(LABEL_MAP)})"
                    )
                if not record["path"]:
                    raise CorpusError(f"{manifest}:{lineno}: empty path")
                if has_split and not record["split"]:
                    raise CorpusError(f"{manifest}:{lineno}: empty split")
                if has_split and record["split"] == ALL:
                    raise CorpusError(f"{manifest}:{lineno}: split {ALL!r} is reserved")
                path = Path(record["path"])
                rows.append(
                    Utterance(
                        utt_id=record.get("utt_id") or path.with_suffix("").as_posix(),
                        path=str(path if path.is_absolute() else base_dir / path),
                        label=label,
                        attack=record.get("attack") or "-",
                        speaker=record.get("speaker") or "-",
                        split=record.get("split") or "-",
                        extra={k: v for k, v in record.items() if k not in BASE_COLUMNS and v},
                        origin=f"{manifest}:{lineno}",
                    )
                )
        return rows, has_split

    @property
    def splits(self) -> tuple[str, ...]:
        rows, has_split = self._parsed
        if not has_split:
            if self.speaker_split is None:
                self.speaker_split = SpeakerSplit.from_config(self.split_config)
            return self.speaker_split.names
        found = {row.split for row in rows}
        ordered = [s for s in SPLIT_ORDER if s in found] + sorted(found - set(SPLIT_ORDER))
        return (*ordered, ALL)

    def source_files(self, split: str) -> list[Path]:
        """The manifest, and the folder of every file it lists."""
        self._check_split(split)
        folders = sorted({Path(row.path).parent for row in self._parsed[0]})
        return [self.manifest_file, *folders]

    def _audio_files(self, split: str) -> Iterable[Path] | None:
        if not self.count_unlisted:
            return None
        return list_audio(self.manifest_file.parent, recursive=True)

    def _rows(self, split: str) -> list[Utterance]:
        return self._parsed[0]

    def _select(self, split: str, rows: list[Utterance]) -> list[Utterance]:
        if self.speaker_split is not None:
            return self.speaker_split.select(rows, split)
        if split == ALL:
            return list(rows)
        return [row for row in rows if row.split == split]
