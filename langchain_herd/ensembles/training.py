"""Fit cascades and learned votes from a correctness table and an answers table.

Every choice (a cascade's helpers, what a tier keeps, the regularisation, the default
threshold; a learned vote's regularisation) is made on the rows given, out-of-fold: the
scores a choice is judged on come from models that did not see those rows. So when the rows
given are a split's training rows, nothing is tuned on the held-out ones.

Inputs, aligned by row: ``correct`` ``(n, M)`` 0/1 per model, ``answers`` ``(n, M)`` the
extracted answer per model (``""`` = none), ``models`` the ``M`` column names.
Numpy only: the scorers are small logistic regressions fitted by Newton's method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.ensembles.features import letter_agreement
from langchain_herd.ensembles.scorers import (
    CascadeModel,
    LearnedVote,
    LogisticScorer,
    cascade_feature_names,
    cascade_features,
    vote_feature_names,
    vote_features,
)

__all__ = [
    "CascadeFit",
    "answer_matrix",
    "cascade_curve",
    "fit_cascade",
    "fit_learned_vote",
    "folds",
    "kept_correct",
    "learned_vote_correct",
]

Array = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]

C_GRID = (0.03, 0.3, 3.0)
"""Inverse regularisation strengths tried (out-of-fold) for the scorers."""
N_FOLDS = 5
CALIBRATION_POINTS = 101


def folds(n: int, seed: int, n_folds: int = N_FOLDS) -> list[Rows]:
    """Seeded disjoint folds covering ``range(n)`` (held-out rows of each fold).

    Example:
        >>> [len(f) for f in folds(11, 0, 3)]
        [4, 4, 3]
    """
    order = np.random.default_rng([seed, 17]).permutation(n)
    return [np.sort(part).astype(np.intp) for part in np.array_split(order, min(n_folds, n))]


def kept_correct(
    answers: npt.NDArray[np.str_], correct: Array, keep: Literal["first", "vote"]
) -> Array:
    """Whether the answer a tier keeps is right, per row.

    ``first``: the main (column 0) expert's correctness. ``vote``: the majority answer
    (ties to the earliest column, as :func:`~langchain_herd.ensembles.votes.majority_vote`
    with member order), right when a column giving it is right; no readable answer: wrong.

    Example:
        >>> kept_correct(np.array([["A", "B", "B"]]), np.array([[1.0, 0.0, 0.0]]), "vote")
        array([0.])
    """
    if keep == "first":
        return np.asarray(correct[:, 0], dtype=np.float64)
    return _vote_kept(*letter_agreement(answers), correct)


def _vote_kept(agreement: Array, missing: npt.NDArray[np.bool_], correct: Array) -> Array:
    support = agreement.sum(axis=2)  # the diagonal counts the member's own vote
    support[missing] = -1.0
    winner = np.argmax(support, axis=1)  # first maximum: the earliest column
    hit = correct[np.arange(len(correct)), winner].astype(np.float64)
    hit[missing.all(axis=1)] = 0.0
    return hit


def answer_matrix(answers: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Answers as a string array, ``""`` where there is none (None, NaN, pandas' NA).

    Example:
        >>> answer_matrix([["A", None], [float("nan"), "b"]]).tolist()
        [['A', ''], ['', 'b']]
    """
    raw = np.asarray(answers, dtype=object)
    if raw.ndim != 2:
        raise ValueError(f"answers must be (rows, models), got shape {raw.shape}")

    def text(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
            return ""
        return str(value)

    return np.array([[text(v) for v in row] for row in raw.tolist()], dtype=str).reshape(raw.shape)


def _inputs(correct: npt.ArrayLike, answers: npt.ArrayLike) -> tuple[Array, npt.NDArray[np.str_]]:
    """Correctness without NaN and answers without None: a model with no result on a row
    counts as wrong there and as giving no answer."""
    y = np.asarray(correct, dtype=np.float64)
    ans = answer_matrix(answers)
    if y.shape != ans.shape:
        raise ValueError(f"correct {y.shape} and answers {ans.shape} differ in shape")
    unknown = np.isnan(y)
    return np.where(unknown, 0.0, y), np.where(unknown, "", ans)


def cascade_curve(
    scores: Array,
    kept: Array,
    strong: Array,
    tier_cost: float,
    strong_cost: float,
    n_points: int = CALIBRATION_POINTS,
) -> list[dict[str, float]]:
    """Operating points of a two-tier cascade: for thresholds at the quantiles of
    ``scores``, the escalated share, the accuracy and the average cost (the tier always
    paid, the strong model when escalated). Escalate when score > threshold."""
    thresholds = np.unique(
        np.concatenate([np.quantile(scores, np.linspace(0, 1, n_points), method="lower"), [1.0]])
    )
    points = []
    for t in thresholds:
        escalate = scores > t
        share = float(escalate.mean())
        accuracy = float(np.where(escalate, strong, kept).mean())
        points.append(
            {
                "threshold": float(t),
                "escalate_share": share,
                "accuracy": accuracy,
                "cost": tier_cost + share * strong_cost,
            }
        )
    # The lowest threshold: escalate (nearly) everything.
    points.insert(
        0,
        {
            "threshold": 0.0,
            "escalate_share": float((scores > 0).mean()),
            "accuracy": float(np.where(scores > 0, strong, kept).mean()),
            "cost": tier_cost + float((scores > 0).mean()) * strong_cost,
        },
    )
    return points


def _frontier_area(
    points: Sequence[tuple[float, float]], low: float, high: float, n_grid: int = 201
) -> float:
    """Mean accuracy over costs ``low..high`` under the non-decreasing upper hull of the
    points (any mix of two operating points is reachable by choosing per query)."""
    pts = sorted(points)
    hull: list[tuple[float, float]] = []
    for x, y in pts:
        if hull and hull[-1][0] == x:
            if hull[-1][1] >= y:
                continue
            hull.pop()
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((x, y))
    xs = np.array([p[0] for p in hull])
    ys = np.maximum.accumulate(np.array([p[1] for p in hull]))
    grid = np.linspace(low, high, n_grid)
    # Below the cheapest point nothing is reachable: count it as accuracy 0 there.
    values = np.where(grid < xs[0], 0.0, np.interp(grid, xs, ys))
    return float(values.mean())


def _pgr_area(scores: Array, kept: Array, strong: Array) -> float:
    """RouteLLM's APGR of ``scores`` with the kept answer as the weak side."""
    from langchain_herd.evaluation.metrics import apgr

    value = apgr(scores, strong, kept)
    return float(value) if np.isfinite(value) else 0.0


@dataclass
class CascadeFit:
    """What a candidate cascade scores out-of-fold (for choosing among candidates)."""

    helpers: list[str]
    keep: Literal["first", "vote"]
    c: float
    scores: Array
    """Out-of-fold escalation scores on the rows given."""
    kept: Array
    objective: float


def _escalation_target(kept: Array, strong: Array) -> Array:
    """The soft target ``(strong - kept + 1) / 2``: fitted as a soft label, the probability
    ranks rows by the expected gain of escalating (strong right where the kept answer is
    wrong), 0.5 meaning no gain either way."""
    return (strong - kept + 1.0) / 2.0


def _oof_scores(x: Array, kept: Array, strong: Array, c: float, parts: list[Rows]) -> Array:
    scores = np.empty(len(x))
    names = [f"f{j}" for j in range(x.shape[1])]
    target = _escalation_target(kept, strong)
    for held in parts:
        mask = np.ones(len(x), dtype=bool)
        mask[held] = False
        scorer = LogisticScorer.fit(x[mask], target[mask], names, c=c)
        scores[held] = scorer.predict(x[held])
    return scores


def fit_cascade(
    correct: npt.ArrayLike,
    answers: npt.ArrayLike,
    models: Sequence[str],
    costs: Mapping[str, float],
    *,
    weak: str,
    strong: str,
    helpers: Sequence[str] | None = None,
    helper_candidates: Sequence[str] | None = None,
    max_helpers: int = 2,
    text_scores: npt.ArrayLike | None = None,
    text_experts: Sequence[str] = (),
    keep: Literal["first", "vote", "auto"] = "auto",
    objective: Literal["frontier", "apgr"] = "frontier",
    max_tier_cost: float | None = None,
    seed: int = 0,
) -> CascadeModel:
    """Fit a two-tier cascade ``[[weak, *helpers], [strong]]`` on the rows given.

    Args:
        correct: ``(n, M)`` 0/1 correctness of every model column.
        answers: ``(n, M)`` extracted answers (``""`` = none).
        models: the ``M`` column names.
        costs: cost per call of (at least) the weak, strong and candidate models.
        weak: the tier's main model. strong: the model escalated to.
        helpers: fixed helpers; None chooses up to ``max_helpers`` greedily among
            ``helper_candidates`` (default: every column with a known cost below the strong
            model's, weak and strong excluded), each step keeping the helper that raises the
            out-of-fold objective most, stopping when none does.
        text_scores: ``(n, T)`` predicted correctness of ``text_experts`` (out-of-fold on
            these rows, so the scorer does not learn to trust over-fitted scores).
        keep: what the tier keeps; ``auto`` picks the better out-of-fold.
        objective: what helper choice maximises out-of-fold: ``frontier``, the mean
            accuracy over average costs from the weak to the strong model's (every call
            paid, upper hull with the two single models); ``apgr``, RouteLLM's APGR (helpers
            free; also used when the strong model is no dearer than the weak one).
        max_tier_cost: chosen helpers keep the first tier's cost per query (weak plus
            helpers) at most this (e.g. half the strong model's: a dearer tier leaves
            little to save).
        seed: seeds the folds.

    Raises:
        ValueError: unknown model names or shapes that do not fit.
    """
    y, ans = _inputs(correct, answers)
    names = list(models)
    if y.shape != ans.shape or y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(
            f"correct {y.shape} and answers {ans.shape} must both be (rows, {len(names)})"
        )
    unknown = [
        m for m in (weak, strong, *(helpers or ()), *(helper_candidates or ())) if m not in names
    ]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the columns are {names}")
    if weak == strong:
        raise ValueError("weak and strong must differ")
    text = _text_matrix(text_scores, len(y), text_experts)
    parts = folds(len(y), seed)
    col = {m: j for j, m in enumerate(names)}
    strong_y = y[:, col[strong]]
    cost = {m: float(costs[m]) for m in names if m in costs and costs[m] is not None}
    for m in (weak, strong, *(helpers or ())):
        if m not in cost:
            raise ValueError(f"no cost for {m!r}")
    if helpers is not None and (len(set(helpers)) != len(helpers) or {weak, strong} & set(helpers)):
        raise ValueError(f"helpers {list(helpers)} repeat a model or name the weak/strong one")

    # Agreement of every pair of columns, once: each candidate tier is a slice of it.
    all_agreement, all_missing = letter_agreement(ans)

    def tier_inputs(cols: list[int]) -> tuple[Array, npt.NDArray[np.bool_]]:
        return all_agreement[:, cols][:, :, cols], all_missing[:, cols]

    def evaluate(chosen: list[str], how: Literal["first", "vote"], c: float) -> CascadeFit:
        cols = [col[m] for m in (weak, *chosen)]
        agreement, missing = tier_inputs(cols)
        kept = y[:, cols[0]] if how == "first" else _vote_kept(agreement, missing, y[:, cols])
        x = cascade_features(agreement, missing, text)
        scores = _oof_scores(x, kept, strong_y, c, parts)
        if objective == "apgr" or cost[weak] >= cost[strong]:
            # Without a cost range to spread over, only the ranking can be compared.
            value = _pgr_area(scores, kept, strong_y)
        else:
            tier_cost = sum(cost[m] for m in (weak, *chosen))
            curve = cascade_curve(scores, kept, strong_y, tier_cost, cost[strong], 41)
            points = [(p["cost"], p["accuracy"]) for p in curve]
            points += [
                (cost[weak], float(y[:, col[weak]].mean())),
                (cost[strong], float(strong_y.mean())),
            ]
            value = _frontier_area(points, cost[weak], cost[strong])
        return CascadeFit(chosen, how, c, scores, kept, value)

    keeps: list[Literal["first", "vote"]] = ["first", "vote"] if keep == "auto" else [keep]
    considered: list[dict[str, object]] = []
    if helpers is not None:
        chosen = list(helpers)
    else:
        pool = (
            list(helper_candidates)
            if helper_candidates is not None
            else [m for m in names if m in cost and cost[m] < cost[strong]]
        )
        pool = [m for m in pool if m not in (weak, strong) and m in cost]
        chosen = []
        best = max((evaluate([], how, 0.3) for how in keeps), key=lambda f: f.objective)
        considered.append({"helpers": [], "keep": best.keep, "objective": best.objective})
        spent = cost[weak]
        while len(chosen) < max_helpers and pool:
            affordable = [
                m for m in pool if max_tier_cost is None or spent + cost[m] <= max_tier_cost
            ]
            if not affordable:
                break
            trials = [evaluate([*chosen, m], how, 0.3) for m in affordable for how in keeps]
            top = max(trials, key=lambda f: f.objective)
            considered.append(
                {"helpers": top.helpers, "keep": top.keep, "objective": top.objective}
            )
            if top.objective <= best.objective + 1e-4:
                break
            best = top
            chosen = list(top.helpers)
            spent += cost[chosen[-1]]
            pool = [m for m in pool if m not in chosen]
    final = max(
        (evaluate(chosen, how, c) for how in keeps for c in C_GRID), key=lambda f: f.objective
    )
    cols = [col[m] for m in (weak, *chosen)]
    x = cascade_features(*tier_inputs(cols), text)
    feature_names = cascade_feature_names(len(cols), list(text_experts))
    target = _escalation_target(final.kept, strong_y)
    scorer = LogisticScorer.fit(x, target, feature_names, c=final.c)
    tier_cost = sum(cost[m] for m in (weak, *chosen))
    calibration = cascade_curve(final.scores, final.kept, strong_y, tier_cost, cost[strong])
    best_point = max(calibration, key=lambda p: (p["accuracy"], p["threshold"]))
    tiers = [[weak, *chosen], [strong]]
    return CascadeModel(
        tiers=tiers,
        keep=final.keep,
        text_experts=list(text_experts),
        scorers=[scorer],
        costs={m: cost[m] for tier in tiers for m in tier},
        calibration=calibration,
        default_threshold=best_point["threshold"],
        metadata={
            "rows": len(y),
            "objective": objective,
            "oof_objective": final.objective,
            "c": final.c,
            "selection": considered,
            "oof_accuracy": best_point["accuracy"],
            "weak_accuracy": float(y[:, col[weak]].mean()),
            "strong_accuracy": float(strong_y.mean()),
        },
    )


def _text_matrix(text_scores: npt.ArrayLike | None, n: int, experts: Sequence[str]) -> Array | None:
    if not experts:
        return None
    if text_scores is None:
        raise ValueError(f"text_experts {list(experts)} given without text_scores")
    text = np.asarray(text_scores, dtype=np.float64).reshape(n, len(experts))
    return text


# ---------------------------------------------------------------- learned vote


def _vote_table(
    answers: npt.NDArray[np.str_],
    correct: Array,
    members: Sequence[str],
    text: Array | None,
    text_experts: Sequence[str],
) -> tuple[Array, Array, npt.NDArray[np.intp]]:
    """Candidate features, their correctness and the row each belongs to."""
    xs, ys, owner = [], [], []
    for i in range(len(answers)):
        scores = (
            {}
            if text is None
            else {m: float(v) for m, v in zip(text_experts, text[i], strict=True)}
        )
        row = [a or None for a in answers[i]]
        candidates, x = vote_features(row, members, text_experts, scores)
        for c_index, candidate in enumerate(candidates):
            j = row.index(candidate)
            xs.append(x[c_index])
            ys.append(correct[i, j])
            owner.append(i)
    width = len(vote_feature_names(members, text_experts))
    return (
        np.asarray(xs, dtype=np.float64).reshape(-1, width),
        np.asarray(ys, dtype=np.float64),
        np.asarray(owner, dtype=np.intp),
    )


def learned_vote_correct(
    scores: Array, y: Array, owner: npt.NDArray[np.intp], n_rows: int
) -> Array:
    """Per row, whether the best-scored candidate is right (no candidate: wrong; ties: the
    first candidate, i.e. the answer of the earliest member)."""
    hit = np.zeros(n_rows)
    best = np.full(n_rows, -np.inf)
    for s, correct_value, i in zip(scores, y, owner, strict=True):
        if s > best[i]:
            best[i], hit[i] = s, correct_value
    return hit


def fit_learned_vote(
    correct: npt.ArrayLike,
    answers: npt.ArrayLike,
    models: Sequence[str],
    *,
    members: Sequence[str],
    text_scores: npt.ArrayLike | None = None,
    text_experts: Sequence[str] = (),
    seed: int = 0,
) -> LearnedVote:
    """Fit a learned vote over ``members`` on the rows given (C chosen out-of-fold by the
    accuracy of the picked answers).

    Members are ordered best-first by accuracy on these rows, so ties go to the better
    member and the artifact's member order is its precedence order.

    Raises:
        ValueError: unknown members or shapes that do not fit.
    """
    y, ans = _inputs(correct, answers)
    names = list(models)
    unknown = [m for m in members if m not in names]
    if unknown:
        raise ValueError(f"unknown member(s) {unknown}; the columns are {names}")
    col = {m: j for j, m in enumerate(names)}
    accuracy = {m: float(y[:, col[m]].mean()) for m in members}
    ordered = sorted(members, key=lambda m: -accuracy[m])
    cols = [col[m] for m in ordered]
    text = _text_matrix(text_scores, len(y), text_experts)
    x, target, owner = _vote_table(ans[:, cols], y[:, cols], ordered, text, text_experts)
    feature_names = vote_feature_names(ordered, text_experts)
    parts = folds(len(y), seed)
    row_fold = np.empty(len(y), dtype=np.intp)
    for f, held in enumerate(parts):
        row_fold[held] = f
    cand_fold = row_fold[owner]
    oof_accuracy = {}
    for c in C_GRID:
        scores = np.empty(len(x))
        for f in range(len(parts)):
            held = cand_fold == f
            scorer = LogisticScorer.fit(x[~held], target[~held], feature_names, c=c)
            scores[held] = scorer.predict(x[held])
        oof_accuracy[c] = float(learned_vote_correct(scores, target, owner, len(y)).mean())
    best_c = max(C_GRID, key=lambda c: (oof_accuracy[c], -c))
    scorer = LogisticScorer.fit(x, target, feature_names, c=best_c)
    return LearnedVote(
        members=ordered,
        scorer=scorer,
        text_experts=list(text_experts),
        metadata={
            "rows": len(y),
            "c": best_c,
            "oof_accuracy": oof_accuracy,
            "member_accuracy": accuracy,
        },
    )
