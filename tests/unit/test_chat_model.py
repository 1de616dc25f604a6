"""The chat-model surface: tools and structured output bound on the herd, per-call pins and
policies, sticky routes, standard parameters and the request-fault rule of the breakers.

The experts are fakes: what is tested is how the herd chooses and what it passes on. Real
servers on loopback are exercised in tests/integration/test_chat_model_e2e.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_herd import (
    Capabilities,
    CapabilityError,
    Expert,
    HerdRouter,
    InMemorySessions,
    InputError,
    route_on,
)
from tests.unit.fakes import KeywordClassifier, ScriptedChat, ToolChat

CLASSIFIER = KeywordClassifier({"stem": "integral", "humanities": "poem", "other": "tax"})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def herd(**models: ScriptedChat) -> HerdRouter:
    """One expert per named label; labels no expert is named for go to the last one."""
    experts = [Expert(name, model, routes=[name]) for name, model in models.items()]
    experts[-1].routes += [label for label in CLASSIFIER.labels if label not in models]
    return HerdRouter(experts, CLASSIFIER, breaker_threshold=2, breaker_cooldown_s=60)


def test_tools_go_only_to_experts_that_can_call_them() -> None:
    stem, tools = ScriptedChat(reply="S"), ToolChat(reply="T")
    router = herd(stem=stem, other=tools)
    answer = router.bind_tools([add]).invoke("an integral please")
    assert answer.tool_calls[0]["name"] == "add"
    decision = answer.response_metadata["herd"]
    assert decision["excluded"] == {"stem": "cannot call tools"}
    assert decision["requirements"] == ["tools"]
    assert decision["answered_by"] == "other" and stem.calls == 0
    assert tools.bound[-1]["tools"][0]["function"]["name"] == "add"
    # Without tools bound the best-scoring expert answers as before.
    assert router.invoke("an integral please").content == "S"


def test_no_capable_expert_is_a_clear_error_before_any_call() -> None:
    stem, other = ScriptedChat(), ScriptedChat()
    router = herd(stem=stem, other=other)
    with pytest.raises(CapabilityError, match=r"no expert in the herd can honour.*tools"):
        router.bind_tools([add]).invoke("an integral please")
    with pytest.raises(CapabilityError, match="json_schema"):
        router.with_structured_output(
            dict(add.args_schema.model_json_schema()), method="json_schema"
        ).invoke("x")
    assert stem.calls == other.calls == 0


def test_declared_capabilities_override_inference() -> None:
    json_only = Expert(
        "stem",
        ScriptedChat(reply='{"a": 1}'),
        routes=["stem"],
        capabilities=Capabilities(structured_output=frozenset({"json_mode"})),
    )
    router = HerdRouter(
        [json_only, Expert("other", ToolChat(), routes=["other", "humanities"])], CLASSIFIER
    )
    parsed = router.with_structured_output(
        {"title": "Pair", "type": "object", "properties": {"a": {"type": "integer"}}},
        method="json_mode",
    ).invoke("integral")
    assert parsed == {"a": 1}


def test_structured_output_by_function_calling() -> None:
    class Pair(BaseModel):
        a: int
        b: int

    router = herd(stem=ScriptedChat(), other=ToolChat())
    assert router.with_structured_output(Pair).invoke("integral") == Pair(a=1, b=2)
    raw = router.with_structured_output(Pair, include_raw=True).invoke("integral")
    assert raw["parsed"] == Pair(a=1, b=2) and raw["parsing_error"] is None
    assert raw["raw"].response_metadata["herd"]["requirements"] == ["tools"]


def test_tool_choice_is_checked_and_passed_on() -> None:
    tools = ToolChat()
    router = herd(other=tools)
    with pytest.raises(InputError, match="not a bound tool"):
        router.bind_tools([add], tool_choice="multiply")
    router.bind_tools([add], tool_choice="add").invoke("tax")
    assert tools.bound[-1]["tool_choice"] == "add"


def test_pin_an_expert_per_call_and_list_it() -> None:
    router = herd(stem=ScriptedChat(reply="S"), other=ScriptedChat(reply="O"))
    pinned = router.invoke("an integral", {"configurable": {"herd_expert": "other"}})
    assert pinned.content == "O"
    assert pinned.response_metadata["herd"]["pinned"] == "other"
    assert "herd_expert" in {spec.id for spec in router.config_specs}
    with pytest.raises(InputError, match="not in the herd"):
        router.invoke("x", {"configurable": {"herd_expert": "nobody"}})
    # with_config carries the pin through a chain too.
    assert (
        router.with_config(configurable={"herd_expert": "other"}).invoke("integral").content == "O"
    )


def test_per_call_policy() -> None:
    router = herd(stem=ScriptedChat(reply="S"), other=ScriptedChat(reply="O"))
    answer = router.invoke("integral", {"configurable": {"herd_policy": "margin"}})
    assert answer.response_metadata["herd"]["policy"] == "margin"
    with pytest.raises(InputError, match="unknown per-call policy"):
        router.invoke("integral", {"configurable": {"herd_policy": "vibes"}})


def test_tool_loop_stays_with_the_expert_of_the_turn() -> None:
    router = herd(stem=ToolChat(reply="S"), other=ToolChat(reply="O"))
    bound = router.bind_tools([add])
    first = bound.invoke([HumanMessage("an integral please")])
    assert first.response_metadata["herd"]["answered_by"] == "stem"
    # The tool's result mentions "tax": on its own that would route to `other`.
    history = [
        HumanMessage("an integral please"),
        first,
        ToolMessage("tax 3", tool_call_id=first.tool_calls[0]["id"]),
    ]
    router_scores_tax = router.route([HumanMessage("tax")]).chosen
    assert router_scores_tax == "other"
    second = bound.invoke(history)
    decision = second.response_metadata["herd"]
    assert decision["answered_by"] == "stem"
    assert decision["sticky"].startswith("tool loop")


def test_tool_loop_found_by_tool_call_id_when_metadata_is_gone() -> None:
    # An OpenAI client of the HTTP endpoint sends the AI message back without the decision;
    # the tool call's id is enough to find the expert that made it.
    router = herd(stem=ToolChat(reply="S"), other=ToolChat(reply="O"))
    bound = router.bind_tools([add])
    first = bound.invoke([HumanMessage("an integral please")])
    assert first.response_metadata["herd"]["answered_by"] == "stem"
    bare = AIMessage(content=first.content, tool_calls=first.tool_calls)
    history = [
        HumanMessage("an integral please"),
        bare,
        ToolMessage("tax 3", tool_call_id=first.tool_calls[0]["id"]),
    ]
    second = bound.invoke(history, {"configurable": {"herd_query": "tax"}})
    decision = second.response_metadata["herd"]
    assert decision["answered_by"] == "stem"
    assert decision["sticky"].startswith("tool loop")
    unknown = AIMessage(content="", tool_calls=[{**first.tool_calls[0], "id": "call-unknown"}])
    third = bound.invoke(
        [
            HumanMessage("an integral please"),
            unknown,
            ToolMessage("3", tool_call_id="call-unknown"),
        ],
        {"configurable": {"herd_query": "tax"}},
    )
    assert third.response_metadata["herd"]["answered_by"] == "other"


class TableClassifier(KeywordClassifier):
    """Fixed scores per text, to place a follow-up just inside or outside the margin."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__({"stem": "-", "humanities": "-", "other": "-"})
        self.table = table

    def predict_proba(self, texts: Any) -> Any:
        import numpy as np

        return np.array([self.table[text] for text in texts])


