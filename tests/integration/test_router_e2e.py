"""HerdRouter end to end: real local TGI-protocol servers on loopback, real clients, the
bundled classifier, every protocol path and every failure class, faults injected through
the servers' own fault endpoint (never by patching the client).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from langchain_herd import AllExpertsFailedError, HerdRouter, StreamInterruptedError
from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.server import ServerThread, create_app, load_backend

STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."
HUM_Q = "Which philosopher wrote the Critique of Pure Reason, and in which century?"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    primary = ServerThread(
        create_app(backend, model_id="tiny-primary", max_input_tokens=512, max_total_tokens=1024)
    ).start()
    backup = ServerThread(
        create_app(backend, model_id="tiny-backup", max_input_tokens=512, max_total_tokens=1024)
    ).start()
    small = ServerThread(
        create_app(backend, model_id="tiny-small", max_input_tokens=16, max_total_tokens=64)
    ).start()
    yield {"primary": primary.url, "backup": backup.url, "small": small.url}
    for server in (primary, backup, small):
        server.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: dict[str, str]) -> Iterator[None]:
    yield
    for url in servers.values():
        httpx.delete(f"{url}/_herd/faults")


def fault(url: str, **faults: Any) -> None:
    response = httpx.post(f"{url}/_herd/faults", json=faults)
    response.raise_for_status()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def herd(
    servers: dict[str, str],
    protocol: str,
    *,
    stem_url: str | None = None,
    stem_limit: int | None = None,
    timeout_s: float = 30,
    **fallback: Any,
) -> HerdConfig:
    gen = {"max_new_tokens": 8}
    return parse_config(
        {
            "name": "test-herd",
            "experts": [
                {
                    "name": "stem",
                    "url": stem_url or servers["primary"],
                    "protocol": protocol,
                    "routes": ["stem"],
                    "generation": gen,
                    "timeout_s": timeout_s,
                    "system_prompt": "You answer science questions.",
                    "max_input_tokens": stem_limit,
                },
                {
                    "name": "generalist",
                    "url": servers["backup"],
                    "protocol": protocol,
                    "routes": ["humanities", "social_sciences", "other"],
                    "generation": gen,
                },
            ],
            "fallback": {"default_expert": "generalist", **fallback},
        }
    )


def router_for(servers: dict[str, str], protocol: str, **kwargs: Any) -> HerdRouter:
    return HerdRouter.from_config(herd(servers, protocol, **kwargs))


PROTOCOLS = ["tgi", "openai"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bundled_classifier_routes_and_answers(servers: dict[str, str], protocol: str) -> None:
    router = router_for(servers, protocol)
    answer, decision = router.invoke_with_decision(STEM_Q)
    assert decision.chosen == "stem" and decision.answered_by == "stem"
    assert answer.text.strip()
    _, decision = router.invoke_with_decision(HUM_Q)
    assert decision.answered_by == "generalist"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_all_paths_agree(servers: dict[str, str], protocol: str) -> None:
    router = router_for(servers, protocol)
    expected = router.invoke(STEM_Q).text
    assert expected.strip()
    assert (await router.ainvoke(STEM_Q)).text == expected
    assert "".join(c.text for c in router.stream(STEM_Q)) == expected
    assert "".join([c.text async for c in router.astream(STEM_Q)]) == expected
    assert [m.text for m in router.batch([STEM_Q, STEM_Q], {"max_concurrency": 2})] == [
        expected,
        expected,
    ]
    assert [m.text for m in await router.abatch([STEM_Q] * 3, {"max_concurrency": 3})] == [
        expected
    ] * 3
    events = [e async for e in router.astream_events(STEM_Q, version="v2")]
    streamed = "".join(
        e["data"]["chunk"].text
        for e in events
        if e["event"] == "on_chat_model_stream" and e["name"] == "test-herd"
    )
    assert streamed == expected
    assert any(e["name"] == "expert:stem" for e in events if e["event"] == "on_chain_start")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        ({"fail_next": 1, "fail_status": 503}, {"server_error", "generation_error"}),
        ({"fail_next": 1, "fail_status": 500}, {"server_error", "generation_error"}),
        ({"fail_next": 1, "fail_status": 424}, {"generation_error"}),
        ({"fail_next": 1, "fail_status": 429}, {"rate_limited"}),
        ({"fail_next": 1, "fail_status": 422}, {"invalid_input"}),
        ({"empty_next": 1}, {"empty_answer"}),
    ],
)
def test_failures_fall_back(
    servers: dict[str, str], protocol: str, faults: dict[str, Any], kind: set[str]
) -> None:
    router = router_for(servers, protocol)
    fault(servers["primary"], **faults)
    answer, decision = router.invoke_with_decision(STEM_Q)
    assert [a.expert for a in decision.attempts] == ["stem", "generalist"]
    assert decision.attempts[0].failure in kind, decision.attempts[0]
    assert decision.answered_by == "generalist" and answer.text.strip()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_failures_fall_back_async_and_streaming(
    servers: dict[str, str], protocol: str
) -> None:
    router = router_for(servers, protocol)
    fault(servers["primary"], fail_next=1, fail_status=503)
    _, decision = await router.ainvoke_with_decision(STEM_Q)
    assert decision.answered_by == "generalist"
    fault(servers["primary"], fail_next=1, fail_status=503)
    chunks = list(router.stream(STEM_Q))
    assert chunks[-1].response_metadata["herd"]["answered_by"] == "generalist"
    fault(servers["primary"], fail_next=1, fail_status=429)
    chunks = [c async for c in router.astream(STEM_Q)]
    assert chunks[-1].response_metadata["herd"]["answered_by"] == "generalist"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refused_connection_falls_back(servers: dict[str, str], protocol: str) -> None:
    router = router_for(servers, protocol, stem_url=closed_port_url())
    _, decision = router.invoke_with_decision(STEM_Q)
    assert decision.attempts[0].failure == "connection"
    assert decision.answered_by == "generalist"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_timeout_falls_back_sync_and_async(servers: dict[str, str], protocol: str) -> None:
    router = router_for(servers, protocol, timeout_s=0.5)
    fault(servers["primary"], latency_ms=1500)
    _, decision = router.invoke_with_decision(STEM_Q)
    assert decision.attempts[0].failure == "timeout"
    started = time.perf_counter()
    _, decision = await router.ainvoke_with_decision(STEM_Q)
    assert decision.attempts[0].failure == "timeout"
    assert decision.attempts[0].latency_ms < 1200, "the async deadline cuts the call short"
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_broken_before_first_token_falls_back(
    servers: dict[str, str], protocol: str
) -> None:
    router = router_for(servers, protocol)
    fault(servers["primary"], drop_stream_after=0)
    text = "".join(c.text for c in router.stream(STEM_Q))
    assert text.strip()
    chunks = [c async for c in router.astream(STEM_Q)]
    decision = chunks[-1].response_metadata["herd"]
    assert decision["answered_by"] == "generalist"
    assert decision["attempts"][0]["failure"] == "connection"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_broken_after_tokens_raises_with_partial(
    servers: dict[str, str], protocol: str
) -> None:
    router = router_for(servers, protocol)
    fault(servers["primary"], drop_stream_after=2)
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in router.stream(STEM_Q):
            received.append(chunk.text)
    assert "".join(received).strip()
    assert info.value.partial_text == "".join(received)
    assert info.value.expert == "stem"
    received = []
    with pytest.raises(StreamInterruptedError) as ainfo:
        async for chunk in router.astream(STEM_Q):
            received.append(chunk.text)
    assert ainfo.value.partial_text == "".join(received)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_error_is_not_a_fallback(servers: dict[str, str], protocol: str) -> None:
    router = router_for(servers, protocol)
    fault(servers["primary"], fail_next=1, fail_status=401, fail_error_type="unauthorized")
    with pytest.raises((httpx.HTTPError, openai.APIStatusError)):
        router.invoke(STEM_Q)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_too_long_input_skips_the_small_expert(servers: dict[str, str], protocol: str) -> None:
    # The router asks the small server its limit (16 tokens: /info, or /v1/models'
    # max_model_len) and never sends it a query it would refuse.
    router = router_for(servers, protocol, stem_url=servers["small"])
    _, decision = router.invoke_with_decision(STEM_Q + " Explain every step carefully.")
    assert decision.chosen == "generalist"
    assert "exceeds its limit of" in decision.excluded["stem"]
    assert [attempt.expert for attempt in decision.attempts] == ["generalist"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_limit_configured_too_high_still_moves_on_after_the_422(
    servers: dict[str, str], protocol: str
) -> None:
    # The config's limit wins over the server's; when it is wrong, the 422 still falls back.
    config = herd(servers, protocol, stem_url=servers["small"], stem_limit=4096)
    router = HerdRouter.from_config(config)
    _, decision = router.invoke_with_decision(STEM_Q + " Explain every step carefully.")
    assert decision.attempts[0].failure == "invalid_input"
    assert decision.attempts[0].status_code == 422
    assert decision.answered_by == "generalist"


def test_all_fail_says_why_for_each(servers: dict[str, str]) -> None:
    router = router_for(servers, "openai", stem_url=closed_port_url())
    fault(servers["backup"], fail_next=1, fail_status=503)
    with pytest.raises(AllExpertsFailedError) as info:
        router.invoke(STEM_Q)
    message = str(info.value)
    assert "stem: connection" in message
    assert "generalist: " in message and "503" in message


def test_breaker_skips_then_probes_real_server(servers: dict[str, str]) -> None:
    router = router_for(servers, "tgi", breaker={"failure_threshold": 2, "cooldown_s": 2.0})
    fault(servers["primary"], fail_next=100, fail_status=503)
    for _ in range(2):
        assert router.invoke_with_decision(STEM_Q)[1].attempts[0].expert == "stem"
    failures_seen = httpx.get(f"{servers['primary']}/_herd/faults").json()["fail_next"]
    _, decision = router.invoke_with_decision(STEM_Q)
    assert "stem" in decision.skipped and decision.attempts[0].expert == "generalist"
    assert httpx.get(f"{servers['primary']}/_herd/faults").json()["fail_next"] == failures_seen, (
        "a skipped expert gets no request"
    )
    httpx.delete(f"{servers['primary']}/_herd/faults")
    time.sleep(2.1)
    _, decision = router.invoke_with_decision(STEM_Q)
    assert decision.answered_by == "stem", "after the cooldown one probe goes through"
    assert router.breakers["stem"].status().state == "closed"


async def test_concurrent_requests_through_router(servers: dict[str, str]) -> None:
    router = router_for(servers, "openai")
    questions = [STEM_Q, HUM_Q] * 4
    answers = await asyncio.gather(*(router.ainvoke(q) for q in questions))
    by_question = {q: a.text for q, a in zip(questions, answers, strict=True)}
    for question, answer in zip(questions, answers, strict=True):
        assert answer.text == by_question[question]


async def test_async_calls_overlap(servers: dict[str, str]) -> None:
    """ainvoke is truly async: four slow requests wait together, not one after another."""
    router = router_for(servers, "tgi")
    fault(servers["primary"], latency_ms=600)
    started = time.perf_counter()
    answers = await asyncio.gather(*(router.ainvoke(STEM_Q) for _ in range(4)))
    elapsed = time.perf_counter() - started
    assert all(a.response_metadata["herd"]["answered_by"] == "stem" for a in answers)
    assert elapsed < 4 * 0.6, f"4 x 600 ms took {elapsed:.2f}s: calls were serialised"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_router_serves_several_event_loops(servers: dict[str, str], protocol: str) -> None:
    """asyncio.run twice (scripts, notebooks, worker threads) on one router: each loop gets
    its own async connection pool instead of the first, closed, loop's."""
    router = router_for(servers, protocol)
    for _ in range(2):
        answers = asyncio.run(router.abatch([STEM_Q, HUM_Q]))
        assert [a.response_metadata["herd"]["answered_by"] for a in answers] == [
            "stem",
            "generalist",
        ]
    assert router.invoke(STEM_Q).text.strip()
