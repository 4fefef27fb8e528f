"""ASVspoof 2019 LA / PA: ``<root>/{LA,PA}/ASVspoof2019_{track}_cm_protocols/*.txt``.

Protocol rows are ``SPEAKER FILE ENV ATTACK KEY``; ENV is ``-`` for LA and the acoustic
environment id for PA; ATTACK is ``-`` for bona fide. Audio is
``ASVspoof2019_{track}_{split}/flac/FILE.flac``; the dev/eval folders also hold the ASV
enrolment files, which the CM protocols do not list (they count as unlisted audio).

PA ids are letter codes (README.PA): the environment ``aaa`` is (room size, T60, talker-to-ASV
distance), the attack ``AA`` (attacker-to-talker distance, replay device quality), each from
a (small / short / close / perfect) to c or C. Both are split into ``extra`` columns.
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
from deepfake_detect.data.manifest import Utterance

PROTOCOL_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
COLUMNS = ("speaker", "file", "env", "attack", "key")
PA_ENVIRONMENT_FACTORS = ("room_size", "t60", "talker_asv_distance")
PA_ATTACK_FACTORS = ("attacker_talker_distance", "replay_quality")


def _pa_factors(code: str, names: tuple[str, ...]) -> dict[str, str]:
    if code == "-" or len(code) != len(names):
        return {}
    return dict(zip(names, code, strict=True))


class ASVspoof2019(Corpus):
    splits = ("train", "dev", "eval")

    def __init__(self, root: str | Path, track: str = "LA", missing_audio: str = "error") -> None:
        super().__init__(root, missing_audio)
        if track not in ("LA", "PA"):
            raise ValueError(f"track must be 'LA' or 'PA', got {track!r}")
        self.track = track
        self.name = f"asvspoof2019_{track.lower()}"

    @property
    def track_dir(self) -> Path:
        root = require_dir(self.root, f"ASVspoof2019 {self.track} root")
        # Accept both the folder that holds LA/ (as unpacked) and LA/ itself.
        return root / self.track if (root / self.track).is_dir() else root

    def protocol_file(self, split: str) -> Path:
        name = f"ASVspoof2019.{self.track}.cm.{PROTOCOL_SUFFIX[split]}.txt"
        return self.track_dir / f"ASVspoof2019_{self.track}_cm_protocols" / name

    def audio_dir(self, split: str) -> Path:
        return self.track_dir / f"ASVspoof2019_{self.track}_{split}" / "flac"

    def asv_score_file(self, split: str) -> Path | None:
        if split == "train":
            return None
        path = (
            self.track_dir
            / f"ASVspoof2019_{self.track}_asv_scores"
            / f"ASVspoof2019.{self.track}.asv.{split}.gi.trl.scores.txt"
        )
        return path if path.is_file() else None

    def _audio_files(self, split: str) -> Iterable[Path]:
        return list_audio(self.audio_dir(split), (".flac",))

    def _protocol(self, split: str) -> Path:
        return require_file(
            self.protocol_file(split),
            f"{self.name} {split} protocol",
            f"`root` must hold {self.track}/ or be {self.track}/ itself: {self.root}",
        )

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        return [self._protocol(split), self.audio_dir(split)]

    def _rows(self, split: str) -> list[Utterance]:
        protocol = self._protocol(split)
        audio_dir = self.audio_dir(split)
        rows = []
        for record, key, origin in read_protocol(protocol, COLUMNS, "key"):
            speaker, file_id, env, attack = (record[c] for c in COLUMNS[:4])
            extra = {}
            if env != "-":
                extra = {"environment": env, **_pa_factors(env, PA_ENVIRONMENT_FACTORS)}
                extra.update(_pa_factors(attack, PA_ATTACK_FACTORS))
            rows.append(
                Utterance(
                    utt_id=file_id,
                    path=str(audio_dir / f"{file_id}.flac"),
                    label=key,
                    attack=attack,
                    speaker=speaker,
                    split=split,
                    extra=extra,
                    origin=origin,
                )
            )
        return rows
