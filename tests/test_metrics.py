"""Metric functions against hand-worked cases and the published definitions.

Definitions: EER and legacy t-DCF from the ASVspoof 2019 evaluation plan and its official
``eval_metrics.py``; revised t-DCF from the ASVspoof 2021 evaluation plan (Kinnunen et al., TASLP
2020) and the 2021 eval package; minDCF / actDCF / Cllr from the ASVspoof 5 evaluation plan and
package (Pspoof 0.05, Cmiss 1, Cfa 10).

The ``_official_*`` helpers below restate the official computations as plain Python loops, written
for these tests (no numpy sorting or cumulative sums): the project's functions must give the same
floats on random, tied and degenerate inputs.
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
    compute_det_curve_tie_aware,
    compute_eer,
    compute_eer_tie_aware,
    compute_min_cllr,
    compute_min_dcf,
    compute_tdcf_2021,
    compute_tdcf_legacy,
    pav_calibrate,
    read_asv_scores,
    tied_fraction,
)

# ---------------------------------------------------------------------------------------------
# Independent statements of the official definitions
# ---------------------------------------------------------------------------------------------


def _official_det(bona, spoof) -> tuple[list[float], list[float], list[float]]:
    """Official DET curve: put the bona fide trials, then the spoofs, in one list; sort it by score
    keeping the list order among equal scores (Python's sort is stable); reject the k lowest trials
    for k = 0..N. Threshold of point k > 0: the k-th lowest score; of point 0: lowest - 0.001."""
    bona, spoof = [float(s) for s in bona], [float(s) for s in spoof]
    trials = sorted([(s, True) for s in bona] + [(s, False) for s in spoof], key=lambda t: t[0])
    frr, far, thresholds = [0.0], [1.0], [trials[0][0] - 0.001]
    bona_rejected = 0
    for k, (score, is_bona) in enumerate(trials, start=1):
        bona_rejected += is_bona
        frr.append(bona_rejected / len(bona))
        far.append((len(spoof) - (k - bona_rejected)) / len(spoof))
        thresholds.append(score)
    return frr, far, thresholds


def _official_eer(bona, spoof) -> tuple[float, float]:
    """Mean of (frr, far) at the first DET point with the smallest |frr - far|; its threshold."""
    frr, far, thresholds = _official_det(bona, spoof)
    best = 0
    for k in range(1, len(frr)):
        if abs(frr[k] - far[k]) < abs(frr[best] - far[best]):
            best = k
    return (frr[best] + far[best]) / 2, thresholds[best]


OFFICIAL_P_SPOOF = 0.05
OFFICIAL_P_TAR = (1 - OFFICIAL_P_SPOOF) * 0.99
OFFICIAL_P_NON = (1 - OFFICIAL_P_SPOOF) * 0.01


def _official_asv_rates(tar, non, spoof) -> tuple[float, float, float, float]:
    """(Pfa, Pmiss, Pmiss_spoof, Pfa_spoof) of the ASV at its official EER threshold t:
    a miss is score < t, a false alarm score >= t."""
    _, t = _official_eer(tar, non)
    p_fa = sum(1 for s in non if s >= t) / len(non)
    p_miss = sum(1 for s in tar if s < t) / len(tar)
    p_miss_spoof = sum(1 for s in spoof if s < t) / len(spoof)
    p_fa_spoof = sum(1 for s in spoof if s >= t) / len(spoof)
    return p_fa, p_miss, p_miss_spoof, p_fa_spoof


def _official_tdcf_legacy(cm_bona, cm_spoof, tar, non, spoof) -> tuple[float, list[float]]:
    """ASVspoof 2019 t-DCF with the 2019 cost model (Cmiss_asv 1, Cfa_asv 10, Cmiss_cm 1,
    Cfa_cm 10): C1 Pmiss_cm + C2 Pfa_cm over min(C1, C2); returns (min, curve)."""
    p_fa, p_miss, p_miss_spoof, _ = _official_asv_rates(tar, non, spoof)
    c1 = OFFICIAL_P_TAR * (1 - 1 * p_miss) - OFFICIAL_P_NON * 10 * p_fa
    c2 = 10 * OFFICIAL_P_SPOOF * (1 - p_miss_spoof)
    frr, far, _ = _official_det(cm_bona, cm_spoof)
    curve = [(c1 * m + c2 * f) / min(c1, c2) for m, f in zip(frr, far, strict=True)]
    return min(curve), curve


def _official_tdcf_2021(cm_bona, cm_spoof, tar, non, spoof) -> tuple[float, list[float]]:
    """ASVspoof 2021 t-DCF (Cmiss 1, Cfa 10, Cfa_spoof 10): (C0 + C1 Pmiss_cm + C2 Pfa_cm) over
    C0 + min(C1, C2); returns (min, curve)."""
    p_fa, p_miss, _, p_fa_spoof = _official_asv_rates(tar, non, spoof)
    c0 = OFFICIAL_P_TAR * 1 * p_miss + OFFICIAL_P_NON * 10 * p_fa
    c1 = OFFICIAL_P_TAR * 1 - (OFFICIAL_P_TAR * 1 * p_miss + OFFICIAL_P_NON * 10 * p_fa)
    c2 = OFFICIAL_P_SPOOF * 10 * p_fa_spoof
    frr, far, _ = _official_det(cm_bona, cm_spoof)
    curve = [(c0 + c1 * m + c2 * f) / (c0 + min(c1, c2)) for m, f in zip(frr, far, strict=True)]
    return min(curve), curve


def _official_min_dcf(bona, spoof) -> tuple[float, float]:
    """ASVspoof 5 minDCF: the first strict minimum of Cmiss frr Pbona + Cfa far (1 - Pbona) over
    the official DET (Pbona = 1 - Pspoof), over min(Cmiss Pbona, Cfa (1 - Pbona))."""
    frr, far, thresholds = _official_det(bona, spoof)
    p_bona = 1 - OFFICIAL_P_SPOOF
    best, best_threshold = math.inf, math.nan
    for m, f, t in zip(frr, far, thresholds, strict=True):
        cost = 1 * m * p_bona + 10 * f * (1 - p_bona)
        if cost < best:
            best, best_threshold = cost, t
    return best / min(1 * p_bona, 10 * (1 - p_bona)), best_threshold


def _official_act_dcf(bona, spoof) -> float:
    """ASVspoof 5 actDCF at the Bayes threshold -log(Cmiss (1 - Pspoof) / (Cfa Pspoof))."""
    t = -math.log(1 * (1 - OFFICIAL_P_SPOOF) / (10 * OFFICIAL_P_SPOOF))
    p_miss = sum(1 for s in bona if s < t) / len(bona)
    p_fa = sum(1 for s in spoof if s >= t) / len(spoof)
    cost = 1 * (1 - OFFICIAL_P_SPOOF) * p_miss + 10 * OFFICIAL_P_SPOOF * p_fa
    return cost / min(10 * OFFICIAL_P_SPOOF, 1 * (1 - OFFICIAL_P_SPOOF))


def _score_sets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, bona fide, spoof): random, tied (rounded or from a few levels) and degenerate."""
    rng = np.random.default_rng(7)
    sets = []
    for i, (n_bona, n_spoof) in enumerate([(1, 4), (7, 13), (50, 50), (200, 37), (33, 300)]):
        bona, spoof = rng.normal(1.0, 1.0, n_bona), rng.normal(0.0, 1.5, n_spoof)
        sets.append((f"random{i}", bona, spoof))
        sets.append((f"rounded{i}", np.round(2 * bona) / 2, np.round(2 * spoof) / 2))
        sets.append((f"levels{i}", rng.integers(0, 3, n_bona) / 2, rng.integers(0, 3, n_spoof) / 2))
    for i in range(20):  # small sets: exactly equal |frr - far| at two points is common
        n_bona, n_spoof = rng.integers(1, 6, 2)
        sets.append((f"small{i}", rng.integers(0, 6, n_bona), rng.integers(0, 6, n_spoof)))
    sets += [
        ("one_each", np.array([0.3]), np.array([0.1])),
        ("one_each_tied", np.array([0.2]), np.array([0.2])),
        ("one_each_reversed", np.array([0.1]), np.array([0.3])),
        ("all_equal", np.full(5, 0.5), np.full(7, 0.5)),
        ("separated", np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.0])),
        ("reversed", np.array([-1.0, 0.0]), np.array([1.0, 2.0, 3.0])),
        ("separated_tied_edge", np.array([1.0, 1.0, 2.0]), np.array([0.0, 1.0])),
    ]
    return sets


