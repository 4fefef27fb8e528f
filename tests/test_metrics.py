"""Metric functions against hand-worked cases and the published definitions.

Definitions: EER and legacy t-DCF from the ASVspoof 2019 evaluation plan (and the 2019 baseline's
``eval_metrics.py``); revised t-DCF from the ASVspoof 2021 evaluation plan (Kinnunen et al., TASLP
2020); minDCF / actDCF / Cllr from the ASVspoof 5 evaluation plan (Pspoof 0.05, Cmiss 1, Cfa 10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import ndtri
from scipy.stats import norm

from deepfake_detect.metrics import (
    LegacyTDCFCostModel,
    TDCFCostModel,
    asv_error_rates,
    bayes_threshold,
    compute_act_dcf,
    compute_cllr,
    compute_det_curve,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
    compute_tdcf_2021,
    compute_tdcf_legacy,
    pav_calibrate,
    read_asv_scores,
)

# ---------------------------------------------------------------------------------------------
# EER
# ---------------------------------------------------------------------------------------------


def test_eer_perfect_separation_is_zero():
    eer, threshold = compute_eer([1.0, 2.0, 3.0], [-1.0, 0.0])
    assert eer == 0.0
    assert threshold == 1.0  # the lowest bona fide score accepts all bona fide, no spoof


def test_eer_fully_inverted_is_one():
    # Every spoof outscores every bona fide: at t=1 all bona fide are rejected, all spoofs accepted.
    eer, _ = compute_eer([-1.0, 0.0], [1.0, 2.0, 3.0])
    assert eer == 1.0


@pytest.mark.parametrize(
    ("bona", "spoof", "eer", "threshold"),
    [
        # sorted: .1s .2s .3b .5s .6b .8b
        # t=.1 (frr 0, far 1), t=.2 (0, 2/3), t=.3 (0, 1/3), t=.5 (1/3, 1/3) -> EER 1/3 at .5
        ([0.8, 0.6, 0.3], [0.5, 0.2, 0.1], 1 / 3, 0.5),
        # sorted: 0s 1b 2s 3b 4s
        # t=0 (0, 1), t=1 (0, 2/3), t=2 (1/2, 2/3), t=3 (1/2, 1/3), t=4 (1, 1/3), inf (1, 0)
        # smallest |frr - far| = 1/6, first at t=2 -> EER = (1/2 + 2/3) / 2 = 7/12
        ([1.0, 3.0], [0.0, 2.0, 4.0], 7 / 12, 2.0),
        # ties: sorted 0s {1b 1b 1s 1s} 2b; tied scores share one threshold
        # t=0 (0, 1), t=1 (0, 2/3), t=2 (2/3, 0), inf (1, 0) -> first min |diff| 2/3 at t=1,
        # EER = (0 + 2/3) / 2 = 1/3 (the reference code would split the tie and report 2/3)
        ([1.0, 1.0, 2.0], [0.0, 1.0, 1.0], 1 / 3, 1.0),
        # all scores tied: only "accept all" (0, 1) and "reject all" (1, 0) -> EER 1/2
        ([0.5, 0.5], [0.5], 0.5, 0.5),
    ],
)
def test_eer_hand_computed(bona, spoof, eer, threshold):
    got_eer, got_threshold = compute_eer(bona, spoof)
    assert got_eer == pytest.approx(eer, abs=1e-12)
    assert got_threshold == threshold


def test_det_curve_endpoints_and_ties():
    frr, far, thresholds = compute_det_curve([1.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [0.0, 1.0, 2.0, np.inf])
    np.testing.assert_allclose(frr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 2 / 3, 0, 0])


def _reference_eer(bona: np.ndarray, spoof: np.ndarray) -> float:
    """ASVspoof reference computation, written out as a loop: sort all trials by score, reject the
    k lowest for k = 0..N, and take the mean of (frr, far) at the first k minimising |frr - far|."""
    scores = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(bona.size, bool), np.zeros(spoof.size, bool)])
    order = np.argsort(scores, kind="mergesort")
    best_diff, best_eer = math.inf, math.nan
    for k in range(scores.size + 1):
        rejected = is_bona[order[:k]]
        frr = rejected.sum() / bona.size
        far = (spoof.size - (k - rejected.sum())) / spoof.size
        if abs(frr - far) < best_diff:
            best_diff, best_eer = abs(frr - far), (frr + far) / 2
    return best_eer


@pytest.mark.parametrize(
    ("n_bona", "n_spoof", "seed"), [(1, 4, 0), (7, 13, 1), (50, 50, 2), (200, 37, 3), (33, 300, 4)]
)
def test_eer_matches_reference_on_untied_scores(n_bona, n_spoof, seed):
    rng = np.random.default_rng(seed)
    bona = rng.normal(1.0, 1.0, n_bona)
    spoof = rng.normal(0.0, 1.5, n_spoof)
    assert np.unique(np.concatenate([bona, spoof])).size == n_bona + n_spoof
    assert abs(compute_eer(bona, spoof)[0] - _reference_eer(bona, spoof)) < 1e-12


def test_eer_matches_reference_on_small_untied_sets():
    # Small sets often have two DET points with exactly equal |frr - far| (e.g. bona fide [1, 3],
    # spoof [0, 2, 4]: 1/6 at t=2 and t=3); the choice must follow the reference's arithmetic.
    assert compute_eer([1.0, 3.0], [0.0, 2.0, 4.0])[0] == _reference_eer(
        np.array([1.0, 3.0]), np.array([0.0, 2.0, 4.0])
    )
    rng = np.random.default_rng(5)
    for _ in range(300):
        bona = rng.permutation(20)[: rng.integers(1, 7)].astype(float)
        spoof = np.setdiff1d(rng.permutation(20)[: rng.integers(1, 7)], bona).astype(float)
        if spoof.size:
            assert abs(compute_eer(bona, spoof)[0] - _reference_eer(bona, spoof)) < 1e-12


@pytest.mark.parametrize(
    ("bona", "spoof", "match"),
    [
        ([], [0.0], "no bona fide"),
        ([0.0], [], "no spoof"),
        ([0.0, np.nan], [1.0], "NaN"),
        ([0.0], [np.inf], "NaN or infinite"),
    ],
)
def test_eer_rejects_empty_and_nonfinite(bona, spoof, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(bona, spoof)


# ---------------------------------------------------------------------------------------------
# t-DCF. Hand-worked example with the default cost models (Pspoof 0.05):
#   Ptar = 0.95 * 0.99 = 0.9405, Pnon = 0.95 * 0.01 = 0.0095
# ASV scores: target [2, 3, 4, 5], nontarget [-1, 0, 1, 2.5], spoof [1.5, 3.5, 4.5, -0.5]
#   sorted target/nontarget: -1n 0n 1n 2t 2.5n 3t 4t 5t
#   t=2 (Pmiss 0, Pfa 1/4), t=2.5 (Pmiss 1/4, Pfa 1/4) -> ASV EER 1/4 at threshold 2.5
#   at 2.5: Pmiss_asv = 1/4 (target 2), Pfa_asv = 1/4 (nontarget 2.5),
#           spoofs accepted: 3.5, 4.5 -> Pfa_spoof_asv = 1/2, Pmiss_spoof_asv = 1/2
# CM scores: bona fide [0.9, 0.8, 0.2], spoof [0.7, 0.6, 0.5, 0.4, 0.3, 0.1]
#   threshold: .1   .2   .3   .4   .5   .6   .7   .8   .9   inf
#   Pmiss_cm:  0    0    1/3  1/3  1/3  1/3  1/3  1/3  2/3  1
#   Pfa_cm:    1    5/6  5/6  4/6  3/6  2/6  1/6  0    0    0
# ---------------------------------------------------------------------------------------------

ASV_TARGET = [2.0, 3.0, 4.0, 5.0]
ASV_NONTARGET = [-1.0, 0.0, 1.0, 2.5]
ASV_SPOOF = [1.5, 3.5, 4.5, -0.5]
CM_BONA = [0.9, 0.8, 0.2]
CM_SPOOF = [0.7, 0.6, 0.5, 0.4, 0.3, 0.1]
CM_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, np.inf]
P_MISS_CM = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 3]) / 3
P_FA_CM = np.array([6, 5, 5, 4, 3, 2, 1, 0, 0, 0]) / 6
ASV = (ASV_TARGET, ASV_NONTARGET, ASV_SPOOF)


def test_asv_error_rates_at_eer_threshold():
    rates = asv_error_rates(*ASV)
    assert rates.threshold == 2.5
    assert (rates.p_miss, rates.p_fa, rates.p_fa_spoof) == (0.25, 0.25, 0.5)
    # The ASVspoof reference code would use 2.0 (last rejected score): Pmiss 0 there.
    rates = asv_error_rates(*ASV, threshold=2.0)
    assert (rates.p_miss, rates.p_fa, rates.p_fa_spoof) == (0.0, 0.25, 0.5)


def test_tdcf_legacy_hand_computed():
    # C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
    #    = 0.9405 * (1 - 0.25) - 0.0095 * 10 * 0.25 = 0.705375 - 0.02375 = 0.681625
    # C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv) = 10 * 0.05 * 0.5 = 0.25
    # curve = (C1 Pmiss_cm + C2 Pfa_cm) / min(C1, C2) = 2.7265 Pmiss_cm + Pfa_cm
    #   = [1, .833333, 1.742167, 1.5755, 1.408833, 1.242167, 1.0755, .908833, 1.817667, 2.7265]
    # min = 5/6 at CM threshold 0.2 (accept all bona fide, reject one spoof)
    expected = np.array(
        [1.0, 0.833333, 1.742167, 1.5755, 1.408833, 1.242167, 1.0755, 0.908833, 1.817667, 2.7265]
    )
    min_tdcf, curve, thresholds = compute_tdcf_legacy(CM_BONA, CM_SPOOF, *ASV)
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    np.testing.assert_allclose(curve, 2.7265 * P_MISS_CM + P_FA_CM, atol=1e-12)
    np.testing.assert_array_equal(thresholds, CM_THRESHOLDS)
    assert min_tdcf == pytest.approx(5 / 6, abs=1e-12)


def test_tdcf_2021_hand_computed():
    # C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv = 0.9405 * 0.25 + 0.0095 * 10 * 0.25 = 0.258875
    # C1 = Ptar Cmiss - C0 = 0.9405 - 0.258875 = 0.681625
    # C2 = Pspoof Cfa_spoof Pfa_spoof_asv = 0.05 * 10 * 0.5 = 0.25
    # curve = (C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2)),  C0 + C2 = 0.508875
    #   t=.1: (0.258875 + 0.25) / 0.508875 = 1
    #   t=.2: (0.258875 + 0.25 * 5/6) / 0.508875 = 0.467208333 / 0.508875 = 0.918120
    #   t=.8: (0.258875 + 0.681625 / 3) / 0.508875 = 0.486083333 / 0.508875 = 0.955212
    expected = np.array(
        [
            1.0,
            0.918120,
            1.364611,
            1.282732,
            1.200852,
            1.118972,
            1.037092,
            0.955212,
            1.401703,
            1.848195,
        ]
    )
    min_tdcf, curve, thresholds = compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV)
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    np.testing.assert_allclose(
        curve, (0.258875 + 0.681625 * P_MISS_CM + 0.25 * P_FA_CM) / 0.508875, atol=1e-12
    )
    np.testing.assert_array_equal(thresholds, CM_THRESHOLDS)
    assert min_tdcf == pytest.approx(0.467208333333 / 0.508875, abs=1e-9)


def test_tdcf_perfect_cm_reaches_the_asv_floor():
    bona, spoof = [1.0, 2.0, 3.0], [-1.0, 0.0]
    assert compute_tdcf_legacy(bona, spoof, *ASV)[0] == 0.0
    # revised t-DCF cannot go below the ASV's own cost: C0 / (C0 + min(C1, C2))
    assert compute_tdcf_2021(bona, spoof, *ASV)[0] == pytest.approx(0.258875 / 0.508875, abs=1e-9)


@pytest.mark.parametrize("compute", [compute_tdcf_legacy, compute_tdcf_2021])
def test_tdcf_useless_cm_is_about_one(compute):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=4000)
    min_tdcf, curve, _ = compute(scores[:2000], scores[2000:], *ASV)
    assert 0.97 < min_tdcf <= 1.0
    assert curve[0] == pytest.approx(1.0)  # accept-all CM: the default system


@pytest.mark.parametrize("compute", [compute_tdcf_legacy, compute_tdcf_2021])
def test_tdcf_decreases_as_cm_separation_grows(compute):
    grid = ndtri((np.arange(500) + 0.5) / 500)
    values = [compute(grid, grid - shift, *ASV)[0] for shift in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[0] == pytest.approx(1.0, abs=1e-9) and values[-1] < 0.51


def test_tdcf_accepts_custom_cost_models():
    # With Cfa_cm = 20 the legacy C2 doubles to 0.5 and the normalisation stays min(C1, C2) = C2.
    cost = LegacyTDCFCostModel(c_fa_cm=20.0)
    _, curve, _ = compute_tdcf_legacy(CM_BONA, CM_SPOOF, *ASV, cost_model=cost)
    np.testing.assert_allclose(curve, (0.681625 * P_MISS_CM + 0.5 * P_FA_CM) / 0.5, atol=1e-12)
    cost_2021 = TDCFCostModel(c_fa_spoof=20.0)
    _, curve, _ = compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV, cost_model=cost_2021)
    np.testing.assert_allclose(
        curve, (0.258875 + 0.681625 * P_MISS_CM + 0.5 * P_FA_CM) / 0.758875, atol=1e-12
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost_model": LegacyTDCFCostModel(p_spoof=0.1)}, "sum to 1"),
        ({"cost_model": LegacyTDCFCostModel(c_fa_asv=-1.0)}, "c_fa_asv"),
        ({"cost_model": LegacyTDCFCostModel(c_miss_cm=0.1)}, "negative t-DCF weights"),
        ({"asv_spoof": []}, "no ASV spoof"),
        ({"asv_target": [1.0, np.nan]}, "ASV target scores contain NaN"),
        ({"bonafide_cm": [1.0, 1.0], "spoof_cm": [0.0, 0.0]}, "soft scores"),
        ({"spoof_cm": [0.1, np.inf]}, "CM spoof scores contain NaN or infinite"),
        # the ASV rejects every spoof -> C2 = 0 -> min(C1, C2) = 0
        ({"asv_spoof": [-5.0, -6.0]}, "rejects every spoof"),
    ],
)
def test_tdcf_legacy_rejects_invalid_inputs(kwargs, match):
    args = {
        "bonafide_cm": CM_BONA,
        "spoof_cm": CM_SPOOF,
        "asv_target": ASV_TARGET,
        "asv_nontarget": ASV_NONTARGET,
        "asv_spoof": ASV_SPOOF,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compute_tdcf_legacy(**args)


def test_tdcf_2021_rejects_degenerate_normalisation():
    # Perfect ASV (threshold 3: Pmiss = Pfa = 0, so C0 = 0) that also rejects every spoof (C2 = 0).
    with pytest.raises(ValueError, match="C0 \\+ min\\(C1, C2\\) is zero"):
        compute_tdcf_2021(CM_BONA, CM_SPOOF, [3.0, 4.0], [0.0, 1.0], [-1.0, -2.0])
    with pytest.raises(ValueError, match="sum to 1"):
        compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV, cost_model=TDCFCostModel(p_target=0.5))


# ---------------------------------------------------------------------------------------------
# ASVspoof 5: minDCF, actDCF, Cllr, minCllr
# ---------------------------------------------------------------------------------------------


def test_bayes_threshold_default():
    # log(Cfa Pspoof / (Cmiss (1 - Pspoof))) = log(0.5 / 0.95) = -log(1.9)
    assert bayes_threshold() == pytest.approx(-0.6418538861723947, abs=1e-15)


def test_min_and_act_dcf_hand_computed():
    # normalised DCF = (0.95 Pmiss + 0.5 Pfa) / min(0.95, 0.5) = 1.9 Pmiss + Pfa
    # bona fide [1, 2, 3], spoof [-1, 0, 1.5]:
    #   t=-1 (0, 1) 1;  t=0 (0, 2/3) .667;  t=1 (0, 1/3) .333;  t=1.5 (1/3, 1/3) .967;
    #   t=2 (1/3, 0) .633;  t=3 (2/3, 0) 1.267;  inf (1, 0) 1.9  -> minDCF 1/3 at t=1
    # actDCF at t = -0.642: no bona fide missed, spoofs 0 and 1.5 accepted -> 2/3
    min_dcf, threshold = compute_min_dcf([1.0, 2.0, 3.0], [-1.0, 0.0, 1.5])
    assert (min_dcf, threshold) == (pytest.approx(1 / 3, abs=1e-12), 1.0)
    act_dcf, threshold = compute_act_dcf([1.0, 2.0, 3.0], [-1.0, 0.0, 1.5])
    assert act_dcf == pytest.approx(2 / 3, abs=1e-12)
    assert threshold == bayes_threshold()


def test_min_dcf_of_an_uninformative_scorer_is_one():
    assert compute_min_dcf([0.0, 0.0], [0.0, 0.0, 0.0])[0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_min_dcf_never_exceeds_act_dcf(seed):
    rng = np.random.default_rng(seed)
    bona = rng.normal(rng.uniform(-2, 3), rng.uniform(0.5, 3), 300)
    spoof = rng.normal(rng.uniform(-3, 1), rng.uniform(0.5, 3), 500)
    assert compute_min_dcf(bona, spoof)[0] <= compute_act_dcf(bona, spoof)[0] + 1e-12


def test_cllr_of_zero_llrs_is_exactly_one_bit():
    assert compute_cllr(np.zeros(5), np.zeros(3)) == 1.0


def test_cllr_of_confident_correct_llrs_is_near_zero_and_finite_for_huge_values():
    assert compute_cllr([800.0, 1e6], [-800.0, -1e6]) == 0.0
    assert compute_cllr([-1e6], [1e6]) == pytest.approx(1e6 / math.log(2))


def _gaussian_cllr(mu: float) -> float:
    """Cllr of calibrated Gaussian LLRs, LLR ~ N(+-mu, 2 mu), by Gauss-Hermite quadrature:
    E[log2(1 + exp(-L))] for L ~ N(mu, 2 mu); both classes contribute equally by symmetry."""
    x, w = np.polynomial.hermite_e.hermegauss(200)
    llr = mu + math.sqrt(2 * mu) * x
    return float(np.sum(w * np.logaddexp(0.0, -llr)) / math.sqrt(2 * math.pi) / math.log(2))


@pytest.mark.parametrize("d_prime", [0.5, 1.0, 2.0, 4.0])
def test_cllr_of_calibrated_gaussian_llrs_matches_analytic_value(d_prime):
    # Bona fide ~ N(d/2, 1), spoof ~ N(-d/2, 1): LLR = d x, so LLR ~ N(+-d^2/2, d^2).
    mu = d_prime**2 / 2
    quantiles = ndtri((np.arange(20000) + 0.5) / 20000)
    bona = mu + d_prime * quantiles
    expected = _gaussian_cllr(mu)
    cllr = compute_cllr(bona, -bona)
    assert cllr == pytest.approx(expected, abs=1e-3)
    min_cllr = compute_min_cllr(bona, -bona)
    assert min_cllr <= cllr
    assert min_cllr == pytest.approx(cllr, abs=1e-2)  # calibrated: little left to gain


def test_gaussian_cllr_quadrature_agrees_with_adaptive_integration():
    # d' -> 0 gives 1 bit; d' = 2 (mu = 2) gives 0.514056 bits.
    assert _gaussian_cllr(1e-8) == pytest.approx(1.0, abs=1e-6)
    for mu in (0.125, 2.0, 8.0):
        sd = math.sqrt(2 * mu)
        value, _ = quad(
            lambda x, m=mu, s=sd: np.logaddexp(0.0, -x) * norm.pdf(x, m, s), -np.inf, np.inf
        )
        assert _gaussian_cllr(mu) == pytest.approx(value / math.log(2), abs=1e-9)
    assert _gaussian_cllr(2.0) == pytest.approx(0.514056, abs=1e-6)


def test_min_cllr_hand_computed():
    # sorted: -1s 0b 1s 2b -> PAV: 0 | (1, 0) pooled to 1/2 | 1 -> posteriors 0, 1/2, 1/2, 1
    # prior 1/2 -> LLRs -inf, 0, 0, +inf; costs: bona fide (0 -> 1 bit, 2 -> 0),
    # spoof (1 -> 1 bit, -1 -> 0) -> minCllr = (1/2 + 1/2) / 2 = 0.5 bits
    bona_llr, spoof_llr = pav_calibrate([2.0, 0.0], [1.0, -1.0])
    np.testing.assert_array_equal(bona_llr, [np.inf, 0.0])
    np.testing.assert_array_equal(spoof_llr, [0.0, -np.inf])
    assert compute_min_cllr([2.0, 0.0], [1.0, -1.0]) == 0.5


def test_min_cllr_limits_and_invariance():
    assert compute_min_cllr([1.0, 2.0], [-1.0, 0.0, 0.5]) == 0.0
    # inverted or uninformative scores: PAV pools everything to the prior -> exactly 1 bit
    assert compute_min_cllr([-1.0, 0.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0, abs=1e-12)
    assert compute_min_cllr([0.3, 0.3], [0.3]) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1.0, 1.0, 400), rng.normal(-1.0, 1.5, 600)
    base = compute_min_cllr(bona, spoof)
    # any increasing transform leaves minCllr unchanged; Cllr of the raw scores is >= minCllr
    assert compute_min_cllr(3 * bona + 7, 3 * spoof + 7) == pytest.approx(base, abs=1e-12)
    assert compute_min_cllr(np.exp(bona), np.exp(spoof)) == pytest.approx(base, abs=1e-12)
    for scale in (0.3, 1.0, 5.0):
        assert base <= compute_cllr(scale * bona, scale * spoof)


@pytest.mark.parametrize(
    "metric", [compute_min_dcf, compute_act_dcf, compute_cllr, compute_min_cllr]
)
def test_dcf_and_cllr_reject_empty_and_nan(metric):
    with pytest.raises(ValueError, match="no bona fide"):
        metric([], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        metric([0.0], [np.nan])


def test_dcf_rejects_invalid_parameters():
    with pytest.raises(ValueError, match="p_spoof"):
        compute_min_dcf([1.0], [0.0], p_spoof=1.0)
    with pytest.raises(ValueError, match="costs"):
        compute_act_dcf([1.0], [0.0], c_fa=0.0)


# ---------------------------------------------------------------------------------------------
# ASV score files (ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt: source key score)
# ---------------------------------------------------------------------------------------------


def test_read_asv_scores(tmp_path):
    path = tmp_path / "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
    path.write_text(
        "bonafide target 3.21785\n"
        "bonafide nontarget -12.40601\n"
        "A01 spoof 1.07\n"
        "bonafide target 1.5e1\n"
        "\n"
        "A06 spoof -0.25\n",
        encoding="utf-8",
    )
    scores = read_asv_scores(path)
    assert set(scores) == {"target", "nontarget", "spoof"}
    np.testing.assert_array_equal(scores["target"], [3.21785, 15.0])
    np.testing.assert_array_equal(scores["nontarget"], [-12.40601])
    np.testing.assert_array_equal(scores["spoof"], [1.07, -0.25])
    assert scores["target"].dtype == np.float64


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("bonafide target", "expected 3 columns"),
        ("LA_0069 bonafide target 1.0", "expected 3 columns"),
        ("bonafide bonafide 1.0", "key must be one of"),
        ("bonafide target abc", "not a number"),
        ("bonafide target nan", "not finite"),
    ],
)
def test_read_asv_scores_reports_the_bad_line(tmp_path, bad_line, match):
    path = tmp_path / "asv.txt"
    path.write_text(f"bonafide target 1.0\nA07 spoof 0.5\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        read_asv_scores(path)
    assert "asv.txt:3" in str(info.value)


def test_read_asv_scores_rejects_an_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no ASV trials"):
        read_asv_scores(path)
