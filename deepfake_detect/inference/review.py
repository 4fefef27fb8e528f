"""The review folder: what ``detect`` (whole files) and ``stream`` (windows) decided ``spoof`` or
``uncertain``, saved for a person to listen to, label and train on.

Layout of a review folder::

    audio/00000001.wav   the file or window at the contract's rate (mono PCM_16 WAV)
    index.jsonl          one line per saved item, oldest first: id, audio, bytes, source, kind
                         (file / window), start, end (s), score, p_spoof, decision, model,
                         timestamp (UTC)
    manifest.csv         the own-data manifest (``manifest_csv`` adapter): path, label, attack,
                         speaker, utt_id, then the index's values as extra columns; ``label`` is
                         left empty for a person to fill in (bonafide / spoof)

The folder holds at most ``max_items`` items and ``max_bytes`` bytes of audio: the oldest items
are dropped first (audio, index line and manifest row together). Nothing here stops scoring: an
item larger than the whole bound is skipped, and a failed disk write (full disk, permissions) is
warned about once and counted, never raised; the index lists exactly the audio on disk (a write
that fails leaves no file behind; a run killed mid-write is tidied up by the next).

The manifest is the person's side: new items are appended to it; when it is rewritten (items
dropped), the label, attack and speaker filled in are kept, and a row a person deleted discards
its item (audio and index line), so that a labelled manifest never gets unlabelled rows back.
An existing folder is continued: its items count toward the bound, numbering goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from deepfake_detect.inference.blocks import resampled_blocks
from deepfake_detect.inference.calibration import SPOOF, UNCERTAIN

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
MANIFEST = "manifest.csv"
AUDIO_DIR = "audio"
REVIEW_DECISIONS = (SPOOF, UNCERTAIN)
"""What is saved for review."""
SUBTYPE = "PCM_16"
MANIFEST_COLUMNS = ("path", "label", "attack", "speaker", "utt_id")
PERSON_COLUMNS = ("label", "attack", "speaker")
"""Manifest columns a person fills in, kept when the manifest is rewritten."""
_AUDIO_NAME = re.compile(r"^(\d{8}\.wav|\.tmp-.*\.wav)$")


def _audio_path(item_id: str) -> str:
    return f"{AUDIO_DIR}/{item_id}.wav"


class ReviewError(ValueError):
    """A review folder that cannot be used (not creatable, not a folder)."""


@dataclass
class ReviewItem:
    """One saved clip: a line of the index."""

    id: str
    audio: str
    bytes: int
    source: str
    kind: str
    start: float
    end: float
    score: float
    p_spoof: float
    decision: str
    model: str
    timestamp: str

    def manifest_row(self) -> dict[str, Any]:
        extra = asdict(self)
        for key in ("id", "audio", "bytes"):
            del extra[key]
        person = dict.fromkeys(PERSON_COLUMNS, "")
        return {"path": self.audio, **person, "utt_id": self.id, **extra}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReviewItem:
        return cls(**{f.name: values[f.name] for f in fields(cls)})


EXTRA_COLUMNS = tuple(f.name for f in fields(ReviewItem) if f.name not in ("id", "audio", "bytes"))


@dataclass
class ReviewCounts:
    saved: int = 0
    dropped: int = 0
    too_large: int = 0
    discarded: int = 0
    """Deleted from the manifest by a person."""
    failed: int = 0


class ReviewFolder:
    """Saves clips decided ``spoof`` / ``uncertain`` under ``root`` within the size bound
    (``max_bytes`` of audio, ``max_items``; None: unbounded). ``model``: the checkpoint, recorded
    with every item. An existing folder is continued: its items count toward the bound."""

    def __init__(
        self,
        root: str | Path,
        sample_rate: int,
        model: str = "",
        max_bytes: int | None = None,
        max_items: int | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ReviewError(f"the review size bound must be positive, got {max_bytes} bytes")
        if max_items is not None and max_items <= 0:
            raise ReviewError(f"the review item bound must be positive, got {max_items}")
        self.root = Path(root).expanduser()
        self.audio_dir = self.root / AUDIO_DIR
        try:
            self.audio_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReviewError(f"review folder {self.root}: cannot create it ({exc})") from None
        self.sample_rate, self.model = sample_rate, model
        self.max_bytes, self.max_items = max_bytes, max_items
        self.counts = ReviewCounts()
        self._warned = False
        try:
            self.items: deque[ReviewItem] = deque(self._read_index())
            self.next_id = 1 + max((int(i.id) for i in self.items), default=0)
            self._manifest_stale = not self.manifest_path.is_file()
            # the items the manifest lists as this folder last wrote it: one of them missing
            # from it now was deleted by a person, and is discarded
            self._listed = set() if self._manifest_stale else {item.id for item in self.items}
            self._tidy()
        except OSError as exc:
            raise ReviewError(f"review folder {self.root}: cannot use it ({exc})") from None

    # -- state on disk --------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    def _read_index(self) -> list[ReviewItem]:
        """The index's items whose audio is still there (a line that does not parse, or names
        audio this folder would not have written, is dropped)."""
        if not self.index_path.is_file():
            return []
        items = []
        with self.index_path.open() as f:
            for line in f:
                try:
                    item = ReviewItem.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
                ours = re.fullmatch(r"\d{8}", str(item.id)) and item.audio == _audio_path(item.id)
                if ours and (self.root / item.audio).is_file():
                    items.append(item)
        return items

    def _tidy(self) -> None:
        """Bring a folder left by an earlier run in line: remove audio it wrote that its index
        does not list (a run killed mid-write), discard the items a person deleted from the
        manifest, drop the oldest items over the bound (tightened since); rewrite the index
        (lines of missing audio go) and, if items went, the manifest."""
        indexed = {Path(item.audio).name for item in self.items}
        for path in self.audio_dir.iterdir():
            if _AUDIO_NAME.match(path.name) and path.name not in indexed:
                path.unlink(missing_ok=True)
        rows = self._read_manifest()
        self._discard_deleted(rows)
        self._drop(self._victims(0))
        if self.index_path.is_file() or self.items:
            self._guard(self._write_index)
        if rows is not None and set(rows) != {item.audio for item in self.items}:
            try:
                self._write_manifest()
            except OSError as exc:
                self._manifest_stale = True
                self._warn(exc, "writing the manifest")

    def _warn(self, exc: BaseException, what: str) -> None:
        self.counts.failed += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "review folder %s: %s failed (%s); scoring goes on, items that cannot be "
                "written are counted and not saved (further failures are not shown)",
                self.root,
                what,
                exc,
            )

    def _guard(self, write: Any) -> bool:
        try:
            write()
        except OSError as exc:
            self._warn(exc, "writing the index")
            return False
        return True

    def _write_atomically(self, path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write_index(self) -> None:
        lines = "".join(json.dumps(asdict(item)) + "\n" for item in self.items)
        self._write_atomically(self.index_path, lines)

    def _read_manifest(self) -> dict[str, dict[str, str]] | None:
        """The manifest's rows as they are now, by path: what a person filled in (None: no
        manifest, or one that cannot be read)."""
        if not self.manifest_path.is_file():
            return None
        try:
            with self.manifest_path.open(newline="") as f:
                return {
                    row.get("path") or "": {c: row.get(c) or "" for c in PERSON_COLUMNS}
                    for row in csv.DictReader(f)
                }
        except (OSError, csv.Error, UnicodeDecodeError):
            return None

    def _discard_deleted(self, rows: dict[str, dict[str, str]] | None) -> bool:
        """Discard the items whose manifest row a person deleted; True if any were."""
        if rows is None:
            return False
        deleted = [i for i in self.items if i.id in self._listed and i.audio not in rows]
        self._drop(deleted, discarded=True)
        return bool(deleted)

    def _manifest_text(self, rows: Iterable[dict[str, Any]], header: bool) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, MANIFEST_COLUMNS + EXTRA_COLUMNS, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def _write_manifest(self) -> None:
        """Rewrite the manifest from the items, keeping what a person filled in; items whose
        row a person deleted are discarded first (and the index rewritten)."""
        kept = self._read_manifest()
        if self._discard_deleted(kept):
            self._write_index()
        kept = kept or {}
        rows = []
        for item in self.items:
            row = item.manifest_row()
            row.update({k: v for k, v in kept.get(item.audio, {}).items() if v})
            rows.append(row)
        self._write_atomically(self.manifest_path, self._manifest_text(rows, header=True))
        self._listed = {item.id for item in self.items}

    # -- the bound --------------------------------------------------------------------------------
    def _victims(self, size: int) -> list[ReviewItem]:
        """The oldest items to drop so that one more item of ``size`` bytes fits (``size`` 0:
        none more)."""
        more = 1 if size else 0
        count, total, victims = len(self.items), self.total_bytes, []
        for item in self.items:
            over_items = self.max_items is not None and count + more > self.max_items
            over_bytes = self.max_bytes is not None and total + size > self.max_bytes
            if not (over_items or over_bytes):
                break
            victims.append(item)
            count, total = count - 1, total - item.bytes
        return victims

    def _drop(self, victims: list[ReviewItem], discarded: bool = False) -> None:
        for item in victims:
            self.items.remove(item)
            try:
                (self.root / item.audio).unlink(missing_ok=True)
            except OSError as exc:
                self._warn(exc, f"removing {item.audio}")
            if discarded:
                self.counts.discarded += 1
            else:
                self.counts.dropped += 1

    # -- adding ---------------------------------------------------------------------------------
    @staticmethod
    def wants(decision: str | None) -> bool:
        return decision in REVIEW_DECISIONS

    def add_wave(self, wave: torch.Tensor, **meta: Any) -> ReviewItem | None:
        """Save a clip at the contract's rate (a stream's window). ``meta``: source, kind,
        start, end, score, p_spoof, decision."""

        def write(path: Path) -> None:
            samples = wave.detach().reshape(-1).cpu().float().numpy()
            sf.write(path, samples, self.sample_rate, subtype=SUBTYPE, format="WAV")

        return self._add(write, meta)

    def add_file(self, source: str | Path, **meta: Any) -> ReviewItem | None:
        """Save a whole file, decoded again in blocks, down-mixed and resampled to the
        contract's rate as ``detect`` read it (a long file never sits in memory)."""

        def write(path: Path) -> None:
            with (
                sf.SoundFile(str(source)) as f,
                sf.SoundFile(path, "w", self.sample_rate, 1, SUBTYPE, format="WAV") as out,
            ):
                for block in resampled_blocks(f, self.sample_rate):
                    out.write(block.numpy())

        return self._add(write, {"source": str(source), "kind": "file", **meta})

    def add_result(self, result: Any) -> ReviewItem | None:
        """Save a file ``detect`` scored (a :class:`~.detect.FileResult`) when it was decided
        spoof or uncertain."""
        if not result.scored or not self.wants(result.decision):
            return None
        return self.add_file(
            result.path,
            start=0.0,
            end=result.duration or 0.0,
            score=result.score,
            p_spoof=result.p_spoof,
            decision=result.decision,
        )

    def _add(self, write: Any, meta: dict[str, Any]) -> ReviewItem | None:
        item_id = f"{self.next_id:08d}"
        final = self.audio_dir / f"{item_id}.wav"
        tmp = self.audio_dir / f".tmp-{item_id}.wav"
        try:
            write(tmp)
            size = tmp.stat().st_size
        except Exception as exc:  # OSError, or soundfile's errors for a full disk
            tmp.unlink(missing_ok=True)
            self._warn(exc, f"writing {final.name}")
            return None
        if self.max_bytes is not None and size > self.max_bytes:
            tmp.unlink(missing_ok=True)
            self.counts.too_large += 1
            return None
        self.next_id += 1
        victims = self._victims(size)
        rewrite = bool(victims)
        if (victims or self._manifest_stale) and self._discard_deleted(self._read_manifest()):
            victims, rewrite = self._victims(size), True
        self._drop(victims)
        try:
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._warn(exc, f"writing {final.name}")
            if rewrite:
                self._guard(self._write_index)
            return None
        item = ReviewItem(
            id=item_id,
            audio=_audio_path(item_id),
            bytes=size,
            source=str(meta.get("source", "")),
            kind=str(meta.get("kind", "")),
            start=round(float(meta.get("start", 0.0)), 3),
            end=round(float(meta.get("end", 0.0)), 3),
            score=round(float(meta["score"]), 6),
            p_spoof=round(float(meta["p_spoof"]), 6),
            decision=str(meta["decision"]),
            model=self.model,
            timestamp=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )
        self.items.append(item)
        try:
            if rewrite or not self.index_path.is_file():
                self._write_index()
            else:
                with self.index_path.open("a") as f:
                    f.write(json.dumps(asdict(item)) + "\n")
        except OSError as exc:
            self.items.pop()
            final.unlink(missing_ok=True)
            self._warn(exc, "writing the index")
            return None
        self.counts.saved += 1
        try:
            if rewrite or self._manifest_stale or not self.manifest_path.is_file():
                self._write_manifest()
            else:
                with self.manifest_path.open("a", newline="") as f:
                    f.write(self._manifest_text([item.manifest_row()], header=False))
                self._listed.add(item.id)
            self._manifest_stale = False
        except OSError as exc:
            self._manifest_stale = True  # rewritten in full at the next item
            self._warn(exc, "writing the manifest")
        return item

    def lines(self) -> list[str]:
        """The summary: what was saved, dropped, skipped."""
        c = self.counts
        bound = []
        if self.max_items is not None:
            bound.append(f"{self.max_items} items")
        if self.max_bytes is not None:
            bound.append(f"{self.max_bytes / 1e6:g} MB")
        text = (
            f"review folder {self.root}: {c.saved} saved, {len(self.items)} held "
            f"({self.total_bytes / 1e6:.2f} MB of audio; bound: {', '.join(bound) or 'none'})"
        )
        if c.dropped:
            text += f", {c.dropped} oldest dropped"
        if c.discarded:
            text += f", {c.discarded} discarded (rows deleted from the manifest)"
        if c.too_large:
            text += f", {c.too_large} larger than the bound not saved"
        if c.failed:
            text += f", {c.failed} disk writes failed"
        return [text]
