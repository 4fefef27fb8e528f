"""Metrics of one scored test set: overall, per attack, per condition (pure: arrays in, dict out).

Scores are log-odds of bona fide (higher = more bona fide, 0 = the classifier's own decision).

Breakdowns report EER only. Per attack (key ``eer_<attack>``): that attack's spoofs against all
bona fide trials, the ASVspoof convention. Per value of an ``extra`` column (key
``eer_<column>=<value>``) there are two kinds of column:

- a *condition* (codec, transmission, source, gender...) labels bona fide and spoof trials alike:
  a value's EER is that value's bona fide against that value's spoofs, computed where both exist;
- a *spoof attribute* (vocoder, attack tag...) has no value shared by the two classes (bona fide
  rows hold ``-`` or a placeholder such as ``bonafide``): a value's EER is its spoofs against all
  bona fide trials, as for attacks.

Only columns with 2 to 30 distinct values (``-`` = no value, not counted) are broken down, so an
id-like column (a paired file, a codec seed) does not flood the logger.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfake_detect.data.manifest import LABEL_TO_INDEX, Utterance
from deepfake_detect.metrics import (
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
    compute_tdcf_2021,
    compute_tdcf_legacy,
)

log = logging.getLogger(__name__)

BONAFIDE_INDEX = LABEL_TO_INDEX["bonafide"]
NO_VALUE = "-"
BREAKDOWN_MIN_VALUES = 2
BREAKDOWN_MAX_VALUES = 30
ATTACK = "attack"

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")

TDCF_DEFINITIONS = {"2019": compute_tdcf_legacy, "2021": compute_tdcf_2021}
"""t-DCF definition named by the ASV scores' ``"tdcf"`` entry -> its function: ``"2019"`` the
ASVspoof 2019 (legacy) t-DCF, ``"2021"`` the revised t-DCF of ASVspoof 2021. Both are reported
as ``min_tdcf``."""


def metric_key_part(text: str) -> str:
    """``text`` with every character that is not a letter, digit or ``_.+-`` replaced by ``_``."""
    return _UNSAFE_KEY_CHARS.sub("_", text)


@dataclass(frozen=True)
class Breakdown:
    """EER of one attack or one value of a breakdown column."""

    column: str
    value: str
    n_bonafide: int
    n_spoof: int
    eer: float
    against_all_bonafide: bool
    """True: the value's spoofs against every bona fide trial of the set."""

    @property
    def key(self) -> str:
        if self.column == ATTACK:
            return f"eer_{metric_key_part(self.value)}"
        return f"eer_{metric_key_part(self.column)}={metric_key_part(self.value)}"


def _value_array(values: Sequence[str]) -> np.ndarray:
    return np.array([NO_VALUE if not v else str(v) for v in values], dtype=object)


def _against_all_bonafide(
    column: str, scores: np.ndarray, bona: np.ndarray, values: np.ndarray
) -> list[Breakdown]:
    out = []
    for value in sorted(set(values[~bona]) - {NO_VALUE}):
        spoof = scores[(values == value) & ~bona]
        eer = compute_eer(scores[bona], spoof)[0]
        out.append(Breakdown(column, value, int(bona.sum()), spoof.size, eer, True))
    return out


def attack_breakdown(
    scores: np.ndarray, labels: np.ndarray, attacks: Sequence[str]
) -> list[Breakdown]:
    """EER of each attack's spoofs against all bona fide trials (attack ``-`` skipped)."""
    scores = np.asarray(scores, dtype=np.float64)
    bona = np.asarray(labels) == BONAFIDE_INDEX
    if not bona.any() or bona.all():
        return []
    return _against_all_bonafide(ATTACK, scores, bona, _value_array(attacks))


