"""Streams that end without an answer fall back; sync streams keep the expert's deadline.

Real local TGI-protocol servers on loopback and the herd's real clients, on the TGI generate
route (``protocol: tgi``). One extra loopback server plays a proxy that answers a stream with
200 and no event at all, which the test server's faults cannot do.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from langchain_herd import HerdRouter, StreamInterruptedError
from langchain_herd.config import parse_config
from langchain_herd.server import ServerThread, create_app, load_backend

STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."


def _silent_proxy() -> Starlette:
    """Answers every generation with 200 and an event stream that ends at once."""

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield

    async def generate(request: Request) -> Response:
        await request.body()
        return StreamingResponse(nothing(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def info(request: Request) -> Response:
        return JSONResponse({"model_id": "silent", "max_input_tokens": 512})

    return Starlette(
        routes=[
            Route("/", generate, methods=["POST"]),  # huggingface_hub streams from the root
            Route("/generate_stream", generate, methods=["POST"]),
            Route("/health", health),
            Route("/info", info),
        ]
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    threads = {
        name: ServerThread(create_app(backend, model_id=f"tiny-{name}")).start()
        for name in ("primary", "backup")
    }
    threads["silent"] = ServerThread(_silent_proxy()).start()
    yield {name: thread.url for name, thread in threads.items()}
    for thread in threads.values():
        thread.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: dict[str, str]) -> Iterator[None]:
    yield
    for name in ("primary", "backup"):
        httpx.delete(f"{servers[name]}/_herd/faults")


def fault(url: str, **faults: Any) -> None:
    httpx.post(f"{url}/_herd/faults", json=faults).raise_for_status()


def router_for(stem_url: str, backup_url: str, *, timeout_s: float = 30) -> HerdRouter:
    config = parse_config(
        {
            "name": "streams",
            "experts": [
                {
                    "name": "stem",
                    "url": stem_url,
                    "protocol": "tgi",
                    "routes": ["stem"],
                    "generation": {"max_new_tokens": 8},
                    "timeout_s": timeout_s,
                },
                {
                    "name": "generalist",
                    "url": backup_url,
                    "protocol": "tgi",
                    "routes": ["humanities", "social_sciences", "other"],
                    "generation": {"max_new_tokens": 8},
                },
            ],
            "fallback": {"default_expert": "generalist"},
        }
    )
    return HerdRouter.from_config(config)


def decision_of(chunks: list[Any]) -> dict[str, Any]:
    decision: dict[str, Any] = chunks[-1].response_metadata["herd"]
    return decision


async def test_empty_answer_on_a_tgi_stream_falls_back(servers: dict[str, str]) -> None:
    router = router_for(servers["primary"], servers["backup"])
    fault(servers["primary"], empty_next=1)
    chunks = list(router.stream(STEM_Q))
    assert "".join(c.text for c in chunks).strip()
    decision = decision_of(chunks)
    assert [a["failure"] for a in decision["attempts"]] == ["empty_answer", None]
    assert decision["answered_by"] == "generalist"
    fault(servers["primary"], empty_next=1)
    chunks = [c async for c in router.astream(STEM_Q)]
    assert [a["failure"] for a in decision_of(chunks)["attempts"]] == ["empty_answer", None]


async def test_a_stream_without_a_single_event_is_an_empty_answer(
    servers: dict[str, str],
) -> None:
    # LangChain raises a bare ValueError ("No generation chunks were returned"), which is not
    # an expert failure and so did not fall back.
    router = router_for(servers["silent"], servers["backup"])
    chunks = list(router.stream(STEM_Q))
    decision = decision_of(chunks)
    assert decision["attempts"][0]["failure"] == "empty_answer"
    assert "not a single chunk" in decision["attempts"][0]["error"]
    assert decision["answered_by"] == "generalist"
    chunks = [c async for c in router.astream(STEM_Q)]
    assert decision_of(chunks)["answered_by"] == "generalist"
    _, decided = router.invoke_with_decision(STEM_Q)
    assert [a.failure for a in decided.attempts] == ["empty_answer", None]
    # Three empty answers in a row: an expert that never answers is unhealthy.
    _, decided = await router.ainvoke_with_decision(STEM_Q)
    assert decided.answered_by == "generalist" and "stem" in decided.skipped


def ended_by_the_deadline(error: StreamInterruptedError | None, chunks: list[Any]) -> None:
    """A trickle is cut at the 1 s deadline: mid-stream (``StreamInterruptedError`` caused by a
    ``TimeoutError``), or, when a loaded machine makes even the first token late, by falling
    back on a ``timeout``. Without the deadline it runs its 2.4 s and answers."""
    if error is not None:
        assert "1s deadline" in str(error) and isinstance(error.__cause__, TimeoutError)
        return
    first = decision_of(chunks)["attempts"][0]
    assert (first["expert"], first["failure"]) == ("stem", "timeout"), first
    assert "1s deadline" in first["error"]


async def test_a_trickle_past_the_deadline_ends_the_stream(servers: dict[str, str]) -> None:
    router = router_for(servers["primary"], servers["backup"], timeout_s=1.0)
    router.invoke(STEM_Q)  # the first call probes the limits: not part of the stream's time
    # Eight tokens at 300 ms: 2.4 s, past the 1 s deadline, though no read ever waits 1 s.
    fault(servers["primary"], token_delay_ms=300)
    received: list[Any] = []
    error: StreamInterruptedError | None = None
    started = time.perf_counter()
    try:
        for chunk in router.stream(STEM_Q):
            received.append(chunk)
    except StreamInterruptedError as exc:
        error = exc
        assert exc.partial_text == "".join(c.text for c in received)
    assert time.perf_counter() - started < 5
    ended_by_the_deadline(error, received)
    received, error = [], None
    try:
        async for chunk in router.astream(STEM_Q):
            received.append(chunk)
    except StreamInterruptedError as exc:
        error = exc
    ended_by_the_deadline(error, received)


async def test_a_first_token_past_the_deadline_falls_back(servers: dict[str, str]) -> None:
    router = router_for(servers["primary"], servers["backup"], timeout_s=1.0)
    # Headers after 0.7 s and the first token 0.5 s later: every read is within the client's
    # 1 s read timeout, the first token is not within the 1 s deadline.
    fault(servers["primary"], latency_ms=700, token_delay_ms=500)
    chunks = list(router.stream(STEM_Q))
    decision = decision_of(chunks)
    assert decision["attempts"][0]["failure"] == "timeout"
    assert "deadline" in decision["attempts"][0]["error"]
    assert decision["answered_by"] == "generalist"
    chunks = [c async for c in router.astream(STEM_Q)]
    assert decision_of(chunks)["attempts"][0]["failure"] == "timeout"


def test_a_sync_invoke_on_the_tgi_route_keeps_the_deadline(servers: dict[str, str]) -> None:
    # The TGI route's invoke reads a stream too: without a per-event check, eight tokens at
    # 300 ms (2.4 s, no read ever waiting 1 s) answered from the trickling expert.
    router = router_for(servers["primary"], servers["backup"], timeout_s=1.0)
    router.invoke(STEM_Q)  # the first call probes the limits: not part of the timed call
    fault(servers["primary"], token_delay_ms=300)
    _, decision = router.invoke_with_decision(STEM_Q)
    first = decision.attempts[0]
    assert (first.expert, first.failure) == ("stem", "timeout"), first
    assert "1s deadline" in (first.error or "")
    assert decision.answered_by == "generalist"
