"""TGI's generate routes: ``POST /``, ``POST /generate`` and ``POST /generate_stream``.

Replies follow TGI: ``/`` answers a one-element list (or a stream when ``stream`` is true),
``/generate`` the bare object; errors before a stream starts are still sent inside the stream
(HTTP 200 and one ``data: {"error", "error_type"}`` event), except injected failures, which
play a failing server and answer with their HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from langchain_herd.server.generation import Finish, PrefillEvent, TokenInfo
from langchain_herd.server.schemas import GenerateParameters, GenerateRequest
from langchain_herd.server.sse import (
    SlotStreamingResponse,
    error_stream_response,
    sse_event,
)
from langchain_herd.server.state import ServerState, parse_body
from langchain_herd.server.stream_guard import StreamOutcome, guarded, token_events
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ValidatedRequest, avalidate_generate

logger = logging.getLogger("langchain_herd.server")


async def compat_generate(request: Request) -> Response:
    """``POST /``: generate or stream, depending on ``stream``."""
    state: ServerState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    params = _parameters(body, state)
    if params.return_full_text is None:
        params.return_full_text = state.compat_return_full_text
    if body.stream:
        return await stream_reply(state, body.inputs, params)
    return await generate_reply(state, body.inputs, params, as_list=True)


async def generate(request: Request) -> Response:
    """``POST /generate``: one reply object."""
    state: ServerState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    return await generate_reply(state, body.inputs, _parameters(body, state), as_list=False)


async def generate_stream(request: Request) -> Response:
    """``POST /generate_stream``: tokens as server-sent events."""
    state: ServerState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    return await stream_reply(state, body.inputs, _parameters(body, state))


def _parameters(body: GenerateRequest, state: ServerState) -> GenerateParameters:
    # A request without a "parameters" object gets TGI's default_parameters(), which sample.
    params = body.parameters if body.parameters is not None else GenerateParameters(do_sample=True)
    if params.adapter_id == state.model_id:  # the served name is the base model
        params.adapter_id = None
    # Any other `adapter_id` picks a loaded LoRA adapter in validation (ignored without any).
    return params


async def generate_reply(
    state: ServerState, inputs: str, params: GenerateParameters, *, as_list: bool
) -> Response:
    """Run a non-streaming generation and answer TGI's ``GenerateResponse``."""
    started = time.perf_counter()
    state.metrics.record_request()
    if not state.try_acquire():
        return state.error_response(TGIError.overloaded())
    try:
        await state.apply_latency()
        failure = state.faults.take_failure()
        if failure is not None:
            return state.error_response(failure)
        validated = await avalidate_generate(
            inputs, params, backend=state.backend, limits=state.limits
        )
        if state.faults.take_empty():
            prefill: tuple[TokenInfo, ...] = ()
            tokens: list[TokenInfo] = []
            top_tokens: list[tuple[TokenInfo, ...]] = []
            finish = _empty_finish(validated)
        else:
            prefill, tokens, top_tokens, finish = await _collect(state, validated)
        state.metrics.record_success(
            time.perf_counter() - started, finish.generated_tokens, validated.input_length
        )
        reply: dict[str, Any] = {"generated_text": _output_text(validated, finish)}
        if validated.details:
            reply["details"] = _details(finish, prefill, tokens, top_tokens, validated)
        return JSONResponse([reply] if as_list else reply)
    except asyncio.CancelledError:  # the client left (HttpLimitsMiddleware cancels the request)
        state.metrics.record_failure("cancelled")
        raise
    except TGIError as error:
        return state.error_response(error)
    except Exception as exc:
        logger.exception("generation failed")
        return state.error_response(TGIError.generation(str(exc)))
    finally:
        state.release()


async def _collect(
    state: ServerState, validated: ValidatedRequest
) -> tuple[tuple[TokenInfo, ...], list[TokenInfo], list[tuple[TokenInfo, ...]], Finish]:
    prefill: tuple[TokenInfo, ...] = ()
    tokens: list[TokenInfo] = []
    top_tokens: list[tuple[TokenInfo, ...]] = []
    finish: Finish | None = None
    # aclosing: leaving the loop early must stop the generation now, not at GC.
    async with aclosing(state.backend.agenerate(validated.plan)) as events:
        async for event in events:
            if isinstance(event, PrefillEvent):
                prefill = event.tokens
                continue
            tokens.append(event.token)
            top_tokens.append(event.top_tokens)
            finish = event.finish or finish
    if finish is None:  # the loop always finishes its last token; this is a guard
        raise TGIError("Incomplete generation", "incomplete_generation")
    return prefill, tokens, top_tokens, finish