SCORE_SETS = _score_sets()
SET_IDS = [name for name, _, _ in SCORE_SETS]
UNTIED_SETS = [s for s in SCORE_SETS if tied_fraction(np.concatenate(s[1:])) == 0]

# ---------------------------------------------------------------------------------------------
# EER (official)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "bona", "spoof"), SCORE_SETS, ids=SET_IDS)
def test_det_curve_is_the_official_one(name, bona, spoof):
    frr, far, thresholds = compute_det_curve(bona, spoof)
    ref_frr, ref_far, ref_thresholds = _official_det(bona, spoof)
    np.testing.assert_array_equal(frr, ref_frr)
    np.testing.assert_array_equal(far, ref_far)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    # usable for plotting: N + 1 points from (0, 1) to (1, 0), monotone
    assert frr.shape == far.shape == thresholds.shape == (bona.size + spoof.size + 1,)
    assert (frr[0], far[0], frr[-1], far[-1]) == (0.0, 1.0, 1.0, 0.0)
    assert np.all(np.diff(frr) >= 0) and np.all(np.diff(far) <= 0)
    assert np.all(np.diff(thresholds) >= 0)


@pytest.mark.parametrize(("name", "bona", "spoof"), SCORE_SETS, ids=SET_IDS)
def test_eer_is_the_official_one(name, bona, spoof):
    assert compute_eer(bona, spoof) == _official_eer(bona, spoof)


