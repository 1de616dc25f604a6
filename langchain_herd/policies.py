"""Decision policies: turn classifier scores into a ranking of experts.

A policy sees per-expert scores only; it neither loads models nor calls experts, so a new
policy is one small class. ``POLICIES`` maps the names a config file may use to classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

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


POLICIES: dict[str, type[ArgmaxPolicy] | type[MarginPolicy]] = {
    ArgmaxPolicy.name: ArgmaxPolicy,
    MarginPolicy.name: MarginPolicy,
}


def policy_from_config(config: PolicyConfig) -> Policy:
    """Build the policy a config names."""
    if config.name == "margin":
        return MarginPolicy(config.margin)
    return POLICIES[config.name]()
