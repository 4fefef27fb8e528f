"""Fake-or-Real (FoR, Reimao & Tzerpos 2019): ``{training,validation,testing}/{real,fake}``.

The archives unpack to ``for-norm/``, ``for-2seconds/`` (for-2sec.tar.gz), ``for-rerecorded/``
(for-rerec.tar.gz) and ``for-original/``; ``variant`` picks one (``norm``, ``2sec``, ``rerec``,
``original``). ``root`` may be that version folder itself, the folder holding it, or one more
level up (``for-2sec/for-2seconds/``). Splits ``train`` / ``dev`` / ``eval`` are the
``training`` / ``validation`` / ``testing`` folders; the folder listing is the protocol, so there
are no unlisted files. FoR records neither speakers nor generators: both are ``-``.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_detect.data.corpora.base import Corpus, list_audio, require_dir
from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance

VARIANT_FOLDERS = {
    "norm": ("for-norm",),
    "2sec": ("for-2seconds", "for-2sec"),
    "rerec": ("for-rerecorded", "for-rerec"),
    "original": ("for-original",),
}
SPLIT_FOLDER = {"train": "training", "dev": "validation", "eval": "testing"}
LABEL_FOLDER = {"real": BONAFIDE, "fake": SPOOF}


class FakeOrReal(Corpus):
    splits = ("train", "dev", "eval")

    def __init__(
        self, root: str | Path, variant: str = "norm", missing_audio: str = "error"
    ) -> None:
        super().__init__(root, missing_audio)
        if variant not in VARIANT_FOLDERS:
            raise ValueError(
                f"variant must be one of {', '.join(VARIANT_FOLDERS)}, got {variant!r}"
            )
        self.variant = variant
        self.name = f"fake_or_real_{variant}"

    @property
    def version_dir(self) -> Path:
        root = require_dir(self.root, "Fake-or-Real root")
        names = VARIANT_FOLDERS[self.variant]
        candidates = [
            root,
            *(root / n for n in names),
            *(root / a / b for a in names for b in names),
        ]
        for folder in candidates:
            if any((folder / name).is_dir() for name in SPLIT_FOLDER.values()):
                return folder
        raise CorpusError(
            f"{self.name}: no {'/'.join(SPLIT_FOLDER.values())} folders in {root} or in its "
            f"{' / '.join(names)} subfolder (check the corpus `root` and `variant` settings)"
        )

    def _label_dirs(self, split: str) -> dict[str, Path]:
        """``{label: folder}`` of ``split`` (the folders are its protocol)."""
        split_dir = self.version_dir / SPLIT_FOLDER[split]
        return {
            label: require_dir(split_dir / folder, f"{self.name} {split} {folder}/ folder")
            for folder, label in LABEL_FOLDER.items()
        }

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        return list(self._label_dirs(split).values())

    def _rows(self, split: str) -> list[Utterance]:
        rows = []
        for label, label_dir in self._label_dirs(split).items():
            rows += [
                Utterance(
                    utt_id=f"{SPLIT_FOLDER[split]}/{label_dir.name}/{path.stem}",
                    path=str(path),
                    label=label,
                    split=split,
                    origin=str(path),
                )
                for path in list_audio(label_dir)
            ]
        return rows
