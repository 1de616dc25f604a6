"""Routing logic: ranking, fallback, breakers, decisions and tracing, with fake experts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue

from langchain_herd import (
    AllExpertsFailedError,
    ConfigError,
    Expert,
    HerdRouter,
    InputError,
    MarginPolicy,
    StreamInterruptedError,
)
from tests.unit.fakes import KeywordClassifier, ScriptedChat

CLASSIFIER = KeywordClassifier({"stem": "integral", "humanities": "poem", "other": "tax"})


def make_router(**models: ScriptedChat) -> HerdRouter:
    experts = [Expert(name, model, routes=[name]) for name, model in models.items()]
    kwargs: dict[str, Any] = {"breaker_threshold": 2, "breaker_cooldown_s": 60}
    return HerdRouter(experts, CLASSIFIER, **kwargs)


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


def test_routes_to_best_scoring_expert() -> None:
    router = make_router(
        stem=ScriptedChat(reply="S"),
        humanities=ScriptedChat(reply="H"),
        other=ScriptedChat(reply="O"),
    )
    answer = router.invoke("Write a poem about spring")
    assert answer.content == "H"
    decision = answer.response_metadata["herd"]
    assert decision["answered_by"] == "humanities"
    assert decision["ranking"][0] == "humanities"
    assert decision["scores"]["humanities"] == pytest.approx(0.9)
    assert [a["expert"] for a in decision["attempts"]] == ["humanities"]


def test_route_does_not_call_experts() -> None:
    stem = ScriptedChat(reply="S")
    router = make_router(stem=stem, humanities=ScriptedChat(), other=ScriptedChat())
    decision = router.route("compute the integral of x")
    assert decision.chosen == "stem"
    assert decision.attempts == []
    assert stem.calls == 0


def test_falls_back_on_connection_error_and_records_why() -> None:
    stem = ScriptedChat(error=refused())
    router = make_router(stem=stem, humanities=ScriptedChat(reply="H"), other=ScriptedChat())
    answer, decision = router.invoke_with_decision("the integral of x^2")
    assert answer.content == "H"
    assert [(a.expert, a.ok, a.failure) for a in decision.attempts] == [
        ("stem", False, "connection"),
        ("humanities", True, None),
    ]
    assert "Connection refused" in (decision.attempts[0].error or "")


def test_empty_answer_falls_back() -> None:
    router = make_router(
        stem=ScriptedChat(reply="   "), humanities=ScriptedChat(reply="H"), other=ScriptedChat()
    )
    _, decision = router.invoke_with_decision("integral")
    assert decision.attempts[0].failure == "empty_answer"
    assert decision.answered_by == "humanities"


def test_all_fail_lists_every_expert() -> None:
    router = make_router(
        stem=ScriptedChat(error=refused()),
        humanities=ScriptedChat(error=httpx.ReadTimeout("timed out")),
        other=ScriptedChat(reply=""),
    )
    with pytest.raises(AllExpertsFailedError) as info:
        router.invoke("integral")
    message = str(info.value)
    assert "stem: connection" in message
    assert "humanities: timeout" in message
    assert "other: empty_answer" in message
    assert len(info.value.attempts) == 3


def test_non_expert_errors_are_not_hidden() -> None:
    router = make_router(
        stem=ScriptedChat(error=KeyError("bug")), humanities=ScriptedChat(), other=ScriptedChat()
    )
    with pytest.raises(KeyError):
        router.invoke("integral")


def test_fallback_kinds_are_configurable() -> None:
    experts = [
        Expert("stem", ScriptedChat(error=refused()), routes=["stem"]),
        Expert("humanities", ScriptedChat(reply="H"), routes=["humanities"]),
        Expert("other", ScriptedChat(), routes=["other"]),
    ]
    router = HerdRouter(experts, CLASSIFIER, fallback_on=["timeout"])
    with pytest.raises(httpx.ConnectError):
        router.invoke("integral")


def test_max_attempts_bounds_calls() -> None:
    models = {n: ScriptedChat(error=refused()) for n in ("stem", "humanities", "other")}
    experts = [Expert(n, m, routes=[n]) for n, m in models.items()]
    router = HerdRouter(experts, CLASSIFIER, max_attempts=2)
    with pytest.raises(AllExpertsFailedError) as info:
        router.invoke("integral")
    assert len(info.value.attempts) == 2
    assert models["other"].calls + models["humanities"].calls + models["stem"].calls == 2


def test_breaker_opens_and_skips_expert() -> None:
    stem = ScriptedChat(error=refused())
    router = make_router(stem=stem, humanities=ScriptedChat(reply="H"), other=ScriptedChat())
    router.invoke("integral")
    router.invoke("integral")
    assert stem.calls == 2
    _, decision = router.invoke_with_decision("integral")
    assert stem.calls == 2, "open breaker must skip the expert"
    assert "circuit open" in decision.skipped["stem"]
    assert router.breakers["stem"].status().state == "open"


def test_breaker_half_open_probe_recovers() -> None:
    stem = ScriptedChat(error=refused())
    router = make_router(stem=stem, humanities=ScriptedChat(reply="H"), other=ScriptedChat())
    router.breakers["stem"].cooldown_s = 0.0
    router.invoke("integral")
    router.invoke("integral")
    stem.error = None
    stem.reply = "S"
    answer = router.invoke("integral")  # cooldown 0: half-open, one probe goes through
    assert answer.content == "S"
    assert router.breakers["stem"].status().state == "closed"


def test_margin_policy_keeps_default_unless_clearly_beaten() -> None:
    experts = [
        Expert("general", ScriptedChat(reply="G"), routes=["other"]),
        Expert("stem", ScriptedChat(reply="S"), routes=["stem"]),
        Expert("humanities", ScriptedChat(reply="H"), routes=["humanities"]),
    ]
    router = HerdRouter(experts, CLASSIFIER, policy=MarginPolicy(0.9))
    assert router.invoke("integral").content == "G"
    router = HerdRouter(experts, CLASSIFIER, policy=MarginPolicy(0.5))
    assert router.invoke("integral").content == "S"


def test_input_shapes_route_the_same() -> None:
    router = make_router(
        stem=ScriptedChat(reply="S"),
        humanities=ScriptedChat(reply="H"),
        other=ScriptedChat(reply="O"),
    )
    inputs: list[Any] = [
        "a poem",
        [HumanMessage("a poem")],
        [("user", "a poem")],
        ChatPromptValue(messages=[HumanMessage("a poem")]),
        {"input": "a poem"},
    ]
    assert {router.invoke(i).content for i in inputs} == {"H"}
    with pytest.raises(InputError, match="no key 'input'"):
        router.invoke({"question": "a poem"})
    with pytest.raises(InputError, match="cannot route input of type int"):
        router.invoke(42)  # type: ignore[arg-type]


def test_follow_up_turn_keeps_topic() -> None:
    router = make_router(
        stem=ScriptedChat(reply="S"),
        humanities=ScriptedChat(reply="H"),
        other=ScriptedChat(reply="O"),
    )
    history = [HumanMessage("compute this integral"), AIMessage("2x"), HumanMessage("why?")]
    assert router.invoke(history).content == "S"


def test_system_prompt_is_merged_in_front() -> None:
    stem = ScriptedChat(reply="S")
    router = HerdRouter(
        [
            Expert("stem", stem, routes=["stem"], system_prompt="You do math."),
            Expert("humanities", ScriptedChat(), routes=["humanities"]),
            Expert("other", ScriptedChat(), routes=["other"]),
        ],
        CLASSIFIER,
    )
    router.invoke([SystemMessage("Be brief."), HumanMessage("integral")])
    sent = stem.seen[-1]
    assert isinstance(sent[0], SystemMessage)
    assert sent[0].text == "You do math.\n\nBe brief."
    assert len(sent) == 2


def test_unserved_classifier_label_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"labels \['other'\] are served by no expert"):
        HerdRouter(
            [
                Expert("stem", ScriptedChat(), routes=["stem"]),
                Expert("humanities", ScriptedChat(), routes=["humanities"]),
            ],
            CLASSIFIER,
        )


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[dict[str, Any]] = []
        self.models: list[dict[str, Any]] = []
        self.events: list[tuple[str, Any]] = []

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.chains.append(
            {
                "run_id": run_id,
                "parent": parent_run_id,
                "name": kwargs.get("name"),
                "tags": tags,
                "metadata": metadata,
            }
        )

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.models.append(
            {"run_id": run_id, "parent": parent_run_id, "tags": tags, "name": kwargs.get("name")}
        )

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


def test_trace_has_router_run_with_decision_and_tagged_expert_child() -> None:
    router = make_router(
        stem=ScriptedChat(error=refused()), humanities=ScriptedChat(reply="H"), other=ScriptedChat()
    )
    recorder = RunRecorder()
    router.invoke("integral", {"callbacks": [recorder]})
    # One chat-model run (the herd's); each expert call is a chain run nested under it, so
    # handlers see one model start and usage is counted once.
    [herd_run] = recorder.models
    assert herd_run["parent"] is None
    experts = recorder.chains
    assert [m["parent"] for m in experts] == [herd_run["run_id"], herd_run["run_id"]]
    assert [m["name"] for m in experts] == ["expert:stem", "expert:humanities"]
    assert "expert:stem" in experts[0]["tags"]
    assert experts[1]["metadata"]["herd_expert"] == "humanities"
    [(name, decision, run_id)] = recorder.events
    assert name == "herd_decision" and run_id == herd_run["run_id"]
    assert decision["ranking"][0] == "stem" and decision["answered_by"] == "humanities"


def test_stream_falls_back_before_first_token() -> None:
    router = make_router(
        stem=ScriptedChat(error=refused()),
        humanities=ScriptedChat(reply="to be or not"),
        other=ScriptedChat(),
    )
    chunks = list(router.stream("integral"))
    text = "".join(c.text for c in chunks)
    assert text == "to be or not"
    assert chunks[-1].response_metadata["herd"]["answered_by"] == "humanities"


def test_stream_error_after_first_token_says_what_was_sent() -> None:
    broken = ScriptedChat(
        reply="one two three", error=httpx.RemoteProtocolError("dropped"), fail_after=2
    )
    router = make_router(stem=broken, humanities=ScriptedChat(reply="H"), other=ScriptedChat())
    seen: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in router.stream("integral"):
            seen.append(chunk.text)
    assert "".join(seen) == "one two"
    assert info.value.partial_text == "one two"
    assert "one two" in str(info.value)


async def test_astream_and_ainvoke_agree_with_sync() -> None:
    router = make_router(
        stem=ScriptedChat(error=refused()),
        humanities=ScriptedChat(reply="to be or not"),
        other=ScriptedChat(),
    )
    sync_answer = router.invoke("integral")
    async_answer = await router.ainvoke("integral")
    streamed = "".join([c.text async for c in router.astream("integral")])
    assert sync_answer.content == async_answer.content == streamed == "to be or not"


async def test_astream_events_show_routing() -> None:
    router = make_router(
        stem=ScriptedChat(reply="a b c"), humanities=ScriptedChat(), other=ScriptedChat()
    )
    events = [e async for e in router.astream_events("integral", version="v2")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "on_chat_model_start" and events[0]["name"] == "herd"
    assert "on_chat_model_stream" in kinds
    herd_run = events[0]["run_id"]
    expert_start = next(e for e in events[1:] if e["event"] == "on_chain_start")
    assert expert_start["name"] == "expert:stem" and "expert:stem" in expert_start["tags"]
    assert expert_start["parent_ids"][-1] == herd_run
    end = events[-1]
    assert end["event"] == "on_chat_model_end" and end["run_id"] == herd_run
    assert end["data"]["output"].response_metadata["herd"]["answered_by"] == "stem"


def test_batch_and_lcel() -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    router = make_router(
        stem=ScriptedChat(reply="S"),
        humanities=ScriptedChat(reply="H"),
        other=ScriptedChat(reply="O"),
    )
    assert [
        m.content for m in router.batch(["integral", "poem", "tax"], {"max_concurrency": 2})
    ] == ["S", "H", "O"]
    chain = (
        ChatPromptTemplate.from_messages([("user", "Tell me a {kind}")])
        | router
        | StrOutputParser()
    )
    assert chain.invoke({"kind": "poem"}) == "H"
    assert "".join(chain.stream({"kind": "poem"})) == "H"


async def test_decision_event_reaches_event_stream_even_on_failure() -> None:
    router = make_router(
        stem=ScriptedChat(error=refused()), humanities=ScriptedChat(reply="H"), other=ScriptedChat()
    )
    events = [e async for e in router.astream_events("integral", version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == ["herd_decision"]
    attempts = custom[0]["data"]["attempts"]
    assert [(a["expert"], a["failure"]) for a in attempts] == [
        ("stem", "connection"),
        ("humanities", None),
    ]
    failing = make_router(
        stem=ScriptedChat(error=refused()),
        humanities=ScriptedChat(error=refused()),
        other=ScriptedChat(error=refused()),
    )
    seen: list[Any] = []
    with pytest.raises(AllExpertsFailedError):
        async for event in failing.astream_events("integral", version="v2"):
            seen.append(event)
    decision = next(e for e in seen if e["event"] == "on_custom_event")["data"]
    assert len(decision["attempts"]) == 3 and decision["answered_by"] is None


def test_with_retry_and_with_fallbacks_wrap_the_herd() -> None:
    flaky = ScriptedChat(reply="S", error=refused())
    router = HerdRouter(
        [Expert("stem", flaky, routes=["stem", "humanities", "other"])],
        CLASSIFIER,
        breaker_threshold=100,
    )

    class HealOnSecondCall(BaseCallbackHandler):
        def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
            flaky.error = None

    answer = router.with_retry(stop_after_attempt=2, wait_exponential_jitter=False).invoke(
        "integral", {"callbacks": [HealOnSecondCall()]}
    )
    assert answer.content == "S" and flaky.calls == 2

    flaky.error = refused()
    backup = ScriptedChat(reply="from the backup")
    safe = router.with_fallbacks([backup], exceptions_to_handle=(AllExpertsFailedError,))
    assert safe.invoke("integral").content == "from the backup"


class CorrectnessScores(KeywordClassifier):
    mode = "correctness"


def test_correctness_router_scores_experts_by_name() -> None:
    classifier = CorrectnessScores({"stem": "integral", "humanities": "poem"})
    router = HerdRouter(
        [Expert("stem", ScriptedChat(reply="S")), Expert("humanities", ScriptedChat(reply="H"))],
        classifier,
    )
    assert router.invoke("a poem").content == "H"
    with pytest.raises(ConfigError, match=r"trained for experts \['humanities'\] that are not"):
        HerdRouter([Expert("stem", ScriptedChat()), Expert("poetry", ScriptedChat())], classifier)


class _SlowClassifier(KeywordClassifier):
    """A classifier that takes ``delay`` seconds per call, as an encoder on a CPU does."""

    def __init__(self, delay: float) -> None:
        super().__init__({"stem": "integral", "humanities": "poem", "other": "tax"})
        self.delay = delay

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        time.sleep(self.delay)
        return super().predict_proba(texts)


async def test_async_routing_does_not_block_the_event_loop() -> None:
    """A slow classifier runs off the event loop: other coroutines keep running meanwhile."""
    router = HerdRouter(
        [Expert(n, ScriptedChat(reply=n)) for n in ("stem", "humanities", "other")],
        _SlowClassifier(0.3),
        default_expert="other",
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        answer = await router.ainvoke("an integral")
        chunks = [c async for c in router.astream("a poem")]
    finally:
        task.cancel()
    assert answer.text == "stem" and "".join(c.text for c in chunks) == "humanities"
    # Two 0.3 s classifications: a blocked loop would tick about 0 times, a free one ~60.
    assert ticks >= 10
