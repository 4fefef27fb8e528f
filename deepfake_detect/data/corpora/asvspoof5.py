"""ASVspoof 5, track 1 (stand-alone countermeasure).

Layout under ``root`` (the folder the archives were unpacked into)::

    ASVspoof5.train.tsv, ASVspoof5.dev.track_1.tsv, ASVspoof5.eval.track_1.tsv
                                (from ASVspoof5_protocols.tar.gz; an ASVspoof5_protocols/
                                 folder holding them is found too)
    flac_T/T_*.flac  flac_D/D_*.flac  flac_E_eval/E_*.flac

The ``.tsv`` files are space-separated, 10 fields: ``SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER
CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP``; ATTACK_LABEL is ``A01``...
or ``bonafide``, KEY ``bonafide`` / ``spoof``. flac_D and flac_E_eval also hold the track 2
enrolment files, which count as unlisted audio. Gender, codec, codec quality, codec seed (the
uncoded original) and attack tag (attacker adaptation condition) go into ``extra``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    read_protocol,
    require_dir,
)
from deepfake_detect.data.manifest import BONAFIDE, CorpusError, Utterance

PROTOCOL = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
AUDIO_DIR = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
COLUMNS = (
    "speaker",
    "file",
    "gender",
    "codec",
    "codec_q",
    "codec_seed",
    "attack_tag",
    "attack_label",
    "key",
    "tmp",
)
EXTRA_COLUMNS = ("gender", "codec", "codec_q", "codec_seed", "attack_tag")


class ASVspoof5(Corpus):
    name = "asvspoof5"
    splits = ("train", "dev", "eval")

    def __init__(self, root: str | Path, missing_audio: str = "error") -> None:
        super().__init__(root, missing_audio)

    def protocol_file(self, split: str) -> Path:
        root = require_dir(self.root, "ASVspoof5 root")
        candidates = [root / PROTOCOL[split], root / "ASVspoof5_protocols" / PROTOCOL[split]]
        for path in candidates:
            if path.is_file():
                return path
        raise CorpusError(
            f"{self.name} {split} protocol not found: looked for "
            f"{' and '.join(map(str, candidates))}. Unpack ASVspoof5_protocols.tar.gz into the "
            "corpus `root`."
        )

    def audio_dir(self, split: str) -> Path:
        return self.root / AUDIO_DIR[split]

    def _audio_files(self, split: str) -> Iterable[Path]:
        return list_audio(self.audio_dir(split), (".flac",))

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        return [self.protocol_file(split), self.audio_dir(split)]

    def _rows(self, split: str) -> list[Utterance]:
        protocol = self.protocol_file(split)
        audio_dir = self.audio_dir(split)
        rows = []
        for record, key, origin in read_protocol(protocol, COLUMNS, "key"):
            rows.append(
                Utterance(
                    utt_id=record["file"],
                    path=str(audio_dir / f"{record['file']}.flac"),
                    label=key,
                    attack="-" if key == BONAFIDE else record["attack_label"],
                    speaker=record["speaker"],
                    split=split,
                    extra={k: record[k] for k in EXTRA_COLUMNS},
                    origin=origin,
                )
            )
        return rows