def test_eer_perfect_separation_is_zero():
    eer, threshold = compute_eer([1.0, 2.0, 3.0], [-1.0, 0.0])
    assert eer == 0.0
    assert threshold == 0.0  # the highest spoof score: the last trial rejected


def test_eer_fully_inverted_is_one():
    # Every spoof outscores every bona fide: after rejecting the two bona fide, all spoofs pass.
    eer, _ = compute_eer([-1.0, 0.0], [1.0, 2.0, 3.0])
    assert eer == 1.0


@pytest.mark.parametrize(
    ("bona", "spoof", "eer", "threshold"),
    [
        # sorted: .1s .2s .3b .5s .6b .8b; reject k lowest:
        # k=0 (frr 0, far 1), 1 (0, 2/3), 2 (0, 1/3), 3 (1/3, 1/3) -> EER 1/3, threshold .3
        ([0.8, 0.6, 0.3], [0.5, 0.2, 0.1], 1 / 3, 0.3),
        # sorted: 0s 1b 2s 3b 4s: k=0 (0, 1), 1 (0, 2/3), 2 (1/2, 2/3), 3 (1/2, 1/3), 4 (1, 1/3),
        # 5 (1, 0); smallest |frr - far| = 1/6, first at k=2 -> EER (1/2 + 2/3) / 2 = 7/12 at 1
        ([1.0, 3.0], [0.0, 2.0, 4.0], 7 / 12, 1.0),
        # ties split bona fide first: sorted 0s 1b 1b 1s 1s 2b
        # k=0 (0, 1), 1 (0, 2/3), 2 (1/3, 2/3), 3 (2/3, 2/3) -> EER 2/3 at threshold 1
        ([1.0, 1.0, 2.0], [0.0, 1.0, 1.0], 2 / 3, 1.0),
        # all scores tied: sorted b b s: k=0 (0, 1), 1 (1/2, 1), 2 (1, 1) -> EER 1
        ([0.5, 0.5], [0.5], 1.0, 0.5),
    ],
)
def test_eer_hand_computed(bona, spoof, eer, threshold):
    got_eer, got_threshold = compute_eer(bona, spoof)
    assert got_eer == pytest.approx(eer, abs=1e-12)
    assert got_threshold == threshold


