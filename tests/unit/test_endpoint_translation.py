"""The endpoint's pure parts: wire validation, message and chunk translation, key checks and
the mapping of the herd's errors onto OpenAI's statuses. The HTTP paths are tested end to end
in tests/integration/test_serve_router.py."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, SystemMessage, ToolMessage
from pydantic import SecretStr

import langchain_herd.endpoint as endpoint_package
from langchain_herd.breaker import CircuitBreaker
from langchain_herd.decision import Attempt, RouteDecision
from langchain_herd.endpoint import auth
from langchain_herd.endpoint.openai_errors import ApiError, api_error_for
from langchain_herd.endpoint.schemas import param_of, parse_request
from langchain_herd.endpoint.to_langchain import to_messages
from langchain_herd.endpoint.to_openai import ChunkWriter, completion, decision_headers
from langchain_herd.errors import AllExpertsFailedError, ContextLengthError


def decision(**fields: Any) -> RouteDecision:
    base: dict[str, Any] = {
        "query": "q",
        "scores": {"stem": 0.7, "other": 0.3},
        "expert_scores": {"stem": 0.7, "general": 0.3},
        "ranking": ["stem", "general"],
        "policy": "argmax",
        "classify_ms": 1.0,
    }
    return RouteDecision(**{**base, **fields})


def test_public_names() -> None:
    assert endpoint_package.__all__ == [
        "API_KEYS_ENV",
        "EXPERT_HEADER",
        "POLICY_HEADER",
        "SCORES_HEADER",
        "THREAD_HEADER",
        "create_router_app",
    ]


def test_param_names_leave_out_union_members() -> None:
    assert param_of(("messages", 0, "content", "list[ContentPart]", 2, "text")) == (
        "messages[0].content[2].text"
    )
    assert param_of(("tool_choice", "NamedToolChoice", "function", "name")) == (
        "tool_choice.function.name"
    )
    assert param_of(("stop", "str")) == "stop"


def test_validation_names_the_most_specific_field() -> None:
    with pytest.raises(ApiError) as caught:
        parse_request({"messages": [{"role": "user", "content": "hi"}], "stop": [1]})
    assert (caught.value.param, caught.value.code) == ("stop[0]", "invalid_type")
    with pytest.raises(ApiError) as caught:
        parse_request({"messages": [{"role": "user", "content": "hi"}], "n": 3})
    assert (caught.value.param, caught.value.code) == ("n", "unsupported_parameter")
    body = parse_request({"messages": [{"role": "user", "content": "hi"}], "store": True})
    assert body.model_extra == {"store": True}  # unknown fields pass


def test_messages_become_langchain_messages() -> None:
    body = parse_request(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "add", "arguments": '{"a": 2}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "4"},
            ]
        }
    )
    system, user, assistant, tool = to_messages(body.messages)
    assert isinstance(system, SystemMessage) and system.text == "be brief"
    assert user.text == "2+2?"
    assert isinstance(assistant, AIMessage)
    assert assistant.tool_calls == [
        {"name": "add", "args": {"a": 2}, "id": "c1", "type": "tool_call"}
    ]
    assert isinstance(tool, ToolMessage) and tool.tool_call_id == "c1"
    broken = parse_request(
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}],
                }
            ]
        }
    )
    with pytest.raises(ApiError) as caught:
        to_messages(broken.messages)
    assert caught.value.param == "messages[0].tool_calls[0].function.arguments"


def test_tool_call_replies_and_stream_deltas() -> None:
    message = AIMessage(
        content="",
        tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c9", "type": "tool_call"}],
        usage_metadata={"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
    )
    reply = completion(message, decision(answered_by="stem"))
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": '{"a": 1}',
    }
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert reply["model"] == "herd/stem" and reply["herd"]["answered_by"] == "stem"

    writer = ChunkWriter("stem", include_usage=True)
    first = writer.delta(
        AIMessageChunk(
            content="", tool_call_chunks=[{"name": "add", "args": '{"a"', "id": "c9", "index": 0}]
        )
    )
    assert first is not None and first["usage"] is None
    delta = first["choices"][0]["delta"]
    assert delta["role"] == "assistant"
    assert delta["tool_calls"] == [
        {
            "index": 0,
            "id": "c9",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a"'},
        }
    ]
    rest = writer.delta(
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": None, "args": ": 1}", "id": None, "index": 0}],
            usage_metadata={"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
        )
    )
    assert rest is not None
    assert rest["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": ": 1}"}}
    ]
    assert writer.delta(AIMessageChunk(content="")) is None
    finish, usage = writer.finish(decision(answered_by="stem"))
    assert finish["choices"][0]["finish_reason"] == "tool_calls" and "herd" not in finish
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 8
    assert usage["herd"]["answered_by"] == "stem"


def test_decision_headers() -> None:
    headers = decision_headers(decision(), "stem")
    assert headers == {
        "x-herd-policy": "argmax",
        "x-herd-expert": "stem",
        "x-herd-scores": "stem=0.700,other=0.300",
    }
    assert decision_headers(None, None) == {}


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = [SecretStr("first"), SecretStr("second"), SecretStr("third")]
    assert auth.key_matches("first", keys) and len(calls) == 3  # no early exit on a match
    assert not auth.key_matches("fourth", keys) and len(calls) == 6
    assert auth.keys_from_env({auth.API_KEYS_ENV: " a, ,b "}) == [SecretStr("a"), SecretStr("b")]
    assert auth.keys_from_env({}) == []


def test_herd_errors_map_to_openai_statuses() -> None:
    failed = decision(
        attempts=[Attempt(expert="stem", ok=False, latency_ms=3, failure="server_error")]
    )
    error = api_error_for(AllExpertsFailedError(failed))
    assert (error.status, error.code) == (502, "all_experts_failed")
    assert error.payload()["error"]["attempts"][0]["failure"] == "server_error"
    assert error.payload()["herd"]["attempts"] == error.payload()["error"]["attempts"]
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    breaker.record_failure()
    nobody = decision(skipped={"stem": "circuit open"})
    error = api_error_for(AllExpertsFailedError(nobody), {"stem": breaker})
    assert (error.status, error.code) == (503, "no_expert_available")
    assert 29 <= int(error.headers["Retry-After"]) <= 30
    too_long = ContextLengthError("too long", tokens={"stem": 9}, limits={"stem": 5})
    error = api_error_for(too_long)
    assert (error.status, error.param, error.code) == (400, "messages", "context_length_exceeded")
    assert api_error_for(RuntimeError("bug")).status == 500
