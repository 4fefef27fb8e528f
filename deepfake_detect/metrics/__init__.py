"""Pure metric functions (arrays in, numbers out) and the DDP-safe score collector."""

from deepfake_detect.metrics.asv_scores import read_asv_scores
from deepfake_detect.metrics.dcf import (
    bayes_threshold,
    compute_act_dcf,
    compute_cllr,
    compute_min_cllr,
    compute_min_dcf,
    pav_calibrate,
)
from deepfake_detect.metrics.eer import (
    compute_det_curve,
    compute_det_curve_tie_aware,
    compute_eer,
    compute_eer_tie_aware,
    tied_fraction,
)
from deepfake_detect.metrics.tdcf import (
    ASVErrorRates,
    LegacyTDCFCostModel,
    TDCFCostModel,
    asv_error_rates,
    compute_tdcf_2021,
    compute_tdcf_legacy,
)

__all__ = [
    "ASVErrorRates",
    "LegacyTDCFCostModel",
    "TDCFCostModel",
    "asv_error_rates",
    "bayes_threshold",
    "compute_act_dcf",
    "compute_cllr",
    "compute_det_curve",
    "compute_det_curve_tie_aware",
    "compute_eer",
    "compute_eer_tie_aware",
    "compute_min_cllr",
    "compute_min_dcf",
    "compute_tdcf_2021",
    "compute_tdcf_legacy",
    "pav_calibrate",
    "read_asv_scores",
    "tied_fraction",
]