def test_thread_follow_up_sticks_unless_clearly_beaten() -> None:
    classifier = TableClassifier(
        {
            "an integral": [0.8, 0.1, 0.1],
            "and why?": [0.30, 0.38, 0.32],  # humanities leads stem by 0.08 < 0.1
            "a poem": [0.1, 0.8, 0.1],
        }
    )
    experts = [
        Expert(name, ScriptedChat(reply=name[0].upper()), routes=[name])
        for name in ("stem", "humanities", "other")
    ]
    router = HerdRouter(experts, classifier, query_mode="last_user", sticky_margin=0.1)
    thread = {"configurable": {"thread_id": "t-1"}}
    assert router.invoke("an integral", thread).content == "S"
    follow = router.invoke("and why?", thread)
    assert follow.content == "S"
    assert "stays with stem" in follow.response_metadata["herd"]["sticky"]
    moved = router.invoke("a poem", thread)
    assert moved.content == "H"
    assert "moves from stem to humanities" in moved.response_metadata["herd"]["sticky"]
    # Without a thread (or in another one) the follow-up goes to the best score.
    assert router.invoke("and why?").content == "H"
    assert router.invoke("and why?", {"configurable": {"thread_id": "t-2"}}).content == "H"


def test_sessions_are_bounded() -> None:
    sessions = InMemorySessions(ttl_s=60, max_threads=2)
    for thread in ("a", "b", "c"):
        sessions.set(thread, "stem")
    assert len(sessions) == 2 and sessions.get("a") is None and sessions.get("c") == "stem"
    expiring = InMemorySessions(ttl_s=0.01)
    expiring.set("a", "stem")
    import time

    time.sleep(0.02)
    assert expiring.get("a") is None and len(expiring) == 0


