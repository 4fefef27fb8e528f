"""ASVspoof 5 (track 1) CM metrics: normalised minDCF / actDCF, Cllr and minCllr.

Bona fide is the positive class; higher score = more bona fide, accepted when score >= threshold.
The DCF is ``Cmiss (1 - Pspoof) Pmiss + Cfa Pspoof Pfa`` normalised by the cost of the better
trivial system, ``min(Cmiss (1 - Pspoof), Cfa Pspoof)``; with the ASVspoof 5 defaults
(Pspoof 0.05, Cmiss 1, Cfa 10) that is ``1.9 Pmiss + Pfa``. actDCF and Cllr read the scores as
natural-log likelihood ratios (bona fide vs spoof).

minDCF and actDCF follow the official ASVspoof 5 evaluation package (``compute_mindcf``,
``compute_actDCF``) operation for operation: minDCF is taken over the official DET curve of
:func:`~deepfake_detect.metrics.eer.compute_det_curve` (its threshold is that curve's: the score of
the last rejected trial), actDCF uses the Bayes threshold ``-log(Cmiss (1 - Pspoof) / (Cfa
Pspoof))``. Cllr uses ``logaddexp`` where the package computes ``log1p(exp(-llr))``: the same up to
rounding, and finite for LLRs below -709 where the package's overflows to infinity.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from deepfake_detect.metrics.eer import as_scores, compute_det_curve

P_SPOOF = 0.05
C_MISS = 1.0
C_FA = 10.0


def _check_dcf_parameters(p_spoof: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_spoof < 1.0:
        raise ValueError(f"p_spoof must be in (0, 1), got {p_spoof}")
    if not (c_miss > 0 and c_fa > 0 and np.isfinite(c_miss) and np.isfinite(c_fa)):
        raise ValueError(f"costs must be finite and > 0, got c_miss={c_miss}, c_fa={c_fa}")


def bayes_threshold(p_spoof: float = P_SPOOF, c_miss: float = C_MISS, c_fa: float = C_FA) -> float:
    """Bayes decision threshold for LLRs: ``-log(Cmiss (1 - Pspoof) / (Cfa Pspoof))``."""
    _check_dcf_parameters(p_spoof, c_miss, c_fa)
    return float(-np.log(c_miss * (1 - p_spoof) / (c_fa * p_spoof)))


def compute_min_dcf(
    bonafide_scores: ArrayLike,
    spoof_scores: ArrayLike,
    p_spoof: float = P_SPOOF,
    c_miss: float = C_MISS,
    c_fa: float = C_FA,
) -> tuple[float, float]:
    """Minimum normalised DCF over the official DET curve; returns ``(min_dcf, threshold)``, the
    threshold being the DET point's (the score of the last rejected trial)."""
    _check_dcf_parameters(p_spoof, c_miss, c_fa)
    p_miss, p_fa, thresholds = compute_det_curve(
        as_scores(bonafide_scores, "bona fide"), as_scores(spoof_scores, "spoof")
    )
    # The official arithmetic: the bona fide prior is 1 - Pspoof and the spoof prior
    # 1 - (1 - Pspoof), which is not Pspoof to the last bit.
    p_bona = 1 - p_spoof
    dcf = c_miss * p_miss * p_bona + c_fa * p_fa * (1 - p_bona)
    i = int(np.argmin(dcf))
    return float(dcf[i] / min(c_miss * p_bona, c_fa * (1 - p_bona))), float(thresholds[i])


def compute_act_dcf(
    bonafide_llrs: ArrayLike,
    spoof_llrs: ArrayLike,
    p_spoof: float = P_SPOOF,
    c_miss: float = C_MISS,
    c_fa: float = C_FA,
) -> tuple[float, float]:
    """Normalised DCF at the Bayes threshold for LLR scores; returns ``(act_dcf, threshold)``."""
    bona = as_scores(bonafide_llrs, "bona fide")
    spoof = as_scores(spoof_llrs, "spoof")
    threshold = bayes_threshold(p_spoof, c_miss, c_fa)
    p_miss = np.sum(bona < threshold) / bona.size
    p_fa = np.sum(spoof >= threshold) / spoof.size
    dcf = c_miss * (1 - p_spoof) * p_miss + c_fa * p_spoof * p_fa
    return float(dcf / min(c_fa * p_spoof, c_miss * (1 - p_spoof))), threshold


def _cllr_bits(bona_llrs: np.ndarray, spoof_llrs: np.ndarray) -> float:
    # log(1 + exp(-x)) via logaddexp: exact for large |x| and for +-inf.
    miss = np.mean(np.logaddexp(0.0, -bona_llrs))
    fa = np.mean(np.logaddexp(0.0, spoof_llrs))
    return float((miss + fa) / (2.0 * np.log(2.0)))


def compute_cllr(bonafide_llrs: ArrayLike, spoof_llrs: ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (0 = perfect, 1 = a constant zero LLR)."""
    return _cllr_bits(as_scores(bonafide_llrs, "bona fide"), as_scores(spoof_llrs, "spoof"))


def pav_calibrate(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal monotone (PAV / ROC convex hull) calibration of the scores to LLRs.

    Returns ``(bonafide_llrs, spoof_llrs)``; tied scores get the same LLR. LLRs are +-inf where
    the calibrated posterior is 0 or 1 (only on blocks that hold a single class).
    """
    bona = as_scores(bonafide_scores, "bona fide")
    spoof = as_scores(spoof_scores, "spoof")
    scores = np.concatenate([bona, spoof])
    unique, inverse = np.unique(scores, return_inverse=True)
    n_bona = np.bincount(inverse[: bona.size], minlength=unique.size).astype(np.float64)
    n_all = np.bincount(inverse, minlength=unique.size).astype(np.float64)

    # Pool adjacent violators on the tie groups, in increasing score order.
    block_bona: list[float] = []
    block_all: list[float] = []
    block_len: list[int] = []
    for b, a in zip(n_bona, n_all, strict=True):
        block_bona.append(b)
        block_all.append(a)
        block_len.append(1)
        while len(block_all) > 1 and (
            block_bona[-2] * block_all[-1] >= block_bona[-1] * block_all[-2]
        ):
            b_last, a_last, n_last = block_bona.pop(), block_all.pop(), block_len.pop()
            block_bona[-1] += b_last
            block_all[-1] += a_last
            block_len[-1] += n_last
    posterior = np.repeat(np.array(block_bona) / np.array(block_all), block_len)

    prior_log_odds = np.log(bona.size / spoof.size)
    with np.errstate(divide="ignore"):
        llr_per_group = np.log(posterior) - np.log1p(-posterior) - prior_log_odds
    llrs = llr_per_group[inverse]
    return llrs[: bona.size], llrs[bona.size :]


def compute_min_cllr(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> float:
    """Cllr after the optimal monotone calibration (PAV): the discrimination part of Cllr."""
    return _cllr_bits(*pav_calibrate(bonafide_scores, spoof_scores))
