"""Cascades and votes in ``herd eval``: ensembles that use the members' own answers.

They need each model's answer per question (``--predictions``) and run on the same seeded
splits as the routers, trained on a split's training rows only (every choice out-of-fold
there, see :mod:`langchain_herd.ensembles.training`), scored on its held-out rows with
every call paid: a cascade pays for its first tier on every query and for the strong model
when it escalates; a vote pays for all its members.

- ``cascade`` / ``cascade-agreement`` (``--pair STRONG WEAK``): the weak model plus helpers
  chosen among the table's cheaper models, escalating to the strong one; the escalation
  score reads the agreement pattern and TF-IDF text scores (``cascade``) or the agreement
  pattern alone (``cascade-agreement``).
- ``vote-majority``, ``vote-weighted``, ``vote-learned`` (N-expert herds): every herd model
  answers, one answer wins.

Figures per split have the keys of :func:`~langchain_herd.evaluation.scoring.score_output`'s.
A cascade's ``frontier`` sweeps the share of escalated queries (``strong_share``, with
``cost_weight`` None, as the threshold points of a pair router); its RouteLLM figures rank
queries by the escalation score, the cascade's kept answer standing in for the weak model's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.errors import ConfigError
from langchain_herd.evaluation.data import EvalData, EvalSplit, finite
from langchain_herd.evaluation.metrics import aiq, apgr, oracle_gap_closed

__all__ = [
    "ENSEMBLES",
    "EnsembleContext",
    "EnsembleOptions",
    "EnsembleSpec",
    "cascade_pgr",
    "select_ensembles",
    "text_scores",
]

Array = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]

PGR_POINTS = 101
SHARE_GRID = tuple(np.linspace(0.0, 1.0, 41).tolist())
"""Escalated shares a cascade's frontier is read at (the same on every split)."""


@dataclass
class EnsembleOptions:
    """How ``herd eval`` builds its ensembles (``--helpers``, ``--max-helpers``, ...).

    Example:
        >>> EnsembleOptions(helpers=["phi-3"]).max_helpers
        2
    """

    helpers: Sequence[str] | None = None
    """A cascade's helpers by name; None: chosen out-of-fold on each split's training rows
    among the table's models cheaper than the strong one (``[]``: no helpers)."""
    max_helpers: int = 2
    """At most this many helpers when they are chosen."""
    objective: Literal["frontier", "apgr"] = "frontier"
    """What helper choice maximises out-of-fold: ``frontier``, accuracy over average costs
    from the weak to the strong model's, every call paid; ``apgr``, RouteLLM's APGR (helper
    calls free). Without costs (one per call) ``frontier`` becomes ``apgr``."""
    max_tier_share: float | None = 0.5
    """Chosen helpers keep the first tier (weak plus helpers) at most this share of the
    strong model's cost (None: no cap; not applied when every call costs the same)."""
    keep: Literal["first", "vote", "auto"] = "auto"
    """What a cascade's first tier keeps: the weak model's answer, the tier's vote, or the
    better of the two out-of-fold."""


@dataclass
class EnsembleContext:
    """What an ensemble sees on one split."""

    data: EvalData
    split: EvalSplit
    baselines: dict[str, Any]
    pair: tuple[int, int] | None
    options: EnsembleOptions
    cache: dict[Any, Any] = field(default_factory=dict)
    """Shared by the ensembles of one split (text scores, chosen helpers)."""


EnsembleFn = Callable[[EnsembleContext], dict[str, Any]]


@dataclass(frozen=True)
class EnsembleSpec:
    """An ensemble by name: its family, what it needs, and how to run it on a split."""

    name: str
    family: str
    """``cascade`` or ``vote``."""
    description: str
    run: EnsembleFn
    needs_pair: bool


# ---------------------------------------------------------------- text scores