def test_det_curve_splits_ties_bona_fide_first():
    frr, far, thresholds = compute_det_curve([1.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [-0.001, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(frr, np.array([0, 0, 1, 2, 2, 2, 3]) / 3)
    np.testing.assert_allclose(far, np.array([3, 2, 2, 2, 1, 0, 0]) / 3)


def test_eer_does_not_depend_on_the_order_within_a_class():
    rng = np.random.default_rng(3)
    bona, spoof = np.round(rng.normal(1, 1, 60)), np.round(rng.normal(0, 1, 80))
    assert compute_eer(bona, spoof) == compute_eer(rng.permutation(bona), rng.permutation(spoof))


@pytest.mark.parametrize(
    ("bona", "spoof", "match"),
    [
        ([], [0.0], "no bona fide"),
        ([0.0], [], "no spoof"),
        ([0.0, np.nan], [1.0], "NaN"),
        ([0.0], [np.inf], "NaN or infinite"),
    ],
)
@pytest.mark.parametrize("metric", [compute_eer, compute_eer_tie_aware])
def test_eer_rejects_empty_and_nonfinite(metric, bona, spoof, match):
    with pytest.raises(ValueError, match=match):
        metric(bona, spoof)


# ---------------------------------------------------------------------------------------------
# EER (tie-aware) and tied_fraction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bona", "spoof", "eer", "threshold"),
    [
        # tied scores share one threshold (accept when score >= it):
        # t=0 (frr 0, far 1), t=1 (0, 2/3), t=2 (2/3, 0), inf (1, 0) -> first min |diff| 2/3 at
        # t=1, EER = (0 + 2/3) / 2 = 1/3 (the official curve splits the tie: 2/3)
        ([1.0, 1.0, 2.0], [0.0, 1.0, 1.0], 1 / 3, 1.0),
        # all scores tied: only "accept all" (0, 1) and "reject all" (1, 0) -> EER 1/2
        ([0.5, 0.5], [0.5], 0.5, 0.5),
        ([1.0, 2.0, 3.0], [-1.0, 0.0], 0.0, 1.0),
    ],
)
def test_eer_tie_aware_hand_computed(bona, spoof, eer, threshold):
    got_eer, got_threshold = compute_eer_tie_aware(bona, spoof)
    assert got_eer == pytest.approx(eer, abs=1e-12)
    assert got_threshold == threshold


def test_det_curve_tie_aware_endpoints_and_ties():
    frr, far, thresholds = compute_det_curve_tie_aware([1.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [0.0, 1.0, 2.0, np.inf])
    np.testing.assert_allclose(frr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 2 / 3, 0, 0])


@pytest.mark.parametrize(("name", "bona", "spoof"), UNTIED_SETS, ids=[s[0] for s in UNTIED_SETS])
def test_tie_aware_eer_equals_the_official_one_on_untied_scores(name, bona, spoof):
    assert compute_eer_tie_aware(bona, spoof)[0] == compute_eer(bona, spoof)[0]
    # the same DET points, one per distinct threshold
    frr, far, _ = compute_det_curve(bona, spoof)
    tie_frr, tie_far, _ = compute_det_curve_tie_aware(bona, spoof)
    np.testing.assert_array_equal(frr, tie_frr)
    np.testing.assert_array_equal(far, tie_far)


def test_tie_aware_det_is_the_official_one_at_tie_boundaries():
    # The official curve visits every tie-aware point (after the last trial of each tie group).
    rng = np.random.default_rng(11)
    bona, spoof = rng.integers(0, 5, 40) / 4, rng.integers(0, 5, 70) / 4
    frr, far, _ = compute_det_curve(bona, spoof)
    tie_frr, tie_far, _ = compute_det_curve_tie_aware(bona, spoof)
    official_points = set(zip(frr.tolist(), far.tolist(), strict=True))
    assert set(zip(tie_frr.tolist(), tie_far.tolist(), strict=True)) <= official_points


def test_quantised_scores_move_the_official_eer():
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.2, 300)
    bona_q, spoof_q = np.round(2 * bona) / 2, np.round(2 * spoof) / 2
    assert tied_fraction(np.concatenate([bona_q, spoof_q])) > 0.99
    official, tie_aware = compute_eer(bona_q, spoof_q)[0], compute_eer_tie_aware(bona_q, spoof_q)[0]
    assert official == pytest.approx(0.38416666666666666, abs=1e-12)
    assert tie_aware == pytest.approx(0.3275, abs=1e-12)


@pytest.mark.parametrize(
    ("scores", "fraction"),
    [
        ([1.0, 2.0, 3.0], 0.0),
        ([1.0], 0.0),
        ([1.0, 1.0, 2.0], 2 / 3),
        ([0.5, 0.5, 0.5, 0.5], 1.0),
        ([1.0, 1.0, 2.0, 2.0, 3.0], 0.8),
        ([0.0, -0.0, 1.0], 2 / 3),  # equal as numbers
        (np.array([[1.0, 2.0], [2.0, 4.0]]), 0.5),
    ],
)
def test_tied_fraction(scores, fraction):
    assert tied_fraction(scores) == pytest.approx(fraction, abs=1e-15)


def test_tied_fraction_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="no trial scores"):
        tied_fraction([])
    with pytest.raises(ValueError, match="NaN"):
        tied_fraction([1.0, np.nan])


