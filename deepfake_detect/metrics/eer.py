"""Equal error rate, ASVspoof convention: bona fide is the positive class, higher score = more
bona fide.

``compute_det_curve`` / ``compute_eer`` reproduce the official ASVspoof evaluation code (the 2019
``eval_metrics.py``, the 2021 eval package, ASVspoof 5) float for float, ties included: all trials
are sorted by score with a stable sort, bona fide trials before spoofs among tied scores, and the
curve has one point per number of rejected trials. A tie between classes is therefore split, which
can move the EER by up to the tie's share of trials (bona fide rejected first: pessimistic).

``compute_det_curve_tie_aware`` / ``compute_eer_tie_aware`` keep one point per distinct threshold
("accept when score >= threshold"), so every point is an operating point a threshold can reach.
On untied scores the two EERs agree; on heavily tied scores (quantised or saturated outputs, see
``tied_fraction``) they do not, and only the official one is comparable with published numbers.

Written here rather than derived from scikit-learn's ``roc_curve``: it merges tied scores into
one threshold (and the EER helpers built on it interpolate), so on tied scores it differs from
the official values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

OFFICIAL_FIRST_THRESHOLD_OFFSET = 0.001
"""The official DET's first threshold (accept everything) is the lowest score minus this."""


def as_scores(values: ArrayLike, what: str) -> np.ndarray:
    """Scores as a flat float64 array; ValueError when empty or not finite (shared check)."""
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError(f"no {what} scores: the metric needs both classes of trials")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what} scores contain NaN or infinite values")
    return scores


def compute_det_curve(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates after rejecting the k lowest-scored trials, k = 0..N (official).

    Returns ``(frr, far, thresholds)``, N + 1 points each. Point 0 accepts everything (frr 0,
    far 1; threshold: the lowest score minus 0.001); point k rejects the k lowest trials in a
    stable sort of bona fide then spoof scores, and its threshold is the score of the last
    rejected trial, so on untied scores point k means "accept when score > threshold". The last
    point rejects everything (frr 1, far 0). ``frr`` never decreases, ``far`` never increases and
    ``thresholds`` never decrease; tied scores repeat a threshold.
    """
    bona = as_scores(bonafide_scores, "bona fide")
    spoof = as_scores(spoof_scores, "spoof")
    n_scores = bona.size + spoof.size
    all_scores = np.concatenate((bona, spoof))
    labels = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))
    order = np.argsort(all_scores, kind="mergesort")
    bona_rejected = np.cumsum(labels[order])
    spoof_accepted = spoof.size - (np.arange(1, n_scores + 1) - bona_rejected)
    frr = np.concatenate((np.atleast_1d(0), bona_rejected / bona.size))
    far = np.concatenate((np.atleast_1d(1), spoof_accepted / spoof.size))
    first = all_scores[order[0]] - OFFICIAL_FIRST_THRESHOLD_OFFSET
    thresholds = np.concatenate((np.atleast_1d(first), all_scores[order]))
    return frr, far, thresholds


def compute_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold, as the official ASVspoof code computes them.

    The EER is the mean of frr and far at the first point of :func:`compute_det_curve` where
    ``|frr - far|`` is smallest; the threshold is that point's (the score of the last rejected
    trial: the ASVspoof t-DCF then takes ``Pmiss = P(score < threshold)`` and
    ``Pfa = P(score >= threshold)`` there).
    """
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[i], far[i]))), float(thresholds[i])


def compute_det_curve_tie_aware(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold.

    Returns ``(frr, far, thresholds)``: at ``thresholds[i]`` a bona fide trial is missed when its
    score is below the threshold (``frr[i]``) and a spoof is accepted when its score is at or above
    it (``far[i]``). The first threshold accepts everything (frr 0, far 1), the last (``inf``)
    rejects everything (frr 1, far 0). Tied scores share one threshold, so every point is
    reachable.
    """
    bona = as_scores(bonafide_scores, "bona fide")
    spoof = as_scores(spoof_scores, "spoof")
    thresholds = np.unique(np.concatenate([bona, spoof]))
    thresholds = np.append(thresholds, np.inf)
    bona_sorted = np.sort(bona)
    spoof_sorted = np.sort(spoof)
    frr = np.searchsorted(bona_sorted, thresholds, side="left") / bona.size
    # (n - rejected) / n, not 1 - rejected / n: the same floats as the official curve on untied
    # scores, so near-equal |frr - far| values are broken the same way.
    far = (spoof.size - np.searchsorted(spoof_sorted, thresholds, side="left")) / spoof.size
    return frr, far, thresholds


def compute_eer_tie_aware(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[float, float]:
    """EER on :func:`compute_det_curve_tie_aware` (threshold: accept when score >= it). Equals
    :func:`compute_eer` on untied scores; on tied scores it never splits a tie."""
    frr, far, thresholds = compute_det_curve_tie_aware(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thresholds[i])


def tied_fraction(scores: ArrayLike) -> float:
    """Share of trials whose score equals at least one other trial's score (0 = no ties).

    Pass all trials of a test set (both classes). A large share (a quantised model, saturated
    sigmoid outputs, scores rounded when written) means the official EER and the tie-aware one
    can differ noticeably.
    """
    values = as_scores(scores, "trial")
    _, counts = np.unique(values, return_counts=True)
    return float(counts[counts > 1].sum() / values.size)
