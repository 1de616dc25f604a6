"""Constrained decoding on the local TGI-protocol server, driven over loopback by real clients.

Tools, ``tool_choice`` and ``response_format`` go through the official ``openai`` client on
``/v1/chat/completions``; ``parameters.grammar`` goes through huggingface_hub's
``InferenceClient.text_generation(grammar=...)`` on TGI's generate routes. The tiny model spells
JSON with its character tokens (only under a grammar), so every shape is checked in seconds;
the ``slow`` tests ask SmolLM2-135M for a real tool call and real JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_huggingface import ChatHuggingFace, HuggingFaceEndpoint
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langchain_herd.server import GenerationBackend, ServerThread, create_app, load_backend

QUESTION = [{"role": "user", "content": "what is three and four"}]
DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": DIGIT, "b": DIGIT},
            "required": ["a", "b"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"],
        },
    },
}
# Bounded on purpose: a random model inside an unbounded number or string never stops.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "ok": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1, "maximum": 99},
    },
    "required": ["color", "ok", "count"],
}


@pytest.fixture(scope="module")
def backend() -> GenerationBackend:
    return load_backend("tiny")


@pytest.fixture(scope="module")
def url(backend: GenerationBackend) -> Iterator[str]:
    with ServerThread(create_app(backend, max_input_tokens=512, max_total_tokens=1024)) as server:
        yield server.url


@pytest.fixture(scope="module")
def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def hf(url: str) -> InferenceClient:
    return InferenceClient(base_url=url)


def chat(client: openai.OpenAI, **request: Any) -> Any:
    """``client.chat.completions.create`` with greedy decoding and the model TGI expects.

    Returns the reply, or the list of chunks when ``stream`` is true.
    """
    request = {"model": "tgi", "messages": QUESTION, "temperature": 0, **request}
    reply = client.chat.completions.create(**request)
    return list(reply) if request.get("stream") else reply


def check_answer(value: Any) -> None:
    """``value`` matches ANSWER_SCHEMA (checked by hand: jsonschema is not installed)."""
    assert isinstance(value, dict) and set(value) == {"color", "ok", "count"}, value
    assert value["color"] in ("red", "green", "blue")
    assert isinstance(value["ok"], bool)
    assert isinstance(value["count"], int) and 1 <= value["count"] <= 99


def check_add_arguments(arguments: str, *, low: int = 0, high: int = 9) -> dict[str, int]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict) and set(parsed) == {"a", "b"}, arguments
    assert all(type(v) is int and low <= v <= high for v in parsed.values()), arguments
    return parsed


def reassemble(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """Streamed tool-call deltas joined per index, as OpenAI clients do."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["name"] = delta.function.name or call["name"]
                    call["arguments"] += delta.function.arguments or ""
    return calls


# --- generate routes: parameters.grammar --------------------------------------------------------


def test_regex_grammar_on_generate_routes(hf: InferenceClient, url: str) -> None:
    grammar: Any = {"type": "regex", "value": r"\d{3}-\d{4}"}
    out = hf.text_generation(
        "hello world", grammar=grammar, max_new_tokens=20, details=True, return_full_text=False
    )
    assert re.fullmatch(r"\d{3}-\d{4}", out.generated_text), out.generated_text
    assert out.details is not None and out.details.finish_reason == "eos_token"
    events = list(
        hf.text_generation(
            "hello world", grammar=grammar, max_new_tokens=20, stream=True, details=True
        )
    )
    # Like TGI, the stream ends with the end-of-sequence token, marked special.
    assert "".join(e.token.text for e in events if not e.token.special) == out.generated_text
    assert events[-1].token.special
    bare = httpx.post(
        f"{url}/generate",
        json={"inputs": "hello world", "parameters": {"grammar": grammar, "max_new_tokens": 20}},
    ).json()
    assert bare == {"generated_text": out.generated_text}


