"""A validated chat completion request as one ``HerdRouter`` call: messages, kwargs, config.

Everything the router already understands is handed over as it is (``model``, ``tools``,
``tool_choice``, ``response_format``, standard parameters, ``thread_id``); this module only
renames what OpenAI spells differently and refuses what cannot be routed, before any expert
is called.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import ToolCall as LCToolCall
from langchain_core.runnables import RunnableConfig

from langchain_herd.chat_models import THREAD_KEY, HerdRouter
from langchain_herd.endpoint.openai_errors import ApiError
from langchain_herd.endpoint.schemas import ChatCompletionRequest, ContentPart, Message, ToolCall

HERD_MODEL = "herd"
"""The model id that lets the herd route (``/v1/models`` lists it first)."""
EXPERT_PREFIX = "herd/"
"""``herd/<expert>`` pins that expert."""
THREAD_HEADER = "x-herd-thread-id"
"""Request header naming the conversation, so follow-ups stay with their expert (sticky
routes). With ``ChatOpenAI``: ``default_headers={"x-herd-thread-id": "..."}``."""
MAX_THREAD_ID = 256
"""Longest accepted thread id (it becomes a session key)."""


@dataclass(frozen=True)
class RouterCall:
    """One request, ready for ``HerdRouter.ainvoke`` / ``astream``."""

    messages: list[BaseMessage]
    """The conversation."""
    kwargs: dict[str, Any]
    """Call kwargs (``model``, ``tools``, ``stop``, ...)."""
    config: RunnableConfig = field(default_factory=RunnableConfig)
    """``configurable`` with the thread id, when one was sent."""
    stream: bool = False
    """Answer as server-sent events."""
    include_usage: bool = False
    """Send a usage chunk at the end of a stream."""


def served_models(router: HerdRouter) -> dict[str, str | None]:
    """Every ``model`` value the endpoint accepts, mapped to the pinned expert (or None)."""
    models: dict[str, str | None] = {HERD_MODEL: None, router.engine.name: None}
    for expert in router.experts.values():
        if expert.model_id:
            models.setdefault(expert.model_id, None)
    for name in router.experts:
        models[name] = name
        models[EXPERT_PREFIX + name] = name
    return models


def router_call(
    body: ChatCompletionRequest, router: HerdRouter, *, thread_id: str | None = None
) -> RouterCall:
    """Translate a request body; refuse what the herd cannot route.

    Raises:
        ApiError: 404 for an unknown model, 400 for a message or option that cannot be routed.
    """
    kwargs: dict[str, Any] = {}
    kwargs.update(_model(body.model, served_models(router)))
    for key in ("temperature", "top_p", "seed", "frequency_penalty"):
        value = getattr(body, key)
        if value is not None:
            kwargs[key] = value
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if body.stop:
        kwargs["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    kwargs.update(_tools(body))
    if body.response_format is not None and body.response_format.type != "text":
        kwargs["response_format"] = _response_format(body)
    config: RunnableConfig = {}
    if thread_id is not None:
        if not thread_id.strip() or len(thread_id) > MAX_THREAD_ID:
            raise ApiError(
                400,
                f"the {THREAD_HEADER} header must hold 1 to {MAX_THREAD_ID} characters",
                param=THREAD_HEADER,
                code="invalid_value",
            )
        config = {"configurable": {THREAD_KEY: thread_id}}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return RouterCall(
        messages=to_messages(body.messages),
        kwargs=kwargs,
        config=config,
        stream=body.stream,
        include_usage=include_usage,
    )


def _model(model: str, served: Collection[str]) -> dict[str, Any]:
    if model not in served:
        listed = ", ".join(sorted(served))
        raise ApiError(
            404,
            f"the model {model!r} does not exist in this herd; use one of: {listed} "
            f"(GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )
    # The router reads any other value itself: its name routes, an expert pins, a model id
    # restricts the call to the experts serving it.
    return {} if model == HERD_MODEL else {"model": model}


def _tools(body: ChatCompletionRequest) -> dict[str, Any]:
    if not body.tools:
        if body.tool_choice not in (None, "none", "auto"):
            raise ApiError(
                400,
                "tool_choice asks for a tool call but no tools were sent",
                param="tool_choice",
                code="invalid_value",
            )
        return {}
    out: dict[str, Any] = {"tools": [tool.model_dump(exclude_none=True) for tool in body.tools]}
    choice = body.tool_choice
    if choice is not None and not isinstance(choice, str):
        names = [tool.function.name for tool in body.tools]
        if choice.function.name not in names:
            raise ApiError(
                400,
                f"tool_choice names {choice.function.name!r}, which is not among the tools "
                f"sent ({names})",
                param="tool_choice.function.name",
                code="invalid_value",
            )
        out["tool_choice"] = choice.model_dump(exclude_none=True)
    elif choice is not None:
        out["tool_choice"] = choice
    if body.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = body.parallel_tool_calls
    return out


def _response_format(body: ChatCompletionRequest) -> dict[str, Any]:
    response_format = body.response_format
    assert response_format is not None
    if response_format.type == "json_object":
        return {"type": "json_object"}
    spec = response_format.json_schema
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise ApiError(
            400,
            "response_format of type json_schema needs json_schema.schema (a JSON schema object)",
            param="response_format.json_schema.schema",
            code="missing_required_parameter",
        )
    return {"type": "json_schema", "json_schema": spec}


def to_messages(messages: list[Message]) -> list[BaseMessage]:
    """OpenAI messages as LangChain messages.

    Raises:
        ApiError: 400 naming the message field that cannot be routed.
    """
    out: list[BaseMessage] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.role in ("system", "developer"):
            out.append(SystemMessage(content=_text(message, where)))
        elif message.role == "user":
            out.append(HumanMessage(content=_text(message, where), name=message.name))
        elif message.role == "tool":
            if not message.tool_call_id:
                raise ApiError(
                    400,
                    f"{where} has role tool but no tool_call_id",
                    param=f"{where}.tool_call_id",
                    code="missing_required_parameter",
                )
            out.append(
                ToolMessage(content=_text(message, where), tool_call_id=message.tool_call_id)
            )
        else:
            calls = [
                _tool_call(call, f"{where}.tool_calls[{i}]")
                for i, call in enumerate(message.tool_calls or [])
            ]
            text = _text(message, where, optional=bool(calls))
            out.append(AIMessage(content=text, tool_calls=calls, name=message.name))
    return out


def _text(message: Message, where: str, *, optional: bool = False) -> str:
    content = message.content
    if content is None:
        if optional:
            return ""
        raise ApiError(
            400,
            f"{where} ({message.role}) has no content",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    if isinstance(content, str):
        return content
    return "".join(_part_text(part, f"{where}.content[{i}]") for i, part in enumerate(content))


def _part_text(part: ContentPart, where: str) -> str:
    if part.type != "text" or part.text is None:
        raise ApiError(
            400,
            f"{where} is a {part.type!r} part; the herd routes text only (parts of type "
            f"'text' with a 'text' field)",
            param=f"{where}.type",
            code="unsupported_content",
        )
    return part.text


def _tool_call(call: ToolCall, where: str) -> LCToolCall:
    try:
        args = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"{where}.function.arguments is not valid JSON ({exc})",
            param=f"{where}.function.arguments",
            code="invalid_value",
        ) from None
    if not isinstance(args, dict):
        raise ApiError(
            400,
            f"{where}.function.arguments must encode a JSON object",
            param=f"{where}.function.arguments",
            code="invalid_value",
        )
    return LCToolCall(name=call.function.name, args=args, id=call.id, type="tool_call")
