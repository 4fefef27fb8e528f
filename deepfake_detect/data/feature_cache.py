"""The frozen-encoder feature cache: a frozen SSL encoder's hidden states per utterance, on disk.

With ``model.freeze=all`` the encoder is a fixed function of the waveform, and it is most of
the compute: ``data.feature_cache.enabled=true`` runs it once per training and validation
utterance and stores what the head reads (one hidden state, or all of them for a weighted layer
sum), then every epoch and every sweep trial that shares the encoder reads those frames instead.

Layout: ``<dir>/<key>/`` holds one key's entries; the key is a digest of the cache format
version, the encoder (a SHA-256 of its weights, its architecture), the states stored, the
preprocessing contract (sample rate, normalisation, trim, the evaluation read, the tiling
minimum) and the stored dtype, so any change of these makes a new directory and old entries are
never read. ``meta.json`` describes the key in words, ``last_used`` is touched by every run that
opens it (``deepfake-detect cache info`` / ``clear --older-than``). An entry is one file,
``<key>/<2 hex>/<utterance digest>.fc``, named after the audio file's absolute path, size and
modification time: a 64-byte header (magic, version, dtype, states, frames, hidden size, sample
count, silent flag) then the ``[states, frames, hidden]`` array, read memory-mapped.

What is stored: the contract's evaluation read of the whole utterance (resampled, trimmed as
configured, its first ``eval_max_len`` samples), tiled up to the scorer's minimum and normalised
over itself as the scorer does, through the encoder in eval mode. Training takes random
frame-aligned crops of it (:class:`CachedFeatureDataset`).

Writers write ``<entry>.tmp-<pid>-<random>`` in the entry's directory and ``os.replace`` it:
readers see a whole entry or none, two processes computing one entry both succeed (the last
rename wins; the contents agree), and a killed run leaves only temporary files, which are
ignored and removed once older than :data:`TEMP_MAX_AGE_S`. A final entry that does not parse
(bad magic, wrong size, shape not the key's) is logged, removed and recomputed. Entries are not
checksummed: bytes flipped inside a well-formed file are not noticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from deepfake_detect.data.dataset import ItemKey, OrderedSampler, collate_waveforms, item_rng
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when the entry format or what an entry holds changes: old keys are never read again."""
MAGIC = b"DFFC"
HEADER = struct.Struct("<4sHHIIIQB")
HEADER_SIZE = 64
DTYPES: dict[str, tuple[int, type[np.floating]]] = {
    "float16": (1, np.float16),
    "float32": (2, np.float32),
}
"""Stored dtypes and their header codes."""
ENTRY_SUFFIX = ".fc"
TEMP_MARK = ".tmp-"
TEMP_MAX_AGE_S = 6 * 3600.0
"""Temporary files older than this are a killed writer's leftovers and are removed."""
META_FILE = "meta.json"
LAST_USED_FILE = "last_used"
PROGRESS_EVERY_S = 30.0


class FeatureCacheError(RuntimeError):
    """The feature cache cannot serve a run (a missing entry under ``bad_audio=fail``)."""


class CorruptEntry(ValueError):
    """A final cache entry that does not parse."""


def default_dir() -> Path:
    """``${paths.cache_dir}/features`` as ``conf/paths/default.yaml`` resolves it."""
    base = os.environ.get("DEEPFAKE_DETECT_CACHE") or str(
        Path(os.environ.get("HOME", "/tmp")) / ".cache" / "deepfake-detect"
    )
    return Path(base) / "features"


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"data.feature_cache.dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    return dtype