def text_scores(
    texts: Sequence[str], correct: Array, train: Rows, predict: Rows, seed: int
) -> tuple[Array, Array]:
    """TF-IDF predicted correctness of each column of ``correct``: out-of-fold on the
    training rows (5 folds), and for ``predict`` rows from a fit on all training rows.

    The features and model are the ``tfidf`` backend's (its default TF-IDF settings, one
    logistic regression per model), with C fixed at 1 and the vocabulary fitted once on the
    training texts (no labels), to keep five seeds within minutes on a laptop.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from langchain_herd.ensembles.training import folds
    from langchain_herd.training.params import TfidfParams

    params = TfidfParams()
    vectorizer = TfidfVectorizer(
        max_features=params.max_features,
        ngram_range=params.ngram_range,
        sublinear_tf=params.sublinear_tf,
        min_df=params.min_df,
    )
    x_train = vectorizer.fit_transform([texts[i] for i in train])
    x_predict = vectorizer.transform([texts[i] for i in predict])
    y = np.asarray(correct, dtype=np.float64)
    y_train = y[train] >= 0.5
    oof = np.empty((len(train), y.shape[1]))
    out = np.empty((len(predict), y.shape[1]))
    parts = folds(len(train), seed)

    def fit_predict(rows: Rows, column: int, x_new: Any) -> Array:
        labels = y_train[rows, column]
        if labels.all() or not labels.any():
            return np.full(x_new.shape[0], float(labels.mean()) if len(labels) else 0.5)
        model = LogisticRegression(C=1.0, solver="liblinear")
        model.fit(x_train[rows], labels)
        return np.asarray(model.predict_proba(x_new)[:, 1], dtype=np.float64)

    everything = np.arange(len(train))
    for j in range(y.shape[1]):
        for held in parts:
            rest = np.setdiff1d(everything, held)
            oof[held, j] = fit_predict(rest, j, x_train[held])
        out[:, j] = fit_predict(everything, j, x_predict)
    return oof, out


def _cached_text(ctx: EnsembleContext, models: list[str]) -> tuple[Array, Array]:
    pool = _pool(ctx.data)
    key = ("text", tuple(models))
    if key not in ctx.cache:
        cols = [pool.models.index(m) for m in models]
        correct = np.nan_to_num(pool.correct[:, cols], nan=0.0)
        ctx.cache[key] = text_scores(
            ctx.data.texts, correct, ctx.split.train, ctx.split.test, ctx.split.seed
        )
    value: tuple[Array, Array] = ctx.cache[key]
    return value


def _pool(data: EvalData) -> Any:
    if data.pool is None:
        raise ConfigError("ensembles need each model's answers: give --predictions")
    return data.pool


# ---------------------------------------------------------------- cascades


def cascade_pgr(scores: Array, strong: Array, kept: Array, weak_mean: float) -> tuple[Array, Array]:
    """Quality and PGR when the top-``k`` queries by score escalate, for ``k`` in ``0..n``.

    The queries not escalated get the cascade's kept answer; PGR is normalised by the weak
    and strong models (``(quality - weak) / (strong - weak)``), so a tier whose vote beats
    the weak model starts above 0. Tied scores count as a random pick among them (linear
    within a block of ties), so row order never matters.

    Example:
        >>> quality, pgr = cascade_pgr(np.array([0.9, 0.1]), np.array([1.0, 1.0]),
        ...                            np.array([0.0, 1.0]), 0.5)
        >>> quality.tolist(), pgr.tolist()
        ([0.5, 1.0, 1.0], [0.0, 1.0, 1.0])
    """
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    gain = np.concatenate(([0.0], np.cumsum(strong[order] - kept[order])))
    ordered = scores[order]
    edges = np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1, [n]))
    k = np.arange(n + 1)
    block = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, len(edges) - 2)
    start, end = edges[block], edges[block + 1]
    width = np.maximum(end - start, 1)
    gain = gain[start] + (gain[end] - gain[start]) * (k - start) / width
    quality = kept.mean() + gain / n
    gap = float(strong.mean()) - weak_mean
    pgr = (quality - weak_mean) / gap if gap != 0 else np.full(n + 1, math.nan)
    return np.asarray(quality, dtype=np.float64), np.asarray(pgr, dtype=np.float64)


def _cascade(
    with_text: bool,
    objective: Literal["frontier", "apgr"] | None = None,
    keep: Literal["first", "vote"] | None = None,
) -> EnsembleFn:
    objective_fixed = objective

    def run(ctx: EnsembleContext) -> dict[str, Any]:
        from langchain_herd.ensembles.features import letter_agreement
        from langchain_herd.ensembles.training import fit_cascade, kept_correct

        assert ctx.pair is not None, "cascades run only for a pair"
        data, split, pool = ctx.data, ctx.split, _pool(ctx.data)
        strong, weak = data.models[ctx.pair[0]], data.models[ctx.pair[1]]
        costs = {m: c for m, c in pool.costs.items() if c is not None}
        correct = np.nan_to_num(pool.correct, nan=0.0)
        # A model without a result gave no answer, whatever the predictions file says.
        answers = np.where(np.isnan(pool.correct), "", pool.answers)
        text_experts = [weak, strong] if with_text else []
        oof = held = None
        if with_text:
            oof, held = _cached_text(ctx, text_experts)
        # Without costs every call costs the same: then no model is cheaper than the strong
        # one, every other model is a candidate, and the frontier objective is meaningless.
        equal = len(set(costs.values())) == 1
        objective = "apgr" if equal else (objective_fixed or ctx.options.objective)
        candidates = [
            m
            for m in pool.models
            if m not in (weak, strong) and m in costs and (equal or costs[m] < costs[strong])
        ]
        unknown = [m for m in ctx.options.helpers or () if m not in pool.models]
        if unknown:
            raise ConfigError(f"--helpers: no model column(s) {unknown}; known: {pool.models}")
        train = split.train
        try:
            model = fit_cascade(
                correct[train],
                answers[train],
                pool.models,
                costs,
                weak=weak,
                strong=strong,
                helpers=None if ctx.options.helpers is None else list(ctx.options.helpers),
                helper_candidates=candidates,
                max_helpers=ctx.options.max_helpers,
                max_tier_cost=(
                    None
                    if equal or ctx.options.max_tier_share is None
                    else ctx.options.max_tier_share * costs[strong]
                ),
                keep=keep or ctx.options.keep,
                text_scores=oof,
                text_experts=text_experts,
                objective=objective,
                seed=split.seed,
            )
        except ValueError as exc:
            raise ConfigError(f"cannot fit the cascade: {exc}") from exc
        cols = [pool.models.index(m) for m in model.tiers[0]]
        test = split.test
        agreement, missing = letter_agreement(answers[test][:, cols])
        scores = model.escalation_scores(0, agreement, missing, held)
        kept = kept_correct(answers[test][:, cols], correct[test][:, cols], model.keep)
        return _cascade_figures(ctx, model, scores, kept)

    return run


def _cascade_figures(
    ctx: EnsembleContext, model: Any, scores: Array, kept: Array
) -> dict[str, Any]:
    assert ctx.pair is not None
    data, split, base = ctx.data, ctx.split, ctx.baselines
    y = data.correct[split.test]
    strong_i, weak_i = ctx.pair
    strong, weak = y[:, strong_i], y[:, weak_i]
    strong_name, weak_name = data.models[strong_i], data.models[weak_i]
    tier_cost = sum(model.costs[m] for m in model.tiers[0])
    strong_cost = model.costs[strong_name]
    threshold = model.threshold_for()
    escalate = scores > threshold
    hits = np.where(escalate, strong, kept)
    share = float(escalate.mean())
    accuracy = float(hits.mean())
    quality, pgr_by_k = cascade_pgr(scores, strong, kept, float(weak.mean()))
    n = len(scores)
    frontier = []
    for s in SHARE_GRID:
        k = round(s * n)
        frontier.append(
            {
                "cost_weight": None,
                "strong_share": k / n,
                "cost": tier_cost + k / n * strong_cost,
                "accuracy": float(quality[k]),
            }
        )
    grid = np.linspace(0.0, 1.0, PGR_POINTS)
    curve = pgr_by_k[np.rint(grid * n).astype(np.int64)]
    result: dict[str, Any] = {
        "accuracy": accuracy,
        "cost": tier_cost + share * strong_cost,
        "strong_share": share,
        "shares": {m: 0.0 for m in data.models} | {weak_name: 1.0, strong_name: share},
        "oracle_gap_closed": finite(
            oracle_gap_closed(accuracy, base["best_single_accuracy"], base["oracle_accuracy"])
        ),
        "by_label": _by_label(data, split, hits),
        "frontier": frontier,
        "aiq": aiq([p["cost"] for p in frontier], [p["accuracy"] for p in frontier]),
        "apgr": finite(_area(curve, grid)),
        "cpt50": _cpt(pgr_by_k, 0.5),
        "cpt80": _cpt(pgr_by_k, 0.8),
        "pgr_curve": {"share": grid.tolist(), "pgr": [finite(v) for v in curve]},
        # The escalation score as a plain strong/weak router (the weak model's own answer
        # when not escalated): comparable with the routers' APGR.
        "apgr_router": finite(apgr(scores, strong, weak)),
        "details": {
            "tiers": model.tiers,
            "helpers": model.tiers[0][1:],
            "keep": model.keep,
            "threshold": threshold,
            "tier_cost": tier_cost,
            "text_experts": model.text_experts,
            "train": model.metadata,
        },
    }
    return result


def _area(curve: Array, grid: Array) -> float:
    if np.isnan(curve).any():
        return math.nan
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(grid)) / 2.0)


def _cpt(pgr_by_k: Array, target: float) -> float | None:
    reached = np.flatnonzero(pgr_by_k >= target)
    return float(reached[0]) / (len(pgr_by_k) - 1) if reached.size else None


# ---------------------------------------------------------------- votes


def _members(ctx: EnsembleContext) -> tuple[Array, npt.NDArray[np.str_], list[int]]:
    """Herd correctness, answers and the members' precedence (best on train first)."""
    data = ctx.data
    if data.votes is None:
        raise ConfigError("votes need each model's answers: give --predictions")
    order = np.argsort(-data.correct[ctx.split.train].mean(axis=0), kind="stable")
    return data.correct, data.votes, [int(j) for j in order]


