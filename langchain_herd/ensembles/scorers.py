"""The trained parts of the ensembles, run in pure numpy and saved as JSON.

- :class:`LogisticScorer`: standardised logistic regression, fitted and predicted in numpy
  (so neither training nor serving needs scikit-learn).
- :class:`CascadeModel`: a cascade's tiers, what a tier keeps, and one escalation score per
  non-final tier over the tier's agreement features (plus optional text scores), with the
  thresholds measured on out-of-fold training rows.
- :class:`LearnedVote`: a classifier over (question, candidate answer) pairs that scores
  each distinct answer of the members by who gave it; the best-scored answer wins.

Artifacts are one JSON file each (``"kind": "cascade"`` or ``"learned-vote"``); nothing is
pickled, so loading one someone sent you runs none of their code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.ensembles.features import tier_feature_names, tier_features
from langchain_herd.ensembles.votes import VoteResult, decide, majority_vote, precedence
from langchain_herd.errors import ArtifactError, ConfigError

__all__ = [
    "FORMAT_VERSION",
    "CascadeModel",
    "LearnedVote",
    "LogisticScorer",
    "cascade_feature_names",
    "cascade_features",
    "load_ensemble_artifact",
    "vote_feature_names",
    "vote_features",
]

Array = npt.NDArray[np.float64]

FORMAT_VERSION = 1
"""Version of the JSON artifacts written here."""

TEXT_PREFIX = "text:"
"""Feature-name prefix of an expert's text score (its predicted correctness)."""


