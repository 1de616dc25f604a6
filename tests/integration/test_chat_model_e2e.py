"""The herd's chat-model surface against real local TGI-protocol servers on loopback:
usage and model name on every path and protocol, standard parameters mapped to each
protocol's names, per-call pins, and request faults that never open a breaker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from langchain_herd import HerdRouter
from langchain_herd.config import parse_config
from langchain_herd.server import ServerThread, create_app, load_backend

STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."
HUM_Q = "Which philosopher wrote the Critique of Pure Reason, and in which century?"
PROTOCOLS = ["tgi", "openai"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    started = {
        name: ServerThread(
            create_app(
                backend, model_id=f"tiny-{name}", max_input_tokens=512, max_total_tokens=1024
            )
        ).start()
        for name in ("a", "b")
    }
    yield {name: server.url for name, server in started.items()}
    for server in started.values():
        server.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: dict[str, str]) -> Iterator[None]:
    yield
    for url in servers.values():
        httpx.delete(f"{url}/_herd/faults")


def herd(servers: dict[str, str], protocol: str, **fields: Any) -> HerdRouter:
    gen = {"max_new_tokens": 8}
    config = parse_config(
        {
            "name": "e2e",
            "experts": [
                {
                    "name": "stem",
                    "url": servers["a"],
                    "protocol": protocol,
                    "routes": ["stem"],
                    "model_id": "tiny-a",
                    "generation": gen,
                },
                {
                    "name": "general",
                    "url": servers["b"],
                    "protocol": protocol,
                    "model_id": "tiny-b",
                    "routes": ["humanities", "social_sciences", "other"],
                    "generation": gen,
                },
            ],
            "fallback": {"default_expert": "general"},
        }
    )
    return HerdRouter.from_config(config, **fields)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_usage_and_model_name_on_every_path(servers: dict[str, str], protocol: str) -> None:
    router = herd(servers, protocol)
    answers = [router.invoke(STEM_Q), await router.ainvoke(STEM_Q)]
    for stream in (list(router.stream(STEM_Q)), [c async for c in router.astream(STEM_Q)]):
        merged = stream[0]
        for chunk in stream[1:]:
            merged += chunk
        assert stream[-1].chunk_position == "last"
        answers.append(merged)
    for answer in answers:
        usage = answer.usage_metadata
        assert usage is not None, answer
        assert usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 8
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert answer.response_metadata["model_name"] == "tiny-a"
        assert answer.response_metadata["herd"]["answered_by"] == "stem"
    texts = {answer.text for answer in answers}
    assert len(texts) == 1, texts  # greedy: every path gives the same answer


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_standard_params_in_each_protocol(servers: dict[str, str], protocol: str) -> None:
    router = herd(servers, protocol, max_tokens=3)
    assert router.invoke(STEM_Q).usage_metadata["output_tokens"] <= 3  # type: ignore[index]
    # TGI's own name works on the OpenAI route and the standard one on the generate route.
    assert router.invoke(STEM_Q, max_new_tokens=2).usage_metadata["output_tokens"] <= 2  # type: ignore[index]
    assert router.invoke(STEM_Q, max_tokens=1).usage_metadata["output_tokens"] == 1  # type: ignore[index]
    full = router.invoke(STEM_Q).text
    second_word = full.split()[1]
    cut = router.invoke(STEM_Q, temperature=0, stop=[second_word])
    assert cut.text.strip() == full.split()[0], (full, cut.text)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pinned_expert_is_called_and_traced(servers: dict[str, str], protocol: str) -> None:
    router = herd(servers, protocol)
    answer = router.invoke(STEM_Q, {"configurable": {"herd_expert": "general"}})
    assert answer.response_metadata["herd"]["answered_by"] == "general"
    assert answer.response_metadata["model_name"] == "tiny-b"


def test_request_faults_never_open_a_breaker(servers: dict[str, str]) -> None:
    """Three requests each refused as invalid (422) by the stem expert's server fall back,
    and the stem expert then serves ordinary traffic: the breaker measures its health."""
    router = herd(servers, "openai")
    httpx.post(
        f"{servers['a']}/_herd/faults", json={"fail_next": 3, "fail_status": 422}
    ).raise_for_status()
    for _ in range(3):
        decision = router.invoke(STEM_Q).response_metadata["herd"]
        assert decision["attempts"][0]["failure"] == "invalid_input"
        assert decision["answered_by"] == "general"
    assert all(breaker.allow() for breaker in router.breakers.values())
    assert router.invoke(STEM_Q).response_metadata["herd"]["answered_by"] == "stem"
    assert router.invoke(HUM_Q).response_metadata["herd"]["answered_by"] == "general"
    # Server failures do count: three 503s open it.
    httpx.post(
        f"{servers['a']}/_herd/faults", json={"fail_next": 3, "fail_status": 503}
    ).raise_for_status()
    for _ in range(3):
        router.invoke(STEM_Q)
    assert not router.breakers["stem"].allow()


def test_tool_requests_refused_by_the_server_leave_the_herd_healthy(
    servers: dict[str, str],
) -> None:
    """The issue's case: a herd that mixes protocols gets three tool requests that every
    tool-capable expert refuses (a forced call cut by max_tokens: TGI's 422 tool error).
    Generate-route experts are never sent them, no breaker opens, and ordinary traffic then
    reaches every expert."""
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    config = parse_config(
        {
            "experts": [
                {"name": "stem", "url": servers["a"], "protocol": "openai", "routes": ["stem"]},
                {
                    "name": "humanities",
                    "url": servers["b"],
                    "protocol": "tgi",
                    "routes": ["humanities"],
                },
                {
                    "name": "general",
                    "url": servers["b"],
                    "protocol": "openai",
                    "routes": ["social_sciences", "other"],
                },
            ],
            "fallback": {"default_expert": "general"},
        }
    )
    router = HerdRouter.from_config(config, max_tokens=2)
    forced = router.bind_tools([add], tool_choice="add")
    for _ in range(3):
        with pytest.raises(Exception) as caught:
            forced.invoke(STEM_Q)
        decision = caught.value.decision  # type: ignore[attr-defined]
        assert decision.excluded == {"humanities": "cannot call tools"}
        assert [(a.expert, a.failure) for a in decision.attempts] == [
            ("stem", "invalid_input"),
            ("general", "invalid_input"),
        ]
        assert "Tool error" in (decision.attempts[0].error or "")
    assert all(breaker.allow() for breaker in router.breakers.values())
    plain = HerdRouter.from_config(config, max_tokens=4)
    plain.engine = router.engine  # the same breakers
    moral = "Which moral philosophy holds that the right act maximizes happiness, as Mill said?"
    for question, expert in ((STEM_Q, "stem"), (moral, "humanities")):
        decision = plain.invoke(question).response_metadata["herd"]
        assert decision["answered_by"] == expert, decision
    pinned = plain.invoke(STEM_Q, {"configurable": {"herd_expert": "general"}})
    assert pinned.response_metadata["herd"]["answered_by"] == "general"
