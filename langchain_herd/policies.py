"""Decision policies: turn classifier scores into a ranking of experts.

A policy sees per-expert scores only; it neither loads models nor calls experts, so a new
policy is one small class. ``POLICIES`` maps the names a config file may use to classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from langchain_herd.config import PolicyConfig


@runtime_checkable
class Policy(Protocol):
    """Ranks experts from their scores; the first is called first."""

    name: ClassVar[str]

    def rank(self, expert_scores: Mapping[str, float], default_expert: str) -> list[str]:
        """Return every expert, best first."""
        ...


def _by_score(expert_scores: Mapping[str, float]) -> list[str]:
    # Ties keep config order (sorted is stable), so rankings are deterministic.
    return sorted(expert_scores, key=lambda name: -expert_scores[name])


class ArgmaxPolicy:
    """Best score first; the rest follow by score.

    Example:
        >>> ArgmaxPolicy().rank({"a": 0.2, "b": 0.7}, default_expert="a")
        ['b', 'a']
    """

    name: ClassVar[str] = "argmax"

    def rank(self, expert_scores: Mapping[str, float], default_expert: str) -> list[str]:
        return _by_score(expert_scores)


class MarginPolicy:
    """Stay on the default expert unless another beats it by ``margin``.

    Useful when the default is the generalist (or the cheap model) and leaving it should
    need clear evidence.

    Example:
        >>> MarginPolicy(0.2).rank({"general": 0.4, "stem": 0.5}, default_expert="general")
        ['general', 'stem']
        >>> MarginPolicy(0.2).rank({"general": 0.2, "stem": 0.7}, default_expert="general")
        ['stem', 'general']
    """

    name: ClassVar[str] = "margin"

    def __init__(self, margin: float = 0.1) -> None:
        if not 0 <= margin <= 1:
            raise ValueError(f"margin must be in [0, 1], got {margin}")
        self.margin = margin

    def rank(self, expert_scores: Mapping[str, float], default_expert: str) -> list[str]:
        ranked = _by_score(expert_scores)
        if default_expert not in expert_scores:
            return ranked
        best = ranked[0]
        if expert_scores[best] - expert_scores[default_expert] > self.margin:
            return ranked
        return [default_expert] + [name for name in ranked if name != default_expert]


class CostPolicy:
    """Best predicted quality per price: rank by ``score - cost_weight * cost``.

    With correctness scores (the probability each expert answers right) and costs such as
    active parameters, sweeping ``cost_weight`` traces the cost-quality frontier.

    Example:
        >>> CostPolicy({"small": 1.0, "big": 10.0}, cost_weight=0.05).rank(
        ...     {"small": 0.6, "big": 0.8}, default_expert="small")
        ['small', 'big']
    """

    name: ClassVar[str] = "cost"

    def __init__(self, costs: Mapping[str, float], cost_weight: float) -> None:
        if cost_weight < 0:
            raise ValueError(f"cost_weight must be >= 0, got {cost_weight}")
        self.costs = dict(costs)
        self.cost_weight = cost_weight

    def rank(self, expert_scores: Mapping[str, float], default_expert: str) -> list[str]:
        net = {
            name: score - self.cost_weight * self.costs.get(name, 0.0)
            for name, score in expert_scores.items()
        }
        return _by_score(net)


class ThresholdPolicy:
    """RouteLLM's rule: call the strong expert only when its score exceeds ``threshold``.

    The score of the strong expert is read as its predicted win (or correctness)
    probability; below the threshold the others are tried first, best score first, and the
    strong expert stays last as the fallback. ``herd calibrate`` picks the threshold for a
    target share of strong calls or for best accuracy.

    Example:
        >>> policy = ThresholdPolicy("big", threshold=0.7)
        >>> policy.rank({"small": 0.5, "big": 0.6}, default_expert="small")
        ['small', 'big']
        >>> policy.rank({"small": 0.5, "big": 0.9}, default_expert="small")
        ['big', 'small']
    """

    name: ClassVar[str] = "threshold"

    def __init__(self, strong_expert: str, threshold: float = 0.5) -> None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.strong_expert = strong_expert
        self.threshold = threshold

    def rank(self, expert_scores: Mapping[str, float], default_expert: str) -> list[str]:
        others = _by_score({k: v for k, v in expert_scores.items() if k != self.strong_expert})
        if self.strong_expert not in expert_scores:
            return others
        if expert_scores[self.strong_expert] > self.threshold:
            return [self.strong_expert, *others]
        return [*others, self.strong_expert]


POLICIES: dict[str, type[Policy]] = {
    ArgmaxPolicy.name: ArgmaxPolicy,
    MarginPolicy.name: MarginPolicy,
    CostPolicy.name: CostPolicy,
    ThresholdPolicy.name: ThresholdPolicy,
}
"""The policies a config file may name."""

DEFAULT_MARGIN = 0.1
DEFAULT_THRESHOLD = 0.5


def policy_from_config(
    config: PolicyConfig,
    *,
    costs: Mapping[str, float] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> Policy:
    """Build the policy a config names.

    Args:
        config: the policy section of a herd config.
        costs: each expert's relative cost (for ``cost``).
        calibration: the classifier artifact's calibration (``herd calibrate``), used for a
            margin or threshold the config leaves unset.
    """
    calibrated = calibration if calibration and calibration.get("policy") == config.name else {}
    if config.name == "margin":
        margin = config.margin if config.margin is not None else calibrated.get("value")
        return MarginPolicy(DEFAULT_MARGIN if margin is None else float(margin))
    if config.name == "cost":
        return CostPolicy(costs or {}, config.cost_weight)
    if config.name == "threshold":
        assert config.strong_expert is not None  # checked by PolicyConfig
        threshold = config.threshold if config.threshold is not None else calibrated.get("value")
        return ThresholdPolicy(
            config.strong_expert, DEFAULT_THRESHOLD if threshold is None else float(threshold)
        )
    return ArgmaxPolicy()
