"""In-the-Wild (Müller et al. 2022): ``release_in_the_wild/{meta.csv, <n>.wav}``.

``meta.csv`` has the header ``file,speaker,label`` with labels ``bona-fide`` / ``spoof``; the
speaker is the (real) person's name. ``root`` may be the folder holding ``release_in_the_wild/``
or that folder itself. The corpus has no official split: ``split`` configures a seeded,
speaker-disjoint one (:mod:`deepfake_detect.data.splits`), and ``all`` returns every file. The
generator of a spoof is not recorded, so every attack is ``-``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    open_text,
    require_dir,
    require_file,
)
from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance
from deepfake_detect.data.splits import SpeakerSplit

FOLDER = "release_in_the_wild"
LABEL_MAP = {"bona-fide": BONAFIDE, "spoof": SPOOF}
HEADER = ("file", "speaker", "label")


class InTheWild(Corpus):
    name = "in_the_wild"

    def __init__(
        self,
        root: str | Path,
        split: Mapping[str, Any] | None = None,
        missing_audio: str = "error",
    ) -> None:
        super().__init__(root, missing_audio)
        self.speaker_split = SpeakerSplit.from_config(split)
        self.splits = self.speaker_split.names

    @property
    def folder(self) -> Path:
        root = require_dir(self.root, "In-the-Wild root")
        return root / FOLDER if (root / FOLDER).is_dir() else root

    def _audio_files(self, split: str) -> Iterable[Path]:
        return list_audio(self.folder, (".wav",))

    def _meta(self) -> Path:
        return require_file(
            self.folder / "meta.csv",
            f"{self.name} metadata",
            f"`root` must hold {FOLDER}/ or be {FOLDER}/ itself: {self.root}",
        )

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        return [self._meta(), self.folder]

    def _rows(self, split: str) -> list[Utterance]:
        folder = self.folder
        meta = self._meta()
        rows = []
        with open_text(meta) as f:
            reader = csv.reader(f)
            header = tuple(h.strip() for h in next(reader, []))
            if header[:3] != HEADER:
                raise CorpusError(
                    f"{meta}:1: expected the header 'file,speaker,label', got {','.join(header)!r}"
                )
            for record in reader:
                lineno = reader.line_num
                if not record:
                    continue
                if len(record) < 3:
                    raise CorpusError(f"{meta}:{lineno}: expected 3 fields, got {record!r}")
                file, speaker, raw_label = (v.strip() for v in record[:3])
                label = LABEL_MAP.get(raw_label)
                if label is None:
                    raise CorpusError(
                        f"{meta}:{lineno}: unknown label {raw_label!r} "
                        "(expected bona-fide or spoof)"
                    )
                rows.append(
                    Utterance(
                        utt_id=Path(file).stem,
                        path=str(folder / file),
                        label=label,
                        speaker=speaker or "-",
                        origin=f"{meta}:{lineno}",
                    )
                )
        return rows
