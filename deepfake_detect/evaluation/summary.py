"""Metrics of one scored test set: overall and per attack (pure: arrays in, dict out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfake_detect.data.manifest import LABEL_TO_INDEX, Utterance
from deepfake_detect.metrics import compute_eer

BONAFIDE_INDEX = LABEL_TO_INDEX["bonafide"]


def summarize_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    attacks: Sequence[str] | None = None,
    asv: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """EER, accuracy (at score 0: the classifier's own decision), per-attack EER (each attack's
    spoofs against all bona fide trials) and, given ASV scores, the legacy min t-DCF."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    bona = labels == BONAFIDE_INDEX
    out: dict[str, float] = {
        "acc": float(np.mean((scores >= 0) == bona)),
        "n_bonafide": float(bona.sum()),
        "n_spoof": float((~bona).sum()),
    }
    if not bona.any() or bona.all():
        return out
    out["eer"] = compute_eer(scores[bona], scores[~bona])[0]
    if attacks is not None:
        attacks = np.asarray(attacks)
        for attack in sorted(set(attacks[~bona]) - {"-"}):  # "-": no attack id recorded
            spoof = scores[(attacks == attack) & ~bona]
            out[f"eer_{attack}"] = compute_eer(scores[bona], spoof)[0]
    if asv is not None:
        from deepfake_detect.metrics.tdcf import compute_tdcf_legacy

        out["min_tdcf"] = compute_tdcf_legacy(
            scores[bona], scores[~bona], asv["target"], asv["nontarget"], asv["spoof"]
        )[0]
    return out


def summarize_test_set(
    scores: np.ndarray,
    labels: np.ndarray,
    rows: Sequence[Utterance],
    asv: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every metric of one test set, given its manifest rows (for breakdowns)."""
    return summarize_scores(scores, labels, [row.attack for row in rows], asv)