# ---------------------------------------------------------------------------------------------
# t-DCF. Hand-worked example with the default cost models (Pspoof 0.05):
#   Ptar = 0.95 * 0.99 = 0.9405, Pnon = 0.95 * 0.01 = 0.0095
# ASV scores: target [2, 3, 4, 5], nontarget [-1, 0, 1, 2.5], spoof [1.5, 3.5, 4.5, -0.5]
#   sorted target/nontarget: -1n 0n 1n 2t 2.5n 3t 4t 5t; rejecting the k lowest:
#   k=3 (Pmiss 0, Pfa 1/4), k=4 (1/4, 1/4) -> official ASV EER 1/4, threshold 2 (the score of the
#   last rejected trial). At t = 2: Pmiss_asv = P(target < 2) = 0, Pfa_asv = P(nontarget >= 2)
#   = 1/4 (2.5), spoofs accepted (>= 2): 3.5, 4.5 -> Pfa_spoof_asv = 1/2, Pmiss_spoof_asv = 1/2
# CM scores: bona fide [0.9, 0.8, 0.2], spoof [0.7, 0.6, 0.5, 0.4, 0.3, 0.1]; official DET:
#   threshold: .099 .1   .2   .3   .4   .5   .6   .7   .8   .9
#   Pmiss_cm:  0    0    1/3  1/3  1/3  1/3  1/3  1/3  2/3  1
#   Pfa_cm:    1    5/6  5/6  4/6  3/6  2/6  1/6  0    0    0
# ---------------------------------------------------------------------------------------------

ASV_TARGET = [2.0, 3.0, 4.0, 5.0]
ASV_NONTARGET = [-1.0, 0.0, 1.0, 2.5]
ASV_SPOOF = [1.5, 3.5, 4.5, -0.5]
CM_BONA = [0.9, 0.8, 0.2]
CM_SPOOF = [0.7, 0.6, 0.5, 0.4, 0.3, 0.1]
CM_THRESHOLDS = [0.1 - 0.001, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
P_MISS_CM = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 3]) / 3
P_FA_CM = np.array([6, 5, 5, 4, 3, 2, 1, 0, 0, 0]) / 6
ASV = (ASV_TARGET, ASV_NONTARGET, ASV_SPOOF)


def test_asv_error_rates_at_the_official_eer_threshold():
    rates = asv_error_rates(*ASV)
    assert rates.threshold == 2.0
    assert (rates.p_miss, rates.p_fa, rates.p_fa_spoof, rates.p_miss_spoof) == (0, 0.25, 0.5, 0.5)
    # an explicit threshold, e.g. the tie-aware EER one (first accepting score at the EER point)
    assert compute_eer_tie_aware(ASV_TARGET, ASV_NONTARGET)[1] == 2.5
    rates = asv_error_rates(*ASV, threshold=2.5)
    assert (rates.p_miss, rates.p_fa, rates.p_fa_spoof) == (0.25, 0.25, 0.5)


def test_tdcf_legacy_hand_computed():
    # C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
    #    = 0.9405 * (1 - 0) - 0.0095 * 10 * 0.25 = 0.9405 - 0.02375 = 0.91675
    # C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv) = 10 * 0.05 * 0.5 = 0.25
    # curve = (C1 Pmiss_cm + C2 Pfa_cm) / min(C1, C2) = 3.667 Pmiss_cm + Pfa_cm
    #   = [1, .833333, 2.055667, 1.889, 1.722333, 1.555667, 1.389, 1.222333, 2.444667, 3.667]
    # min = 5/6 at CM threshold 0.1 (reject the lowest spoof only)
    expected = np.array(
        [1.0, 0.833333, 2.055667, 1.889, 1.722333, 1.555667, 1.389, 1.222333, 2.444667, 3.667]
    )
    min_tdcf, curve, thresholds = compute_tdcf_legacy(CM_BONA, CM_SPOOF, *ASV)
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    np.testing.assert_allclose(curve, 3.667 * P_MISS_CM + P_FA_CM, atol=1e-12)
    np.testing.assert_array_equal(thresholds, CM_THRESHOLDS)
    assert min_tdcf == pytest.approx(5 / 6, abs=1e-12)