def digest(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def utterance_digest(path: str | Path) -> str:
    """An audio file's identity: its absolute path, size and modification time (an edited or
    replaced file is a new entry)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return digest([str(resolved), stat.st_size, stat.st_mtime_ns], 32)


# -- one entry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One utterance's cached states (``[S, F, H]``, memory-mapped) and what its flags need."""

    states: np.ndarray
    num_samples: int
    silent: bool


def write_entry(path: Path, states: np.ndarray, num_samples: int, silent: bool, dtype: str) -> None:
    """Write ``states`` ``[S, F, H]`` atomically (a temporary file in the same directory, then
    ``os.replace``)."""
    code, np_dtype = DTYPES[dtype]
    array = np.ascontiguousarray(states, dtype=np_dtype)
    if array.ndim != 3:
        raise ValueError(f"expected [states, frames, hidden], got shape {array.shape}")
    header = HEADER.pack(MAGIC, FORMAT_VERSION, code, *array.shape, num_samples, int(silent))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temp, "wb") as handle:
            handle.write(header.ljust(HEADER_SIZE, b"\0"))
            handle.write(array.tobytes())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_entry(path: Path, num_states: int, hidden_size: int, dtype: str) -> Entry:
    """Memory-map one entry; :class:`CorruptEntry` when its header or size is not what the key
    says (FileNotFoundError when there is none)."""
    code, np_dtype = DTYPES[dtype]
    with open(path, "rb") as handle:
        head = handle.read(HEADER_SIZE)
        size = os.fstat(handle.fileno()).st_size
    if len(head) < HEADER_SIZE:
        raise CorruptEntry(f"{path}: {len(head)} bytes, shorter than the header")
    magic, version, got_code, states, frames, hidden, samples, silent = HEADER.unpack_from(head)
    if magic != MAGIC or version != FORMAT_VERSION or got_code != code:
        raise CorruptEntry(f"{path}: bad header ({magic!r}, version {version}, dtype {got_code})")
    if states != num_states or hidden != hidden_size or frames < 1:
        raise CorruptEntry(
            f"{path}: shape {(states, frames, hidden)}, expected ({num_states}, F, {hidden_size})"
        )
    expected = HEADER_SIZE + states * frames * hidden * np.dtype(np_dtype).itemsize
    if size != expected:
        raise CorruptEntry(f"{path}: {size} bytes, expected {expected} (truncated or padded)")
    data = np.memmap(
        path, dtype=np_dtype, mode="r", offset=HEADER_SIZE, shape=(states, frames, hidden)
    )
    return Entry(data, int(samples), bool(silent))


def cache_parts(encoder: Mapping[str, Any], preprocessing: Any, min_len: int) -> dict[str, Any]:
    """What a key covers besides the format and dtype: the net's encoder key
    (:class:`~deepfake_detect.models.interface.FeatureCacheSpec`) and the parts of the
    preprocessing contract the stored states depend on (``min_len``: the scorer's, the larger
    of the contract's and the net's own minimum)."""
    return {
        "encoder": dict(encoder),
        "preprocessing": {
            "sample_rate": preprocessing.sample_rate,
            "normalize": preprocessing.normalize,
            "trim_silence": preprocessing.trim_silence,
            "eval_max_len": preprocessing.eval_max_len,
            "min_len": int(min_len),
        },
    }


