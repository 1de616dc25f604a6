"""Turn a router's utilities on held-out rows into the figures of an evaluation.

Policies are applied here, offline: argmax (the default policy), the cost policy swept
over its cost weight (the cost-accuracy frontier, AIQ), and for a strong/weak pair the
threshold policy swept over every share of strong calls (PGR curve, APGR, CPT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd.evaluation.data import EvalData, EvalSplit, finite
from langchain_herd.evaluation.metrics import (
    aiq,
    apgr,
    cpt,
    expected_calibration_error,
    oracle_gap_closed,
    pgr_curve,
)
from langchain_herd.evaluation.routers import RouterOutput

__all__ = [
    "BUDGET_FRACTIONS",
    "COST_WEIGHTS",
    "budget_accuracies",
    "choose",
    "majority_vote",
    "reachable_accuracy",
    "score_output",
    "split_baselines",
]

Array = npt.NDArray[np.float64]

COST_WEIGHTS: tuple[float, ...] = (0.0, *np.geomspace(1e-3, 1e4, 71).tolist())
"""Cost weights swept for the frontier, per unit of cost relative to the dearest model.
The largest sends every query to the cheapest model unless two costs differ by less than
1/10,000 of the dearest one."""

PGR_POINTS = 101

BUDGET_FRACTIONS: tuple[float, ...] = (0.5, 0.6, 0.75)
"""Budgets of the honest view, as shares of the strong model's cost (pairs) or of the best
single model's cost (N experts)."""


def choose(utilities: Array, costs: Array, cost_weight: float = 0.0) -> npt.NDArray[np.intp]:
    """The chosen model per row: ``argmax(utility - cost_weight * cost / max cost)``
    (ties: the earlier model)."""
    relative = costs / costs.max() if costs.max() > 0 else costs
    return np.asarray(np.argmax(utilities - cost_weight * relative, axis=1), dtype=np.intp)


def _outcome(y: Array, costs: Array, choice: npt.NDArray[np.intp]) -> tuple[float, float]:
    rows = np.arange(len(choice))
    return float(y[rows, choice].mean()), float(costs[choice].mean())


def split_baselines(data: EvalData, split: EvalSplit) -> dict[str, Any]:
    """Per-split reference figures: each model, the best single (chosen on train), the
    oracle, and the reference model, on the held-out rows."""
    y_train, y = data.correct[split.train], data.correct[split.test]
    train_acc = y_train.mean(axis=0)
    best = int(np.argmax(train_acc))
    test_acc = y.mean(axis=0)
    out: dict[str, Any] = {
        "n_train": len(split.train),
        "n_test": len(split.test),
        "models": {
            m: {"train_accuracy": float(a), "accuracy": float(t), "cost": float(c)}
            for m, a, t, c in zip(data.models, train_acc, test_acc, data.costs, strict=True)
        },
        "best_single": data.models[best],
        "best_single_accuracy": float(test_acc[best]),
        "best_single_cost": float(data.costs[best]),
        "best_on_test": data.models[int(np.argmax(test_acc))],
        "oracle_accuracy": float(y.max(axis=1).mean()),
    }
    if data.reference_correct is not None:
        ref = data.reference_correct[split.test]
        out["reference_accuracy"] = finite(float(np.nanmean(ref)))
        out["reference_n"] = int((~np.isnan(ref)).sum())
    return out