def test_tdcf_2021_hand_computed():
    # C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv = 0 + 0.0095 * 10 * 0.25 = 0.02375
    # C1 = Ptar Cmiss - C0 = 0.9405 - 0.02375 = 0.91675
    # C2 = Pspoof Cfa_spoof Pfa_spoof_asv = 0.05 * 10 * 0.5 = 0.25
    # curve = (C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2)),  C0 + C2 = 0.27375
    #   k=0: (0.02375 + 0.25) / 0.27375 = 1
    #   k=1: (0.02375 + 0.25 * 5/6) / 0.27375 = 0.232083333 / 0.27375 = 0.847793
    #   k=7: (0.02375 + 0.91675 / 3) / 0.27375 = 0.329333333 / 0.27375 = 1.203044
    #   k=2: (0.02375 + 0.91675 / 3 + 0.25 * 5/6) / 0.27375 = 0.537666667 / 0.27375 = 1.964079
    #   k=9: (0.02375 + 0.91675) / 0.27375 = 0.9405 / 0.27375 = 3.435616
    expected = [1.0, 0.847793, 1.964079, 1.811872, 1.659665, 1.507458, 1.355251, 1.203044]
    expected = np.array([*expected, 2.31933, 3.435616])
    min_tdcf, curve, thresholds = compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV)
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    np.testing.assert_allclose(
        curve, (0.02375 + 0.91675 * P_MISS_CM + 0.25 * P_FA_CM) / 0.27375, atol=1e-12
    )
    np.testing.assert_array_equal(thresholds, CM_THRESHOLDS)
    assert min_tdcf == pytest.approx(0.232083333333 / 0.27375, abs=1e-9)