# -- one key --------------------------------------------------------------------------------------
class FeatureCache:
    """The entries of one key under ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        parts: Mapping[str, Any],
        num_states: int,
        hidden_size: int,
        dtype: str = "float16",
    ) -> None:
        self.root = Path(root)
        self.dtype = check_dtype(dtype)
        self.parts = {"version": FORMAT_VERSION, **dict(parts), "dtype": dtype}
        self.key = digest(self.parts)
        self.dir = self.root / self.key
        self.num_states = num_states
        self.hidden_size = hidden_size
        self._names: dict[str, str] = {}

    def open(self) -> FeatureCache:
        """Create the key's directory (and ``meta.json``), mark it used, remove stale temps."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / META_FILE
        if not meta.is_file():
            info = {**self.parts, "key": self.key, "created": time.time()}
            temp = meta.with_name(f"{META_FILE}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
            temp.write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
            os.replace(temp, meta)
        (self.dir / LAST_USED_FILE).touch()
        removed = remove_stale_temps(self.dir)
        if removed:
            log.info("feature cache: removed %d leftover temporary files in %s", removed, self.dir)
        return self

    def path(self, audio_path: str) -> Path:
        name = self._names.get(audio_path)
        if name is None:
            name = self._names[audio_path] = utterance_digest(audio_path)
        return self.dir / name[:2] / f"{name}{ENTRY_SUFFIX}"

    def read(self, audio_path: str) -> Entry | None:
        """The entry of an audio file, or None when there is none (a corrupt one is logged and
        removed, so it is recomputed)."""
        path = self.path(audio_path)
        try:
            return read_entry(path, self.num_states, self.hidden_size, self.dtype)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            log.warning("feature cache: corrupt entry for %s removed (%s)", audio_path, exc)
            path.unlink(missing_ok=True)
            return None

    def write(self, audio_path: str, states: np.ndarray, num_samples: int, silent: bool) -> None:
        write_entry(self.path(audio_path), states, num_samples, silent, self.dtype)


def remove_stale_temps(folder: Path, max_age_s: float = TEMP_MAX_AGE_S) -> int:
    """Remove temporary files older than ``max_age_s`` under ``folder`` (younger ones may be a
    live writer's); how many were removed."""
    now, removed = time.time(), 0
    for temp in folder.rglob(f"*{TEMP_MARK}*"):
        try:
            if now - temp.stat().st_mtime >= max_age_s:
                temp.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


# -- filling --------------------------------------------------------------------------------------
@dataclass
class FillStats:
    hits: int = 0
    computed: int = 0
    corrupt: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def add(self, other: FillStats) -> None:
        self.hits += other.hits
        self.computed += other.computed
        self.corrupt += other.corrupt
        self.skipped += other.skipped
        self.seconds += other.seconds


Encode = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(waveforms [B, T], lengths [B]) -> (states [B, S, F, H], frame mask [B, F])``: the
scorer's preparation then the encoder, on the model's device."""


def fill(
    cache: FeatureCache,
    rows: Sequence[Utterance],
    dataset: Dataset,
    encode: Encode,
    batch_size: int,
    num_workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    what: str = "",
) -> FillStats:
    """Encode the rows (of this ``(rank, world)`` shard) without a valid entry, longest first.

    ``dataset`` is the contract's evaluation read of ``rows`` (items by row index); a row it
    cannot read under ``bad_audio=skip`` gets no entry (:class:`CachedFeatureDataset` skips it
    as the waveform loaders do)."""
    start = time.perf_counter()
    rank, world = shard
    stats = FillStats()
    todo: list[int] = []
    for i in range(rank, len(rows), world):
        existed = cache.path(rows[i].path).exists()
        if cache.read(rows[i].path) is not None:
            stats.hits += 1
        else:
            stats.corrupt += int(existed)  # read() logged and removed it
            todo.append(i)
    todo.sort(key=lambda i: -(rows[i].duration or 0.0))
    if todo:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=OrderedSampler(todo),
            num_workers=num_workers,
            collate_fn=collate_waveforms,
        )
        last = time.perf_counter()
        for batch in loader:
            stats.skipped += len(batch["skipped"])
            if batch["label"].numel() == 0:
                continue
            states, mask = encode(batch["wave"], batch["lengths"])
            frames = mask.sum(dim=1).tolist()
            states = states.float().cpu().numpy()
            for j, index in enumerate(batch["index"].tolist()):
                cache.write(
                    rows[index].path,
                    states[j, :, : int(frames[j])],
                    int(batch["lengths"][j]),
                    bool(batch["silent"][j]),
                )
                stats.computed += 1
            if time.perf_counter() - last > PROGRESS_EVERY_S:
                last = time.perf_counter()
                log.info(
                    "feature cache%s: %d / %d utterances encoded (%.0f s)",
                    what,
                    stats.computed + stats.skipped,
                    len(todo),
                    last - start,
                )
    stats.seconds = time.perf_counter() - start
    return stats


# -- reading for training and validation ----------------------------------------------------------
def frame_crop(
    states: np.ndarray, crop: int, rng: np.random.Generator, pad: str = "repeat"
) -> np.ndarray:
    """A random ``crop``-frame window of ``[S, F, H]`` states (the frame-aligned counterpart of
    a random waveform crop). Shorter utterances are tiled up to ``crop`` (``pad=repeat``) or
    kept whole (``zero`` / ``none``: the frame mask covers them)."""
    total = states.shape[1]
    if total > crop:
        start = int(rng.integers(0, total - crop + 1))
        return states[:, start : start + crop]
    if total < crop and pad == "repeat":
        return states[:, np.arange(crop) % total]
    return states


class CachedFeatureDataset(Dataset):
    """Cached states of manifest rows: training items are random ``crop_frames`` windows drawn
    from their ``(row, item seed)`` key (reproducible on resume, independent of workers),
    evaluation items the whole utterance."""

    def __init__(
        self,
        rows: Sequence[Utterance],
        cache: FeatureCache,
        crop_frames: int | None = None,
        pad: str = "repeat",
        bad_audio: str = "fail",
    ) -> None:
        self.rows = list(rows)
        self.cache = cache
        self.crop_frames = crop_frames
        self.pad = pad
        self.bad_audio = bad_audio

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, seed = (key, None) if isinstance(key, int) else (int(key[0]), int(key[1]))
        row = self.rows[index]
        entry = self.cache.read(row.path)
        if entry is None:
            message = f"{row.path}: no cached features in {self.cache.dir}"
            if self.bad_audio == "fail":
                raise FeatureCacheError(
                    f"{message} (the file changed or the entry was removed during the run: "
                    "start the run again to re-encode it)"
                )
            return {"index": index, "error": message}
        states = entry.states
        if self.crop_frames is not None:
            states = frame_crop(states, self.crop_frames, item_rng(seed), self.pad)
        return {
            "states": torch.from_numpy(np.array(states, dtype=np.float32)),
            "num_samples": entry.num_samples,
            "label": row.target,
            "index": index,
            "silent": entry.silent,
        }


def collate_states(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad states to the longest item: ``states`` [B, S, F, H], ``frame_mask`` [B, F];
    ``lengths`` are the utterances' sample counts (for the evaluation flags)."""
    good = [item for item in items if "error" not in item]
    skipped = [(item["index"], item["error"]) for item in items if "error" in item]
    frames = torch.tensor([item["states"].shape[1] for item in good], dtype=torch.long)
    if good:
        s, _, h = good[0]["states"].shape
        states = torch.zeros(len(good), s, int(frames.max()), h)
        for i, item in enumerate(good):
            states[i, :, : frames[i]] = item["states"]
    else:
        states = torch.zeros(0, 1, 0, 1)
    width = states.shape[2]
    return {
        "states": states,
        "frame_mask": torch.arange(width)[None, :] < frames[:, None],
        "lengths": torch.tensor([item["num_samples"] for item in good], dtype=torch.long),
        "label": torch.tensor([item["label"] for item in good], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "silent": torch.tensor([bool(item["silent"]) for item in good], dtype=torch.bool),
        "skipped": skipped,
    }


# -- the cache folder as a whole (deepfake-detect cache) ------------------------------------------
@dataclass
class KeyInfo:
    key: str
    meta: dict[str, Any]
    entries: int
    bytes: int
    temps: int
    last_used: float | None


def _entries(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob(f"*{ENTRY_SUFFIX}") if p.is_file())


def key_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / META_FILE).is_file())


def describe_key(folder: Path) -> KeyInfo:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    entries, size = 0, 0
    for path in _entries(folder):
        entries += 1
        size += path.stat().st_size
    temps = sum(1 for _ in folder.rglob(f"*{TEMP_MARK}*"))
    used = folder / LAST_USED_FILE
    last_used = used.stat().st_mtime if used.exists() else None
    return KeyInfo(folder.name, meta, entries, size, temps, last_used)


def cache_info(root: str | Path) -> list[KeyInfo]:
    return [describe_key(folder) for folder in key_dirs(Path(root))]


def clear(
    root: str | Path, key: str | None = None, older_than_days: float | None = None
) -> list[KeyInfo]:
    """Remove keys (all, those whose name starts with ``key``, and / or those not used for
    ``older_than_days``); the removed ones."""
    removed = []
    now = time.time()
    for info in cache_info(root):
        if key is not None and not info.key.startswith(key):
            continue
        if older_than_days is not None:
            if info.last_used is not None and now - info.last_used < older_than_days * 86400:
                continue
        shutil.rmtree(Path(root) / info.key, ignore_errors=True)
        removed.append(info)
    return removed
