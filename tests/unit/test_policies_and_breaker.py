"""Policies rank from scores; breakers open, cool down and probe."""

from __future__ import annotations

import httpx
import pytest

from langchain_herd import ArgmaxPolicy, CircuitBreaker, MarginPolicy
from langchain_herd.config import PolicyConfig
from langchain_herd.errors import EmptyAnswerError
from langchain_herd.failures import classify_failure
from langchain_herd.policies import policy_from_config


def test_argmax_ranks_all_by_score_ties_in_order() -> None:
    assert ArgmaxPolicy().rank({"a": 0.1, "b": 0.5, "c": 0.5}, "a") == ["b", "c", "a"]


def test_margin_policy() -> None:
    policy = MarginPolicy(0.2)
    assert policy.rank({"home": 0.3, "x": 0.45, "y": 0.25}, "home") == ["home", "x", "y"]
    assert policy.rank({"home": 0.1, "x": 0.45, "y": 0.45}, "home") == ["x", "y", "home"]
    with pytest.raises(ValueError):
        MarginPolicy(1.5)


def test_policy_from_config() -> None:
    assert isinstance(policy_from_config(PolicyConfig()), ArgmaxPolicy)
    policy = policy_from_config(PolicyConfig(name="margin", margin=0.3))
    assert isinstance(policy, MarginPolicy) and policy.margin == 0.3


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_cycle() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert not breaker.allow()
    assert breaker.status().state == "open"
    assert breaker.status().retry_in_s == pytest.approx(10)
    clock.now = 10
    assert breaker.status().state == "half_open"
    assert breaker.allow(), "one probe goes through"
    assert not breaker.allow(), "only one probe at a time"
    breaker.record_failure()
    assert breaker.status().state == "open", "a failed probe reopens at once"
    clock.now = 20
    assert breaker.allow()
    breaker.record_success()
    assert breaker.status().state == "closed"
    assert breaker.status().consecutive_failures == 0


def test_success_resets_consecutive_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.allow()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), "connection"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (TimeoutError("deadline"), "timeout"),
        (httpx.RemoteProtocolError("peer closed"), "connection"),
        (EmptyAnswerError("empty"), "empty_answer"),
    ],
)
def test_failure_kinds(exc: BaseException, kind: str) -> None:
    failure = classify_failure(exc)
    assert failure is not None and failure.kind == kind


def test_bugs_are_not_failures() -> None:
    assert classify_failure(KeyError("x")) is None
    assert classify_failure(TypeError("bad arg")) is None
