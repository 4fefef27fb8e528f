"""Equal error rate, ASVspoof convention: bona fide is the positive class, higher score = more
bona fide. A trial is accepted (called bona fide) when its score is >= the threshold."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


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
    """Miss and false-alarm rates at every distinct threshold.

    Returns ``(frr, far, thresholds)``: at ``thresholds[i]`` a bona fide trial is missed when its
    score is below the threshold (``frr[i]``) and a spoof is accepted when its score is at or above
    it (``far[i]``). The first threshold accepts everything (frr 0, far 1), the last rejects
    everything (frr 1, far 0). Tied scores share one threshold, so every point is reachable.
    """
    bona = as_scores(bonafide_scores, "bona fide")
    spoof = as_scores(spoof_scores, "spoof")
    thresholds = np.unique(np.concatenate([bona, spoof]))
    thresholds = np.append(thresholds, np.inf)
    bona_sorted = np.sort(bona)
    spoof_sorted = np.sort(spoof)
    frr = np.searchsorted(bona_sorted, thresholds, side="left") / bona.size
    # (n - rejected) / n, not 1 - rejected / n: the same floats as the ASVspoof reference, so
    # near-equal |frr - far| values are broken the same way.
    far = (spoof.size - np.searchsorted(spoof_sorted, thresholds, side="left")) / spoof.size
    return frr, far, thresholds


def compute_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold: the DET point where ``|frr - far|`` is smallest,
    reported as the mean of the two rates there (the ASVspoof reference convention)."""
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thresholds[i])