def _asv_sets() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, target, nontarget, spoof) ASV scores: random, rounded, few levels."""
    rng = np.random.default_rng(21)
    sets = []
    for i, (n_tar, n_non, n_spoof) in enumerate([(5, 7, 6), (40, 120, 90), (300, 200, 250)]):
        tar, non = rng.normal(3.0, 1.5, n_tar), rng.normal(-2.0, 1.5, n_non)
        spoof = rng.normal(1.5, 2.0, n_spoof)
        sets.append((f"asv_random{i}", tar, non, spoof))
        sets.append((f"asv_rounded{i}", np.round(tar), np.round(non), np.round(spoof)))
    sets.append(("asv_levels", np.array([2.0, 2, 3, 3]), np.array([1.0, 2, 2]), np.array([2.0, 3])))
    return sets


ASV_SETS = _asv_sets()
# t-DCF needs soft CM scores (>= 3 distinct values) in the official code too.
SOFT_SETS = [s for s in SCORE_SETS if np.unique(np.concatenate(s[1:])).size >= 3]


@pytest.mark.parametrize(("asv_name", "tar", "non", "spf"), ASV_SETS, ids=[s[0] for s in ASV_SETS])
@pytest.mark.parametrize(
    ("compute", "official"),
    [(compute_tdcf_legacy, _official_tdcf_legacy), (compute_tdcf_2021, _official_tdcf_2021)],
    ids=["legacy", "2021"],
)
def test_tdcf_is_the_official_one(compute, official, asv_name, tar, non, spf):
    for _, bona, spoof in SOFT_SETS:
        ref_min, ref_curve = official(bona, spoof, tar, non, spf)
        min_tdcf, curve, thresholds = compute(bona, spoof, tar, non, spf)
        np.testing.assert_array_equal(curve, ref_curve)  # bit for bit
        assert min_tdcf == ref_min
        np.testing.assert_array_equal(thresholds, _official_det(bona, spoof)[2])


@pytest.mark.parametrize("compute", [compute_tdcf_legacy, compute_tdcf_2021])
@pytest.mark.parametrize(
    ("bona", "spoof"), [([0.3], [0.1]), ([0.5, 0.5], [0.5]), ([1.0, 1.0], [0.0, 0.0])]
)
def test_tdcf_refuses_hard_decisions_like_the_official_code(compute, bona, spoof):
    with pytest.raises(ValueError, match="soft scores"):
        compute(bona, spoof, *ASV)


def test_tdcf_perfect_cm_reaches_the_asv_floor():
    bona, spoof = [1.0, 2.0, 3.0], [-1.0, 0.0]
    assert compute_tdcf_legacy(bona, spoof, *ASV)[0] == 0.0
    # revised t-DCF cannot go below the ASV's own cost: C0 / (C0 + min(C1, C2))
    assert compute_tdcf_2021(bona, spoof, *ASV)[0] == pytest.approx(0.02375 / 0.27375, abs=1e-9)


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
    np.testing.assert_allclose(curve, (0.91675 * P_MISS_CM + 0.5 * P_FA_CM) / 0.5, atol=1e-12)
    cost_2021 = TDCFCostModel(c_fa_spoof=20.0)
    _, curve, _ = compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV, cost_model=cost_2021)
    np.testing.assert_allclose(
        curve, (0.02375 + 0.91675 * P_MISS_CM + 0.5 * P_FA_CM) / 0.52375, atol=1e-12
    )


def test_tdcf_at_an_explicit_asv_threshold():
    # At 2.5 (the tie-aware EER threshold): Pmiss_asv 1/4, Pfa_asv 1/4, Pfa_spoof_asv 1/2 ->
    # legacy C1 = 0.9405 * 0.75 - 0.02375 = 0.681625, C2 = 0.25
    _, curve, _ = compute_tdcf_legacy(CM_BONA, CM_SPOOF, *ASV, asv_threshold=2.5)
    np.testing.assert_allclose(curve, (0.681625 * P_MISS_CM + 0.25 * P_FA_CM) / 0.25, atol=1e-12)
    # 2021: C0 = 0.9405 / 4 + 0.02375 = 0.258875, C1 = 0.681625, C2 = 0.25
    _, curve, _ = compute_tdcf_2021(CM_BONA, CM_SPOOF, *ASV, asv_threshold=2.5)
    np.testing.assert_allclose(
        curve, (0.258875 + 0.681625 * P_MISS_CM + 0.25 * P_FA_CM) / 0.508875, atol=1e-12
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost_model": LegacyTDCFCostModel(p_spoof=0.1)}, "sum to 1"),
        ({"cost_model": LegacyTDCFCostModel(c_fa_asv=-1.0)}, "c_fa_asv"),
        ({"cost_model": LegacyTDCFCostModel(c_miss_cm=0.01)}, "negative t-DCF weights"),
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
    # An ASV threshold between the classes (Pmiss = Pfa = 0, so C0 = 0) that also rejects every
    # spoof (C2 = 0). At the official EER threshold (the highest nontarget, 1) Pfa would be 1/2.
    asv = ([3.0, 4.0], [0.0, 1.0], [-1.0, -2.0])
    with pytest.raises(ValueError, match="C0 \\+ min\\(C1, C2\\) is zero"):
        compute_tdcf_2021(CM_BONA, CM_SPOOF, *asv, asv_threshold=2.0)
    assert compute_tdcf_2021(CM_BONA, CM_SPOOF, *asv)[0] == 1.0  # C0 / (C0 + 0) everywhere
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
    # bona fide [1, 2, 3], spoof [-1, 0, 1.5]; sorted -1s 0s 1b 1.5s 2b 3b, reject the k lowest:
    #   k=0 (0, 1) 1;  k=1 (0, 2/3) .667;  k=2 (0, 1/3) .333;  k=3 (1/3, 1/3) .967;
    #   k=4 (1/3, 0) .633;  k=5 (2/3, 0) 1.267;  k=6 (1, 0) 1.9
    #   -> minDCF 1/3 at k=2, threshold 0 (the last rejected score)
    # actDCF at t = -0.642: no bona fide missed, spoofs 0 and 1.5 accepted -> 2/3
    min_dcf, threshold = compute_min_dcf([1.0, 2.0, 3.0], [-1.0, 0.0, 1.5])
    assert (min_dcf, threshold) == (pytest.approx(1 / 3, abs=1e-12), 0.0)
    act_dcf, threshold = compute_act_dcf([1.0, 2.0, 3.0], [-1.0, 0.0, 1.5])
    assert act_dcf == pytest.approx(2 / 3, abs=1e-12)
    assert threshold == bayes_threshold()


@pytest.mark.parametrize(("name", "bona", "spoof"), SCORE_SETS, ids=SET_IDS)
def test_min_and_act_dcf_are_the_official_ones(name, bona, spoof):
    assert compute_min_dcf(bona, spoof) == _official_min_dcf(bona, spoof)
    assert compute_act_dcf(bona, spoof)[0] == _official_act_dcf(bona, spoof)
    # LLR-like scores around the Bayes threshold, ties on it included
    llr_bona, llr_spoof = bona - 1.0 + bayes_threshold(), spoof - 1.0 + bayes_threshold()
    assert compute_act_dcf(llr_bona, llr_spoof)[0] == _official_act_dcf(llr_bona, llr_spoof)


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
