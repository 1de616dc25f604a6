"""The OpenAI-compatible routes TGI serves: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The prompt is the tokenizer's chat template applied to the messages. ``response_format`` and
``tools`` constrain the reply with a grammar (:mod:`~langchain_herd.server.grammar`); tool calls
are read and streamed as TGI does (:mod:`~langchain_herd.server.tools`). Errors before generation
answer with TGI's status and body (huggingface_hub raises ``HfHubHTTPError`` for them on this
route); errors inside a stream are ``data: {"error", "error_type"}`` events, which
huggingface_hub turns into its ``TextGenerationError`` subclasses. Like TGI, template and tool
errors (unknown forced tool, ``tools`` with ``response_format``) are HTTP errors even for a
stream, while validation errors (a bad schema included) arrive inside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from langchain_herd._version import __version__
from langchain_herd.server.generation import Finish, TokenEvent, TokenInfo
from langchain_herd.server.schemas import ChatRequest, GenerateParameters, Grammar
from langchain_herd.server.sse import (
    SSE_DONE,
    SlotStreamingResponse,
    error_stream_response,
    sse_event,
)
from langchain_herd.server.state import ServerState, parse_body
from langchain_herd.server.stream_guard import StreamOutcome, guarded, token_events
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.tools import (
    NO_TOOL,
    ToolCallStream,
    ToolSelection,
    next_tool_call_id,
    parse_tool_output,
    prompt_messages,
    select_tools,
    tool_call,
)
from langchain_herd.server.validation import (
    INLINE_PROMPT_CHARS,
    ValidatedRequest,
    chat_parameters,
    validate_generate,
)

logger = logging.getLogger("langchain_herd.server")

SYSTEM_FINGERPRINT = f"herd-{__version__}"
"""``system_fingerprint`` of chat replies (TGI sends ``<version>-<docker label>``)."""


_HTTP_EVEN_WHEN_STREAMING = ("template_error", "tool_error")
"""Error types TGI raises while turning a chat request into a generation, before any stream."""


@dataclass(frozen=True)
class ChatPlan:
    """A validated chat request and how to read its output.

    Attributes:
        validated: the generation to run first.
        tool_call_id: set when tools were offered: the output is a tool call with this id.
        without_tools: for ``auto``: validates the same request without tools, run when the
            model chooses ``no_tool`` (TGI then generates a plain reply).
    """

    validated: ValidatedRequest
    tool_call_id: str | None = None
    without_tools: Callable[[], ValidatedRequest] | None = None


def _finish_reason(finish: Finish) -> str:
    # TGI's FinishReason::format(true): only eos_token becomes "stop"; the rest keep TGI's names.
    return "stop" if finish.reason == "eos_token" else finish.reason


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the served model, then any listed adapters.

    TGI lists the one model; like vLLM's, the entries here also carry ``max_model_len`` (the
    model's ``max_total_tokens``) and each adapter names its base model as ``parent``, so
    clients can read limits and adapters from either protocol's routes.
    """
    state: ServerState = request.app.state.herd
    started: int = request.app.state.started_at

    def entry(name: str, parent: str | None, max_model_len: int | None) -> dict[str, object]:
        return {
            "id": name,
            "object": "model",
            "created": started,
            "owned_by": state.model_id,
            "root": name,
            "parent": parent,
            "max_model_len": max_model_len,
        }

    models = [entry(state.model_id, None, state.limits.max_total_tokens)]
    models += [entry(adapter, state.model_id, None) for adapter in state.adapters]
    return JSONResponse({"object": "list", "data": models})


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: a chat reply, streamed or not."""
    state: ServerState = request.app.state.herd
    try:
        body = await parse_body(request, ChatRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    started = time.perf_counter()
    state.metrics.record_request()
    if not state.try_acquire():
        return _fail(state, TGIError.overloaded(), stream=body.stream, release=None)
    handed_over = False
    try:
        await state.apply_latency()
        failure = state.faults.take_failure()
        if failure is not None:
            return state.error_response(failure)  # a failing server: HTTP status, even for streams
        try:
            plan = await _avalidate(state, body)
        except TGIError as error:
            if error.error_type in _HTTP_EVEN_WHEN_STREAMING:
                return state.error_response(error)
            handed_over = body.stream
            return _fail(state, error, stream=body.stream, release=state.release)
        empty = state.faults.take_empty()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _chat_stream(
                state,
                plan,
                logprobs=bool(body.logprobs),
                include_usage=include_usage,
                empty=empty,
                drop_after=state.faults.drop_stream_after,
                started=started,
            )
            handed_over = True  # the response frees the slot when it ends
            return SlotStreamingResponse(events, on_close=state.release)
        return await _chat_reply(
            state, plan, logprobs=bool(body.logprobs), empty=empty, started=started
        )
    except asyncio.CancelledError:  # the client left (HttpLimitsMiddleware cancels the request)
        state.metrics.record_failure("cancelled")
        raise
    except TGIError as error:
        return state.error_response(error)
    except Exception as exc:
        logger.exception("chat generation failed")
        return state.error_response(TGIError.generation(str(exc)))
    finally:
        if not handed_over:
            state.release()


def _fail(
    state: ServerState, error: TGIError, *, stream: bool, release: Callable[[], None] | None
) -> Response:
    # Like TGI, a streaming request learns of overload and validation errors inside the stream.
    if not stream:
        return state.error_response(error)
    state.metrics.record_failure(error.error_type)
    return error_stream_response(error.to_json(), on_close=release, trailer=SSE_DONE)


async def _avalidate(state: ServerState, body: ChatRequest) -> ChatPlan:
    # Rendering and tokenizing a long conversation is CPU work that would hold the event loop.
    if sum(len(message.text()) for message in body.messages) <= INLINE_PROMPT_CHARS:
        return _validate(state, body)
    return await anyio.to_thread.run_sync(lambda: _validate(state, body))


def _validate(state: ServerState, body: ChatRequest) -> ChatPlan:
    # TGI's order: tools and response_format together, then the tool choice, then the template,
    # then the generate validation (where the grammar is compiled).
    if body.tools is not None and body.response_format is not None:
        raise TGIError.tool("Grammar and tools are mutually exclusive")
    params = chat_parameters(body, state.limits)
    # As TGI: `model` names the LoRA adapter (ignored when none is loaded: clients send
    # "dummy" or the URL).
    params.adapter_id = None if body.model == state.model_id else body.model
    if body.response_format is not None:
        params.grammar = body.response_format.grammar()
        return ChatPlan(_validated(state, body, params, None))
    selection = select_tools(body.tools, body.tool_choice) if body.tools else None
    if selection is None:
        return ChatPlan(_validated(state, body, params, None))
    params.grammar = Grammar(type="json", value=selection.schema)
    validated = _validated(state, body, params, selection)
    offers_no_tool = any(tool.function.name == NO_TOOL for tool in selection.tools)
    return ChatPlan(
        validated,
        tool_call_id=next_tool_call_id(body.messages),
        without_tools=(
            (lambda: _validated(state, body, chat_parameters(body, state.limits), None))
            if offers_no_tool
            else None
        ),
    )


def _validated(
    state: ServerState,
    body: ChatRequest,
    params: GenerateParameters,
    selection: ToolSelection | None,
) -> ValidatedRequest:
    messages, tools = prompt_messages(
        body.messages,
        selection,
        tool_prompt=body.tool_prompt,
        template_source=state.backend.chat_template_source,
    )
    try:
        prompt = state.backend.render_chat(messages, tools)
    except Exception as exc:
        raise TGIError.template(str(exc)) from exc
    return validate_generate(
        prompt, params, backend=state.backend, limits=state.limits, add_special_tokens=False
    )


def _usage(validated: ValidatedRequest, generated_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": validated.input_length,
        "completion_tokens": generated_tokens,
        "total_tokens": validated.input_length + generated_tokens,
    }


def _logprob_entry(token: TokenInfo, top: tuple[TokenInfo, ...]) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top],
    }


async def _generate(
    state: ServerState, validated: ValidatedRequest
) -> tuple[list[dict[str, Any]], Finish]:
    entries: list[dict[str, Any]] = []
    finish = Finish("eos_token", 0, "", None)
    # aclosing: leaving the loop early must stop the generation now, not at GC.
    async with aclosing(state.backend.agenerate(validated.plan)) as events:
        async for event in events:
            if isinstance(event, TokenEvent):
                entries.append(_logprob_entry(event.token, event.top_tokens))
                finish = event.finish or finish
    return entries, finish


async def _chat_reply(
    state: ServerState, plan: ChatPlan, *, logprobs: bool, empty: bool, started: float
) -> Response:
    validated = plan.validated
    entries: list[dict[str, Any]] = []
    finish = Finish("eos_token", 0, "", None)
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    if not empty:
        entries, finish = await _generate(state, validated)
        message["content"] = finish.generated_text
        if plan.tool_call_id is not None:
            choice = parse_tool_output(finish.generated_text)
            if choice.name == NO_TOOL and plan.without_tools is not None:
                validated = plan.without_tools()
                entries, finish = await _generate(state, validated)
                message["content"] = finish.generated_text
            else:
                # OpenAI's shape: content null beside the calls (TGI leaves the key out).
                call = tool_call(plan.tool_call_id, choice.name, choice.arguments)
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
    state.metrics.record_success(
        time.perf_counter() - started, finish.generated_tokens, validated.input_length
    )
    reply = {
        "object": "chat.completion",
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": state.model_id,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": entries} if logprobs else None,
                "finish_reason": _finish_reason(finish),
            }
        ],
        "usage": _usage(validated, finish.generated_tokens),
    }
    return JSONResponse(reply)


async def _chat_stream(
    state: ServerState,
    plan: ChatPlan,
    *,
    logprobs: bool,
    include_usage: bool,
    empty: bool,
    drop_after: int | None,
    started: float,
) -> AsyncIterator[bytes]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None, logprob: Any) -> bytes:
        return sse_event(
            {
                "object": "chat.completion.chunk",
                "id": chunk_id,
                "created": created,
                "model": state.model_id,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": logprob,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": None,
            }
        )

    def logprob_of(event: TokenEvent) -> Any:
        if not logprobs:
            return None
        return {"content": [_logprob_entry(event.token, event.top_tokens)]}

    def tool_delta(name: str | None, arguments: str) -> dict[str, Any]:
        call = {
            "index": 0,
            "id": plan.tool_call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        return {"role": "assistant", "tool_calls": [call]}

    outcome = StreamOutcome()
    final = plan.validated
    generated = 0

    async def content(validated: ValidatedRequest) -> AsyncGenerator[bytes, None]:
        nonlocal generated
        async for event in token_events(state, validated.plan, drop_after, outcome):
            # Special tokens (the end-of-turn marker) are not part of the reply's text.
            text = "" if event.token.special else event.token.text
            reason = _finish_reason(event.finish) if event.finish else None
            yield chunk({"role": "assistant", "content": text}, reason, logprob_of(event))
            if event.finish is not None:
                generated = event.finish.generated_tokens

    async def tool_call_chunks() -> AsyncGenerator[bytes, None]:
        nonlocal generated, final
        calls = ToolCallStream(no_tool_offered=plan.without_tools is not None)
        no_tool = False
        events = token_events(state, plan.validated.plan, drop_after, outcome)
        async with aclosing(events):  # a no_tool answer stops this generation early
            async for event in events:
                step = calls.push(
                    "" if event.token.special else event.token.text,
                    final=event.finish is not None,
                )
                if step.no_tool:
                    no_tool = True
                    break
                reason = _finish_reason(event.finish) if event.finish else None
                if step.name is not None or step.arguments or reason is not None:
                    yield chunk(tool_delta(step.name, step.arguments), reason, logprob_of(event))
                if event.finish is not None:
                    generated = event.finish.generated_tokens
        if no_tool and plan.without_tools is not None:
            final = plan.without_tools()
            async for data in content(final):
                yield data

    async def body() -> AsyncGenerator[bytes, None]:
        if empty:
            yield chunk({"role": "assistant", "content": ""}, "stop", None)
        else:
            parts = content(final) if plan.tool_call_id is None else tool_call_chunks()
            async with aclosing(parts):
                async for data in parts:
                    yield data
        state.metrics.record_success(time.perf_counter() - started, generated, final.input_length)
        outcome.recorded = True
        if include_usage:
            yield sse_event(
                {
                    "object": "chat.completion.chunk",
                    "id": chunk_id,
                    "created": created,
                    "model": state.model_id,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": _usage(final, generated),
                }
            )

    async for data in guarded(state, body(), outcome, "chat generation"):
        yield data
    yield SSE_DONE
