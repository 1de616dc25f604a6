"""Breakers count expert health only: request faults (422) never, 429s are back-pressure.

Real local TGI-protocol servers on loopback, the herd's real clients; faults injected through
the servers' fault endpoint and their own concurrency limit (``max_concurrent_requests``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from langchain_herd import AllExpertsFailedError, HerdRouter, InputError
from langchain_herd.config import parse_config
from langchain_herd.errors import ExpertsOverloadedError
from langchain_herd.failures import classify_failure
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.shared_state import RedisState
from tests.redis_server import RedisServer, running_redis

ROUTES = ["stem", "humanities", "social_sciences", "other"]
QUESTIONS = [
    "Compute the derivative of x^3 + 2x.",
    "Which philosopher wrote the Critique of Pure Reason?",
    "What causes inflation in an economy?",
    "How do I renew a passport?",
]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    backend = load_backend("tiny")
    threads = [
        ServerThread(
            create_app(
                backend,
                model_id=f"tiny-{i}",
                max_input_tokens=64,
                max_total_tokens=128,
                max_concurrent_requests=1,
            )
        ).start()
        for i in range(4)
    ]
    yield [thread.url for thread in threads]
    for thread in threads:
        thread.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: list[str]) -> Iterator[None]:
    yield
    for url in servers:
        httpx.delete(f"{url}/_herd/faults")


def herd(servers: list[str], protocol: str = "tgi", **fallback: Any) -> HerdRouter:
    config = parse_config(
        {
            "name": "pressure",
            "experts": [
                {
                    "name": f"e{i}",
                    "url": url,
                    "protocol": protocol,
                    "routes": [route],
                    "generation": {"max_new_tokens": 4},
                    "timeout_s": 10,
                    # Wrong on purpose (the servers take 64): the router cannot tell a query is
                    # too long before an expert refuses it with 422.
                    "max_input_tokens": 4000,
                }
                for i, (url, route) in enumerate(zip(servers, ROUTES, strict=True))
            ],
            "fallback": {"breaker": {"failure_threshold": 3, "cooldown_s": 30}, **fallback},
        }
    )
    return HerdRouter.from_config(config)


def requests_served(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("tgi_request_count "))
    return int(float(line.split()[1]))


def closed(router: HerdRouter) -> dict[str, tuple[str, int]]:
    return {
        name: (status.state, status.consecutive_failures)
        for name, status in ((n, b.status()) for n, b in router.breakers.items())
    }


ALL_CLOSED = {f"e{i}": ("closed", 0) for i in range(4)}


def test_oversized_queries_open_no_breaker(servers: list[str]) -> None:
    router = herd(servers)
    oversized = "Explain this in detail: " + "lorem ipsum dolor sit amet " * 60
    for _ in range(3):
        with pytest.raises(AllExpertsFailedError) as info:
            router.invoke(oversized)
        attempts = info.value.attempts
        assert len(attempts) == 3, "max_attempts bounds the refusals"
        assert {(a.failure, a.status_code) for a in attempts} == {("invalid_input", 422)}
    assert closed(router) == ALL_CLOSED, "a client's 422s say nothing of the experts' health"
    _, decision = router.invoke_with_decision(QUESTIONS[0])
    assert decision.skipped == {} and decision.answered_by == decision.chosen


def test_a_request_fault_found_by_the_router_calls_no_expert(servers: list[str]) -> None:
    router = herd(servers)
    before = [requests_served(url) for url in servers]
    with pytest.raises(InputError, match="lone surrogate"):
        router.invoke("Compute the derivative of \ud800x.")
    with pytest.raises(InputError, match="temperature must be a finite number"):
        router.invoke(QUESTIONS[0], temperature=float("nan"))
    assert [requests_served(url) for url in servers] == before, "no expert call counted"
    assert closed(router) == ALL_CLOSED


async def test_overload_is_back_pressure_not_outage(servers: list[str]) -> None:
    """Eight clients against four experts that each serve one request at a time: the excess
    gets 429s. Breakers stay closed, answers come from every expert, every error says the herd
    is overloaded, and once the load stops every expert answers again within one back-off."""
    backoff_s = 0.2
    router = herd(servers, max_attempts=4, backpressure={"backoff_s": backoff_s})
    for url in servers:
        httpx.post(f"{url}/_herd/faults", json={"latency_ms": 120}).raise_for_status()
    outcomes: list[Any] = []

    async def client(index: int) -> None:
        for turn in range(4):
            question = QUESTIONS[(index + turn) % 4]
            try:
                outcomes.append(await router.ainvoke_with_decision(question))
            except ExpertsOverloadedError as exc:
                outcomes.append(exc)
                await asyncio.sleep(exc.retry_after_s)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(8)))
    elapsed = time.perf_counter() - started

    answers = [o[1] for o in outcomes if isinstance(o, tuple)]
    errors = [o for o in outcomes if not isinstance(o, tuple)]
    assert len(outcomes) == 32 and elapsed < 20
    assert closed(router) == ALL_CLOSED, "429s must not open breakers"
    assert set(Counter(d.answered_by for d in answers)) == {"e0", "e1", "e2", "e3"}
    assert len(answers) >= 12, f"only {len(answers)} of 32 answered"
    busy = [a for d in answers for a in d.attempts if not a.ok]
    assert busy and {a.failure for a in busy} == {"rate_limited"}, "load did provoke 429s"
    for error in errors:
        assert 0 < error.retry_after_s <= backoff_s
        assert "every expert is overloaded" in str(error)

    for url in servers:
        httpx.delete(f"{url}/_herd/faults")
    assert max(router.engine.pressure.remaining_s(f"e{i}") for i in range(4)) <= backoff_s
    await asyncio.sleep(backoff_s)
    for index, question in enumerate(QUESTIONS):
        _, decision = router.invoke_with_decision(
            question, config={"configurable": {"herd_expert": f"e{index}"}}
        )
        assert decision.answered_by == f"e{index}" and decision.skipped == {}


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_a_429_backs_off_and_moves_on_at_once(servers: list[str], protocol: str) -> None:
    router = herd(servers, protocol, backpressure={"backoff_s": 5})
    httpx.post(f"{servers[0]}/_herd/faults", json={"fail_next": 5, "fail_status": 429})
    _, decision = router.invoke_with_decision(QUESTIONS[0])
    assert (decision.attempts[0].expert, decision.attempts[0].failure) == ("e0", "rate_limited")
    assert decision.answered_by != "e0"
    _, decision = router.invoke_with_decision(QUESTIONS[0])
    assert decision.skipped["e0"].startswith("backing off after HTTP 429 (overloaded)")
    assert [a.expert for a in decision.attempts] == [decision.answered_by]
    assert httpx.get(f"{servers[0]}/_herd/faults").json()["fail_next"] == 4, "e0 was skipped"
    assert closed(router) == ALL_CLOSED


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def test_replicas_back_off_together_through_redis(redis_server: RedisServer) -> None:
    one = RedisState(redis_server.url, key_prefix="bp:").backoff("e0")
    two = RedisState(redis_server.url, key_prefix="bp:").backoff("e0")
    assert two.remaining_s() == 0
    one.back_off(2.0)
    assert 1.5 < two.remaining_s() <= 2.0
    two.back_off(0.5)  # a shorter back-off does not cut a longer one short
    assert one.remaining_s() > 1.5
    two.clear()
    assert one.remaining_s() == 0


def test_an_overload_inside_an_openai_stream_is_back_pressure(servers: list[str]) -> None:
    """TGI reports a full server inside the stream; the openai client keeps only its text."""
    httpx.post(f"{servers[0]}/_herd/faults", json={"latency_ms": 1500}).raise_for_status()
    chat = ChatOpenAI(
        base_url=f"{servers[0]}/v1", api_key="unused", model="tgi", max_retries=0, max_tokens=4
    )
    holder = threading.Thread(target=lambda: chat.invoke("hi"))  # takes the one slot
    holder.start()
    time.sleep(0.5)
    with pytest.raises(Exception) as caught:
        for _ in chat.stream("hi"):
            pass
    holder.join()
    failure = classify_failure(caught.value)
    assert failure is not None and failure.kind == "rate_limited", failure


def test_a_tool_call_cut_short_inside_a_stream_is_the_requests_fault(
    servers: list[str],
) -> None:
    """TGI answers a tool call that ``max_tokens`` cut short with a tool error inside the
    stream (found by the long fuzz run): the request's fault, so it never opens a breaker.
    Before, the openai client's generic "An error occurred during streaming" was read as a
    generation error, and three such requests opened the expert's breaker for everyone."""
    server = ServerThread(create_app(load_backend("tiny"))).start()  # room for tool prompts
    router = herd([server.url] * 4, protocol="openai")
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    bound = router.bind_tools([tool], tool_choice="required")
    for _ in range(4):  # past the breaker's threshold of 3
        with pytest.raises(AllExpertsFailedError) as caught:
            for _ in bound.stream("What is the capital of France?", max_tokens=2):
                pass
        kinds = {attempt.failure for attempt in caught.value.decision.attempts}
        assert kinds == {"invalid_input"}, caught.value.decision.attempts
        assert "Tool error" in caught.value.decision.attempts[0].error
    assert all(breaker.status().state == "closed" for breaker in router.engine.breakers.values())
    assert router.invoke("Name a colour.").content  # the herd still answers
    server.stop()