def test_json_grammar_on_generate_routes(hf: InferenceClient, url: str) -> None:
    grammar: Any = {"type": "json", "value": ANSWER_SCHEMA}
    text = hf.text_generation(
        "hello world", grammar=grammar, max_new_tokens=80, return_full_text=False
    )
    check_answer(json.loads(text))
    # The schema may come as a JSON string, and as TGI's json_schema {"name", "schema"}.
    as_string: Any = {"type": "json", "value": json.dumps(ANSWER_SCHEMA)}
    again = hf.text_generation(
        "hello world", grammar=as_string, max_new_tokens=80, return_full_text=False
    )
    assert again == text
    with httpx.stream(
        "POST",
        f"{url}/generate_stream",
        json={
            "inputs": "hello world",
            "parameters": {
                "grammar": {"type": "json_schema", "value": {"name": "a", "schema": ANSWER_SCHEMA}},
                "max_new_tokens": 80,
                "details": True,
            },
        },
    ) as response:
        events = [
            json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")
        ]
    assert events[-1]["generated_text"] == text
    assert events[-1]["details"]["finish_reason"] == "eos_token"
    assert events[-1]["token"]["special"]  # the grammar ended, so the model ended


def test_grammar_does_not_change_unconstrained_output(hf: InferenceClient) -> None:
    # The tiny model's character tokens exist for grammars only.
    text = hf.text_generation("hello world", max_new_tokens=8, return_full_text=False)
    assert len(text.split()) == 8 and re.fullmatch(r"[a-z ]+", text.strip()), text


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ({"type": "regex", "value": "[a-z"}, "unclosed character class"),
        ({"type": "regex", "value": "(a|b"}, "unclosed group"),
        ({"type": "json", "value": {"properties": {"a": {"type": "objectx"}}}}, "objectx"),
        ({"type": "json", "value": {"properties": {"a": {"$ref": "#/nope"}}}}, "/nope"),
        ({"type": "json", "value": {"type": "object"}}, "must have a 'properties' field"),
        ({"type": "json", "value": "{not json"}, "not valid JSON"),
        ({"type": "json", "value": 3}, "must be an object"),
    ],
)
def test_invalid_grammar_is_422(hf: InferenceClient, url: str, grammar: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        hf.text_generation("hello", grammar=grammar, max_new_tokens=4)
    assert "grammar is not valid" in str(caught.value)
    reply = httpx.post(
        f"{url}/generate", json={"inputs": "hello", "parameters": {"grammar": grammar}}
    )
    assert reply.status_code == 422
    assert reply.json()["error_type"] == "validation"
    assert message in reply.json()["error"]
    with pytest.raises(ValidationError, match=re.escape(message)):  # inside the stream, like TGI
        list(hf.text_generation("hello", grammar=grammar, max_new_tokens=4, stream=True))


def test_unknown_grammar_type_is_422(url: str) -> None:
    reply = httpx.post(
        f"{url}/generate",
        json={"inputs": "hello", "parameters": {"grammar": {"type": "lark", "value": "x"}}},
    )
    assert reply.status_code == 422 and "grammar" in reply.json()["error"]


# --- chat route: tools ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "add"}}, "add"]
)
def test_tool_call_reply(oai: openai.OpenAI, tool_choice: Any) -> None:
    reply = chat(oai, tools=[ADD], tool_choice=tool_choice, max_tokens=60)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"  # TGI's reason, not OpenAI's "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("0", "function", "add")
    check_add_arguments(call.function.arguments)
    assert reply.usage.completion_tokens > 0


def test_forced_tool_among_several(oai: openai.OpenAI) -> None:
    forced = {"type": "function", "function": {"name": "weather"}}
    reply = chat(oai, tools=[ADD, WEATHER], tool_choice=forced, max_tokens=60)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments) in ({"unit": "celsius"}, {"unit": "fahrenheit"})


