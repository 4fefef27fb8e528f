"""One result record per test set, built once: every view of a test run reads it.

:func:`build_result` takes a set's gathered scores (one per manifest row) and computes every
metric in float64, the per-attack / per-condition breakdowns and the DET curve, and notes what a
reader should know (silent files, tiled short clips, windowed long ones, heavily tied scores).
Logging, ``metrics.json``, the score files, the report and its figures, fusion and run
comparison are views of these records (:mod:`deepfake_detect.evaluation.report`); nothing
downstream recomputes a metric.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from deepfake_detect.data.corpora.base import name_some
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.evaluation.summary import (
    BONAFIDE_INDEX,
    Breakdown,
    breakdowns,
    calibration_metrics,
    summarize_scores,
)
from deepfake_detect.metrics import compute_det_curve, tied_fraction

FLAG_SILENT = 1
"""The utterance is silent (peak below -80 dBFS after the down-mix): scored, but named."""
FLAG_SHORT = 2
"""Shorter than the model's minimum input: tiled up to it before scoring."""
FLAG_WINDOWED = 4
"""Longer than ``max_eval_len``: scored as the mean of its windows."""
FLAG_NAMES = {FLAG_SILENT: "silent", FLAG_SHORT: "short (tiled)", FLAG_WINDOWED: "windowed"}

TIED_WARNING = 0.5
"""Warn when more than this share of a set's scores tie with another score (a quantized or
saturated model): EER then depends on how ties are broken."""


@dataclass
class TestSetResult:
    """Everything known about one scored test set (scores in manifest order of ``rows``)."""

    name: str
    rows: list[Utterance]
    scores: np.ndarray
    labels: np.ndarray
    flags: np.ndarray
    counted: np.ndarray
    """Rows the metrics are computed on (all, unless the corpus scores more trials than it
    reports on, e.g. ASVspoof 2021's eval subset)."""
    metrics: dict[str, float] = field(default_factory=dict)
    breakdowns: list[Breakdown] = field(default_factory=list)
    det: tuple[np.ndarray, np.ndarray] | None = None
    """(frr, far) over the counted trials, for plots."""
    notes: list[str] = field(default_factory=list)
    asv: Mapping[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def by_class(self) -> tuple[np.ndarray, np.ndarray]:
        """(bona fide, spoof) scores of the counted trials."""
        scores, labels = self.scores[self.counted], self.labels[self.counted]
        bona = labels == BONAFIDE_INDEX
        return scores[bona], scores[~bona]

    def flagged(self, flag: int) -> list[Utterance]:
        return [row for row, f in zip(self.rows, self.flags, strict=True) if f & flag]

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "n_scored": int(self.scores.size),
            "n_counted": int(self.counted.sum()),
            "flags": {
                name: [row.utt_id for row in self.flagged(flag)]
                for flag, name in FLAG_NAMES.items()
            },
            "notes": list(self.notes),
            "provenance": dict(self.provenance),
        }


def _notes(result: TestSetResult) -> list[str]:
    notes = []
    for flag, what in (
        (FLAG_SILENT, "silent (peak below -80 dBFS; scored anyway)"),
        (FLAG_SHORT, "shorter than the model's minimum input (tiled up to it)"),
        (FLAG_WINDOWED, "longer than max_eval_len (scored as the mean of their windows)"),
    ):
        rows = result.flagged(flag)
        if rows:
            notes.append(f"{len(rows)} utterances {what}: {name_some([r.path for r in rows])}")
    if result.scores.size:
        tied = tied_fraction(result.scores[result.counted])
        if tied > TIED_WARNING:
            notes.append(
                f"{100 * tied:.0f}% of the scores tie with another score (a quantized or "
                "saturated model?): the EER depends on how ties are broken; the official "
                "convention is used"
            )
    return notes


def build_result(
    name: str,
    rows: Sequence[Utterance],
    scores: np.ndarray,
    labels: np.ndarray,
    flags: np.ndarray | None = None,
    asv: Mapping[str, Any] | None = None,
    counted: Sequence[bool] | np.ndarray | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> TestSetResult:
    """Score a set once: every metric (float64), breakdowns, the DET curve and notes."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(rows) == scores.size == labels.size:
        raise ValueError(f"{name}: {len(rows)} rows, {scores.size} scores, {labels.size} labels")
    flags = np.zeros(scores.size, np.int64) if flags is None else np.asarray(flags, np.int64)
    mask = np.ones(scores.size, bool) if counted is None else np.asarray(counted, dtype=bool)
    result = TestSetResult(
        name, list(rows), scores, labels, flags, mask, asv=asv, provenance=dict(provenance or {})
    )
    s, y = scores[mask], labels[mask]
    kept = [row for row, keep in zip(rows, mask, strict=True) if keep]
    metrics = summarize_scores(s, y, asv=asv)
    if "eer" in metrics:
        bona = y == BONAFIDE_INDEX
        counts = {key: metrics.pop(key) for key in ("n_bonafide", "n_spoof")}
        metrics.update(calibration_metrics(s[bona], s[~bona]))
        metrics.update(counts)
        result.breakdowns = breakdowns(s, y, kept)
        metrics.update({b.key: b.eer for b in result.breakdowns})
        frr, far, _ = compute_det_curve(s[bona], s[~bona])
        result.det = (frr, far)
    result.metrics = {k: float(v) for k, v in metrics.items()}
    result.notes = _notes(result)
    return result


HEADLINE_METRICS = ("eer", "acc", "min_tdcf")


def logged_metrics(results: Sequence[TestSetResult]) -> dict[str, float]:
    """How test results are logged: ``test/<set>/<metric>`` (trial counts left out), and for the
    first test set the headline ``test/eer``, ``test/acc``, ``test/min_tdcf``."""
    out: dict[str, float] = {}
    for i, result in enumerate(results):
        metrics = result.metrics
        out.update({f"test/{result.name}/{k}": v for k, v in metrics.items() if k[:2] != "n_"})
        if i == 0:
            out.update({f"test/{k}": v for k, v in metrics.items() if k in HEADLINE_METRICS})
    return out


# -- provenance ------------------------------------------------------------------------------
def _git(where: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def git_revision(path: str | Path | None = None) -> str:
    """The commit of the project's checkout (``+dirty`` with uncommitted changes), or
    ``unknown`` outside a git checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = _git(where, "rev-parse", "--short=12", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the resolved config, keys sorted: two runs with the same hash
    ran the same composed config (output paths included)."""
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True)
    else:
        container = dict(cfg)
    text = OmegaConf.to_yaml(OmegaConf.create(container), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    return {"git_revision": git_revision(), "config_hash": config_hash(cfg), **extra}
