"""Router evaluation metrics against hand-computed cases and known closed forms."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import langchain_herd.evaluation as evaluation
from langchain_herd.evaluation import (
    aiq,
    apgr,
    cpt,
    expected_calibration_error,
    metrics,
    oracle_gap_closed,
    pgr_curve,
)


def test_public_api_is_pinned() -> None:
    assert evaluation.__all__ == [
        "aiq",
        "apgr",
        "cpt",
        "expected_calibration_error",
        "oracle_gap_closed",
        "pgr_curve",
    ]


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics)
    assert result.attempted >= 6
    assert result.failed == 0


# --- oracle_gap_closed -------------------------------------------------------


def test_oracle_gap_closed_hand_case() -> None:
    # (0.7 - 0.6) / (0.8 - 0.6) = 0.1 / 0.2 = 0.5
    assert oracle_gap_closed(0.7, 0.6, 0.8) == pytest.approx(0.5)
    # Worse than the best single model: (0.5 - 0.6) / (0.8 - 0.6) = -0.5
    assert oracle_gap_closed(0.5, 0.6, 0.8) == pytest.approx(-0.5)
    # Matching the oracle closes the whole gap.
    assert oracle_gap_closed(0.8, 0.6, 0.8) == pytest.approx(1.0)


def test_oracle_gap_closed_zero_denominator_is_nan() -> None:
    assert math.isnan(oracle_gap_closed(0.7, 0.8, 0.8))


# --- PGR / APGR / CPT: a small hand case --------------------------------------

# Five questions, router order by score: q0 (0.9), q3 (0.7), q2 (0.5), q1 (0.2), q4 (0.1).
HAND_SCORES = [0.9, 0.2, 0.5, 0.7, 0.1]
HAND_STRONG = [1, 1, 1, 0, 0]
HAND_WEAK = [0, 0, 0, 0, 1]
# weak_perf = 1/5, strong_perf = 3/5, gap = 2/5 (2 questions' worth).
# Gain of sending each to strong (strong - weak), in router order: +1, 0, +1, +1, -1.
# Cumulative gain for k = 0..5: 0, 1, 1, 2, 3, 2  ->  PGR = gain / 2:
HAND_PGR = [0.0, 0.5, 0.5, 1.0, 1.5, 1.0]


def test_pgr_curve_hand_case() -> None:
    shares, pgr = pgr_curve(HAND_SCORES, HAND_STRONG, HAND_WEAK, n_points=6)
    np.testing.assert_allclose(shares, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(pgr, HAND_PGR)


def test_apgr_hand_case() -> None:
    # Trapezoid with step 0.2: 0.2 * (0/2 + 0.5 + 0.5 + 1.0 + 1.5 + 1.0/2) = 0.2 * 4.0 = 0.8
    assert apgr(HAND_SCORES, HAND_STRONG, HAND_WEAK, n_points=6) == pytest.approx(0.8)


def test_cpt_hand_case() -> None:
    # First k with PGR >= target, over n = 5: PGR(k=1) = 0.5, PGR(k=3) = 1.0, PGR(k=4) = 1.5.
    assert cpt(HAND_SCORES, HAND_STRONG, HAND_WEAK, 0.5) == pytest.approx(0.2)
    assert cpt(HAND_SCORES, HAND_STRONG, HAND_WEAK, 0.8) == pytest.approx(0.6)
    assert cpt(HAND_SCORES, HAND_STRONG, HAND_WEAK, 1.5) == pytest.approx(0.8)
    assert cpt(HAND_SCORES, HAND_STRONG, HAND_WEAK, 0.0) == 0.0
    assert math.isnan(cpt(HAND_SCORES, HAND_STRONG, HAND_WEAK, 2.0))


def test_equal_models_give_nan() -> None:
    assert math.isnan(apgr([0.1, 0.2], [1, 0], [0, 1]))
    assert math.isnan(cpt([0.1, 0.2], [1, 0], [0, 1], 0.5))


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        apgr([0.1, 0.2], [1, 0, 1], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        apgr([0.1, 0.2], [1, 2], [0, 1])
    with pytest.raises(ValueError, match="n_points"):
        pgr_curve([0.1], [1], [0], n_points=1)


# --- APGR sanity: random router and oracle router -----------------------------


def _oracle_apgr_closed_form(strong: np.ndarray, weak: np.ndarray) -> float:
    """Area under the oracle router's continuous PGR curve.

    With shares a (strong right, weak wrong), b (tie) and c (weak right, strong wrong)
    and D = a - c, the oracle's PGR rises linearly from 0 to a/D over [0, a], stays at
    a/D over [a, a+b], and falls linearly to (a - c)/D = 1 over [a+b, 1]. Area:
    (a^2/2 + a*b + (a*c - c^2/2)) / D.
    """
    a = float(np.mean((strong == 1) & (weak == 0)))
    c = float(np.mean((strong == 0) & (weak == 1)))
    b = 1.0 - a - c
    return (a * a / 2 + a * b + a * c - c * c / 2) / (a - c)


# Ten questions: 4 strong-only (a), 2 both right + 2 both wrong (b), 2 weak-only (c).
ORACLE_STRONG = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
ORACLE_WEAK = np.array([0, 0, 0, 0, 1, 1, 0, 0, 1, 1])


def test_oracle_router_hand_case() -> None:
    # weak_perf = 0.4, strong_perf = 0.6, gap 0.2; each strong-only question adds 0.1
    # quality (+0.5 PGR), each weak-only question sent to strong removes 0.1 (-0.5 PGR).
    # PGR at k = 0..10: 0, .5, 1, 1.5, 2, 2, 2, 2, 2, 1.5, 1
    # Trapezoid, step 0.1: 0.1 * (0/2 + .5+1+1.5+2+2+2+2+2+1.5 + 1/2) = 0.1 * 15 = 1.5
    # Closed form with a = .4, b = .4, c = .2: (.08 + .16 + .08 - .02) / .2 = 1.5
    scores = ORACLE_STRONG - ORACLE_WEAK
    assert _oracle_apgr_closed_form(ORACLE_STRONG, ORACLE_WEAK) == pytest.approx(1.5)
    assert apgr(scores, ORACLE_STRONG, ORACLE_WEAK, n_points=11) == pytest.approx(1.5)
    # Each question repeated 10 times: n = 100, so the default 101 shares hit every k.
    strong, weak = np.repeat(ORACLE_STRONG, 10), np.repeat(ORACLE_WEAK, 10)
    assert apgr(strong - weak, strong, weak) == pytest.approx(1.5)
    # CPT(50%) of the oracle: one strong-only question (k = 1 of 10) already gives 0.5.
    assert cpt(scores, ORACLE_STRONG, ORACLE_WEAK, 0.5) == pytest.approx(0.1)


def _random_table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    strong = (rng.random(n) < 0.8).astype(np.int64)
    weak = (rng.random(n) < 0.6).astype(np.int64)
    return strong, weak


def test_random_router_apgr_is_about_half() -> None:
    strong, weak = _random_table(20_000, seed=0)
    scores = np.random.default_rng(1).random(strong.size)
    assert apgr(scores, strong, weak) == pytest.approx(0.5, abs=0.02)


def test_oracle_router_apgr_matches_closed_form_on_random_table() -> None:
    strong, weak = _random_table(20_000, seed=2)
    value = apgr(strong - weak, strong, weak, n_points=1001)
    expected = _oracle_apgr_closed_form(strong, weak)
    # 1001 shares on n = 20,000 questions: grid error well under 1e-3.
    assert value == pytest.approx(expected, abs=1e-3)
    assert value > 0.9


# --- AIQ ----------------------------------------------------------------------


def test_aiq_skips_dominated_point() -> None:
    # (1, 0.6) lies under the chord from (0, 0.5) to (2, 0.9) (0.7 at cost 1), so the
    # hull is that chord: area = 2 * (0.5 + 0.9) / 2 = 1.4, over range 2 -> 0.7
    assert aiq([0.0, 1.0, 2.0], [0.5, 0.6, 0.9]) == pytest.approx(0.7)
    # Order of the points does not matter.
    assert aiq([2.0, 0.0, 1.0], [0.9, 0.5, 0.6]) == pytest.approx(0.7)


def test_aiq_keeps_hull_vertex() -> None:
    # (1, 0.8) is above the chord (0.7), so it stays:
    # 1 * (0.5 + 0.8) / 2 + 1 * (0.8 + 0.9) / 2 = 0.65 + 0.85 = 1.5, over 2 -> 0.75
    assert aiq([0.0, 1.0, 2.0], [0.5, 0.8, 0.9]) == pytest.approx(0.75)


def test_aiq_is_non_decreasing() -> None:
    # A dearer, worse point (2, 0.7) does not pull the frontier down: it is flat at 0.9
    # from cost 1 on. 1 * (0.5 + 0.9) / 2 + 1 * 0.9 = 1.6, over 2 -> 0.8
    assert aiq([0.0, 1.0, 2.0], [0.5, 0.9, 0.7]) == pytest.approx(0.8)


def test_aiq_single_point_and_zero_range() -> None:
    assert aiq([3.0], [0.42]) == pytest.approx(0.42)
    assert aiq([1.0, 1.0], [0.3, 0.6]) == pytest.approx(0.6)


# --- ECE ----------------------------------------------------------------------


def test_ece_hand_case() -> None:
    # Two bins, [0, .5) and [.5, 1]; the NaN outcome (prob 0.1) is skipped.
    # bin 0: probs .2, .4 (mean .3), outcomes 0, 1 (mean .5): |.5 - .3| = .2, weight 2/4
    # bin 1: probs .6, .8 (mean .7), outcomes 1, 1 (mean 1):  |1 - .7| = .3, weight 2/4
    # ECE = .5 * .2 + .5 * .3 = .25
    probs = [0.2, 0.4, 0.6, 0.8, 0.1]
    outcomes = [0, 1, 1, 1, math.nan]
    assert expected_calibration_error(probs, outcomes, n_bins=2) == pytest.approx(0.25)


def test_ece_default_bins_and_edges() -> None:
    # Ten bins: 0.05 -> bin 0 (outcome 0, |0 - .05| = .05); 1.0 -> last bin (outcome 1, 0).
    # ECE = .5 * .05 + .5 * 0 = .025
    assert expected_calibration_error([0.05, 1.0], [0, 1]) == pytest.approx(0.025)
    # A perfectly calibrated bin gives 0.
    assert expected_calibration_error([0.5, 0.5], [0, 1]) == pytest.approx(0.0)


def test_ece_all_unlabelled_is_nan_and_bad_probs_rejected() -> None:
    assert math.isnan(expected_calibration_error([0.3], [math.nan]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])


def test_tied_scores_count_as_a_random_pick() -> None:
    # Four questions, all scored alike: strong gains on rows 0 and 1 only. Sending any k
    # of them to the strong model gains k/4 of the gap on average, whatever the row order.
    strong, weak = [1, 1, 0, 1], [0, 0, 0, 1]
    for order in ([0, 1, 2, 3], [2, 3, 0, 1]):
        s = [strong[i] for i in order]
        w = [weak[i] for i in order]
        _, pgr = pgr_curve([0.5] * 4, s, w, n_points=5)
        assert pgr.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
        assert apgr([0.5] * 4, s, w, n_points=5) == pytest.approx(0.5)
        assert cpt([0.5] * 4, s, w, 0.5) == pytest.approx(0.5)
    # A tie only inside the top block: the untied leader is taken first, then half of
    # the tied pair's gain per question.
    _, pgr = pgr_curve([0.9, 0.1, 0.1], [1, 1, 0], [0, 0, 0], n_points=4)
    assert pgr.tolist() == pytest.approx([0.0, 0.5, 0.75, 1.0])
