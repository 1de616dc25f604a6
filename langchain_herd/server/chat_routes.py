"""The OpenAI-compatible routes TGI serves: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The prompt is the tokenizer's chat template applied to the messages. Errors before generation
answer with TGI's status and body (huggingface_hub raises ``HfHubHTTPError`` for them on this
route); errors inside a stream are ``data: {"error", "error_type"}`` events, which
huggingface_hub turns into its ``TextGenerationError`` subclasses.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from langchain_herd._version import __version__
from langchain_herd.server.generation import Finish, TokenEvent, TokenInfo
from langchain_herd.server.schemas import ChatRequest
from langchain_herd.server.sse import (
    SSE_DONE,
    SlotStreamingResponse,
    error_stream_response,
    sse_event,
)
from langchain_herd.server.state import ServerState, parse_body
from langchain_herd.server.stream_guard import StreamOutcome, guarded, token_events
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ValidatedRequest, chat_parameters, validate_generate

logger = logging.getLogger("langchain_herd.server")

SYSTEM_FINGERPRINT = f"herd-{__version__}"
"""``system_fingerprint`` of chat replies (TGI sends ``<version>-<docker label>``)."""


def _finish_reason(finish: Finish) -> str:
    # TGI's FinishReason::format(true): only eos_token becomes "stop"; the rest keep TGI's names.
    return "stop" if finish.reason == "eos_token" else finish.reason


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the one served model."""
    state: ServerState = request.app.state.herd
    started: int = request.app.state.started_at
    model = {
        "id": state.model_id,
        "object": "model",
        "created": started,
        "owned_by": state.model_id,
    }
    return JSONResponse({"object": "list", "data": [model]})


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: a chat reply, streamed or not."""
    state: ServerState = request.app.state.herd
    try:
        body = await parse_body(request, ChatRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    if body.model not in (None, "tgi", state.model_id):
        # TGI would use it as a LoRA adapter id; clients send "dummy" or the URL, so ignore it.
        logger.debug("ignoring chat model/adapter %r", body.model)
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
            validated = _validate(state, body)
        except TGIError as error:
            if error.error_type == "template_error":  # TGI renders the template before streaming
                return state.error_response(error)
            handed_over = body.stream
            return _fail(state, error, stream=body.stream, release=state.release)
        empty = state.faults.take_empty()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _chat_stream(
                state,
                validated,
                logprobs=bool(body.logprobs),
                include_usage=include_usage,
                empty=empty,
                drop_after=state.faults.drop_stream_after,
                started=started,
            )
            handed_over = True  # the response frees the slot when it ends
            return SlotStreamingResponse(events, on_close=state.release)
        return await _chat_reply(
            state, validated, logprobs=bool(body.logprobs), empty=empty, started=started
        )
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


def _validate(state: ServerState, body: ChatRequest) -> ValidatedRequest:
    if body.tools or body.response_format is not None:
        raise TGIError.validation("grammar is not supported")  # tools need TGI's grammars
    messages: list[dict[str, str]] = []
    for message in body.messages:
        entry = {"role": message.role, "content": message.text()}
        if message.name is not None:
            entry["name"] = message.name
        messages.append(entry)
    try:
        prompt = state.backend.render_chat(messages)
    except Exception as exc:
        raise TGIError.template(str(exc)) from exc
    return validate_generate(
        prompt,
        chat_parameters(body, state.limits),
        backend=state.backend,
        limits=state.limits,
        add_special_tokens=False,
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


async def _chat_reply(
    state: ServerState, validated: ValidatedRequest, *, logprobs: bool, empty: bool, started: float
) -> Response:
    entries: list[dict[str, Any]] = []
    finish = Finish("eos_token", 0, "", None)
    if not empty:
        # aclosing: leaving the loop early must stop the generation now, not at GC.
        async with aclosing(state.backend.agenerate(validated.plan)) as events:
            async for event in events:
                if isinstance(event, TokenEvent):
                    entries.append(_logprob_entry(event.token, event.top_tokens))
                    finish = event.finish or finish
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
                "message": {"role": "assistant", "content": finish.generated_text},
                "logprobs": {"content": entries} if logprobs else None,
                "finish_reason": _finish_reason(finish),
            }
        ],
        "usage": _usage(validated, finish.generated_tokens),
    }
    return JSONResponse(reply)


async def _chat_stream(
    state: ServerState,
    validated: ValidatedRequest,
    *,
    logprobs: bool,
    include_usage: bool,
    empty: bool,
    drop_after: int | None,
    started: float,
) -> AsyncIterator[bytes]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(content: str, finish_reason: str | None, logprob: Any) -> bytes:
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
                        "delta": {"role": "assistant", "content": content},
                        "logprobs": logprob,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": None,
            }
        )

    outcome = StreamOutcome()

    async def body() -> AsyncGenerator[bytes, None]:
        generated = 0
        if empty:
            yield chunk("", "stop", None)
        else:
            async for event in token_events(state, validated.plan, drop_after, outcome):
                # Special tokens (the end-of-turn marker) are not part of the reply's text.
                content = "" if event.token.special else event.token.text
                logprob = (
                    {"content": [_logprob_entry(event.token, event.top_tokens)]}
                    if logprobs
                    else None
                )
                reason = _finish_reason(event.finish) if event.finish else None
                yield chunk(content, reason, logprob)
                if event.finish is not None:
                    generated = event.finish.generated_tokens
        state.metrics.record_success(
            time.perf_counter() - started, generated, validated.input_length
        )
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
                    "usage": _usage(validated, generated),
                }
            )

    async for data in guarded(state, body(), outcome, "chat generation"):
        yield data
    yield SSE_DONE
