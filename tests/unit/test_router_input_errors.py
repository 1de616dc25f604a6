"""Router input: every malformed input is a clear ``InputError`` before any expert is called,
or a correct answer. Fake experts: what is tested is the router's input handling."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import Field

from langchain_herd import Expert, HerdRouter, InputError
from langchain_herd.chat_models import BATCH_CONCURRENCY
from langchain_herd.inputs import CLASSIFY_MAX_CHARS, classifier_text
from tests.unit.fakes import KeywordClassifier, ScriptedChat

CLASSIFIER = KeywordClassifier({"stem": "integral", "other": "tax"})


def make_router() -> tuple[HerdRouter, ScriptedChat, ScriptedChat]:
    stem, other = ScriptedChat(reply="stem answer"), ScriptedChat(reply="other answer")
    experts = [Expert("stem", stem, routes=["stem"]), Expert("other", other, routes=["other"])]
    return HerdRouter(experts, CLASSIFIER), stem, other


def refused(router_input: Any, match: str, **kwargs: Any) -> None:
    """``router_input`` is refused with ``match`` in the message, by every path, and no expert
    is called."""
    router, stem, other = make_router()
    with pytest.raises(InputError, match=match):
        router.invoke(router_input, **kwargs)
    with pytest.raises(InputError, match=match):
        list(router.stream(router_input, **kwargs))
    with pytest.raises(InputError, match=match):
        asyncio.run(router.ainvoke(router_input, **kwargs))
    assert stem.calls == other.calls == 0


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n"])
def test_empty_and_whitespace_inputs(text: str) -> None:
    refused(text, "latest user turn is (empty|only whitespace)")
    refused([("system", "Be brief."), ("user", text)], "latest user turn")


def test_an_earlier_turn_does_not_excuse_an_empty_latest_turn() -> None:
    refused([("user", "an integral"), ("assistant", "2x"), ("user", " ")], "only whitespace")


def test_lone_surrogates_name_the_place_and_the_repair() -> None:
    refused("integral of \ud800x", r"message 0 \(human\) is not valid Unicode.*character 12")
    refused(
        [SystemMessage("ok"), HumanMessage("fine"), AIMessage("x"), HumanMessage("\udfffa")],
        r"message 3 \(human\).*encode\('utf-8', 'replace'\)",
    )
    refused([SystemMessage("bad \udc80"), HumanMessage("fine")], r"message 0 \(system\)")
    refused([HumanMessage(content=[{"type": "text", "text": "\ud83d alone"}])], "lone surrogate")


def test_lone_surrogate_in_the_routing_query() -> None:
    router, stem, _ = make_router()
    with pytest.raises(InputError, match="routing query"):
        router.invoke("integral", config={"configurable": {"herd_query": "x\ud800"}})
    assert stem.calls == 0


@pytest.mark.parametrize("data", [b"integral", bytearray(b"integral"), memoryview(b"x")])
def test_bytes_say_decode_first(data: Any) -> None:
    refused(data, r"bytes, not text; decode it first, e\.g\. data\.decode\('utf-8'\)")
    refused({"input": data}, r"input\['input'\] is bytes")
    refused(["fine", data], "message 1 is bytes")


@pytest.mark.parametrize("value", [42, 4.2, None, object(), {1, 2}])
def test_wrong_types_say_what_to_pass(value: Any) -> None:
    refused(value, "pass a string, a list of messages, a PromptValue, or a dict")


def test_unreadable_message_lists() -> None:
    refused([], "empty message list")
    refused([42], "could not read the input as chat messages")
    refused([{"role": "wizard", "content": "hi"}], "could not read the input as chat messages")
    refused({"query": "hi"}, "dict input has no key 'input'")


def test_message_lists_without_a_user_turn() -> None:
    refused([SystemMessage("You are terse.")], r"no user turn \(roles: system\)")
    refused([SystemMessage("s"), AIMessage("hello")], r"no user turn \(roles: system, ai\).*'user'")


def test_a_tool_loop_is_not_refused() -> None:
    router, _, _ = make_router()
    call = {"name": "add", "args": {}, "id": "c1"}
    messages = [
        HumanMessage("integral of 2x"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("x^2", tool_call_id="c1"),
    ]
    assert router.invoke(messages).text == "stem answer"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"temperature": math.inf}, "temperature must be a finite number"),
        ({"temperature": -0.5}, "temperature must be >= 0"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"seed": 2**64}, "seed must be between 0 and 18446744073709551615"),
        ({"seed": -1}, "seed must be between 0"),
        ({"stop": ["END", 7]}, "stop must be a list of strings"),
    ],
)
def test_parameters_every_expert_would_refuse(params: dict[str, Any], match: str) -> None:
    refused("integral of x", match, **params)


def test_a_megabyte_is_answered_and_the_classifier_cut_is_stated() -> None:
    router, stem, _ = make_router()
    # The keyword sits past the first half of the classifier's window, at the very end.
    text = "filler words " * 80_000 + " integral"
    assert len(text) > 1_000_000
    answer, decision = router.invoke_with_decision(text)
    assert answer.text == "stem answer" and decision.answered_by == "stem"
    assert len(decision.query) <= CLASSIFY_MAX_CHARS + 1
    assert decision.notes["query"] == (
        f"classified the first and last {CLASSIFY_MAX_CHARS // 2} of {len(text)} characters "
        f"(limit {CLASSIFY_MAX_CHARS})"
    )
    assert stem.seen[-1][-1].text == text, "the expert gets the whole text"
    short = router.invoke_with_decision("integral")[1]
    assert "query" not in short.notes


def test_classifier_text_keeps_both_ends() -> None:
    cut, note = classifier_text("a" * 10 + "b" * 10, limit=10)
    assert cut == "aaaaa\nbbbbb" and note is not None


def test_huge_async_batch_is_answered_with_bounded_concurrency() -> None:
    router, _, _ = make_router()
    in_flight = peak = 0
    original = router.engine.aattempt

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0)  # let every started call overlap
            return await original(*args, **kwargs)
        finally:
            in_flight -= 1

    router.engine.aattempt = counted  # type: ignore[method-assign]
    answers = asyncio.run(router.abatch(["integral"] * 200))
    assert [a.text for a in answers] == ["stem answer"] * 200
    assert peak <= BATCH_CONCURRENCY, "LangChain's default abatch would run all 200 at once"
    explicit = asyncio.run(router.abatch(["integral"] * 3, {"max_concurrency": 1}))
    assert len(explicit) == 3
    assert len(router.batch(["integral"] * 40)) == 40


class StopRecorder(ScriptedChat):
    stops: list[Any] = Field(default_factory=list)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.stops.append(stop)
        return super()._generate(messages, stop, run_manager, **kw)


def test_one_stop_string_is_one_stop_sequence() -> None:
    recorder = StopRecorder(reply="ok")
    router = HerdRouter([Expert("stem", recorder, routes=["stem", "other"])], CLASSIFIER)
    router.invoke("integral", stop="END")
    assert recorder.stops == [["END"]], "not ['E', 'N', 'D']"