def _vote_hits(
    answers: npt.NDArray[np.str_], correct: Array, pick: Callable[[list[str | None]], Any]
) -> Array:
    hits = np.zeros(len(answers))
    for i, row in enumerate(answers.tolist()):
        votes = [a or None for a in row]
        winner = pick(votes).winner
        if winner is not None:
            hits[i] = correct[i, votes.index(winner)]
    return hits


def _majority(ctx: EnsembleContext) -> dict[str, Any]:
    from langchain_herd.ensembles.votes import majority_vote

    correct, answers, order = _members(ctx)
    test = ctx.split.test
    hits = _vote_hits(answers[test], correct[test], lambda v: majority_vote(v, order))
    return _vote_figures(ctx, hits, {"tie_order": [ctx.data.models[j] for j in order]})


def _weighted(ctx: EnsembleContext) -> dict[str, Any]:
    from langchain_herd.ensembles.votes import weighted_vote

    correct, answers, order = _members(ctx)
    train, test = ctx.split.train, ctx.split.test
    # The optimal weights for independent voters that are right with probability p and
    # otherwise pick one of the K-1 wrong options at random: log((K-1) p / (1-p)).
    k = max(2, len({a for a in answers[train].ravel().tolist() if a}))
    p = np.clip(correct[train].mean(axis=0), 0.01, 0.99)
    weights = np.log((k - 1) * p / (1 - p)).tolist()
    hits = _vote_hits(answers[test], correct[test], lambda v: weighted_vote(v, weights, order))
    named = dict(zip(ctx.data.models, weights, strict=True))
    return _vote_figures(ctx, hits, {"options": k, "weights": named})