def test_streamed_tool_call_matches_the_reply(oai: openai.OpenAI) -> None:
    request: dict[str, Any] = {"tools": [ADD], "tool_choice": "required", "max_tokens": 60}
    reply = chat(oai, **request)
    chunks = chat(oai, **request, stream=True, stream_options={"include_usage": True})
    calls = reassemble(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"] == "0" and calls[0]["name"] == "add"
    expected = reply.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(calls[0]["arguments"]) == json.loads(expected)
    with_choices = [chunk for chunk in chunks if chunk.choices]
    first = with_choices[0].choices[0].delta.tool_calls[0]
    assert first.function.name == "add" and first.function.arguments == "{"
    later = [chunk.choices[0].delta.tool_calls[0] for chunk in with_choices[1:]]
    assert all(call.function.name is None and call.id == "0" for call in later)
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(chunk.choices[0].delta.content is None for chunk in with_choices)
    assert not chunks[-1].choices  # the usage chunk
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens


def test_auto_lets_the_model_answer_in_text(oai: openai.OpenAI) -> None:
    # The tiny model picks TGI's no_tool function here; TGI then answers without tools. The
    # tool-call JSON needs about 35 character tokens, so max_tokens leaves room for it.
    plain = chat(oai, max_tokens=50).choices[0].message.content
    auto = chat(oai, tools=[ADD], tool_choice="auto", max_tokens=50).choices[0].message
    assert auto.tool_calls is None and auto.content == plain
    assert chat(oai, tools=[ADD], max_tokens=50).choices[0].message.content == plain
    none = chat(oai, tools=[ADD], tool_choice="none", max_tokens=50)
    assert none.choices[0].message.content == plain
    streamed = chat(oai, tools=[ADD], max_tokens=50, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == plain
    assert not reassemble(streamed)


def test_history_with_tool_calls_and_results(oai: openai.OpenAI) -> None:
    call = {"id": "0", "type": "function", "function": {"name": "add", "arguments": '{"a": 3}'}}
    history: list[Any] = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "0", "content": "seven"},
    ]
    reply = chat(oai, messages=history, tools=[ADD], tool_choice="required", max_tokens=60)
    [new_call] = reply.choices[0].message.tool_calls
    assert new_call.id == "1"  # TGI: one past the largest id in the history
    check_add_arguments(new_call.function.arguments)
    text = chat(oai, messages=history, max_tokens=4)
    assert text.choices[0].message.content
    short = chat(oai, max_tokens=4)
    assert text.usage.prompt_tokens > short.usage.prompt_tokens  # the calls reached the prompt


def test_huggingface_hub_client_reads_tool_calls(hf: InferenceClient) -> None:
    tools: Any = [ADD]
    reply = hf.chat_completion(
        QUESTION, tools=tools, tool_choice="required", temperature=0, max_tokens=60
    )
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.name == "add"
    arguments = call.function.arguments
    check_add_arguments(arguments if isinstance(arguments, str) else json.dumps(arguments))


def test_langchain_chat_models_get_tool_calls(url: str) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    chat_openai = ChatOpenAI(
        base_url=f"{url}/v1", api_key=SecretStr("unused"), model="tgi", temperature=0
    )
    # HuggingFaceEndpoint samples unless its defaults are unset; the stub wants `model` too.
    endpoint = HuggingFaceEndpoint(  # type: ignore[call-arg]
        endpoint_url=url, temperature=None, top_p=None, typical_p=None
    )
    chat_hf = ChatHuggingFace(llm=endpoint, temperature=0)
    calls = []
    for model in (chat_openai, chat_hf):
        bound = model.bind_tools([add], tool_choice="add").bind(max_tokens=60)
        message = bound.invoke("what is three and four")
        chunks = list(bound.stream("what is three and four"))
        streamed: Any = chunks[0]
        for chunk in chunks[1:]:
            streamed += chunk
        assert isinstance(message, AIMessage) and isinstance(streamed, AIMessageChunk)
        assert streamed.tool_calls == message.tool_calls
        calls.append(message.tool_calls)
    assert calls[0] == calls[1]
    [call] = calls[0]
    assert call["name"] == "add" and call["id"] == "0" and set(call["args"]) == {"a", "b"}


