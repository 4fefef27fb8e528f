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

SUBSET is ``progress`` / ``eval`` / ``hidden_track`` (the challenge phases). Two settings use it:

- ``subsets``: the trials loaded, i.e. scored and written to the score files. Default None:
  every trial of the keys. The official evaluation package (``eval-package/main.py`` of
  asvspoof-challenge/2021) joins the score file with the whole keys file and stops unless every
  trial has a score, then selects the phase itself, so the ``.asvspoof2021.txt`` score file must
  cover every trial; restricting ``subsets`` makes it unusable there (a warning says so).
- ``metric_subsets``: the trials the metrics (EER, t-DCF, breakdowns) are computed on, exposed
  through :meth:`ASVspoof2021.metric_mask`. Default ``[eval]``, the phase the official results
  are reported on; None: every loaded trial. Must lie within ``subsets`` when that is set.

Codec, transmission / source, vocoder, trim and subset go into ``extra`` for breakdowns.

t-DCF (LA only; DF has no ASV trials): the LA keys package also holds the organisers' ASV
trials and scores, next to ``CM/``::

    keys/LA/ASV/trial_metadata.txt               ASV keys, 8 fields like the CM keys:
                                                 ``CLAIMED_SPEAKER TRIAL CODEC TRANSMISSION
                                                 ATTACK KEY TRIM SUBSET``, KEY target /
                                                 nontarget / spoof, e.g. ``LA_0007-alaw-ita_tx
                                                 LA_E_5013670-alaw-ita_tx alaw ita_tx bonafide
                                                 nontarget notrim eval``
    keys/LA/ASV/ASVTorch_Kaldi/score.txt         ASV scores, ``CLAIMED_SPEAKER TRIAL SCORE``,
                                                 line i scoring line i of the ASV keys

(the official evaluation package, ``eval-package/config.py`` and ``main.py`` of
asvspoof-challenge/2021, pairs the two files line by line and selects the ASV trials by the same
SUBSET as the CM trials). :meth:`ASVspoof2021.asv_scores` returns them for the revised (2021)
t-DCF, restricted to the metric subsets (``metric_subsets``, or ``subsets`` when that is None);
without those files there is no t-DCF (None, no error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    name_some,
    read_lines,
    read_protocol,
    require_dir,
    require_file,
)
from deepfake_detect.data.manifest import BONAFIDE, CorpusError, Utterance

log = logging.getLogger(__name__)

COLUMNS = {
    "LA": ("speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset"),
    "DF": ("speaker", "trial", "codec", "source", "attack", "key", "trim", "subset", "vocoder"),
}
EXTRA_COLUMNS = {
    "LA": ("codec", "transmission", "trim", "subset"),
    "DF": ("codec", "source", "vocoder", "trim", "subset"),
}
ASV_COLUMNS = ("speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset")
ASV_KEYS = ("target", "nontarget", "spoof")
ASV_SCORE_FILES = ("ASVTorch_Kaldi/score.txt", "ASVtorch_kaldi/score.txt")
"""The organisers' ASV scores under ``keys/LA/ASV/`` (the folder is spelt both ways: the
evaluation package's config and the keys README)."""


