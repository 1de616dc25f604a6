"""The chat completion request as OpenAI clients send it, validated with pydantic.

Unknown fields are allowed (clients add fields over time; ``store``, ``metadata``, ``user``
change nothing here); known fields are checked strictly, so ``"temperature": "hot"`` is a 400
naming ``temperature`` rather than a failure deep inside an expert's client. Options the herd
cannot honour on every expert are refused by name (:data:`UNSUPPORTED`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_herd.endpoint.openai_errors import ApiError


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Wire):
    """One part of a message's content; only ``text`` parts are routed."""

    type: str
    """``text`` (others, such as ``image_url``, are refused)."""
    text: str | None = None
    """The text of a ``text`` part."""


class FunctionCall(_Wire):
    """The function an assistant message called."""

    name: str
    """Tool name."""
    arguments: str
    """Arguments as a JSON text."""


class ToolCall(_Wire):
    """A tool call in an assistant message of the history."""

    id: str
    """Call id, answered by a ``tool`` message with the same ``tool_call_id``."""
    type: Literal["function"] = "function"
    """Always ``function``."""
    function: FunctionCall
    """What was called."""


class Message(_Wire):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    """Who wrote it (``developer`` is read as ``system``)."""
    content: str | list[ContentPart] | None = None
    """Text, or a list of text parts."""
    name: str | None = None
    """Optional author name."""
    tool_calls: list[ToolCall] | None = None
    """Tool calls of an assistant message."""
    tool_call_id: str | None = None
    """The call a ``tool`` message answers."""


class FunctionSpec(_Wire):
    """A function the model may call."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Tool name."""
    description: str | None = None
    """What it does."""
    parameters: dict[str, Any] | None = None
    """JSON schema of its arguments."""
    strict: bool | None = None
    """Ask for strict schema adherence."""


class Tool(_Wire):
    """A tool offered to the model."""

    type: Literal["function"]
    """Always ``function``."""
    function: FunctionSpec
    """The function."""


class ToolChoiceFunction(_Wire):
    """``{"name": ...}`` of a forced tool."""

    name: str
    """The tool to call."""


class NamedToolChoice(_Wire):
    """Force one tool: ``{"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    """Always ``function``."""
    function: ToolChoiceFunction
    """Which tool."""


class ResponseFormat(_Wire):
    """``{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}``."""

    type: Literal["text", "json_object", "json_schema"]
    """The kind of output wanted."""
    json_schema: dict[str, Any] | None = None
    """``{"name", "schema", "strict"}`` for ``json_schema``."""


class StreamOptions(_Wire):
    """Options of a streamed reply."""

    include_usage: bool = False
    """Send a last chunk with ``usage`` and no choices."""


class ChatCompletionRequest(_Wire):
    """Body of ``POST /v1/chat/completions``.

    Example:
        >>> ChatCompletionRequest.model_validate(
        ...     {"model": "herd", "messages": [{"role": "user", "content": "Hi"}]}
        ... ).stream
        False
    """

    model: str = "herd"
    """``herd`` (route), ``herd/<expert>`` (pin one), or a model id some experts serve."""
    messages: list[Message] = Field(min_length=1)
    """The conversation."""
    stream: bool = False
    """Answer as server-sent events."""
    stream_options: StreamOptions | None = None
    """Options of a streamed reply."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature (0: greedy)."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens generated."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """OpenAI's newer name of ``max_tokens`` (wins over it)."""
    stop: str | list[str] | None = None
    """Stop sequences."""
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    """Sampling seed; 0 to 2**63 - 1, a range every expert protocol takes (TGI's is a u64)."""
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Penalty on frequent tokens."""
    tools: list[Tool] | None = None
    """Tools the model may call (only experts that can call tools are ranked)."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """Whether and which tool to call."""
    parallel_tool_calls: bool | None = None
    """Allow several tool calls in one answer."""
    response_format: ResponseFormat | None = None
    """Structured output (only experts that can honour it are ranked)."""
    n: int | None = None
    """Number of choices; only 1."""
    logprobs: bool | None = None
    """Not supported (refused when true)."""
    top_logprobs: int | None = None
    """Not supported."""
    logit_bias: dict[str, float] | None = None
    """Not supported (refused when not empty)."""
    presence_penalty: float | None = None
    """Not supported (refused when not 0): TGI's generate route has no such parameter."""


UNSUPPORTED: dict[str, str] = {
    "functions": "the legacy `functions` parameter is not supported; send `tools` instead",
    "function_call": "the legacy `function_call` parameter is not supported; use `tool_choice`",
    "audio": "audio output is not supported by the herd",
    "prediction": "predicted outputs are not supported by the herd",
    "web_search_options": "web search is not supported by the herd",
}
"""Extra fields refused by name, with why (other unknown fields are ignored)."""


def check_supported(body: ChatCompletionRequest) -> None:
    """Refuse options the herd cannot honour, naming the parameter.

    Raises:
        ApiError: 400 ``unsupported_parameter``.
    """
    problems: list[tuple[str, str]] = []
    if body.n not in (None, 1):
        problems.append(("n", f"n={body.n}: the herd returns one choice; send n=1 or leave it out"))
    if body.logprobs:
        problems.append(("logprobs", "logprobs are not supported by the herd"))
    if body.top_logprobs is not None:
        problems.append(("top_logprobs", "top_logprobs are not supported by the herd"))
    if body.logit_bias:
        problems.append(("logit_bias", "logit_bias is not supported by the herd"))
    if body.presence_penalty:
        problems.append(
            (
                "presence_penalty",
                "presence_penalty is not supported by every expert protocol of the herd "
                "(TGI's generate route has none); use frequency_penalty",
            )
        )
    extra = body.model_extra or {}
    problems += [(name, why) for name, why in UNSUPPORTED.items() if extra.get(name) is not None]
    modalities = extra.get("modalities")
    if modalities is not None and modalities != ["text"]:
        problems.append(("modalities", "only text output is supported by the herd"))
    if problems:
        param, message = problems[0]
        raise ApiError(400, message, param=param, code="unsupported_parameter")


def parse_request(data: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body.

    Raises:
        ApiError: 400 naming the first wrong field (OpenAI answers wrong types with 400).
    """
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "the request body must be a JSON object, such as "
            '{"model": "herd", "messages": [{"role": "user", "content": "..."}]}',
            code="invalid_request",
        )
    try:
        body = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_supported(body)
    return body


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Segments pydantic adds to an error's location for the members of a union type.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def param_of(loc: tuple[int | str, ...]) -> str:
    """OpenAI's spelling of a field path (``messages[0].role``), without union member tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _FIELD.match(part) and part not in _UNION_TAGS:
            out += f".{part}" if out else part
    return out


def validation_error(exc: ValidationError) -> ApiError:
    """The most specific field a body got wrong, as a 400."""
    errors = exc.errors(include_url=False)
    located = [(param_of(tuple(e["loc"])), e) for e in errors]
    param = max((p for p, _ in located), key=len)
    mine = [e for p, e in located if p == param]
    messages = list(dict.fromkeys(e["msg"] for e in mine))
    kinds = {e["type"] for e in mine}
    if kinds == {"missing"}:
        code = "missing_required_parameter"
    elif all(kind.endswith("_type") for kind in kinds):
        code = "invalid_type"
    else:
        code = "invalid_value"
    got = mine[0].get("input")
    shown = "" if "missing" in kinds else f" (got {_short(got)})"
    return ApiError(
        400, f"invalid '{param}': {' or '.join(messages)}{shown}", param=param, code=code
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