def _empty_finish(validated: ValidatedRequest) -> Finish:
    seed = validated.plan.sampling.seed if validated.plan.sampling.sampling else None
    return Finish(reason="eos_token", generated_tokens=0, generated_text="", seed=seed)


def _output_text(validated: ValidatedRequest, finish: Finish) -> str:
    if validated.return_full_text:
        return validated.inputs + finish.generated_text
    return finish.generated_text


def _details(
    finish: Finish,
    prefill: tuple[TokenInfo, ...],
    tokens: list[TokenInfo],
    top_tokens: list[tuple[TokenInfo, ...]],
    validated: ValidatedRequest,
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": finish.reason,
        "generated_tokens": finish.generated_tokens,
        "seed": finish.seed,
        "prefill": [token.to_prefill_json() for token in prefill],
        "tokens": [token.to_json() for token in tokens],
    }
    if validated.plan.top_n_tokens:  # TGI leaves the field out when it is empty
        details["top_tokens"] = [[t.to_json() for t in step] for step in top_tokens]
    return details


async def stream_reply(state: ServerState, inputs: str, params: GenerateParameters) -> Response:
    """Run a streaming generation and answer TGI's SSE stream."""
    started = time.perf_counter()
    state.metrics.record_request()
    if not state.try_acquire():
        return _error_stream(state, TGIError.overloaded(), release=None)
    handed_over = False
    try:
        await state.apply_latency()
        failure = state.faults.take_failure()
        if failure is not None:
            return state.error_response(failure)
        try:
            validated = await avalidate_generate(
                inputs, params, backend=state.backend, limits=state.limits, stream=True
            )
        except TGIError as error:
            handed_over = True
            return _error_stream(state, error, release=state.release)
        events = _stream_events(
            state,
            validated,
            empty=state.faults.take_empty(),
            drop_after=state.faults.drop_stream_after,
            started=started,
        )
        handed_over = True  # from here the response frees the slot when it ends
        return SlotStreamingResponse(events, on_close=state.release)
    finally:
        if not handed_over:
            state.release()


def _error_stream(
    state: ServerState, error: TGIError, *, release: Callable[[], None] | None
) -> Response:
    state.metrics.record_failure(error.error_type)
    return error_stream_response(error.to_json(), on_close=release)


def _stream_events(
    state: ServerState,
    validated: ValidatedRequest,
    *,
    empty: bool,
    drop_after: int | None,
    started: float,
) -> AsyncIterator[bytes]:
    outcome = StreamOutcome()
    body = _stream_body(
        state, validated, empty=empty, drop_after=drop_after, started=started, outcome=outcome
    )
    return guarded(state, body, outcome, "generation")


async def _stream_body(
    state: ServerState,
    validated: ValidatedRequest,
    *,
    empty: bool,
    drop_after: int | None,
    started: float,
    outcome: StreamOutcome,
) -> AsyncGenerator[bytes, None]:
    if empty:
        finish = _empty_finish(validated)
        token = TokenInfo(_eos_id(state), "", 0.0, special=True)
        yield sse_event(_stream_payload(1, token, (), finish, validated))
        state.metrics.record_success(time.perf_counter() - started, 0, validated.input_length)
        outcome.recorded = True
        return
    index = 0
    async for event in token_events(state, validated.plan, drop_after, outcome):
        index += 1
        yield sse_event(
            _stream_payload(index, event.token, event.top_tokens, event.finish, validated)
        )
        if event.finish is not None:
            state.metrics.record_success(
                time.perf_counter() - started,
                event.finish.generated_tokens,
                validated.input_length,
            )
            outcome.recorded = True


def _eos_id(state: ServerState) -> int:
    return min(state.backend.eos_token_ids) if state.backend.eos_token_ids else 0


def _stream_payload(
    index: int,
    token: TokenInfo,
    top_tokens: tuple[TokenInfo, ...],
    finish: Finish | None,
    validated: ValidatedRequest,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"index": index, "token": token.to_json()}
    if validated.plan.top_n_tokens:  # TGI leaves ``top_tokens`` out when none were asked for
        payload["top_tokens"] = [t.to_json() for t in top_tokens]
    payload["generated_text"] = _output_text(validated, finish) if finish else None
    payload["details"] = None
    if finish is not None and validated.details:
        payload["details"] = {
            "finish_reason": finish.reason,
            "generated_tokens": finish.generated_tokens,
            "seed": finish.seed,
            "input_length": validated.input_length,
        }
    return payload
