"""ASVspoof 2017 V2 (replay): ``protocol_V2/ASVspoof2017_V2_{train.trn,dev.trl,eval.trl}.txt``.

Protocol rows are ``FILE LABEL SPEAKER PHRASE ENVIRONMENT PLAYBACK RECORDING``, e.g.
``T_1000001.wav genuine M0005 S01 - - -``; labels are ``genuine`` / ``spoof`` and the three
replay-configuration ids (``E01``, ``P01``, ``R01``...) are ``-`` for genuine speech. Audio is
``ASVspoof2017_V2_{split}/FILE`` (an unzip into a same-named folder, which nests it one level
deeper, is accepted too).

The attack is the replay configuration ``ENV-PLAYBACK-RECORDING`` (``E02-P01-R03``); the raw
columns go into ``extra``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    read_protocol,
    require_dir,
    require_file,
)
from deepfake_detect.data.manifest import BONAFIDE, SPOOF, Utterance

PROTOCOL_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
LABEL_MAP = {"genuine": BONAFIDE, "spoof": SPOOF}
COLUMNS = (
    "file",
    "label",
    "speaker",
    "phrase",
    "environment",
    "playback_device",
    "recording_device",
)


class ASVspoof2017(Corpus):
    name = "asvspoof2017"
    splits = ("train", "dev", "eval")

    def __init__(self, root: str | Path, missing_audio: str = "error") -> None:
        super().__init__(root, missing_audio)

    def protocol_file(self, split: str) -> Path:
        root = require_dir(self.root, "ASVspoof2017 V2 root")
        return root / "protocol_V2" / f"ASVspoof2017_V2_{PROTOCOL_SUFFIX[split]}.txt"

    def audio_dir(self, split: str) -> Path:
        folder = self.root / f"ASVspoof2017_V2_{split}"
        nested = folder / folder.name
        return nested if nested.is_dir() else folder

    def _audio_files(self, split: str) -> Iterable[Path]:
        return list_audio(self.audio_dir(split), (".wav",))

    def _protocol(self, split: str) -> Path:
        return require_file(
            self.protocol_file(split),
            f"{self.name} {split} protocol",
            f"`root` must be the folder holding protocol_V2/: {self.root}",
        )

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        return [self._protocol(split), self.audio_dir(split)]

    def _rows(self, split: str) -> list[Utterance]:
        protocol = self._protocol(split)
        audio_dir = self.audio_dir(split)
        rows = []
        for record, label, origin in read_protocol(protocol, COLUMNS, "label", LABEL_MAP):
            replay = (record["environment"], record["playback_device"], record["recording_device"])
            rows.append(
                Utterance(
                    utt_id=Path(record["file"]).stem,
                    path=str(audio_dir / record["file"]),
                    label=label,
                    attack="-" if label == BONAFIDE else "-".join(replay),
                    speaker=record["speaker"],
                    split=split,
                    extra={k: record[k] for k in COLUMNS[3:]},
                    origin=origin,
                )
            )
        return rows
