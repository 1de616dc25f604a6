"""Context limits in the engine: counting, the stated estimate, exclusion, the all-too-long
error with no expert called, and probing an endpoint lazily (retried at most every minute).

The chat models are fakes (the subject is the router's decision); the tokenizer is the real
tiny one saved to disk, and endpoints are real HTTP servers on loopback.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_herd import CapabilityError, Expert, HerdRouter
from langchain_herd.context_limits import (
    TEMPLATE_TOKENS_FIXED,
    TEMPLATE_TOKENS_PER_MESSAGE,
    ContextSpec,
    count_prompt,
    estimate_tokens,
    prompt_bound,
    token_counter,
)
from langchain_herd.errors import ContextLengthError
from langchain_herd.probes import INFO, MODELS, EndpointLimits, EndpointProbe, RouteReply
from langchain_herd.prompt_formats import render_prompt
from tests.unit.fakes import KeywordClassifier, ScriptedChat

CLASSIFIER = KeywordClassifier({"small": "integral", "big": "poem"})
#: Words of the tiny vocabulary: the tiny tokenizer gives one token per word.
SENTENCE = "the integral of water is a number we can find "


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    from langchain_herd.server.tiny_model import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def spec(tokenizer: str | None, **fields: Any) -> ContextSpec:
    return ContextSpec(tokenizer=tokenizer, **fields)


def router(small_spec: ContextSpec, big_spec: ContextSpec, **models: ScriptedChat) -> HerdRouter:
    experts = [
        Expert("small", models["small"], routes=["small"], context=small_spec),
        Expert("big", models["big"], routes=["big"], context=big_spec),
    ]
    return HerdRouter(experts, CLASSIFIER)


# -- counting ---------------------------------------------------------------------------


def test_estimate_is_the_stated_rule() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2  # ceil(4 / 3)
    assert estimate_tokens("日本語") == 3  # one per non-ASCII character
    assert estimate_tokens("ab日本") == 1 + 2


def test_estimate_of_a_chat_prompt_adds_the_template_allowance(tmp_path: Path) -> None:
    missing = spec(str(tmp_path / "no-tokenizer"), protocol="openai")
    counter = token_counter(missing)
    assert not counter.exact
    messages = [SystemMessage("abc"), HumanMessage("abcdef")]
    tokens, how = count_prompt(messages, missing, counter)
    overhead = 2 * TEMPLATE_TOKENS_PER_MESSAGE + TEMPLATE_TOKENS_FIXED
    assert tokens == 1 + 2 + overhead
    assert how.startswith("estimated: tokenizer") and "not on this machine" in how


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_count_matches_the_tokenizer_on_the_whole_prompt(
    tiny_tokenizer: str, protocol: str
) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_tokenizer)
    expert_spec = spec(tiny_tokenizer, protocol=protocol, prompt_format="chatml")
    counter = token_counter(expert_spec)
    assert counter.exact and counter.described == f"counted with {tiny_tokenizer}"
    messages = [SystemMessage("you are a math expert"), HumanMessage(SENTENCE * 20)]
    if protocol == "tgi":
        expected = len(reference.encode(render_prompt(messages, "chatml")))
    else:
        turns = [{"role": "system", "content": messages[0].text}]
        turns.append({"role": "user", "content": messages[1].text})
        text = reference.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        expected = len(reference.encode(text, add_special_tokens=False))
    assert count_prompt(messages, expert_spec, counter)[0] == expected  # texts + skeleton
    assert count_prompt(messages, expert_spec, counter, near=expected)[0] == expected  # whole
    # The byte bound that lets short prompts skip the tokenizer is never below the count.
    assert prompt_bound(messages, expert_spec) >= expected


def test_bound_holds_for_digits_scripts_and_code(tmp_path: Path) -> None:
    smollm2 = ContextSpec(model_id="HuggingFaceTB/SmolLM2-135M-Instruct", protocol="openai")
    counter = token_counter(smollm2)
    if not counter.exact:
        pytest.skip("no local SmolLM2 tokenizer (made by the local server's GGUF conversion)")
    assert "smollm2" in counter.described  # found without any config: the local copy
    for text in [
        "31415926535897932384" * 20,
        "日本語のテキスト🙂" * 30,
        "def f(x):\n\treturn x**2\n" * 40,
    ]:
        messages = [HumanMessage(text)]
        counted = count_prompt(messages, smollm2, counter, near=0)[0]
        assert prompt_bound(messages, smollm2) >= counted


# -- exclusion in the engine ------------------------------------------------------------


def test_a_long_query_skips_the_expert_it_would_overflow(tiny_tokenizer: str) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    herd = router(
        spec(tiny_tokenizer, max_input_tokens=50),
        spec(tiny_tokenizer, max_input_tokens=5000),
        small=small,
        big=big,
    )
    assert herd.invoke(SENTENCE).content == "S"  # short: the classifier's pick
    answer = herd.invoke(SENTENCE * 10)
    decision = answer.response_metadata["herd"]
    assert answer.content == "B" and decision["answered_by"] == "big"
    assert decision["ranking"] == ["big"]
    why = decision["excluded"]["small"]
    assert why.startswith("input ~") and f"(counted with {tiny_tokenizer})" in why
    assert why.endswith("exceeds its limit of 50 (max_input_tokens from config)")
    assert small.calls == 1  # only the short query


def test_the_estimate_is_used_and_said_without_a_tokenizer(tmp_path: Path) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    missing = str(tmp_path / "missing")
    herd = router(
        spec(missing, max_input_tokens=50),
        spec(missing, max_input_tokens=5000),
        small=small,
        big=big,
    )
    decision = herd.invoke(SENTENCE * 10).response_metadata["herd"]
    assert decision["answered_by"] == "big"
    assert "(estimated: tokenizer" in decision["excluded"]["small"]
    assert small.calls == 0


def test_a_template_that_raises_falls_back_to_the_estimate(
    tiny_tokenizer: str, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "strict-template"
    shutil.copytree(tiny_tokenizer, folder)
    (folder / "chat_template.jinja").write_text("{{ raise_exception('roles must alternate') }}")
    small = ScriptedChat(reply="S")
    herd = router(
        spec(str(folder), max_input_tokens=50),
        spec(str(folder), max_input_tokens=5000),
        small=small,
        big=ScriptedChat(reply="B"),
    )
    decision = herd.invoke(SENTENCE * 10).response_metadata["herd"]
    assert decision["answered_by"] == "big" and small.calls == 0
    assert "failed (TemplateError: roles must alternate)" in decision["excluded"]["small"]


def test_a_query_too_long_for_every_expert_calls_nobody(tiny_tokenizer: str) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    herd = router(
        spec(tiny_tokenizer, max_input_tokens=50),
        spec(tiny_tokenizer, max_input_tokens=80),
        small=small,
        big=big,
    )
    with pytest.raises(ContextLengthError) as caught:
        herd.invoke(SENTENCE * 10)
    error = caught.value
    assert isinstance(error, CapabilityError) and isinstance(error, ValueError)
    assert error.limits == {"small": 50, "big": 80}
    assert all(tokens > 100 for tokens in error.tokens.values())
    message = str(error)
    assert "too long for every expert" in message
    assert "small: ~" in message and "limit 50" in message and "limit 80" in message
    assert "Shorten it" in message
    with pytest.raises(ContextLengthError):
        list(herd.stream(SENTENCE * 10))
    assert small.calls == big.calls == 0


async def test_a_query_too_long_for_every_expert_calls_nobody_async(tiny_tokenizer: str) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    herd = router(
        spec(tiny_tokenizer, max_input_tokens=50),
        spec(tiny_tokenizer, max_input_tokens=80),
        small=small,
        big=big,
    )
    with pytest.raises(ContextLengthError):
        await herd.ainvoke(SENTENCE * 10)
    with pytest.raises(ContextLengthError):
        [chunk async for chunk in herd.astream(SENTENCE * 10)]
    assert small.calls == big.calls == 0


def test_a_pinned_expert_too_small_is_an_error(tiny_tokenizer: str) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    herd = router(
        spec(tiny_tokenizer, max_input_tokens=50),
        spec(tiny_tokenizer, max_input_tokens=5000),
        small=small,
        big=big,
    )
    pin = {"configurable": {"herd_expert": "small"}}
    with pytest.raises(ContextLengthError, match="too long for the pinned expert"):
        herd.invoke(SENTENCE * 10, config=pin)
    assert small.calls == big.calls == 0


def test_an_obviously_short_query_loads_no_tokenizer(
    tiny_tokenizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_herd.context_limits as context_limits

    def no_tokenizer(spec: ContextSpec) -> Any:
        raise AssertionError("a short query needs no tokenizer")

    monkeypatch.setattr(context_limits, "token_counter", no_tokenizer)
    herd = router(
        spec(tiny_tokenizer, max_input_tokens=200),
        spec(tiny_tokenizer, max_input_tokens=5000),
        small=ScriptedChat(reply="S"),
        big=ScriptedChat(reply="B"),
    )
    assert herd.invoke(SENTENCE).content == "S"


def test_experts_that_share_a_tokenizer_share_the_count(tiny_tokenizer: str) -> None:
    from langchain_herd.context_limits import FastTokenizerCounter

    calls: list[int] = []
    counter = token_counter(spec(tiny_tokenizer))
    assert isinstance(counter, FastTokenizerCounter)
    original = counter.tokenizer

    class Counting:
        def encode(self, text: str, add_special_tokens: bool = True) -> Any:
            calls.append(len(text))
            return original.encode(text, add_special_tokens=add_special_tokens)

    counter.tokenizer = Counting()
    try:
        herd = router(
            spec(tiny_tokenizer, max_input_tokens=50),
            spec(tiny_tokenizer, max_input_tokens=60),
            small=ScriptedChat(reply="S"),
            big=ScriptedChat(reply="B"),
        )
        with pytest.raises(ContextLengthError):
            herd.invoke(SENTENCE * 40)
    finally:
        counter.tokenizer = original
    long_texts = [length for length in calls if length >= len(SENTENCE * 40)]
    assert len(long_texts) == 1  # the long message was tokenized once for both experts


def test_the_answer_budget_comes_out_of_a_total_limit() -> None:
    limits = EndpointLimits(1024, 2048, INFO)
    assert limits.input_budget(256) == (1024, "max_input_tokens from /info")
    assert limits.input_budget(1500) == (
        548,
        "2048 total tokens from /info less 1500 for the answer",
    )
    assert EndpointLimits(None, None, INFO).input_budget(8)[0] is None


def test_vllm_model_list_gives_limits_and_adapters() -> None:
    # vLLM's /v1/models: the base model with max_model_len, a LoRA module naming its parent.
    body = {
        "object": "list",
        "data": [
            {"id": "qwen", "root": "Qwen/Qwen2.5-7B", "parent": None, "max_model_len": 8192},
            {"id": "sql-lora", "root": "/loras/sql", "parent": "qwen", "max_model_len": None},
        ],
    }
    probe = EndpointProbe("http://x", {MODELS: RouteReply(200, body), INFO: RouteReply(404)})
    assert [m.id for m in probe.adapters()] == ["sql-lora"]
    for served in ("qwen", "sql-lora", None):
        limits = probe.limits(served)
        assert limits is not None
        assert limits.input_budget(192) == (
            8000,
            "8192 total tokens from /v1/models less 192 for the answer",
        )


# -- probing ------------------------------------------------------------------------------


class InfoServer:
    """A loopback HTTP server answering ``/info`` like TGI, failing the first ``fail`` times."""

    def __init__(self, info: dict[str, Any], fail: int = 0) -> None:
        self.info, self.fail, self.hits = info, fail, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.fail > 0:
                    owner.fail -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(owner.info).encode()
                self.send_response(200 if self.path == "/info" else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def info_server() -> Iterator[InfoServer]:
    server = InfoServer({"model_id": "m", "max_input_tokens": 50, "max_total_tokens": 100}, fail=1)
    yield server
    server.close()


def test_a_failed_probe_is_noted_and_retried_at_most_every_minute(
    tiny_tokenizer: str, info_server: InfoServer
) -> None:
    small, big = ScriptedChat(reply="S"), ScriptedChat(reply="B")
    herd = router(
        spec(tiny_tokenizer, url=info_server.url, protocol="tgi", max_new_tokens=8),
        spec(tiny_tokenizer, max_input_tokens=5000),
        small=small,
        big=big,
    )
    now = [1000.0]
    herd.engine.context.clock = lambda: now[0]
    first = herd.invoke(SENTENCE * 10).response_metadata["herd"]
    assert first["answered_by"] == "small"  # limit unknown: not skipped
    assert (
        "input limit unknown" in first["notes"]["small"] and "HTTP 503" in first["notes"]["small"]
    )
    now[0] += 30
    herd.invoke(SENTENCE * 10)
    assert info_server.hits == 1  # not asked again within the minute
    now[0] += 31
    again = herd.invoke(SENTENCE * 10).response_metadata["herd"]
    assert info_server.hits == 2
    assert again["answered_by"] == "big" and not again["notes"]
    assert "limit of 50 (max_input_tokens from /info)" in again["excluded"]["small"]
    herd.invoke(SENTENCE * 10)
    assert info_server.hits == 2  # learned once, kept
    # The call's max_tokens comes out of the total: 100 - 70 leaves 30.
    decision = herd.invoke(SENTENCE * 3, max_tokens=70).response_metadata["herd"]
    assert (
        "limit of 30 (100 total tokens from /info less 70 for the answer)"
        in (decision["excluded"]["small"])
    )


def test_an_unreachable_endpoint_is_noted_not_skipped(tiny_tokenizer: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    small = ScriptedChat(reply="S")
    herd = router(
        spec(tiny_tokenizer, url=dead),
        spec(tiny_tokenizer, max_input_tokens=5000),
        small=small,
        big=ScriptedChat(reply="B"),
    )
    decision = herd.invoke(SENTENCE * 10).response_metadata["herd"]
    assert decision["answered_by"] == "small"
    assert "unreachable" in decision["notes"]["small"]
    assert decision["notes"]["small"].endswith("not checked")


def test_experts_without_a_spec_are_never_checked() -> None:
    model = ScriptedChat(reply="A")
    herd = HerdRouter([Expert("a", model, routes=["small", "big"])], CLASSIFIER)
    answer = herd.invoke([AIMessage("x"), HumanMessage(SENTENCE * 500)])
    assert answer.response_metadata["herd"]["excluded"] == {}
    assert herd.engine.context.specs == {}