def _learned(ctx: EnsembleContext) -> dict[str, Any]:
    from langchain_herd.ensembles.training import fit_learned_vote

    correct, answers, _ = _members(ctx)
    train, test = ctx.split.train, ctx.split.test
    models = ctx.data.models
    vote = fit_learned_vote(
        correct[train], answers[train], models, members=models, seed=ctx.split.seed
    )
    cols = [models.index(m) for m in vote.members]
    # The artifact's member order is its precedence order (best on train first).
    hits = _vote_hits(answers[test][:, cols], correct[test][:, cols], lambda v: vote.pick(v, {}))
    return _vote_figures(ctx, hits, {"train": vote.metadata})


def _dawid_skene(ctx: EnsembleContext) -> dict[str, Any]:
    """Dawid and Skene (1979), EM from the training rows' answers alone (no gold): the
    options' prior and each model's confusion, here its accuracy per true option with its
    errors spread evenly; then the posterior's best option per held-out row."""
    _, answers, _ = _members(ctx)
    train, test = ctx.split.train, ctx.split.test
    options = sorted({a for a in answers[train].ravel().tolist() if a})
    if not options:
        return _vote_figures(ctx, np.zeros(len(test)), {"options": 0})
    index = {a: k for k, a in enumerate(options)}
    coded = np.vectorize(lambda a: index.get(a, -1), otypes=[np.int64])(answers)
    k_count, m_count = len(options), coded.shape[1]

    def log_posterior(rows: Rows, log_prior: Array, log_confusion: Array) -> Array:
        out = np.tile(log_prior, (len(rows), 1))
        for m in range(m_count):
            given = coded[rows, m]
            seen = given >= 0
            out[seen] += log_confusion[m][:, given[seen]].T
        return np.asarray(out, dtype=np.float64)

    # Start from the majority vote's soft counts, then alternate M and E steps.
    votes = np.zeros((len(train), k_count))
    for m in range(m_count):
        given = coded[train, m]
        seen = given >= 0
        votes[np.flatnonzero(seen), given[seen]] += 1.0
    posterior = (votes + 1e-3) / (votes + 1e-3).sum(axis=1, keepdims=True)
    for _ in range(50):
        log_prior = np.log(posterior.mean(axis=0) + 1e-9)
        log_confusion = np.empty((m_count, k_count, k_count))
        for m in range(m_count):
            given = coded[train, m]
            seen = given >= 0
            # Per true option, the chance the model names it (one pseudo-count each way);
            # its errors spread evenly over the other options. A full confusion matrix has
            # K(K-1) cells per model: too many for a few thousand questions.
            weight = posterior[seen].sum(axis=0)
            hit = posterior[np.flatnonzero(seen), given[seen]]
            right = np.bincount(given[seen], weights=hit, minlength=k_count)
            accuracy = (right + 1.0) / (weight + 2.0)
            wrong = (1.0 - accuracy) / max(k_count - 1, 1)
            confusion = np.tile(wrong[:, None], (1, k_count))
            np.fill_diagonal(confusion, accuracy)
            log_confusion[m] = np.log(confusion)
        log_post = log_posterior(train, log_prior, log_confusion)
        updated = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        updated /= updated.sum(axis=1, keepdims=True)
        converged = float(np.abs(updated - posterior).max()) < 1e-6
        posterior = updated
        if converged:
            break
    best = log_posterior(test, log_prior, log_confusion).argmax(axis=1)
    gold = ctx.data.answers
    assert gold is not None
    answered = (coded[test] >= 0).any(axis=1)
    hits = ((np.asarray(options)[best] == gold[test]) & answered).astype(np.float64)
    return _vote_figures(ctx, hits, {"options": k_count})