class ASVspoof2021(Corpus):
    splits = ("eval",)

    def __init__(
        self,
        root: str | Path,
        track: str = "LA",
        subsets: Sequence[str] | None = None,
        metric_subsets: Sequence[str] | None = ("eval",),
        keys_file: str | Path | None = None,
        missing_audio: str = "error",
        asv_keys_file: str | Path | None = None,
        asv_scores_file: str | Path | None = None,
    ) -> None:
        super().__init__(root, missing_audio)
        if track not in COLUMNS:
            raise ValueError(f"track must be 'LA' or 'DF', got {track!r}")
        self.track = track
        self.name = f"asvspoof2021_{track.lower()}"
        self.subsets = None if subsets is None else [str(s) for s in subsets]
        self.metric_subsets = None if metric_subsets is None else [str(s) for s in metric_subsets]
        if self.subsets is not None and self.metric_subsets is not None:
            outside = [s for s in self.metric_subsets if s not in self.subsets]
            if outside:
                raise ValueError(
                    f"{self.name}: metric_subsets {name_some(outside)} not among the loaded "
                    f"subsets {', '.join(self.subsets)}; set metric_subsets to some of them, or "
                    "null (every loaded trial), or subsets to null (every trial)"
                )
        self.keys_file = None if keys_file is None else Path(keys_file).expanduser()
        self.asv_keys_file = None if asv_keys_file is None else Path(asv_keys_file).expanduser()
        self.asv_scores_file = (
            None if asv_scores_file is None else Path(asv_scores_file).expanduser()
        )

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
        for record, label, origin in read_protocol(
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
                    origin=origin,
                )
            )
        return rows

    def source_files(self, split: str) -> list[Path]:
        """The keys, the root (where the DF part folders are found) and the audio folders."""
        self._check_split(split)
        return [self.key_file(), self.root, *self.audio_dirs()]

    @property
    def scored_subsets(self) -> list[str] | None:
        """The SUBSET values the metrics and the ASV scores use; None: every one."""
        return self.metric_subsets if self.metric_subsets is not None else self.subsets

    def _select(self, split: str, rows: list[Utterance]) -> list[Utterance]:
        present = sorted({row.extra["subset"] for row in rows})
        for setting in ("subsets", "metric_subsets"):
            unknown = [s for s in getattr(self, setting) or () if s not in present]
            if unknown:
                raise CorpusError(
                    f"{self.name}: subset(s) {name_some(unknown)} not in the keys "
                    f"{self.key_file()} (present: {', '.join(present)}); check the corpus "
                    f"`{setting}` setting"
                )
        if self.subsets is None:
            return rows
        log.warning(
            "%s: `subsets: [%s]` loads only those trials, so the ASVspoof 2021 score file will "
            "not cover every trial of the keys, which the official evaluation package requires "
            "(set subsets: null and pick the metric trials with metric_subsets)",
            self.name,
            ", ".join(self.subsets),
        )
        wanted = set(self.subsets)
        return [row for row in rows if row.extra["subset"] in wanted]

    def metric_mask(self, split: str, rows: Sequence[Utterance]) -> list[bool] | None:
        """True for the rows whose SUBSET is one of ``metric_subsets``; None when that is None
        (every loaded row counts)."""
        self._check_split(split)
        wanted = self.metric_subsets
        if wanted is None:
            return None
        unmarked = [row.utt_id for row in rows if "subset" not in row.extra]
        if unmarked:
            raise CorpusError(
                f"{self.name}: rows without a subset column: {name_some(unmarked)} (metric_mask "
                "needs the rows this corpus loaded)"
            )
        return [row.extra["subset"] in wanted for row in rows]

    def asv_files(self) -> tuple[Path, Path] | None:
        """``(ASV keys, ASV scores)`` of the LA keys package, or None when either is absent.

        Unless set (``asv_keys_file`` / ``asv_scores_file``), both are looked for in ``ASV/``
        beside the ``CM/`` folder of the CM keys (``keys/LA/ASV/``).
        """
        if self.track != "LA":
            return None
        asv_dir = self.key_file().parent.parent / "ASV"
        keys = self.asv_keys_file or asv_dir / "trial_metadata.txt"
        if self.asv_scores_file is not None:
            scores = self.asv_scores_file
        else:
            found = [asv_dir / name for name in ASV_SCORE_FILES if (asv_dir / name).is_file()]
            scores = found[0] if found else asv_dir / ASV_SCORE_FILES[0]
        if not (keys.is_file() and scores.is_file()):
            log.info("%s: no ASV keys and scores (%s, %s): no t-DCF", self.name, keys, scores)
            return None
        return keys, scores

    def asv_scores(self, split: str) -> dict[str, Any] | None:
        """The organisers' ASV target / nontarget / spoof scores for the revised (2021) t-DCF,
        restricted to the metric subsets (:attr:`scored_subsets`) by the SUBSET column of the
        ASV keys; None without them."""
        files = self.asv_files() if split in self.splits else None
        if files is None:
            return None
        keys_path, scores_path = files
        labels = {key: key for key in ASV_KEYS}
        trials = [
            (record, key)
            for record, key, _ in read_protocol(
                keys_path, ASV_COLUMNS, "key", labels, at_least=True
            )
        ]
        lines = read_lines(scores_path)
        if len(lines) != len(trials):
            raise CorpusError(
                f"{self.name}: {scores_path} has {len(lines)} ASV scores but {keys_path} has "
                f"{len(trials)} ASV trials (the two files pair line by line)"
            )
        wanted = None if self.scored_subsets is None else set(self.scored_subsets)
        present = {record["subset"] for record, _ in trials}
        if wanted is not None and not wanted <= present:
            log.warning(
                "%s: subset(s) %s not in the ASV keys %s (present: %s): no t-DCF",
                self.name,
                name_some(sorted(wanted - present)),
                keys_path,
                ", ".join(sorted(present)),
            )
            return None
        scores: dict[str, list[float]] = {key: [] for key in ASV_KEYS}
        pairs = zip(trials, lines, strict=True)
        for n, ((record, key), (lineno, fields)) in enumerate(pairs, start=1):
            where = f"{scores_path}:{lineno}"
            if len(fields) != 3:
                raise CorpusError(
                    f"{where}: expected 3 columns 'SPEAKER TRIAL SCORE', got {' '.join(fields)!r}"
                )
            if fields[:2] != [record["speaker"], record["trial"]]:
                raise CorpusError(
                    f"{where}: scores {' '.join(fields[:2])!r} but ASV trial {n} of {keys_path} "
                    f"is {record['speaker']} {record['trial']} (the files pair line by line)"
                )
            try:
                score = float(fields[2])
            except ValueError:
                raise CorpusError(f"{where}: score {fields[2]!r} is not a number") from None
            if not np.isfinite(score):
                raise CorpusError(f"{where}: score {fields[2]!r} is not finite")
            if wanted is None or record["subset"] in wanted:
                scores[key].append(score)
        return {
            **{key: np.asarray(values, dtype=np.float64) for key, values in scores.items()},
            "tdcf": "2021",
        }
