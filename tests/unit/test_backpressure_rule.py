"""The back-pressure rule: ``Retry-After`` read from the clients' real exceptions, capped, and
kept apart from the breakers. Fake experts raise the clients' own 429 exceptions (the local
test server sends no ``Retry-After``; tests/integration/test_backpressure.py covers its 429s)."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import openai
import pytest
from huggingface_hub.errors import HfHubHTTPError

from langchain_herd import AllExpertsFailedError, Expert, HerdRouter
from langchain_herd.backpressure import BackPressure
from langchain_herd.breaker import CircuitBreaker
from langchain_herd.errors import ExpertsOverloadedError
from langchain_herd.failures import Failure, classify_failure, parse_retry_after
from tests.unit.fakes import KeywordClassifier, ScriptedChat

CLASSIFIER = KeywordClassifier({"stem": "integral", "other": "tax"})


def too_many(retry_after: str | None = None) -> openai.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(429, headers=headers, request=request)
    return openai.RateLimitError("Error code: 429", response=response, body=None)


def test_parse_retry_after_both_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    in_a_minute = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 < in_a_minute <= 61
    for bad in ("soon", "", "inf", "nan"):
        assert parse_retry_after(bad) is None, bad


def test_retry_after_from_each_client() -> None:
    failure = classify_failure(too_many("7"))
    assert failure == Failure("rate_limited", failure.message, 429, retry_after_s=7.0)
    assert classify_failure(too_many()).retry_after_s is None  # type: ignore[union-attr]
    request = httpx.Request("POST", "http://127.0.0.1:9")
    response = httpx.Response(429, headers={"Retry-After": "2"}, request=request)
    hub = classify_failure(HfHubHTTPError("429 Too Many Requests", response=response))
    assert hub is not None and (hub.kind, hub.retry_after_s) == ("rate_limited", 2.0)
    refused = classify_failure(httpx.ConnectError("refused"))
    assert refused is not None and refused.retry_after_s is None


def test_delay_is_capped_and_defaults() -> None:
    pressure = BackPressure(["a"], backoff_s=0.5, max_backoff_s=10)
    assert pressure.delay_for(Failure("rate_limited", "", 429, retry_after_s=3600)) == 10
    assert pressure.delay_for(Failure("rate_limited", "", 429, retry_after_s=2)) == 2
    assert pressure.delay_for(Failure("rate_limited", "", 429)) == 0.5


def herd(stem: ScriptedChat, other: ScriptedChat, **kwargs: float) -> HerdRouter:
    experts = [Expert("stem", stem, routes=["stem"]), Expert("other", other, routes=["other"])]
    return HerdRouter(experts, CLASSIFIER, breaker_threshold=1, **kwargs)  # type: ignore[arg-type]


def test_retry_after_is_honoured_capped_and_never_trips_the_breaker() -> None:
    stem, other = ScriptedChat(error=too_many("3600")), ScriptedChat(reply="other")
    router = herd(stem, other, max_backoff_s=10)
    _, decision = router.invoke_with_decision("integral")
    assert decision.answered_by == "other" and decision.attempts[0].failure == "rate_limited"
    assert 9 < router.engine.pressure.remaining_s("stem") <= 10, "capped at max_backoff_s"
    assert router.breakers["stem"].status().state == "closed", "threshold 1, still closed"
    _, decision = router.invoke_with_decision("integral")
    assert decision.skipped["stem"].startswith("backing off after HTTP 429")
    assert stem.calls == 1, "skipped while backed off"


def test_every_expert_busy_is_a_clear_overload_error() -> None:
    router = herd(ScriptedChat(error=too_many("4")), ScriptedChat(error=too_many()), backoff_s=2)
    with pytest.raises(ExpertsOverloadedError) as info:
        router.invoke("integral")
    assert isinstance(info.value, AllExpertsFailedError), "old handlers still catch it"
    assert 1.5 < info.value.retry_after_s <= 2, "the first back-off to end"
    assert str(info.value).startswith("every expert is overloaded (HTTP 429) or backing off")
    with pytest.raises(ExpertsOverloadedError) as again:
        router.invoke("integral")
    assert again.value.attempts == [], "nobody called while all are backed off"
    assert set(again.value.decision.skipped) == {"stem", "other"}


def test_mixed_failures_stay_all_experts_failed() -> None:
    router = herd(ScriptedChat(error=too_many()), ScriptedChat(error=httpx.ConnectError("no")))
    with pytest.raises(AllExpertsFailedError) as info:
        router.invoke("integral")
    assert not isinstance(info.value, ExpertsOverloadedError)


def test_a_probe_that_gets_a_429_gives_its_slot_back() -> None:
    stem = ScriptedChat(error=too_many())
    router = herd(stem, ScriptedChat(reply="other"), backoff_s=0)
    clock = [0.0]
    breaker = CircuitBreaker(1, 30, clock=lambda: clock[0])
    router.engine.breakers["stem"] = breaker
    breaker.record_failure()
    clock[0] = 31.0  # half-open: the next call is the probe
    router.invoke("integral")
    assert stem.calls == 1 and breaker.status().state == "half_open", "not reopened"
    stem.error = None
    router.invoke("integral")
    assert stem.calls == 2 and breaker.status().state == "closed"


def test_an_answer_ends_the_back_off() -> None:
    stem = ScriptedChat(reply="stem")
    router = herd(stem, ScriptedChat(reply="other"))
    router.engine.pressure.overloaded("stem", Failure("rate_limited", "busy", 429))
    assert router.engine.pressure.remaining_s("stem") > 0
    # A call admitted before the 429 came back answers: a slot is free again.
    router.engine.attempt(router.route("integral"), "stem", [], lambda e, m: stem.invoke("x"))
    assert router.engine.pressure.remaining_s("stem") == 0


def test_serve_router_passes_the_overload_on_as_429() -> None:
    from langchain_herd.endpoint.openai_errors import api_error_for

    router = herd(ScriptedChat(error=too_many("1.2")), ScriptedChat(error=too_many("3")))
    with pytest.raises(ExpertsOverloadedError) as info:
        router.invoke("integral")
    error = api_error_for(info.value)
    assert (error.status, error.code, error.type) == (429, "experts_overloaded", "rate_limit_error")
    assert error.headers["Retry-After"] == "2"
    assert [a["failure"] for a in error.payload()["error"]["attempts"]] == ["rate_limited"] * 2
