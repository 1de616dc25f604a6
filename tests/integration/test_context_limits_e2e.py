"""Context limits against real local TGI-protocol servers on loopback: limits learned from
``/info`` (TGI route) and ``/info`` plus ``/v1/models`` (OpenAI route), a long query kept
from the server it would overflow, and a query too long for all of them refused without
any server receiving it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from langchain_herd import HerdRouter
from langchain_herd.config import parse_config
from langchain_herd.context_limits import ContextSpec, count_prompt, token_counter
from langchain_herd.errors import ContextLengthError
from langchain_herd.server import ServerThread, create_app, load_backend

PROTOCOLS = ["tgi", "openai"]
#: A STEM question in the tiny model's words (one token per word), long enough to pad.
STEM = "Compute the derivative of the polynomial with respect to x. "


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    from langchain_herd.server.tiny_model import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    limits = {"small": (64, 1024), "big": (512, 1024)}
    started = {
        name: ServerThread(
            create_app(
                backend,
                model_id=f"tiny-{name}",
                max_input_tokens=max_input,
                max_total_tokens=max_total,
            )
        ).start()
        for name, (max_input, max_total) in limits.items()
    }
    yield {name: server.url for name, server in started.items()}
    for server in started.values():
        server.stop()


def requests_served(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics").text
    match = re.search(r"^tgi_request_count (\d+)$", metrics, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def herd(servers: dict[str, str], protocol: str, tokenizer: str | None) -> HerdRouter:
    def expert(name: str, routes: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "url": servers[name],
            "protocol": protocol,
            "model_id": f"tiny-{name}",
            "routes": routes,
            "generation": {"max_new_tokens": 8},
            **({"tokenizer": tokenizer} if tokenizer else {}),
        }

    config = parse_config(
        {
            "name": "limits",
            "experts": [
                expert("small", ["stem"]),
                expert("big", ["humanities", "social_sciences", "other"]),
            ],
            "fallback": {"default_expert": "big"},
        }
    )
    return HerdRouter.from_config(config)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_long_query_skips_the_small_server(
    servers: dict[str, str], tiny_tokenizer: str, protocol: str
) -> None:
    router = herd(servers, protocol, tiny_tokenizer)
    assert router.invoke(STEM).response_metadata["herd"]["answered_by"] == "small"
    before = {name: requests_served(url) for name, url in servers.items()}
    answer = router.invoke(STEM * 12)  # ~130 words: over 64, under 512
    decision = answer.response_metadata["herd"]
    assert decision["answered_by"] == "big"
    why = decision["excluded"]["small"]
    assert f"(counted with {tiny_tokenizer})" in why
    assert why.endswith("exceeds its limit of 64 (max_input_tokens from /info)")
    assert requests_served(servers["small"]) == before["small"]  # never sent
    assert requests_served(servers["big"]) == before["big"] + 1
    assert not decision["notes"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_too_long_for_every_server_reaches_none(
    servers: dict[str, str], tiny_tokenizer: str, protocol: str
) -> None:
    router = herd(servers, protocol, tiny_tokenizer)
    before = {name: requests_served(url) for name, url in servers.items()}
    with pytest.raises(ContextLengthError) as caught:
        router.invoke(STEM * 60)  # ~650 words: over 512
    assert caught.value.limits == {"small": 64, "big": 512}
    assert "too long for every expert" in str(caught.value)
    with pytest.raises(ContextLengthError):
        await router.ainvoke(STEM * 60)
    with pytest.raises(ContextLengthError):
        [chunk async for chunk in router.astream(STEM * 60)]
    assert {name: requests_served(url) for name, url in servers.items()} == before


def test_the_openai_route_reads_max_model_len(servers: dict[str, str]) -> None:
    # A total limit below the answer's room shows which route set it: /v1/models' entry.
    models = httpx.get(f"{servers['big']}/v1/models").json()["data"]
    assert models[0]["max_model_len"] == 1024 and models[0]["parent"] is None
    router = herd(servers, "openai", None)
    limits, unknown = router.engine.context.limits("big")
    assert unknown is None and limits is not None
    assert limits.input_budget(600) == (
        424,
        "1024 total tokens from /info and /v1/models less 600 for the answer",
    )
    assert router.engine.context.limits("big")[0] is limits  # asked once


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_estimate_when_no_tokenizer_is_local(servers: dict[str, str], protocol: str) -> None:
    router = herd(servers, protocol, None)  # model_id tiny-small: in no local cache
    before = requests_served(servers["small"])
    decision = router.invoke(STEM * 12).response_metadata["herd"]
    assert decision["answered_by"] == "big"
    assert "(estimated: tokenizer tiny-small not on this machine)" in decision["excluded"]["small"]
    assert requests_served(servers["small"]) == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_count_is_what_the_server_counts(
    servers: dict[str, str], tiny_tokenizer: str, protocol: str
) -> None:
    router = herd(servers, protocol, tiny_tokenizer)
    expert = router.engine.experts["big"]
    assert expert.context is not None
    messages = [HumanMessage(STEM * 3)]
    answer = router.invoke(messages, config={"configurable": {"herd_expert": "big"}})
    spec: ContextSpec = expert.context
    prompt = expert.prepare(messages)
    counted, _ = count_prompt(prompt, spec, token_counter(spec))
    whole, _ = count_prompt(prompt, spec, token_counter(spec), near=counted)
    assert answer.usage_metadata is not None
    assert counted == whole == answer.usage_metadata["input_tokens"]


def test_prepare_learns_every_limit_and_tokenizer_up_front(
    servers: dict[str, str], tiny_tokenizer: str
) -> None:
    router = herd(servers, "tgi", tiny_tokenizer)
    assert router.engine.context.prepare() == {
        "small": f"limit 64 (max_input_tokens from /info); counted with {tiny_tokenizer}",
        "big": f"limit 512 (max_input_tokens from /info); counted with {tiny_tokenizer}",
    }
