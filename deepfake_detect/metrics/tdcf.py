"""Tandem detection cost function (t-DCF) of a countermeasure (CM) placed before a fixed ASV system.

Two definitions are provided, each computing what the official ASVspoof code computes (to the
last bit on the default path):

- ``compute_tdcf_legacy``: the ASVspoof 2019 t-DCF (2019 evaluation plan; ``compute_tDCF`` of the
  2019 package, ``compute_tDCF_legacy`` of the 2021 one), ``(C1 Pmiss_cm + C2 Pfa_cm) /
  min(C1, C2)`` with ``C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)``.
- ``compute_tdcf_2021``: the revised t-DCF of Kinnunen et al. (IEEE/ACM TASLP 2020) used in
  ASVspoof 2021, ``(C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2))``.

Both report the minimum of the normalised curve over the official CM DET curve
(:func:`~deepfake_detect.metrics.eer.compute_det_curve`: one point per rejected trial, ties split
bona fide first).

Score convention as in ``eer.py``: higher = more bona fide (CM) or more target (ASV). The ASV
operating point is, as in the official code, the threshold that the official ``compute_eer``
returns for the ASV target / nontarget scores (the score of the last trial rejected at the ASV
EER point), with ``Pmiss_asv = P(target < t)``, ``Pfa_asv = P(nontarget >= t)`` and
``Pfa_spoof_asv = P(spoof >= t)`` there. Pass ``asv_threshold`` to use another operating point,
e.g. ``compute_eer_tie_aware(target, nontarget)[1]`` (the first accepting threshold at the EER
point, this module's default before it followed the official code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from deepfake_detect.metrics.eer import as_scores, compute_det_curve, compute_eer

_DEFAULT_P_SPOOF = 0.05


@dataclass(frozen=True)
class LegacyTDCFCostModel:
    """ASVspoof 2019 t-DCF parameters (defaults: the 2019 evaluation plan)."""

    p_spoof: float = _DEFAULT_P_SPOOF
    p_target: float = (1 - _DEFAULT_P_SPOOF) * 0.99
    p_nontarget: float = (1 - _DEFAULT_P_SPOOF) * 0.01
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0


@dataclass(frozen=True)
class TDCFCostModel:
    """Revised (ASVspoof 2021) t-DCF parameters (defaults: the 2021 LA evaluation)."""

    p_spoof: float = _DEFAULT_P_SPOOF
    p_target: float = (1 - _DEFAULT_P_SPOOF) * 0.99
    p_nontarget: float = (1 - _DEFAULT_P_SPOOF) * 0.01
    c_miss: float = 1.0
    c_fa: float = 10.0
    c_fa_spoof: float = 10.0


@dataclass(frozen=True)
class ASVErrorRates:
    """Error rates of the ASV system at a fixed threshold (fractions, not percentages)."""

    threshold: float
    p_miss: float  # targets rejected
    p_fa: float  # nontargets accepted
    p_fa_spoof: float  # spoofs accepted
    p_miss_spoof: float  # spoofs rejected (the 2019 t-DCF uses 1 - this, as the official code)


def _check_priors_and_costs(priors: dict[str, float], costs: dict[str, float]) -> None:
    for name, value in {**priors, **costs}.items():
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"t-DCF parameter {name} must be finite and >= 0, got {value}")
    total = sum(priors.values())
    if abs(total - 1.0) > 1e-10:
        raise ValueError(f"t-DCF priors {sorted(priors)} must sum to 1, got {total}")


def asv_error_rates(
    target: ArrayLike,
    nontarget: ArrayLike,
    spoof: ArrayLike,
    threshold: float | None = None,
) -> ASVErrorRates:
    """ASV error rates at ``threshold``: misses are ``score < threshold``, false alarms
    ``score >= threshold``. The threshold defaults to the official ASV EER threshold
    (:func:`~deepfake_detect.metrics.eer.compute_eer` of the target and nontarget scores)."""
    tar = as_scores(target, "ASV target")
    non = as_scores(nontarget, "ASV nontarget")
    spf = as_scores(spoof, "ASV spoof")
    if threshold is None:
        threshold = compute_eer(tar, non)[1]
    return ASVErrorRates(
        threshold=float(threshold),
        p_miss=float(np.mean(tar < threshold)),
        p_fa=float(np.mean(non >= threshold)),
        p_fa_spoof=float(np.mean(spf >= threshold)),
        p_miss_spoof=float(np.mean(spf < threshold)),
    )


def _cm_det_curve(
    bonafide_cm: ArrayLike, spoof_cm: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bona = as_scores(bonafide_cm, "CM bona fide")
    spoof = as_scores(spoof_cm, "CM spoof")
    if np.unique(np.concatenate([bona, spoof])).size < 3:
        raise ValueError("CM scores must be soft scores (>= 3 distinct values), not hard decisions")
    return compute_det_curve(bona, spoof)


def compute_tdcf_legacy(
    bonafide_cm: ArrayLike,
    spoof_cm: ArrayLike,
    asv_target: ArrayLike,
    asv_nontarget: ArrayLike,
    asv_spoof: ArrayLike,
    cost_model: LegacyTDCFCostModel | None = None,
    *,
    asv_threshold: float | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """ASVspoof 2019 normalised t-DCF.

    ``C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv``,
    ``C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)``, and at each CM threshold
    ``t-DCF = (C1 Pmiss_cm + C2 Pfa_cm) / min(C1, C2)``.
    Returns ``(min_tdcf, tdcf_curve, cm_thresholds)``.
    """
    cm = cost_model or LegacyTDCFCostModel()
    _check_priors_and_costs(
        {"p_spoof": cm.p_spoof, "p_target": cm.p_target, "p_nontarget": cm.p_nontarget},
        {
            "c_miss_asv": cm.c_miss_asv,
            "c_fa_asv": cm.c_fa_asv,
            "c_miss_cm": cm.c_miss_cm,
            "c_fa_cm": cm.c_fa_cm,
        },
    )
    asv = asv_error_rates(asv_target, asv_nontarget, asv_spoof, asv_threshold)
    p_miss_cm, p_fa_cm, thresholds = _cm_det_curve(bonafide_cm, spoof_cm)

    c1 = cm.p_target * (cm.c_miss_cm - cm.c_miss_asv * asv.p_miss) - (
        cm.p_nontarget * cm.c_fa_asv * asv.p_fa
    )
    c2 = cm.c_fa_cm * cm.p_spoof * (1 - asv.p_miss_spoof)
    if c1 < 0 or c2 < 0:
        raise ValueError(
            f"negative t-DCF weights (C1={c1:.6g}, C2={c2:.6g}): check the ASV error rates "
            f"and the cost model"
        )
    norm = min(c1, c2)
    if norm <= 0:
        raise ValueError(
            f"t-DCF normalisation min(C1, C2) is zero (C1={c1:.6g}, C2={c2:.6g}): "
            + _degenerate_reason(asv, c2)
        )
    curve = (c1 * p_miss_cm + c2 * p_fa_cm) / norm
    return float(curve.min()), curve, thresholds


def compute_tdcf_2021(
    bonafide_cm: ArrayLike,
    spoof_cm: ArrayLike,
    asv_target: ArrayLike,
    asv_nontarget: ArrayLike,
    asv_spoof: ArrayLike,
    cost_model: TDCFCostModel | None = None,
    *,
    asv_threshold: float | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Revised (ASVspoof 2021) normalised t-DCF.

    ``C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv``, ``C1 = Ptar Cmiss - C0``,
    ``C2 = Pspoof Cfa_spoof Pfa_spoof_asv``, and at each CM threshold
    ``t-DCF = (C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2))``.
    A perfect CM scores ``C0 / (C0 + min(C1, C2))``; a CM that accepts or rejects
    everything scores at least 1. Returns ``(min_tdcf, tdcf_curve, cm_thresholds)``.
    """
    cm = cost_model or TDCFCostModel()
    _check_priors_and_costs(
        {"p_spoof": cm.p_spoof, "p_target": cm.p_target, "p_nontarget": cm.p_nontarget},
        {"c_miss": cm.c_miss, "c_fa": cm.c_fa, "c_fa_spoof": cm.c_fa_spoof},
    )
    asv = asv_error_rates(asv_target, asv_nontarget, asv_spoof, asv_threshold)
    p_miss_cm, p_fa_cm, thresholds = _cm_det_curve(bonafide_cm, spoof_cm)

    c0 = cm.p_target * cm.c_miss * asv.p_miss + cm.p_nontarget * cm.c_fa * asv.p_fa
    c1 = cm.p_target * cm.c_miss - c0
    c2 = cm.p_spoof * cm.c_fa_spoof * asv.p_fa_spoof
    if c1 < 0:
        raise ValueError(
            f"negative t-DCF weight C1={c1:.6g}: the ASV errors cost more than rejecting every "
            f"target; check the ASV error rates and the cost model"
        )
    norm = c0 + min(c1, c2)
    if norm <= 0:
        raise ValueError(
            f"t-DCF normalisation C0 + min(C1, C2) is zero (C0={c0:.6g}, C1={c1:.6g}, "
            f"C2={c2:.6g}): " + _degenerate_reason(asv, c2)
        )
    curve = (c0 + c1 * p_miss_cm + c2 * p_fa_cm) / norm
    return float(curve.min()), curve, thresholds


def _degenerate_reason(asv: ASVErrorRates, c2: float) -> str:
    if c2 > 0:
        return "the ASV errors already cost as much as rejecting every target (C1 = 0)"
    if asv.p_fa_spoof == 0:
        return (
            f"the ASV rejects every spoof at threshold {asv.threshold:.6g}, so the CM cannot "
            f"change the cost"
        )
    return "the spoof prior or the spoof false-alarm cost is zero (C2 = 0)"