# --- chat route: response_format ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response_format",
    [
        {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": ANSWER_SCHEMA, "strict": True},
        },
        {"type": "json", "value": ANSWER_SCHEMA},  # TGI's own shape
    ],
)
def test_response_format_json_schema(oai: openai.OpenAI, response_format: Any) -> None:
    reply = chat(oai, response_format=response_format, max_tokens=80)
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    check_answer(json.loads(content))
    streamed = chat(oai, response_format=response_format, max_tokens=80, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == content


def test_response_format_regex_and_text(oai: openai.OpenAI) -> None:
    regex = {"type": "regex", "value": "(yes|no), [0-9]{2}"}
    reply = chat(oai, response_format=regex, max_tokens=20)
    assert re.fullmatch(r"(yes|no), [0-9]{2}", reply.choices[0].message.content)
    text = chat(oai, response_format={"type": "text"}, max_tokens=5)
    assert re.fullmatch(r"[a-z ]+", text.choices[0].message.content.strip())


# --- chat route: errors ---------------------------------------------------------------------------


def test_chat_errors_are_422_with_tgi_bodies(oai: openai.OpenAI, url: str) -> None:
    def post(**body: Any) -> httpx.Response:
        return httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION, **body})

    nope = {"type": "function", "function": {"name": "nope"}}
    unknown = post(tools=[ADD], tool_choice=nope)
    assert unknown.status_code == 422
    assert unknown.json() == {
        "error": "Tool error: Tool with name nope not found",
        "error_type": "tool_error",
    }
    # Like TGI, tool errors come before any stream starts: HTTP 422 even when streaming.
    assert post(tools=[ADD], tool_choice="nope", stream=True).status_code == 422
    both = post(tools=[ADD], response_format={"type": "json_object"})
    assert both.status_code == 422 and "mutually exclusive" in both.json()["error"]
    schema = {"properties": {"a": {"type": "nope"}}}
    bad_schema = post(response_format={"type": "json", "value": schema})
    assert bad_schema.status_code == 422
    assert bad_schema.json()["error"] == (
        "Input validation error: grammar is not valid: Invalid type: nope"
    )
    bad_tool = post(tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}])
    assert bad_tool.status_code == 422 and "Invalid type: nope" in bad_tool.json()["error"]
    # The openai client keeps TGI's "error" field as the exception's body.
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        chat(oai, tools=[ADD], tool_choice=nope)
    assert caught.value.body == "Tool error: Tool with name nope not found"
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        chat(oai, response_format={"type": "regex", "value": "[a-z"})
    assert "unclosed character class" in str(caught.value.body)


def test_tool_call_cut_by_max_tokens_is_a_tool_error(url: str) -> None:
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": QUESTION, "tools": [ADD], "tool_choice": "required", "max_tokens": 5},
    )
    assert reply.status_code == 422
    assert reply.json()["error_type"] == "tool_error"
    assert "Failed to parse generated text" in reply.json()["error"]


# --- the real model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Iterator[openai.OpenAI]:
    backend = load_backend("smollm2", cache_dir=os.environ.get("HERD_CACHE_DIR"))
    with ServerThread(create_app(backend)) as server:
        yield openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600
        )


SMOL_ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
SMOL_QUESTION = [{"role": "user", "content": "What is 3 + 4? Use the add tool."}]


@pytest.mark.slow
def test_smollm2_calls_the_add_tool(smollm2: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "messages": SMOL_QUESTION,
        "tools": [SMOL_ADD],
        "tool_choice": "required",
        "max_tokens": 40,
    }
    [call] = chat(smollm2, **request).choices[0].message.tool_calls
    assert call.function.name == "add"
    arguments = check_add_arguments(call.function.arguments, low=-(10**9), high=10**9)
    print(f"smollm2 tool call: add({arguments})")
    streamed = reassemble(chat(smollm2, **request, stream=True))[0]
    assert streamed["name"] == "add" and json.loads(streamed["arguments"]) == arguments


@pytest.mark.slow
def test_smollm2_answers_in_json(smollm2: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "country": {"type": "string", "maxLength": 40},
        },
        "required": ["city", "country"],
    }
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    reply = chat(smollm2, messages=messages, response_format=response_format, max_tokens=60)
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"city", "country"}
    assert all(isinstance(v, str) and len(v) <= 40 for v in value.values())
    print(f"smollm2 json_schema reply: {value}")
    anything = chat(
        smollm2, messages=messages, response_format={"type": "json_object"}, max_tokens=60
    )
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


def test_max_completion_tokens_is_read_like_max_tokens(oai: openai.OpenAI, url: str) -> None:
    """langchain-openai's stock ChatOpenAI sends ``max_completion_tokens`` (OpenAI's newer
    name); the server reads it when ``max_tokens`` is absent, as vLLM does."""
    reply = chat(oai, max_completion_tokens=3)
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"
    assert chat(oai, max_tokens=2, max_completion_tokens=5).usage.completion_tokens == 2
    stock = ChatOpenAI(
        base_url=f"{url}/v1",
        api_key=SecretStr("unused"),
        model="tgi",
        max_completion_tokens=4,
        temperature=0,
    )
    assert stock.invoke("hello").usage_metadata["output_tokens"] == 4  # type: ignore[index]
