"""Router evaluation metrics, in pure numpy, as the routing literature defines them.

* ``oracle_gap_closed``: share of the gap between the best single model and the
  per-question oracle that a router closes.
* RouteLLM (Ong et al., 2024) strong/weak metrics: the performance gap recovered
  (``pgr_curve``), its area over the share of strong-model calls (``apgr``), and the
  call-performance threshold (``cpt``).
* RouterBench (Hu et al., 2024) ``aiq``: the average quality under the
  non-decreasing convex hull of a router's cost-quality points.
* ``expected_calibration_error`` with equal-width bins.

Everything here is offline bookkeeping: no model is called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "aiq",
    "apgr",
    "cpt",
    "expected_calibration_error",
    "oracle_gap_closed",
    "pgr_curve",
]


def oracle_gap_closed(acc_router: float, acc_best_single: float, acc_oracle: float) -> float:
    """Share of the best-single-to-oracle accuracy gap that a router closes.

    ``(acc_router - acc_best_single) / (acc_oracle - acc_best_single)``: 0 means no
    better than always using the best single model, 1 means as good as the oracle
    that picks a correct model whenever one exists.

    Args:
        acc_router: Accuracy of the router.
        acc_best_single: Accuracy of the best single model.
        acc_oracle: Accuracy of the per-question oracle.

    Returns:
        The closed share, or ``nan`` when the oracle is no better than the best
        single model (zero denominator).

    Example:
        >>> round(oracle_gap_closed(0.7, 0.6, 0.8), 10)
        0.5
    """
    denominator = float(acc_oracle) - float(acc_best_single)
    if denominator == 0.0:
        return math.nan
    return (float(acc_router) - float(acc_best_single)) / denominator


def _as_1d(name: str, values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}.")
    return array


def _strong_weak_inputs(
    scores: ArrayLike, strong_correct: ArrayLike, weak_correct: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    s = _as_1d("scores", scores)
    strong = _as_1d("strong_correct", strong_correct)
    weak = _as_1d("weak_correct", weak_correct)
    if not (s.shape == strong.shape == weak.shape):
        raise ValueError(
            "scores, strong_correct and weak_correct must have the same length, got "
            f"{s.size}, {strong.size} and {weak.size}."
        )
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; drop those questions or give them a score.")
    for name, column in (("strong_correct", strong), ("weak_correct", weak)):
        if not np.isin(column, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold only 0/1 correctness values.")
    return s, strong, weak


def _cumulative_pgr(
    scores: NDArray[np.float64], strong: NDArray[np.float64], weak: NDArray[np.float64]
) -> NDArray[np.float64]:
    """PGR when the strong model answers the top-k questions, for every k in 0..n.

    Questions with equal scores are indistinguishable to the router, so within a block
    of ties the gain is the expected one under a random pick (linear across the block):
    the result never depends on the order of the rows.
    """
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    gain = np.concatenate(([0.0], np.cumsum(strong[order] - weak[order])))
    # Block boundaries: k positions where the score changes (plus 0 and n).
    edges = np.concatenate(([0], np.flatnonzero(np.diff(sorted_scores)) + 1, [n]))
    k = np.arange(n + 1)
    block = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, len(edges) - 2)
    start, end = edges[block], edges[block + 1]
    width = np.maximum(end - start, 1)
    gain = gain[start] + (gain[end] - gain[start]) * (k - start) / width
    weak_perf = weak.mean()
    strong_perf = strong.mean()
    gap = strong_perf - weak_perf
    if gap == 0.0:
        return np.full(n + 1, math.nan)
    quality = weak_perf + gain / n
    return np.asarray((quality - weak_perf) / gap, dtype=np.float64)


def _trapezoid(y: NDArray[np.float64], x: NDArray[np.float64]) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def pgr_curve(
    scores: ArrayLike,
    strong_correct: ArrayLike,
    weak_correct: ArrayLike,
    n_points: int = 101,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RouteLLM's performance gap recovered (PGR) over evenly spaced strong-call shares.

    For each share ``x`` in ``linspace(0, 1, n_points)`` the strong model answers
    the ``k = round(x * n)`` questions with the highest scores and the weak model the
    rest; where ``k`` cuts through questions of equal score, the expected result of a
    random pick among them is used, so row order never matters. With ``quality`` the mean
    correctness of the chosen answers, ``PGR = (quality - weak_perf) /
    (strong_perf - weak_perf)`` where the perfs are the means of
    ``weak_correct`` and ``strong_correct``.

    Args:
        scores: Router score per question; higher means more in need of the strong model.
        strong_correct: 0/1 correctness of the strong model per question.
        weak_correct: 0/1 correctness of the weak model per question.
        n_points: Number of evenly spaced call shares from 0 to 1 (at least 2).

    Returns:
        ``(share_of_strong_calls, pgr)``, two arrays of length ``n_points``. PGR is
        all ``nan`` when both models score the same overall.

    Example:
        >>> shares, pgr = pgr_curve([0.9, 0.1], [1, 1], [0, 1], n_points=3)
        >>> shares.tolist(), pgr.tolist()
        ([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
    """
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}.")
    s, strong, weak = _strong_weak_inputs(scores, strong_correct, weak_correct)
    by_k = _cumulative_pgr(s, strong, weak)
    shares = np.linspace(0.0, 1.0, n_points)
    k = np.rint(shares * s.size).astype(np.int64)
    return shares, by_k[k]