def _vote_figures(ctx: EnsembleContext, hits: Array, details: dict[str, Any]) -> dict[str, Any]:
    data, base = ctx.data, ctx.baselines
    accuracy = float(hits.mean())
    cost = float(data.costs.sum())
    return {
        "accuracy": accuracy,
        "cost": cost,
        "shares": {m: 1.0 for m in data.models},
        "oracle_gap_closed": finite(
            oracle_gap_closed(accuracy, base["best_single_accuracy"], base["oracle_accuracy"])
        ),
        "by_label": _by_label(data, ctx.split, hits),
        "frontier": [{"cost_weight": None, "cost": cost, "accuracy": accuracy}],
        "details": details,
    }


def _by_label(data: EvalData, split: EvalSplit, hits: Array) -> dict[str, float]:
    if "group" not in data.labels:
        return {}
    labels = data.labels["group"][split.test]
    return {str(v): float(hits[labels == v].mean()) for v in np.unique(labels)}


# ---------------------------------------------------------------- registry


ENSEMBLES: dict[str, EnsembleSpec] = {
    spec.name: spec
    for spec in [
        EnsembleSpec(
            "cascade",
            "cascade",
            "weak model + helpers (chosen out-of-fold), escalating to the strong one on a "
            "learned score over their agreement and TF-IDF text scores; every call paid",
            _cascade(with_text=True),
            needs_pair=True,
        ),
        EnsembleSpec(
            "cascade-apgr",
            "cascade",
            "the RouteLLM view's cascade: helpers chosen for APGR (their calls free there; "
            "the tier capped by --max-tier-share), answers only the weak or the strong model's",
            _cascade(with_text=True, objective="apgr", keep="first"),
            needs_pair=True,
        ),
        EnsembleSpec(
            "cascade-agreement",
            "cascade",
            "the cascade with an escalation score over the agreement pattern alone",
            _cascade(with_text=False),
            needs_pair=True,
        ),
        EnsembleSpec(
            "vote-majority",
            "vote",
            "every herd model answers; most votes win (ties: best on train)",
            _majority,
            needs_pair=False,
        ),
        EnsembleSpec(
            "vote-weighted",
            "vote",
            "every herd model answers; votes weighted log((K-1)p/(1-p)), p its train accuracy",
            _weighted,
            needs_pair=False,
        ),
        EnsembleSpec(
            "vote-dawid-skene",
            "vote",
            "every herd model answers; Dawid-Skene: each model's accuracy per true option "
            "by EM on the training rows' answers (no gold), the most probable option wins",
            _dawid_skene,
            needs_pair=False,
        ),
        EnsembleSpec(
            "vote-learned",
            "vote",
            "every herd model answers; a classifier over (question, answer) pairs with "
            "per-model indicators picks the answer",
            _learned,
            needs_pair=False,
        ),
    ]
}
"""Every ensemble by name, in report order."""


def select_ensembles(
    data: EvalData, asked: Sequence[str] | None, pair: tuple[int, int] | None
) -> tuple[list[str], dict[str, str]]:
    """The ensembles to run (``asked``, or all that ``data`` supports) and why others are not."""
    candidates = list(asked) if asked is not None else list(ENSEMBLES)
    names, skipped = [], {}
    for name in candidates:
        spec = ENSEMBLES[name]
        if data.pool is None or data.votes is None:
            skipped[name] = "needs each model's answers (--predictions)"
        elif spec.needs_pair and pair is None:
            skipped[name] = "needs a strong/weak pair (--pair STRONG WEAK)"
        elif not spec.needs_pair and pair is not None and asked is None:
            skipped[name] = "a vote of the strong/weak pair alone says little; run without --pair"
        else:
            names.append(name)
    return names, skipped


def run_ensemble(name: str, ctx: EnsembleContext) -> dict[str, Any]:
    """One ensemble's figures on one split, with the seconds it took."""
    start = time.perf_counter()
    figures = ENSEMBLES[name].run(ctx)
    figures["seconds"] = time.perf_counter() - start
    return figures