def test_request_faults_do_not_open_breakers() -> None:
    request = httpx.Request("POST", "http://x")
    too_long = httpx.HTTPStatusError(
        "422", request=request, response=httpx.Response(422, request=request)
    )
    stem, other = ScriptedChat(error=too_long), ScriptedChat(reply="O")
    router = herd(stem=stem, other=other)
    for _ in range(3):
        answer = router.invoke("integral")
        assert answer.content == "O"
        assert answer.response_metadata["herd"]["attempts"][0]["failure"] == "invalid_input"
    assert router.breakers["stem"].allow()
    stem.error = None
    stem.reply = "S"
    assert router.invoke("integral").content == "S"


def test_standard_params_reach_the_expert() -> None:
    tools = ToolChat(reply="O")
    router = HerdRouter(
        [Expert("other", tools, routes=["stem", "humanities", "other"])],
        CLASSIFIER,
        temperature=0.3,
        max_tokens=9,
        stop=["\n"],
    )
    router.invoke("tax")
    assert tools.bound[-1] == {"temperature": 0.3, "max_tokens": 9, "stop": ["\n"]}
    router.invoke("tax", max_new_tokens=5, temperature=0.0)
    assert tools.bound[-1]["max_tokens"] == 5 and tools.bound[-1]["temperature"] == 0.0
    params = router._get_ls_params(stop=["\n"])
    assert params == {
        "ls_provider": "herd",
        "ls_model_name": "herd",
        "ls_model_type": "chat",
        "ls_temperature": 0.3,
        "ls_max_tokens": 9,
        "ls_stop": ["\n"],
    }


def test_stream_marks_the_last_chunk_with_the_decision() -> None:
    router = herd(stem=ScriptedChat(reply="a b c"))
    chunks = list(router.stream("integral"))
    assert "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["herd"]["answered_by"] == "stem"
    assert all(c.chunk_position is None for c in chunks[:-1])


def test_route_on_a_key_of_the_dict_input() -> None:
    from langchain_core.prompts import ChatPromptTemplate

    router = herd(stem=ScriptedChat(reply="S"), humanities=ScriptedChat(reply="H"))
    prompt = ChatPromptTemplate.from_messages(
        [("user", "Context:\n{context}\n\nQuestion: {question}")]
    )
    inputs = {"context": "notes on an integral", "question": "who wrote this poem?"}
    # The whole prompt reads as stem (the retrieved context); the question is humanities.
    assert (prompt | router).invoke(inputs).content == "S"
    assert route_on("question", prompt | router).invoke(inputs).content == "H"
    assert route_on(lambda d: d["question"], prompt | router).invoke(inputs).content == "H"
    with pytest.raises(InputError, match="route_on could not read 'query'"):
        route_on("query", prompt | router).invoke(inputs)