def apgr(
    scores: ArrayLike,
    strong_correct: ArrayLike,
    weak_correct: ArrayLike,
    n_points: int = 101,
) -> float:
    """RouteLLM's average PGR: trapezoid area under the PGR curve over call shares 0..1.

    A router whose scores are random gets about 0.5; always picking right gets more.

    Args:
        scores: Router score per question; higher means more in need of the strong model.
        strong_correct: 0/1 correctness of the strong model per question.
        weak_correct: 0/1 correctness of the weak model per question.
        n_points: Number of evenly spaced call shares (see ``pgr_curve``).

    Returns:
        The area, or ``nan`` when both models score the same overall.

    Example:
        >>> apgr([0.9, 0.1], [1, 1], [0, 1], n_points=3)
        0.75
    """
    shares, pgr = pgr_curve(scores, strong_correct, weak_correct, n_points=n_points)
    return _trapezoid(pgr, shares)


def cpt(
    scores: ArrayLike,
    strong_correct: ArrayLike,
    weak_correct: ArrayLike,
    pgr_target: float,
) -> float:
    """RouteLLM's call-performance threshold: fewest strong calls reaching a PGR target.

    ``cpt(..., 0.5)`` is CPT(50%). Every ``k`` in ``0..n`` is tried (the strong
    model answers the top-``k`` questions by score), so the answer is exact, not
    limited to a grid.

    Args:
        scores: Router score per question; higher means more in need of the strong model.
        strong_correct: 0/1 correctness of the strong model per question.
        weak_correct: 0/1 correctness of the weak model per question.
        pgr_target: The PGR to reach, e.g. 0.5 or 0.8.

    Returns:
        The minimum share ``k / n`` of strong calls with ``PGR >= pgr_target``, or
        ``nan`` when no share reaches it (or both models score the same).

    Example:
        >>> cpt([0.9, 0.5, 0.1, 0.3], [1, 1, 0, 1], [0, 0, 0, 1], 0.5)
        0.25
    """
    s, strong, weak = _strong_weak_inputs(scores, strong_correct, weak_correct)
    by_k = _cumulative_pgr(s, strong, weak)
    reached = np.flatnonzero(by_k >= pgr_target)
    if reached.size == 0:
        return math.nan
    return float(reached[0]) / s.size


def aiq(costs: Sequence[float] | ArrayLike, qualities: Sequence[float] | ArrayLike) -> float:
    """RouterBench's AIQ: mean quality under the non-decreasing convex hull of the points.

    The points are a router's (cost, quality) operating points (e.g. one per
    threshold). Any mix of two operating points is reachable, and paying more
    never has to lower quality, so the reachable frontier is the upper convex hull
    made non-decreasing (flat after the best quality). AIQ integrates that
    frontier from the lowest to the highest cost and divides by the cost range.

    Args:
        costs: Cost of each operating point.
        qualities: Quality of each operating point.

    Returns:
        The average quality; for a single point or a zero cost range, the best
        quality among the points.

    Example:
        >>> round(aiq([0.0, 1.0, 2.0], [0.5, 0.6, 0.9]), 10)
        0.7
    """
    c = _as_1d("costs", costs)
    q = _as_1d("qualities", qualities)
    if c.shape != q.shape:
        raise ValueError(f"costs and qualities differ in length: {c.size} vs {q.size}.")
    if np.isnan(c).any() or np.isnan(q).any():
        raise ValueError("costs and qualities must not contain NaN.")
    c_min, c_max = float(c.min()), float(c.max())
    if c_max == c_min:
        return float(q.max())
    # The best quality is reachable at the highest cost too (spend more, same answer),
    # which makes the upper hull non-decreasing.
    c = np.append(c, c_max)
    q = np.append(q, q.max())
    order = np.lexsort((q, c))
    hull: list[tuple[float, float]] = []
    for x, y in zip(c[order].tolist(), q[order].tolist(), strict=True):
        if hull and hull[-1][0] == x:
            hull.pop()  # same cost: sorted by quality, so the later one is at least as good
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or below the chord (not a right turn).
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((x, y))
    xs = np.array([p[0] for p in hull])
    ys = np.array([p[1] for p in hull])
    return _trapezoid(ys, xs) / (c_max - c_min)


def expected_calibration_error(probs: ArrayLike, outcomes: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins on [0, 1].

    ``ECE = sum_b (n_b / N) * |mean(outcomes in b) - mean(probs in b)|``. A
    probability of exactly 1 falls in the last bin. Pairs whose outcome is NaN
    (unlabelled) are skipped.

    Args:
        probs: Predicted probability of the positive outcome, each in [0, 1].
        outcomes: Observed 0/1 outcome, or NaN when unknown.
        n_bins: Number of equal-width bins.

    Returns:
        The ECE, or ``nan`` when no pair has an outcome.

    Example:
        >>> expected_calibration_error([0.2, 0.4, 0.6, 0.8], [0, 1, 1, 1], n_bins=2)
        0.25
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    p = _as_1d("probs", probs)
    o = _as_1d("outcomes", outcomes)
    if p.shape != o.shape:
        raise ValueError(f"probs and outcomes differ in length: {p.size} vs {o.size}.")
    keep = ~np.isnan(o)
    p, o = p[keep], o[keep]
    if p.size == 0:
        return math.nan
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1] (and not be NaN where an outcome is known).")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    prob_sums = np.bincount(bins, weights=p, minlength=n_bins)
    outcome_sums = np.bincount(bins, weights=o, minlength=n_bins)
    # |sum(o) - sum(p)| / N per bin equals (n_b / N) * |mean(o) - mean(p)|.
    return float(np.sum(np.abs(outcome_sums - prob_sums)) / counts.sum())
