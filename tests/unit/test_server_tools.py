"""Tool calling and grammar helpers of the local server, without a model or HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from langchain_herd.server.grammar import (
    GrammarError,
    close_objects,
    compile_grammar,
    json_schema_grammar,
)
from langchain_herd.server.schemas import ChatMessage, ChatRequest, Tool
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.tiny_model import CHATML_TEMPLATE
from langchain_herd.server.tools import (
    DEFAULT_TOOL_PROMPT,
    NO_TOOL,
    ToolCallStream,
    next_tool_call_id,
    parse_tool_output,
    prompt_messages,
    select_tools,
    template_renders_tool_calls,
    template_uses_tools,
)

ADD: dict[str, Any] = {
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
TOOLS_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}"
    "{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.a }}{% endif %}\n{% endfor %}"
    "{% if tools %}TOOLS {{ tools | map(attribute='function.name') | join(',') }}{% endif %}"
)


def tools(*names: str) -> list[Tool]:
    return [
        Tool.model_validate({**ADD, "function": {**ADD["function"], "name": name}})
        for name in names
    ]


def test_tool_choice_selects_tools_like_tgi() -> None:
    offered = select_tools(tools("add", "mul"), "auto")
    assert offered is not None
    assert [t.function.name for t in offered.tools] == ["add", "mul", NO_TOOL]
    required = select_tools(tools("add", "mul"), "required")
    assert required is not None and [t.function.name for t in required.tools] == ["add", "mul"]
    assert select_tools(tools("add"), "none") is None
    request = ChatRequest.model_validate(
        {"messages": [], "tool_choice": {"type": "function", "function": {"name": "mul"}}}
    )
    named = select_tools(tools("add", "mul"), request.tool_choice)
    assert named is not None and [t.function.name for t in named.tools] == ["mul"]
    with pytest.raises(TGIError) as caught:
        select_tools(tools("add"), "mul")  # any other string is a function name, as in TGI
    assert caught.value.to_json() == {
        "error": "Tool error: Tool with name mul not found",
        "error_type": "tool_error",
    }


def test_tool_schema_is_tgi_shaped_and_compiles() -> None:
    selection = select_tools(tools("add"), "auto")
    assert selection is not None
    schema = selection.schema
    add = schema["$functions"]["add"]
    assert list(add["properties"]) == ["_name", "a", "b"]
    assert add["properties"]["_name"] == {"type": "string", "const": "add"}
    assert add["required"] == ["_name", "a", "b"] and add["additionalProperties"] is False
    assert schema["properties"]["function"]["anyOf"] == [
        {"$ref": "#/$functions/add"},
        {"$ref": "#/$functions/no_tool"},
    ]
    compile_grammar("json", schema)


def test_nested_definitions_of_parameters_still_resolve() -> None:
    parameters = {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/Point"}},
    }
    tool = Tool.model_validate({"function": {"name": "f", "parameters": parameters}})
    selection = select_tools([tool], "required")
    assert selection is not None and "Point" in selection.schema["$defs"]
    compile_grammar("json", selection.schema)


def test_close_objects_follows_outlines_and_leaves_other_keys() -> None:
    schema: dict[str, Any] = {
        "properties": {
            "properties": {"type": "string"},  # a key named like the keyword stays a key
            "inner": {"properties": {"x": {"type": "integer"}}},
            "items": {"type": "array", "items": {"properties": {"y": {"type": "string"}}}},
        },
        "additionalProperties": True,
    }
    closed = close_objects(schema)
    assert closed["type"] == "object" and closed["additionalProperties"] is True
    assert closed["properties"]["properties"] == {"type": "string"}
    assert closed["properties"]["inner"]["additionalProperties"] is False
    assert closed["properties"]["items"]["items"]["type"] == "object"
    assert schema["properties"]["inner"] == {"properties": {"x": {"type": "integer"}}}  # a copy


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("json", {"type": "object"}, "must have a 'properties' field"),
        ("json_schema", {"name": "x"}, '{"name": ..., "schema": {...}}'),
        ("regex", 5, "needs a string"),
        ("regex", "a{2", ""),
    ],
)
def test_grammar_errors(kind: str, value: Any, message: str) -> None:
    with pytest.raises(GrammarError, match=message.replace("{", r"\{").replace("}", r"\}")):
        compile_grammar(kind, value)


def test_json_object_without_value_means_any_object() -> None:
    assert compile_grammar("json_object", None) == json_schema_grammar(
        {"type": "object"}, require_properties=False
    )


def test_tools_are_appended_to_the_last_message_for_plain_templates() -> None:
    selection = select_tools(tools("add"), "required")
    messages = [ChatMessage(role="user", content="What is 3 + 4?")]
    rendered, template_tools = prompt_messages(
        messages, selection, tool_prompt=None, template_source=CHATML_TEMPLATE
    )
    assert template_tools is None
    content = rendered[-1]["content"]
    head, tail = content.split("\n---\n")
    assert head == "What is 3 + 4?" and tail.endswith(DEFAULT_TOOL_PROMPT)
    listed = json.loads(tail[: -len(DEFAULT_TOOL_PROMPT)])
    assert listed[0]["function"]["name"] == "add"
    assert json.loads(listed[0]["function"]["arguments"]) == ADD["function"]["parameters"]


def test_templates_with_tools_get_them_and_structured_calls() -> None:
    assert template_uses_tools(TOOLS_TEMPLATE) and template_renders_tool_calls(TOOLS_TEMPLATE)
    assert not template_uses_tools(CHATML_TEMPLATE)
    history = [
        ChatMessage(role="user", content="add"),
        ChatMessage.model_validate(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "0", "function": {"name": "add", "arguments": '{"a": 3, "b": 4}'}}
                ],
            }
        ),
        ChatMessage(role="tool", content="7", tool_call_id="0"),
    ]
    selection = select_tools(tools("add"), "auto")
    rendered, template_tools = prompt_messages(
        history, selection, tool_prompt="Call one.", template_source=TOOLS_TEMPLATE
    )
    assert template_tools is not None
    assert [t["function"]["name"] for t in template_tools] == ["add", NO_TOOL]
    assert rendered[1]["tool_calls"][0]["function"]["arguments"] == {"a": 3, "b": 4}
    assert rendered[2] == {"role": "tool", "content": "7\n---\nCall one.", "tool_call_id": "0"}


def test_history_calls_become_text_for_plain_templates() -> None:
    call = {"id": "0", "type": "function", "function": {"name": "add", "arguments": '{"a":3}'}}
    history = [ChatMessage.model_validate({"role": "assistant", "tool_calls": [call]})]
    rendered, _ = prompt_messages(history, None, tool_prompt=None, template_source=CHATML_TEMPLATE)
    assert json.loads(rendered[0]["content"]) == [
        {
            "id": "0",
            "type": "function",
            "function": {"description": None, "name": "add", "arguments": '{"a":3}'},
        }
    ]


def test_next_tool_call_id() -> None:
    call = {"function": {"name": "add", "arguments": "{}"}}
    history = [
        ChatMessage.model_validate({"role": "assistant", "tool_calls": [{**call, "id": "4"}]}),
        ChatMessage.model_validate({"role": "assistant", "tool_calls": [{**call, "id": "2"}]}),
    ]
    assert next_tool_call_id([]) == "0"
    assert next_tool_call_id(history) == "5"
    other = [ChatMessage.model_validate({"role": "assistant", "tool_calls": [{**call, "id": "x"}]})]
    assert len(next_tool_call_id(other)) == 36  # a UUID


@pytest.mark.parametrize(
    ("text", "name", "arguments"),
    [
        ('{"function": {"_name": "add", "a": 3, "b": {"c": [1, "}"]}}}', "add", None),
        ('{"function": {"_name": "f"}}', "f", {}),
        ('{"function":{"_name":"add","a":3}}', "add", {"a": 3}),
    ],
)
def test_streamed_arguments_concatenate_to_the_arguments(
    text: str, name: str, arguments: dict[str, Any] | None
) -> None:
    expected = parse_tool_output(text)
    assert expected.name == name
    if arguments is not None:
        assert expected.arguments == arguments
    # Every way of cutting the text into two tokens, and one character per token.
    cuts = [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]
    for pieces in cuts:
        stream = ToolCallStream()
        steps = [stream.push(piece) for piece in pieces] + [stream.push("", final=True)]
        names = [step.name for step in steps if step.name is not None]
        assert names == [name], pieces
        assert json.loads("".join(step.arguments for step in steps)) == expected.arguments


def test_stream_reports_no_tool_and_bad_output() -> None:
    stream = ToolCallStream()
    assert not stream.push('{"function": {"_name": "no_t').no_tool
    assert stream.push('ool"').no_tool
    with pytest.raises(TGIError, match="Failed to parse generated text"):
        ToolCallStream().push('{"function": ', final=True)
    offered_by_user = ToolCallStream(no_tool_offered=False)  # required: a tool like any other
    step = offered_by_user.push('{"function": {"_name": "no_tool", "x": 1}}')
    assert step.name == "no_tool" and not step.no_tool
    assert json.loads(step.arguments + offered_by_user.push("", final=True).arguments) == {"x": 1}
    reordered = ToolCallStream()
    assert reordered.push('{"function": {"a": 1, "_name": "add"}}').name is None
    last = reordered.push("", final=True)
    assert last.name == "add" and json.loads(last.arguments) == {"a": 1}
