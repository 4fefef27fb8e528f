"""ASVspoof 2021 LA / DF evaluation data with the full keys (only an ``eval`` split exists).

Layout under ``root`` (the folder the archives were unpacked into)::

    keys/{LA,DF}/CM/trial_metadata.txt            (LA-keys-full.tar.gz / DF-keys-full.tar.gz;
                                                   {LA,DF}-keys-full/keys/... is found too)
    ASVspoof2021_LA_eval/flac/LA_E_*.flac
    ASVspoof2021_DF_eval/flac/DF_E_*.flac         (the four DF parts unpacked into one folder)
    ASVspoof2021_DF_eval_part0{0..3}/ASVspoof2021_DF_eval/flac/DF_E_*.flac  (or one per part)

Key rows (``trial_metadata.txt``, space-separated):

- LA, 8 fields: ``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``,
  e.g. ``LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval``
- DF, 13 fields: ``SPEAKER TRIAL CODEC SOURCE ATTACK KEY TRIM SUBSET VOCODER - - - -``,
  e.g. ``LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder
  - - - -``; SOURCE is asvspoof / vcc2018 / vcc2020 and VCC attacks are not ``Axx``
  (``Task1-team20``).

SUBSET is ``progress`` / ``eval`` / a hidden subset; ``subsets`` selects which trials to keep
(default ``[eval]``, the subset the official results are reported on; None keeps all). Codec,
transmission / source, vocoder, trim and subset go into ``extra`` for breakdowns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    name_some,
    read_protocol,
    require_dir,
    require_file,
)
from deepfake_detect.data.manifest import BONAFIDE, CorpusError, Utterance

COLUMNS = {
    "LA": ("speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset"),
    "DF": ("speaker", "trial", "codec", "source", "attack", "key", "trim", "subset", "vocoder"),
}
EXTRA_COLUMNS = {
    "LA": ("codec", "transmission", "trim", "subset"),
    "DF": ("codec", "source", "vocoder", "trim", "subset"),
}


class ASVspoof2021(Corpus):
    splits = ("eval",)

    def __init__(
        self,
        root: str | Path,
        track: str = "LA",
        subsets: Sequence[str] | None = ("eval",),
        keys_file: str | Path | None = None,
        missing_audio: str = "error",
    ) -> None:
        super().__init__(root, missing_audio)
        if track not in COLUMNS:
            raise ValueError(f"track must be 'LA' or 'DF', got {track!r}")
        self.track = track
        self.name = f"asvspoof2021_{track.lower()}"
        self.subsets = None if subsets is None else [str(s) for s in subsets]
        self.keys_file = None if keys_file is None else Path(keys_file).expanduser()

    def key_file(self) -> Path:
        root = require_dir(self.root, f"ASVspoof2021 {self.track} root")
        if self.keys_file is not None:
            return require_file(self.keys_file, f"{self.name} keys (`keys_file`)")
        relative = Path("keys") / self.track / "CM" / "trial_metadata.txt"
        candidates = [root / relative, root / f"{self.track}-keys-full" / relative]
        for path in candidates:
            if path.is_file():
                return path
        raise CorpusError(
            f"{self.name} keys not found: looked for {' and '.join(map(str, candidates))}. "
            f"Unpack {self.track}-keys-full.tar.gz into the corpus `root`, or set `keys_file`."
        )

    def audio_dirs(self) -> list[Path]:
        base = f"ASVspoof2021_{self.track}_eval"
        dirs = [self.root / base / "flac"]
        dirs += sorted(self.root.glob(f"{base}_part*/{base}/flac"))
        return [d for d in dirs if d.is_dir()]

    @cached_property
    def _audio_index(self) -> dict[str, Path]:
        """Trial id -> flac file, over every audio folder (the DF parts may be separate)."""
        dirs = self.audio_dirs()
        if not dirs:
            base = f"ASVspoof2021_{self.track}_eval"
            raise CorpusError(
                f"{self.name}: no audio folder under {self.root}: expected {base}/flac"
                + (f" or {base}_partNN/{base}/flac" if self.track == "DF" else "")
                + " (check the corpus `root` setting)"
            )
        return {path.stem: path for d in dirs for path in list_audio(d, (".flac",))}

    def _audio_files(self, split: str) -> Iterable[Path]:
        return self._audio_index.values()

    def _rows(self, split: str) -> list[Utterance]:
        keys = self.key_file()
        columns = COLUMNS[self.track]
        index = self._audio_index
        fallback_dir = self.audio_dirs()[0]
        rows = []
        for record, label in read_protocol(
            keys, columns, "key", at_least=True, qualifier=f" for {self.track}"
        ):
            trial = record["trial"]
            path = index.get(trial, fallback_dir / f"{trial}.flac")
            rows.append(
                Utterance(
                    utt_id=trial,
                    path=str(path),
                    label=label,
                    attack="-" if label == BONAFIDE else record["attack"],
                    speaker=record["speaker"],
                    split=split,
                    extra={k: record[k] for k in EXTRA_COLUMNS[self.track]},
                )
            )
        return rows

    def _select(self, split: str, rows: list[Utterance]) -> list[Utterance]:
        if self.subsets is None:
            return rows
        present = sorted({row.extra["subset"] for row in rows})
        unknown = [s for s in self.subsets if s not in present]
        if unknown:
            raise CorpusError(
                f"{self.name}: subset(s) {name_some(unknown)} not in the keys "
                f"(present: {', '.join(present)}); check the corpus `subsets` setting"
            )
        wanted = set(self.subsets)
        return [row for row in rows if row.extra["subset"] in wanted]
