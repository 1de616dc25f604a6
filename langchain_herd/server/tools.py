"""Tool calling on the chat route, as TGI does it: the tool grammar, the tools in the prompt, tool
calls in the history, and the generated JSON turned into OpenAI ``tool_calls``.

What TGI does (``router/src/infer/tool_grammar.rs``, ``chat_template.rs``, ``chat.rs``,
``lib.rs``) and this module copies:

- ``tool_choice`` picks the tools offered: ``auto`` (the default) adds a ``no_tool`` function,
  ``required`` offers them all, a name (or ``{"type": "function", "function": {"name"}}``)
  offers that one (``Tool error: Tool with name X not found`` otherwise), ``none`` offers none
  and the reply is plain text.
- The output must match a JSON schema for ``{"function": {"_name": "<tool>", <arguments>}}``:
  one closed object per tool, ``_name`` a constant followed by the tool's parameters.
- The prompt: a template that uses a ``tools`` variable gets the tools there and the tool prompt
  is appended to the last message; for any other template (SmolLM2's) the last message gets
  ``"\\n---\\n"``, the tools as JSON (``arguments`` as a string, as TGI serializes them) and the
  tool prompt.
- The reply: ``no_tool`` makes TGI generate again without tools, as a plain reply; any other
  name becomes one call ``{"id", "type": "function", "function": {"description": null,
  "name", "arguments": "<JSON string>"}}``. ``finish_reason`` stays TGI's usual one (``stop``
  at the end-of-sequence token): TGI does not send OpenAI's ``tool_calls`` reason.
- Streaming: nothing is sent until the tool's name is known; then each chunk carries
  ``delta.tool_calls[{index: 0, id, type, function: {name, arguments: <piece>}}]``, the name in
  the first one only, the argument pieces concatenating to the arguments' JSON.
- History: an assistant message with ``tool_calls`` is rendered, for templates that do not
  render ``tool_calls`` themselves, as text holding the calls' JSON (TGI's way); ``tool``
  messages keep their role and content. Templates that know ``tool_calls`` get them as
  structured messages (transformers' convention: ``arguments`` as an object), with
  ``tool_call_id`` on tool results.

Call ids follow TGI: one more than the largest integer id in the history (``"0"`` first), or a
UUID when the history uses other ids.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_herd.server.schemas import (
    ChatMessage,
    FunctionDefinition,
    NamedToolChoice,
    Tool,
)
from langchain_herd.server.tgi_errors import TGIError

NO_TOOL = "no_tool"
"""The function ``auto`` adds: choosing it means "answer in plain text"."""

NO_TOOL_DEFINITION = Tool(
    type="function",
    function=FunctionDefinition(
        name=NO_TOOL,
        description="Open ended response with no specific tool selected",
        parameters={"type": "object"},
    ),
)
"""TGI's ``no_tool`` function, word for word."""

DEFAULT_TOOL_PROMPT = (
    "\nGiven the functions available, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt. Respond in the format {name: function "
    "name, parameters: dictionary of argument name and its value}.Do not use variables.\n"
)
"""TGI's default ``tool_prompt`` (its missing space after the full stop included)."""