def breakdown_columns(rows: Sequence[Utterance]) -> list[str]:
    """The ``extra`` columns worth a breakdown: 2 to 30 distinct values, ``-`` not counted."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for column, value in row.extra.items():
            if value and value != NO_VALUE:
                seen.setdefault(column, set()).add(str(value))
    return sorted(
        column
        for column, values in seen.items()
        if BREAKDOWN_MIN_VALUES <= len(values) <= BREAKDOWN_MAX_VALUES
    )


def column_breakdown(
    column: str, scores: np.ndarray, labels: np.ndarray, values: Sequence[str]
) -> list[Breakdown]:
    """EER per value of one column: within the value for a condition, against all bona fide for
    a spoof attribute (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    bona = np.asarray(labels) == BONAFIDE_INDEX
    if not bona.any() or bona.all():
        return []
    values = _value_array(values)
    shared = (set(values[bona]) & set(values[~bona])) - {NO_VALUE}
    if not shared:
        return _against_all_bonafide(column, scores, bona, values)
    out = []
    for value in sorted(set(values) - {NO_VALUE}):
        here = values == value
        bona_here, spoof_here = scores[here & bona], scores[here & ~bona]
        if bona_here.size and spoof_here.size:
            eer = compute_eer(bona_here, spoof_here)[0]
            out.append(Breakdown(column, value, bona_here.size, spoof_here.size, eer, False))
    return out


def breakdowns(
    scores: np.ndarray, labels: np.ndarray, rows: Sequence[Utterance]
) -> list[Breakdown]:
    """Per-attack EERs, then per-value EERs of every breakdown column of ``rows``."""
    out = attack_breakdown(scores, labels, [row.attack for row in rows])
    for column in breakdown_columns(rows):
        values = [row.extra.get(column, NO_VALUE) for row in rows]
        out.extend(column_breakdown(column, scores, labels, values))
    return out


def tdcf_function(asv: Mapping[str, Any]) -> Callable[..., tuple[float, np.ndarray, np.ndarray]]:
    """The t-DCF function the ASV scores ask for (``asv["tdcf"]``, default ``"2019"``)."""
    definition = str(asv.get("tdcf", "2019"))
    if definition not in TDCF_DEFINITIONS:
        raise ValueError(
            f"unknown t-DCF definition {definition!r} (known: {', '.join(TDCF_DEFINITIONS)})"
        )
    return TDCF_DEFINITIONS[definition]


def summarize_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    attacks: Sequence[str] | None = None,
    asv: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """EER, accuracy (at score 0: the classifier's own decision), per-attack EER (each attack's
    spoofs against all bona fide trials) and, given ASV scores, the min t-DCF (``min_tdcf``).

    ``asv`` holds the ASV ``target`` / ``nontarget`` / ``spoof`` score arrays and, under
    ``"tdcf"``, the t-DCF definition to use: ``"2019"`` (the default) the ASVspoof 2019 legacy
    t-DCF, ``"2021"`` the revised ASVspoof 2021 one (:data:`TDCF_DEFINITIONS`). Either way the
    metric is ``min_tdcf``, so tables stay uniform; the corpus decides which one it is.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    bona = labels == BONAFIDE_INDEX
    out: dict[str, float] = {"n_bonafide": float(bona.sum()), "n_spoof": float((~bona).sum())}
    if scores.size == 0:
        return out
    out["acc"] = float(np.mean((scores >= 0) == bona))
    if not bona.any() or bona.all():
        return out
    out["eer"] = compute_eer(scores[bona], scores[~bona])[0]
    if asv is not None:
        compute_tdcf = tdcf_function(asv)
        try:
            out["min_tdcf"] = compute_tdcf(
                scores[bona], scores[~bona], asv["target"], asv["nontarget"], asv["spoof"]
            )[0]
        except ValueError as err:  # hard decisions, degenerate ASV scores: report the rest
            log.warning("min t-DCF not computed: %s", err)
    if attacks is not None:
        out.update({b.key: b.eer for b in attack_breakdown(scores, labels, attacks)})
    return out


def calibration_metrics(bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """ASVspoof 5 track 1 metrics: minDCF, and, reading the scores as LLRs as trained, actDCF,
    Cllr; minCllr (Cllr after optimal calibration)."""
    return {
        "min_dcf": compute_min_dcf(bonafide, spoof)[0],
        "act_dcf": compute_act_dcf(bonafide, spoof)[0],
        "cllr": compute_cllr(bonafide, spoof),
        "min_cllr": compute_min_cllr(bonafide, spoof),
    }