@dataclass(frozen=True)
class LogisticScorer:
    """Standardised logistic regression: ``sigmoid(coef . (x - mean) / scale + intercept)``.

    Example:
        >>> scorer = LogisticScorer(["a"], [2.0], 0.0, [0.5], [0.5])
        >>> scorer.predict(np.array([[0.5], [1.0]])).round(3).tolist()
        [0.5, 0.881]
    """

    names: list[str]
    """Feature names, in column order."""
    coef: list[float]
    intercept: float
    mean: list[float]
    """Per-feature mean on the training rows (subtracted before the weights)."""
    scale: list[float]
    """Per-feature standard deviation on the training rows (1 for a constant feature)."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.coef) == len(self.mean) == len(self.scale) == n):
            raise ArtifactError(
                f"logistic scorer: {n} names but {len(self.coef)} weights, {len(self.mean)} "
                f"means and {len(self.scale)} scales"
            )
        values = [*self.coef, self.intercept, *self.mean, *self.scale]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ArtifactError("logistic scorer: weights must be finite numbers")
        if any(s <= 0 for s in self.scale):
            raise ArtifactError("logistic scorer: every scale must be > 0")

    def decision_function(self, x: npt.ArrayLike) -> Array:
        """The linear score (log-odds) per row of ``x`` ``(n, F)``."""
        array = np.asarray(x, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != len(self.names):
            raise ValueError(
                f"expected features of shape (n, {len(self.names)}) ({self.names}), got "
                f"{array.shape}"
            )
        z = (array - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef) + self.intercept, dtype=np.float64)

    def predict(self, x: npt.ArrayLike) -> Array:
        """The probability of the positive class per row of ``x`` ``(n, F)``."""
        logits = self.decision_function(x)
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logits)), dtype=np.float64)

    @classmethod
    def fit(
        cls,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        names: Sequence[str],
        *,
        c: float = 1.0,
        sample_weight: npt.ArrayLike | None = None,
    ) -> LogisticScorer:
        """Fit on standardised features: L2-penalised logistic regression, the objective of
        scikit-learn's ``LogisticRegression(C=c)`` (intercept not penalised), solved by
        Newton's method in numpy (the features are few, so each step is one small solve).

        Args:
            x: ``(n, F)`` features.
            y: ``(n,)`` targets in [0, 1]: 0/1, or a soft label ``p`` (the same fit as the
                row twice, as 1 with weight ``p`` and as 0 with weight ``1 - p``).
            names: the ``F`` feature names.
            c: inverse regularisation strength.
            sample_weight: optional per-row weights.

        Raises:
            ValueError: shapes do not fit, targets outside [0, 1], or ``c`` <= 0.
        """
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != len(names) or ya.shape != (len(xa),):
            raise ValueError(
                f"fit wants x (n, {len(names)}) and y (n,); got {xa.shape} and {ya.shape}"
            )
        if not c > 0:
            raise ValueError(f"c must be > 0, got {c}")
        w = np.ones(len(ya)) if sample_weight is None else np.asarray(sample_weight, float)
        if w.shape != ya.shape or (w < 0).any():
            raise ValueError("sample_weight must be (n,) and non-negative")
        mean = xa.mean(axis=0) if len(xa) else np.zeros(xa.shape[1])
        scale = xa.std(axis=0) if len(xa) else np.ones(xa.shape[1])
        scale = np.where(scale > 1e-12, scale, 1.0)
        if ((ya < 0) | (ya > 1)).any():
            raise ValueError("targets must lie in [0, 1]")
        labels = ya
        positive, total = float((w * labels).sum()), float(w.sum())
        if positive <= 0 or positive >= total:
            # One class only: a constant at its (smoothed) rate says all there is to say.
            rate = (positive + 0.5) / (total + 1.0)
            return cls(
                list(names),
                [0.0] * len(names),
                math.log(rate / (1 - rate)),
                mean.tolist(),
                scale.tolist(),
            )
        coef, intercept = _newton_logistic((xa - mean) / scale, labels, w, c)
        return cls(list(names), coef.tolist(), intercept, mean.tolist(), scale.tolist())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "names": list(self.names),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, data: Any) -> LogisticScorer:
        """The scorer :meth:`to_dict` wrote.

        Raises:
            ArtifactError: a field is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise ArtifactError("logistic scorer: expected an object")
        try:
            names = [str(n) for n in data["names"]]
            return cls(
                names,
                [float(v) for v in data["coef"]],
                float(data["intercept"]),
                [float(v) for v in data["mean"]],
                [float(v) for v in data["scale"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"logistic scorer: missing or malformed field ({type(exc).__name__}: {exc}); "
                f"expected names, coef, intercept, mean, scale"
            ) from exc


def _newton_logistic(
    z: Array, y: Array, w: Array, c: float, *, tol: float = 1e-10, max_iter: int = 100
) -> tuple[Array, float]:
    """Minimise ``0.5 |coef|^2 + c * sum_i w_i logloss_i`` over coef and an unpenalised
    intercept by damped Newton steps (the problem is strictly convex)."""
    n, f = z.shape
    design = np.concatenate([z, np.ones((n, 1))], axis=1)
    penalty = np.ones(f + 1)
    penalty[-1] = 0.0  # the intercept is not penalised
    rate = float((w * y).sum() / w.sum())
    theta = np.zeros(f + 1)
    theta[-1] = math.log(rate / (1 - rate))

    def loss(t: Array) -> float:
        margin = design @ t
        # log(1 + e^m) - y m, stable for large |m|.
        return float(
            0.5 * (penalty * t * t).sum() + c * (w * (np.logaddexp(0.0, margin) - y * margin)).sum()
        )

    current = loss(theta)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * (design @ theta)))
        grad = penalty * theta + c * design.T @ (w * (p - y))
        hess = np.diag(penalty) + c * (design * (w * p * (1 - p))[:, None]).T @ design
        hess[-1, -1] += 1e-12  # keeps the solve defined if every weight vanishes
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while True:
            candidate = theta - size * step
            value = loss(candidate)
            if value <= current or size < 1e-8:
                break
            size *= 0.5
        theta, previous, current = candidate, current, value
        if previous - current <= tol * max(1.0, abs(current)):
            break
    return theta[:-1].copy(), float(theta[-1])


# ---------------------------------------------------------------- cascade


def cascade_feature_names(k: int, text_experts: Sequence[str]) -> list[str]:
    """The escalation score's features for a tier of ``k`` experts: the tier's agreement
    features, one text score per text expert and, from two experts on, each text score
    times the main answer's agreement (how much to trust agreement depends on the
    question: agreeing on an easy question says less than agreeing on a hard one)."""
    text = [TEXT_PREFIX + name for name in text_experts]
    crossed = [f"{_main_agreement(k)}*{name}" for name in text] if k >= 2 else []
    return [*tier_feature_names(k), *text, *crossed]