# The start of a tool call up to its name, in the layout the grammar allows (and a looser one).
_NAME_PREFIX = re.compile(r'\s*\{\s*"function"\s*:\s*\{\s*"_name"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ToolSelection:
    """The tools a request offers the model and the schema its output must match.

    Attributes:
        tools: the tools offered (``no_tool`` included for ``auto``), in request order.
        schema: the JSON schema of the output.
    """

    tools: tuple[Tool, ...]
    schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCallChoice:
    """A parsed tool-call output: the function's name and its arguments."""

    name: str
    arguments: dict[str, Any]


def select_tools(
    tools: Sequence[Tool], tool_choice: str | NamedToolChoice | None
) -> ToolSelection | None:
    """The tools offered under ``tool_choice``, or None when the reply must be plain text.

    Raises:
        TGIError: ``tool_error`` (422) naming a tool that is not in ``tools``.

    Example:
        >>> add = Tool(function=FunctionDefinition(name="add"))
        >>> [tool.function.name for tool in select_tools([add], "auto").tools]
        ['add', 'no_tool']
        >>> select_tools([add], "none") is None
        True
    """
    if tool_choice is None or tool_choice == "auto":
        offered = [*tools, NO_TOOL_DEFINITION]
    elif tool_choice == "none":
        return None
    elif tool_choice == "required":
        offered = list(tools)
    else:
        # TGI reads any other string as a function name.
        name = tool_choice if isinstance(tool_choice, str) else tool_choice.function.name
        found = [tool for tool in tools if tool.function.name == name]
        if not found:
            raise TGIError.tool(f"Tool with name {name} not found")
        offered = found[:1]
    if not offered:
        return None
    return ToolSelection(tuple(offered), tool_schema(offered))


def tool_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """TGI's tool-call schema: ``{"function": <one of the tools' argument objects>}``.

    Each tool becomes a closed object whose first key ``_name`` is the tool's name, followed by
    its parameters (required ones stay required). Unlike TGI, the parameters' own ``$defs`` are
    kept at the root, so their ``#/$defs/...`` references still resolve.
    """
    functions: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for tool in tools:
        definition = tool.function
        parameters = definition.parameters
        properties: dict[str, Any] = {"_name": {"type": "string", "const": definition.name}}
        properties.update(parameters.get("properties") or {})
        functions[definition.name] = {
            "description": definition.description or "",
            "type": "object",
            "properties": properties,
            "required": ["_name", *(parameters.get("required") or [])],
            "additionalProperties": parameters.get("additionalProperties") is True,
        }
        defs.update(parameters.get("$defs") or {})
    references = [{"$ref": f"#/$functions/{_pointer(name)}"} for name in functions]
    schema: dict[str, Any] = {
        "$functions": functions,
        "type": "object",
        "properties": {"function": {"anyOf": references}},
        "required": ["function"],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _compact(value: Any) -> str:
    # serde_json's layout, which TGI's JSON has: no spaces, non-ASCII kept.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")  # JSON pointer escaping


def template_uses_tools(template_source: str) -> bool:
    """Whether a chat template reads a ``tools`` variable (TGI's test, via Jinja's AST)."""
    import jinja2
    import jinja2.meta

    try:
        ast = jinja2.Environment().parse(template_source)
    except jinja2.TemplateError:  # extensions transformers adds ({% generation %}, ...)
        return re.search(r"\btools\b", template_source) is not None
    return "tools" in jinja2.meta.find_undeclared_variables(ast)


def template_renders_tool_calls(template_source: str) -> bool:
    """Whether a chat template renders assistant ``tool_calls`` itself."""
    return "tool_calls" in template_source


def prompt_messages(
    messages: Sequence[ChatMessage],
    selection: ToolSelection | None,
    *,
    tool_prompt: str | None,
    template_source: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and ``tools``) to render with the chat template.

    Args:
        messages: the request's messages.
        selection: the tools offered, or None.
        tool_prompt: the request's ``tool_prompt`` (empty or None: TGI's default).
        template_source: the chat template, to see what it renders itself.

    Returns:
        ``(messages, tools)``: the template's messages, and its ``tools`` variable (None when
        no tools are offered or the template has no such variable).
    """
    structured = template_renders_tool_calls(template_source)
    rendered = [_template_message(message, structured=structured) for message in messages]
    if selection is None:
        return rendered, None
    prompt = tool_prompt or DEFAULT_TOOL_PROMPT
    template_tools: list[dict[str, Any]] | None = None
    if template_uses_tools(template_source):
        template_tools = [_template_tool(tool) for tool in selection.tools]
        addition = f"\n---\n{prompt}"
    else:
        addition = f"\n---\n{_tools_json(selection.tools)}\n{prompt}"
    if messages and not messages[-1].tool_calls:  # TGI appends to a text message only
        rendered[-1]["content"] = f"{rendered[-1]['content']}{addition}"
    return rendered, template_tools


def _template_message(message: ChatMessage, *, structured: bool) -> dict[str, Any]:
    text = message.text()
    entry: dict[str, Any] = {"role": message.role, "content": text}
    if message.name is not None:
        entry["name"] = message.name
    if message.tool_calls:
        if structured:
            entry["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments_object(call.function.arguments),
                    },
                }
                for call in message.tool_calls
            ]
        else:
            calls = _compact(
                [
                    {
                        "id": call.id,
                        "type": call.type,
                        "function": {
                            "description": None,
                            "name": call.function.name,
                            "arguments": _arguments_text(call.function.arguments),
                        },
                    }
                    for call in message.tool_calls
                ]
            )
            entry["content"] = f"{text}\n{calls}" if text else calls
    if structured and message.tool_call_id is not None:
        entry["tool_call_id"] = message.tool_call_id
    return entry


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return _compact(arguments if arguments is not None else {})


def _template_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.function.name, "parameters": tool.function.parameters}
    if tool.function.description is not None:
        function["description"] = tool.function.description
    return {"type": tool.type, "function": function}


def _tools_json(tools: Sequence[Tool]) -> str:
    # TGI's serde output: compact, `arguments` serialized as a string, description may be null.
    return _compact(
        [
            {
                "type": tool.type,
                "function": {
                    "description": tool.function.description,
                    "name": tool.function.name,
                    "arguments": _compact(tool.function.parameters),
                },
            }
            for tool in tools
        ]
    )


def parse_tool_output(text: str) -> ToolCallChoice:
    """Read ``{"function": {"_name": ..., ...}}`` from a generation.

    Raises:
        TGIError: ``tool_error`` when the text is not such an object (say, cut by
            ``max_tokens``), with TGI's ``Failed to parse generated text`` message.

    Example:
        >>> parse_tool_output('{"function": {"_name": "add", "a": 3, "b": 4}}')
        ToolCallChoice(name='add', arguments={'a': 3, 'b': 4})
    """
    try:
        function = dict(json.loads(text)["function"])
        name = function.pop("_name")
        if not isinstance(name, str):
            raise TypeError("`_name` is not a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise TGIError.tool(f"Failed to parse generated text: {exc} {text!r}") from exc
    return ToolCallChoice(name, function)


def tool_call(call_id: str, name: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """One OpenAI ``tool_calls`` entry as TGI writes it (``description`` null, arguments a
    compact JSON string)."""
    if not isinstance(arguments, str):
        arguments = _compact(dict(arguments))
    return {
        "id": call_id,
        "type": "function",
        "function": {"description": None, "name": name, "arguments": arguments},
    }


def next_tool_call_id(messages: Sequence[ChatMessage]) -> str:
    """TGI's id for a new call: one past the history's largest integer id, else a UUID."""
    next_id = 0
    for message in messages:
        for call in message.tool_calls or []:
            if not call.id.isdigit():
                return str(uuid.uuid4())
            next_id = max(next_id, int(call.id) + 1)
    return str(next_id)


@dataclass(frozen=True)
class ToolStreamStep:
    """What one streamed token adds to a tool call.

    Attributes:
        name: the tool's name, on the step where it became known (send it once).
        arguments: the next piece of the arguments' JSON ("" for none).
        no_tool: the model chose ``no_tool``: the caller generates a plain reply instead.
    """

    name: str | None = None
    arguments: str = ""
    no_tool: bool = False


class ToolCallStream:
    """Turns the text of a tool-call generation, as it streams, into argument pieces.

    The generation reads ``{"function": {"_name": "add", "a": 3, "b": 4}}``. Nothing is sent
    before the name is complete; then the arguments are sent as written, starting with ``{``,
    the comma after the name skipped. Closing braces and whitespace at the end are held back
    until more text comes, because the last ``}`` closes the wrapper and is not sent.

    Args:
        no_tool_offered: whether ``no_tool`` means "answer in text" (``auto``); otherwise a
            tool of that name is called like any other.

    Example:
        >>> stream = ToolCallStream()
        >>> pieces = ['{"function": {"_name": "add"', ', "a": 3}', "}"]
        >>> steps = [stream.push(p) for p in pieces] + [stream.push("", final=True)]
        >>> steps[0].name, "".join(step.arguments for step in steps)
        ('add', '{"a": 3}')
    """

    def __init__(self, *, no_tool_offered: bool = True) -> None:
        self._no_tool_offered = no_tool_offered
        self._text = ""
        self._name: str | None = None
        self._arguments_from = 0
        self._sent = 0

    def push(self, piece: str, *, final: bool = False) -> ToolStreamStep:
        """Add the next piece of generated text.

        Args:
            piece: the token's text ("" for special tokens).
            final: this is the last token: flush everything held back.

        Raises:
            TGIError: ``tool_error`` when the generation ended and is no tool call.
        """
        self._text += piece
        found: str | None = None
        if self._name is None:
            match = _NAME_PREFIX.match(self._text)
            if match is None:
                return self._finish_unparsed() if final else ToolStreamStep()
            found = json.loads(f'"{match.group(1)}"')
            if found == NO_TOOL and self._no_tool_offered:
                return ToolStreamStep(no_tool=True)
            self._name = found
            self._arguments_from = match.end()
        body = self._body()
        if final:
            try:
                json.loads(self._text)
            except ValueError:
                pass  # cut short (max_tokens): send what was written
            else:
                body = body.rstrip()
                body = body[:-1] if body.endswith("}") else body  # the wrapper's brace
            ready = body
        else:
            ready = body.rstrip("} \t\r\n")
        new = ready[self._sent :]
        self._sent = max(self._sent, len(ready))
        return ToolStreamStep(name=found, arguments=("{" if found is not None else "") + new)

    def _body(self) -> str:
        # The arguments after the name, without the comma that separates them from it.
        rest = self._text[self._arguments_from :].lstrip()
        return rest[1:].lstrip() if rest.startswith(",") else rest

    def _finish_unparsed(self) -> ToolStreamStep:
        # The name never showed up in the expected layout: read the whole output instead.
        choice = parse_tool_output(self._text)
        if choice.name == NO_TOOL and self._no_tool_offered:
            return ToolStreamStep(no_tool=True)
        self._name = choice.name
        return ToolStreamStep(name=choice.name, arguments=_compact(choice.arguments))