def test_route_on_a_part_of_the_messages() -> None:
    router = HerdRouter(
        [
            Expert("stem", ScriptedChat(reply="S"), routes=["stem"]),
            Expert("humanities", ScriptedChat(reply="H"), routes=["humanities", "other"]),
        ],
        CLASSIFIER,
        query=lambda messages: messages[-1].text.rsplit("Question:", 1)[-1],
    )
    assert router.invoke("Context: an integral. Question: a poem?").content == "H"


async def test_async_paths_share_the_rules() -> None:
    router = herd(stem=ScriptedChat(reply="S"), other=ToolChat(reply="O"))
    answer = await router.bind_tools([add]).ainvoke("integral")
    assert answer.response_metadata["herd"]["answered_by"] == "other"
    chunks = [
        c async for c in router.astream("integral", {"configurable": {"herd_expert": "other"}})
    ]
    assert "".join(c.text for c in chunks) == "O"
    assert chunks[-1].response_metadata["herd"]["pinned"] == "other"


def test_dict_input_and_messages_route_alike() -> None:
    router = herd(stem=ScriptedChat(reply="S"), other=ScriptedChat(reply="O"))
    assert router.invoke({"input": "integral"}).content == "S"
    with pytest.raises(InputError, match="no key 'input'"):
        router.invoke({"question": "integral"})
    assert isinstance(router.invoke([("user", "integral")]), AIMessage)


def test_model_kwarg_pins_an_expert() -> None:
    router = herd(stem=ScriptedChat(reply="S"), other=ScriptedChat(reply="O"))
    assert router.invoke("integral", model="herd/other").content == "O"
    assert router.invoke("integral", model="other").content == "O"
    assert router.invoke("integral", model="herd").content == "S"
    assert router._get_ls_params(model="other")["ls_model_name"] == "other"


def test_model_kwarg_names_a_served_model() -> None:
    experts = [
        Expert("stem", ScriptedChat(reply="S"), routes=["stem"], model_id="org/big"),
        Expert(
            "other", ScriptedChat(reply="O"), routes=["other", "humanities"], model_id="org/small"
        ),
    ]
    router = HerdRouter(experts, CLASSIFIER)
    answer = router.invoke("integral", model="org/small")
    assert answer.content == "O"
    assert answer.response_metadata["herd"]["excluded"] == {"stem": "serves org/big, not org/small"}
    with pytest.raises(InputError, match="neither an expert of this herd"):
        router.invoke("integral", model="org/unknown")


@pytest.mark.parametrize(
    "body",
    [
        "input too long for this expert",
        {"message": "input too long for this expert"},
        {"error": {"message": "input too long for this expert"}},
    ],
)
def test_openai_errors_keep_the_servers_reason(body: Any) -> None:
    import openai

    from langchain_herd.failures import classify_failure

    request = httpx.Request("POST", "http://x/v1/chat/completions")
    response = httpx.Response(422, request=request)
    error = openai.UnprocessableEntityError("Error code: 422", response=response, body=body)
    failure = classify_failure(error)
    assert failure is not None and failure.kind == "invalid_input" and failure.status_code == 422
    assert failure.message.endswith("input too long for this expert")


@pytest.mark.parametrize("prompt_format", ["chatml", "llama3", "mistral", "plain"])
def test_generate_route_renders_tool_call_histories(prompt_format: str) -> None:
    from langchain_herd.prompt_formats import render_prompt

    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}
    history = [
        HumanMessage("add 1 and 2"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("3", tool_call_id="c1"),
    ]
    prompt = render_prompt(history, prompt_format)  # type: ignore[arg-type]
    assert '{"name": "add", "arguments": {"a": 1, "b": 2}}' in prompt
    assert prompt.index("add 1 and 2") < prompt.index('"arguments"') < prompt.rindex("3")
