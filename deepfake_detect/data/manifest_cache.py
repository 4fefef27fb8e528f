"""The manifest of a selection (``corpus:split``) as a cached input.

``SpoofDataModule.prepare_data`` builds it once: the adapter parses the protocol, then the scan
checks every file and records its frame count, sample rate and channels (so training crops are
read by seeking). The result is written to ``<cache_dir>/manifests/`` keyed by the corpus
config, the split, the scan level and the protocol / metadata files with their modification
times and sizes (:meth:`Corpus.source_files`); a run whose key matches reads it instead of
parsing and scanning again, and any change of those files rebuilds it. ``setup`` reads it on
every process. Audio files changed in place without touching the protocol are not noticed:
delete the cache folder (or the entry) after editing a corpus's audio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake_detect.data.audio import scan_manifest
from deepfake_detect.data.corpora.base import Corpus
from deepfake_detect.data.manifest import CorpusError, Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump when the manifest or scan format changes, so old entries are ignored."""
SCAN_LEVELS = ("none", "header", "decode")
"""Each level does what the previous one does and more: a cached ``decode`` scan serves a run
that asks for ``header``."""


@dataclass
class SelectionManifest:
    """One selection's rows (with what the scan found) and its corpus report."""

    rows: list[Utterance]
    report: dict[str, Any] = field(default_factory=dict)
    """The adapter's counts: ``rows``, ``missing_audio`` (+ ``missing_examples``),
    ``unlisted_audio``."""
    bad: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of every unusable file the scan found (still among ``rows``)."""
    scan: str = "none"
    cached: bool = False
    """Read from the cache (True) or built by this process."""


def _fingerprint(paths: list[Path]) -> list[list[Any]]:
    out = []
    for path in sorted(paths):
        try:
            stat = path.stat()
            out.append([str(path), stat.st_mtime_ns, stat.st_size])
        except OSError:
            out.append([str(path), None, None])
    return out


def cache_key(
    corpus_name: str, corpus_config: dict[str, Any], split: str, sources: list[Path], scan: str
) -> str:
    payload = {
        "version": CACHE_VERSION,
        "corpus": corpus_name,
        "config": corpus_config,
        "split": split,
        "sources": _fingerprint(sources),
        "scan": scan,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _paths(cache_dir: Path, corpus_name: str, split: str, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"{corpus_name}-{split}-{key}"
    return stem.with_suffix(".tsv"), stem.with_suffix(".json")


def _read(tsv: Path, meta: Path) -> SelectionManifest | None:
    if not (tsv.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        rows = read_manifest(tsv)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable cached manifest %s: %s", tsv, exc)
        return None
    bad = [(str(path), str(reason)) for path, reason in info.get("bad", [])]
    return SelectionManifest(rows, info.get("report", {}), bad, info.get("scan", "none"), True)


def _write(tsv: Path, meta: Path, manifest: SelectionManifest) -> None:
    tsv.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp-{os.getpid()}"
    tmp_tsv, tmp_meta = tsv.with_name(tsv.name + suffix), meta.with_name(meta.name + suffix)
    write_manifest(manifest.rows, tmp_tsv)
    info = {"report": manifest.report, "bad": manifest.bad, "scan": manifest.scan}
    tmp_meta.write_text(json.dumps(info, indent=1, default=str))
    # the TSV first: a reader finds the JSON only when both are complete
    os.replace(tmp_tsv, tsv)
    os.replace(tmp_meta, meta)


def _sources(corpus: Corpus, split: str) -> list[Path]:
    try:
        sources = [Path(p) for p in corpus.source_files(split)]
    except CorpusError:
        sources = []
    if not sources or any(not p.exists() for p in sources):
        corpus.load(split)  # corpora that generate their files (the demo) do it here
        sources = [Path(p) for p in corpus.source_files(split)]
    return sources


def load_selection(
    corpus: Corpus,
    corpus_config: dict[str, Any],
    split: str,
    cache_dir: str | Path | None,
    scan: str = "header",
) -> SelectionManifest:
    """The selection's manifest: from the cache when its key matches, else parsed, scanned
    and (with a ``cache_dir``) cached."""
    if scan not in SCAN_LEVELS:
        raise ValueError(f"data.validate must be one of {SCAN_LEVELS}, got {scan!r}")
    sources = _sources(corpus, split)
    if cache_dir is not None:
        folder = Path(cache_dir)
        for level in SCAN_LEVELS[SCAN_LEVELS.index(scan) :][::-1]:
            key = cache_key(corpus.name, corpus_config, split, sources, level)
            found = _read(*_paths(folder, corpus.name, split, key))
            if found is not None:
                return found
    rows = corpus.load(split)
    report = dict(corpus.report.get(split, {}))
    bad = scan_manifest(rows, decode=scan == "decode").bad if scan != "none" else []
    manifest = SelectionManifest(rows, report, bad, scan)
    if cache_dir is not None:
        key = cache_key(corpus.name, corpus_config, split, sources, scan)
        _write(*_paths(Path(cache_dir), corpus.name, split, key), manifest)
    return manifest