def cascade_features(
    agreement: npt.ArrayLike, missing: npt.ArrayLike, text: npt.ArrayLike | None = None
) -> Array:
    """:func:`cascade_feature_names`' columns: agreement ``(n, k, k)``, missing ``(n, k)``,
    text scores ``(n, T)`` (no NaN) or None."""
    x = tier_features(agreement, missing)
    if text is None:
        return x
    t = np.asarray(text, dtype=np.float64).reshape(len(x), -1)
    k = np.asarray(missing).shape[1]
    if k < 2 or t.shape[1] == 0:
        return np.concatenate([x, t], axis=1)
    main = x[:, tier_feature_names(k).index(_main_agreement(k))]
    return np.concatenate([x, t, main[:, None] * t], axis=1)


def _main_agreement(k: int) -> str:
    return "agree_0_1" if k == 2 else "main_support"


@dataclass
class CascadeModel:
    """A trained escalation cascade (what ``herd train --kind cascade`` writes).

    Tier 0 is called first: its main expert (column 0) and helpers answer, the tier keeps an
    answer (the main expert's, or the tier's majority vote) unless its escalation score is
    above the threshold, in which case the next tier answers. The last tier always answers.

    Example:
        >>> from langchain_herd.ensembles.features import letter_agreement
        >>> scorer = LogisticScorer(cascade_feature_names(2, []), [-2.0, 1.0, 0.0], 0.0,
        ...                         [0.5, 0.0, 0.0], [0.5, 1.0, 1.0])
        >>> model = CascadeModel([["weak", "helper"], ["strong"]], "first", [], [scorer],
        ...                      {"weak": 1.0, "helper": 1.0, "strong": 10.0}, [], 0.5)
        >>> agreement, missing = letter_agreement([["B", "C"]])
        >>> model.escalation_score(0, agreement[0], missing[0], {}) > 0.5
        True
    """

    tiers: list[list[str]]
    """Experts per tier, cheapest first; a tier's first expert is its main one."""
    keep: Literal["first", "vote"]
    """The answer a tier keeps: its main expert's, or the tier's majority vote."""
    text_experts: list[str]
    """Experts whose predicted correctness (a text classifier's) are features."""
    scorers: list[LogisticScorer]
    """One per non-final tier; the score is the need to escalate (higher: escalate)."""
    costs: dict[str, float]
    """Cost per call of each expert, as trained (for budgets)."""
    calibration: list[dict[str, float]]
    """Points ``{threshold, escalate_share, accuracy, cost}`` of tier 0's threshold, measured
    on out-of-fold training rows (every call counted in ``cost``)."""
    default_threshold: float
    """The threshold with the best out-of-fold training accuracy."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """How it was trained (helpers considered, out-of-fold figures)."""

    def __post_init__(self) -> None:
        if len(self.tiers) < 2 or any(not tier for tier in self.tiers):
            raise ArtifactError(f"a cascade needs at least two non-empty tiers, got {self.tiers}")
        if self.keep not in ("first", "vote"):
            raise ArtifactError(f"cascade keep must be 'first' or 'vote', got {self.keep!r}")
        if len(self.scorers) != len(self.tiers) - 1:
            raise ArtifactError(
                f"a cascade of {len(self.tiers)} tiers needs {len(self.tiers) - 1} scorer(s), "
                f"got {len(self.scorers)}"
            )
        for t, scorer in enumerate(self.scorers):
            expected = cascade_feature_names(len(self.tiers[t]), self.text_experts)
            if scorer.names != expected:
                raise ArtifactError(
                    f"cascade tier {t}: the scorer reads {scorer.names}, but a tier of "
                    f"{len(self.tiers[t])} expert(s) with text experts {self.text_experts} "
                    f"gives {expected}"
                )
        unknown = [n for tier in self.tiers for n in tier if n not in self.costs]
        if unknown:
            raise ArtifactError(f"cascade: no cost for expert(s) {unknown}")

    @property
    def experts(self) -> list[str]:
        """Every expert of every tier, in call order."""
        return [name for tier in self.tiers for name in tier]

    def features(
        self,
        tier: int,
        agreement: npt.ArrayLike,
        missing: npt.ArrayLike,
        text_scores: npt.ArrayLike | None = None,
    ) -> Array:
        """The escalation features of many queries: agreement ``(n, k, k)``, missing
        ``(n, k)``, text scores ``(n, len(text_experts))`` (NaN or None: unknown, read as
        the training mean)."""
        n_text = len(self.text_experts)
        if not n_text:
            return cascade_features(agreement, missing)
        n = np.asarray(missing).shape[0]
        text = (
            np.full((n, n_text), np.nan)
            if text_scores is None
            else np.asarray(text_scores, dtype=np.float64).reshape(n, n_text)
        )
        # An unknown text score is read as its training mean: no evidence either way.
        first = self.scorers[tier].names.index(TEXT_PREFIX + self.text_experts[0])
        means = np.asarray(self.scorers[tier].mean[first : first + n_text])
        text = np.where(np.isnan(text), means[None, :], text)
        return cascade_features(agreement, missing, text)

    def escalation_scores(
        self,
        tier: int,
        agreement: npt.ArrayLike,
        missing: npt.ArrayLike,
        text_scores: npt.ArrayLike | None = None,
    ) -> Array:
        """:meth:`escalation_score` for many queries at once (shapes as :meth:`features`)."""
        self._check_tier(tier)
        return self.scorers[tier].predict(self.features(tier, agreement, missing, text_scores))

    def escalation_score(
        self,
        tier: int,
        agreement: npt.ArrayLike,
        missing: npt.ArrayLike,
        text_scores: Mapping[str, float],
    ) -> float:
        """The need to escalate past ``tier`` for one query, in [0, 1].

        Args:
            tier: the tier that answered (not the last one).
            agreement: ``(k, k)`` pairwise agreement of its experts' answers.
            missing: ``(k,)`` True where an expert gave no answer.
            text_scores: predicted correctness per text expert (absent: training mean).
        """
        text = [float(text_scores.get(name, math.nan)) for name in self.text_experts]
        scores = self.escalation_scores(
            tier,
            np.asarray(agreement, dtype=np.float64)[None],
            np.asarray(missing, dtype=bool)[None],
            np.asarray([text], dtype=np.float64) if text else None,
        )
        return float(scores[0])

    def kept_answer(self, answers: Sequence[str | None]) -> VoteResult:
        """The answer a tier keeps when it does not escalate: the main expert's
        (``keep="first"``), or the tier's majority vote, ties to the main expert first."""
        if self.keep == "vote":
            return majority_vote(answers)
        main = answers[0] if answers else None
        if not main:
            return VoteResult(None, {}, False, "the main expert gave no readable answer")
        return VoteResult(main, {main: 1.0}, False, "the main expert's answer is kept")

    def threshold_for(
        self,
        *,
        threshold: float | None = None,
        escalate_share: float | None = None,
        budget: float | None = None,
    ) -> float:
        """The escalation threshold for one way of asking (at most one given):
        ``threshold`` as is; ``escalate_share`` the threshold whose out-of-fold share of
        escalations is closest to it without exceeding it; ``budget`` the most accurate
        calibration point whose average cost per query (every call) stays within it; none:
        :attr:`default_threshold`.

        Raises:
            ConfigError: more than one given, or a budget below the cheapest point.
        """
        given = [v for v in (threshold, escalate_share, budget) if v is not None]
        if len(given) > 1:
            raise ConfigError("give at most one of threshold, escalate_share, budget")
        if threshold is not None:
            return float(threshold)
        points = self.calibration
        if (escalate_share is not None or budget is not None) and not points:
            raise ConfigError("this cascade has no calibration points; give a threshold")
        if escalate_share is not None:
            within = [p for p in points if p["escalate_share"] <= escalate_share + 1e-12]
            if not within:
                return max(p["threshold"] for p in points)
            best = max(within, key=lambda p: (p["escalate_share"], -p["threshold"]))
            return float(best["threshold"])
        if budget is not None:
            within = [p for p in points if p["cost"] <= budget + 1e-9]
            if not within:
                cheapest = min(p["cost"] for p in points)
                raise ConfigError(
                    f"budget {budget:g} is below the cascade's cheapest operating point "
                    f"({cheapest:g} per query: tier 0 is always paid); raise the budget"
                )
            best = max(within, key=lambda p: (p["accuracy"], -p["cost"]))
            return float(best["threshold"])
        return float(self.default_threshold)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``kind`` and ``format_version``."""
        return {
            "kind": "cascade",
            "format_version": FORMAT_VERSION,
            "tiers": [list(t) for t in self.tiers],
            "keep": self.keep,
            "text_experts": list(self.text_experts),
            "scorers": [s.to_dict() for s in self.scorers],
            "costs": dict(self.costs),
            "calibration": [dict(p) for p in self.calibration],
            "default_threshold": self.default_threshold,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CascadeModel:
        """The model :meth:`to_dict` wrote.

        Raises:
            ArtifactError: not a cascade, or a field is missing or malformed.
        """
        _check_kind(data, "cascade")
        try:
            return cls(
                tiers=[[str(n) for n in tier] for tier in data["tiers"]],
                keep=data["keep"],
                text_experts=[str(n) for n in data.get("text_experts", [])],
                scorers=[LogisticScorer.from_dict(s) for s in data["scorers"]],
                costs={str(k): float(v) for k, v in data["costs"].items()},
                calibration=[
                    {str(k): float(v) for k, v in p.items()} for p in data.get("calibration", [])
                ],
                default_threshold=float(data["default_threshold"]),
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"cascade artifact: missing or malformed field ({type(exc).__name__}: {exc})"
            ) from exc

    def save(self, path: str | Path) -> Path:
        """Write the JSON artifact; return its path."""
        return _write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CascadeModel:
        """Read an artifact :meth:`save` wrote.

        Raises:
            ArtifactError: missing file, not JSON, not a cascade, or malformed.
        """
        return cls.from_dict(_read(path))

    def _check_tier(self, tier: int) -> None:
        if not 0 <= tier < len(self.scorers):
            raise ValueError(
                f"tier {tier} has no escalation score (tiers 0..{len(self.scorers) - 1} do)"
            )


# ---------------------------------------------------------------- learned vote


def vote_feature_names(members: Sequence[str], text_experts: Sequence[str]) -> list[str]:
    """The learned vote's features of one candidate answer: which members gave it, its
    share of the readable answers, whether it has the most votes, and per text expert its
    predicted correctness when it gave the candidate (else 0)."""
    return [
        *(f"gave:{m}" for m in members),
        "vote_share",
        "is_plurality",
        *(TEXT_PREFIX + m for m in text_experts),
    ]


def vote_features(
    answers: Sequence[str | None],
    members: Sequence[str],
    text_experts: Sequence[str] = (),
    text_scores: Mapping[str, float] | None = None,
) -> tuple[list[str], Array]:
    """The distinct readable answers of one query and their features
    (:func:`vote_feature_names`' columns), one row per candidate."""
    if len(answers) != len(members):
        raise ValueError(f"{len(answers)} answers for {len(members)} members")
    candidates = list(dict.fromkeys(a for a in answers if a))
    if not candidates:
        return [], np.zeros((0, len(members) + 2 + len(text_experts)))
    given = np.asarray(
        [[float(a == c) for a in answers] for c in candidates], dtype=np.float64
    )  # (candidates, members)
    counts = given.sum(axis=1)
    share = counts / counts.sum()
    plurality = (counts == counts.max()).astype(np.float64)
    columns = [given, share[:, None], plurality[:, None]]
    if text_experts:
        index = {m: j for j, m in enumerate(members)}
        scores = text_scores or {}
        text = np.zeros((len(candidates), len(text_experts)))
        for t, name in enumerate(text_experts):
            value = scores.get(name)
            if name in index and value is not None and math.isfinite(value):
                text[:, t] = given[:, index[name]] * float(value)
        columns.append(text)
    return candidates, np.concatenate(columns, axis=1)


@dataclass
class LearnedVote:
    """A vote whose weights were learned: a classifier scores each distinct answer of the
    members (who gave it, its vote share, optional text scores) and the best one wins.

    Example:
        >>> names = vote_feature_names(["a", "b"], [])
        >>> scorer = LogisticScorer(names, [2.0, 0.5, 1.0, 0.0], -1.0, [0.0] * 4, [1.0] * 4)
        >>> LearnedVote(["a", "b"], scorer, []).pick(["A", "B"], {}).winner
        'A'
    """

    members: list[str]
    scorer: LogisticScorer
    text_experts: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """How it was trained (members' training accuracy, out-of-fold accuracy)."""

    def __post_init__(self) -> None:
        if not self.members:
            raise ArtifactError("a learned vote needs at least one member")
        expected = vote_feature_names(self.members, self.text_experts)
        if self.scorer.names != expected:
            raise ArtifactError(
                f"learned vote: the scorer reads {self.scorer.names}, but members "
                f"{self.members} with text experts {self.text_experts} give {expected}"
            )

    def candidate_scores(
        self, answers: Sequence[str | None], text_scores: Mapping[str, float]
    ) -> dict[str, float]:
        """Each distinct readable answer's predicted probability of being right."""
        candidates, x = vote_features(answers, self.members, self.text_experts, text_scores)
        if not candidates:
            return {}
        return dict(zip(candidates, self.scorer.predict(x).tolist(), strict=True))

    def pick(
        self,
        answers: Sequence[str | None],
        text_scores: Mapping[str, float],
        tie_order: Sequence[int] | None = None,
    ) -> VoteResult:
        """The best-scored answer (ties: the first member in ``tie_order`` holding one)."""
        tally = self.candidate_scores(answers, text_scores)
        return decide(answers, tally, precedence(len(answers), tie_order), kind="probability")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``kind`` and ``format_version``."""
        return {
            "kind": "learned-vote",
            "format_version": FORMAT_VERSION,
            "members": list(self.members),
            "text_experts": list(self.text_experts),
            "scorer": self.scorer.to_dict(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LearnedVote:
        """The vote :meth:`to_dict` wrote.

        Raises:
            ArtifactError: not a learned vote, or a field is missing or malformed.
        """
        _check_kind(data, "learned-vote")
        try:
            return cls(
                members=[str(m) for m in data["members"]],
                scorer=LogisticScorer.from_dict(data["scorer"]),
                text_experts=[str(m) for m in data.get("text_experts", [])],
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"learned-vote artifact: missing or malformed field ({type(exc).__name__}: {exc})"
            ) from exc

    def save(self, path: str | Path) -> Path:
        """Write the JSON artifact; return its path."""
        return _write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LearnedVote:
        """Read an artifact :meth:`save` wrote.

        Raises:
            ArtifactError: missing file, not JSON, not a learned vote, or malformed.
        """
        return cls.from_dict(_read(path))


# ---------------------------------------------------------------- files


def load_ensemble_artifact(path: str | Path) -> CascadeModel | LearnedVote:
    """A cascade or learned-vote artifact, by its ``kind``.

    Raises:
        ArtifactError: missing file, not JSON, an unknown kind, or malformed.
    """
    data = _read(path)
    kind = data.get("kind")
    if kind == "cascade":
        return CascadeModel.from_dict(data)
    if kind == "learned-vote":
        return LearnedVote.from_dict(data)
    raise ArtifactError(
        f"{path}: kind {kind!r} is not an ensemble artifact (cascade or learned-vote); "
        f"write one with `herd train --kind cascade|learned-vote`"
    )


def _check_kind(data: Any, kind: str) -> None:
    if not isinstance(data, Mapping):
        raise ArtifactError(f"{kind} artifact: expected a JSON object")
    if data.get("kind") != kind:
        raise ArtifactError(f"expected a {kind} artifact, got kind {data.get('kind')!r}")
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{kind} artifact has format_version {version!r}; this langchain-herd reads up to "
            f"{FORMAT_VERSION}: upgrade langchain-herd"
        )


def _write(path: str | Path, data: dict[str, Any]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return target


def _read(path: str | Path) -> dict[str, Any]:
    source = Path(path)
    if source.is_dir():
        raise ArtifactError(f"{source}: is a folder; an ensemble artifact is one JSON file")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"{source}: no such ensemble artifact; train one with `herd train --kind "
            f"cascade|learned-vote`"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{source}: cannot read the ensemble artifact ({exc!r})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: expected a JSON object")
    return data