def score_output(
    data: EvalData,
    split: EvalSplit,
    output: RouterOutput,
    baselines: dict[str, Any],
    *,
    pair: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Every figure of one router on one split."""
    y = data.correct[split.test]
    u = output.utilities
    if u.shape != y.shape:
        raise ValueError(f"router returned utilities of shape {u.shape}, expected {y.shape}")
    choice = choose(u, data.costs)
    accuracy, cost = _outcome(y, data.costs, choice)
    shares = np.bincount(choice, minlength=len(data.models)) / len(choice)
    result: dict[str, Any] = {
        "accuracy": accuracy,
        "cost": cost,
        "shares": dict(zip(data.models, shares.tolist(), strict=True)),
        "oracle_gap_closed": finite(
            oracle_gap_closed(
                accuracy, baselines["best_single_accuracy"], baselines["oracle_accuracy"]
            )
        ),
        "by_label": _by_label(data, split, y, choice),
        "details": output.details,
    }
    frontier = [(*_outcome(y, data.costs, choose(u, data.costs, w)), w) for w in COST_WEIGHTS]
    result["frontier"] = [{"cost_weight": w, "cost": c, "accuracy": a} for a, c, w in frontier]
    if data.costs.max() > data.costs.min():
        result["aiq"] = aiq([c for _, c, _ in frontier], [a for a, _, _ in frontier])
    if output.probabilities:
        result["ece"] = finite(expected_calibration_error(np.clip(u, 0, 1).ravel(), y.ravel()))
    if pair is not None:
        strong, weak = pair
        score = output.pair_score if output.pair_score is not None else u[:, strong] - u[:, weak]
        shares_grid, pgr = pgr_curve(score, y[:, strong], y[:, weak], n_points=PGR_POINTS)
        result.update(
            apgr=finite(apgr(score, y[:, strong], y[:, weak], n_points=PGR_POINTS)),
            cpt50=finite(cpt(score, y[:, strong], y[:, weak], 0.5)),
            cpt80=finite(cpt(score, y[:, strong], y[:, weak], 0.8)),
            pgr_curve={"share": shares_grid.tolist(), "pgr": [finite(v) for v in pgr]},
        )
        # The threshold policy's operating points join the frontier: a cost-weighted argmax
        # reaches only some thresholds (none at all for a classifier whose scores are not
        # correctness), and the honest view reads budgets off the frontier.
        strong_acc, weak_acc = float(y[:, strong].mean()), float(y[:, weak].mean())
        if strong_acc != weak_acc:
            cost_s, cost_w = float(data.costs[strong]), float(data.costs[weak])
            result["frontier"] += [
                {
                    "cost_weight": None,
                    "strong_share": float(share),
                    "cost": cost_w + float(share) * (cost_s - cost_w),
                    "accuracy": weak_acc + float(gain) * (strong_acc - weak_acc),
                }
                for share, gain in zip(shares_grid, pgr, strict=True)
            ]
            if "aiq" in result:
                points = result["frontier"]
                result["aiq"] = aiq([p["cost"] for p in points], [p["accuracy"] for p in points])
    return result


def reachable_accuracy(
    costs: Sequence[float], accuracies: Sequence[float], budget: float
) -> float | None:
    """The best accuracy at an average cost per query of at most ``budget``, given the
    operating points ``(costs[i], accuracies[i])`` of one router (or cascade).

    Any two operating points can be mixed (each query sent to one at random, in
    proportion), so the reachable frontier is the upper convex hull of the points, made
    non-decreasing; this reads it at ``budget``. ``None`` when every point costs more.

    Example:
        >>> reachable_accuracy([1.0, 3.0, 2.0], [0.5, 0.9, 0.6], budget=2.0)
        0.7
        >>> reachable_accuracy([1.0, 3.0], [0.5, 0.9], budget=0.5) is None
        True
    """
    c = np.asarray(costs, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    below, above = c <= budget, c > budget
    if not below.any():
        return None
    best = float(a[below].max())
    if above.any():
        # Every mix of a point at or under the budget with one over it, spending exactly
        # the budget: the hull at the budget is the best of them (two points suffice).
        ci, ai = c[below][:, None], a[below][:, None]
        cj, aj = c[above][None, :], a[above][None, :]
        mixed = ai + (aj - ai) * (budget - ci) / (cj - ci)
        best = max(best, float(mixed.max()))
    return round(best, 12)


def budget_accuracies(
    frontier: Sequence[dict[str, Any]],
    reference_cost: float,
    fractions: Sequence[float] = BUDGET_FRACTIONS,
) -> dict[str, float | None]:
    """:func:`reachable_accuracy` of a frontier (points with ``cost`` and ``accuracy``) at
    each budget ``fraction * reference_cost``, keyed by the fraction (``"0.5"``).

    Example:
        >>> points = [{"cost": 10.0, "accuracy": 0.4}, {"cost": 70.0, "accuracy": 0.7}]
        >>> budget_accuracies(points, 70.0, [0.5, 0.1])
        {'0.5': 0.525, '0.1': None}
    """
    costs = [float(p["cost"]) for p in frontier]
    accuracies = [float(p["accuracy"]) for p in frontier]
    return {
        f"{fraction:g}": reachable_accuracy(costs, accuracies, fraction * reference_cost)
        for fraction in fractions
    }


def _by_label(
    data: EvalData, split: EvalSplit, y: Array, choice: npt.NDArray[np.intp]
) -> dict[str, float]:
    if "group" not in data.labels:
        return {}
    labels = data.labels["group"][split.test]
    hits = y[np.arange(len(choice)), choice]
    return {str(v): float(hits[labels == v].mean()) for v in np.unique(labels)}


def majority_vote(data: EvalData, split: EvalSplit) -> dict[str, Any] | None:
    """Every herd model answers; the most common letter wins (ties: the letter of the model
    most accurate on train). Costs the whole herd per query."""
    if data.votes is None or data.answers is None:
        return None
    from langchain_herd.ensembles.votes import majority_vote as vote

    votes, answers = data.votes[split.test], data.answers[split.test]
    order = [int(j) for j in np.argsort(-data.correct[split.train].mean(axis=0), kind="stable")]
    hits = np.empty(len(votes))
    for i, row in enumerate(votes.tolist()):
        winner = vote([a or None for a in row], order).winner
        hits[i] = float(winner is not None and winner == answers[i])
    return {"accuracy": float(hits.mean()), "cost": float(data.costs.sum())}
