"""The replay server: recorded answers of real models over TGI's and OpenAI's routes.

``herd serve --replay [MODEL,...]`` (or ``--model replay[:MODEL,...]``, which is what a
config's ``local_servers`` entry with ``model: replay`` runs) serves the bundled recorded
answers (:mod:`langchain_herd.replay`) without loading any model. One process answers for
every recorded model, as a multi-LoRA server does: the model is chosen by ``model`` on the
OpenAI chat route and by ``adapter_id`` on TGI's generate routes. A known question gets the
chosen letter as text (``"The answer is (C)."``), a model with no recorded letter a reply
without one, an unknown question HTTP 422 saying so. ``/info`` and ``/v1/models`` say that it
is a replay and list the models; faults (``/_herd/faults``) and ``/metrics`` work as on the
model server, so the herd's fallbacks can be exercised against it.

Example:
    >>> from langchain_herd.replay import ReplayTable
    >>> from langchain_herd.server import ServerThread
    >>> from langchain_herd.server.replay_app import create_replay_app
    >>> import httpx
    >>> table = ReplayTable.load()
    >>> with ServerThread(create_replay_app(table, models=["gemma-7b"])) as server:
    ...     reply = httpx.post(f"{server.url}/v1/chat/completions", json={
    ...         "model": "gemma-7b",
    ...         "messages": [{"role": "user", "content": table.prompts[0]}]}).json()
    >>> reply["choices"][0]["message"]["content"]
    'The answer is (I).'
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from langchain_herd._version import __version__
from langchain_herd.http_limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    HttpCounters,
    HttpLimits,
)
from langchain_herd.replay import REPLAY_MODEL_ID, ReplayTable
from langchain_herd.server.app import (
    TGI_VERSION,
    FaultRoute,
    clear_faults,
    get_faults,
    health,
    herd_info,
    http_middleware,
    install_http_state,
    set_faults,
)
from langchain_herd.server.faults import FaultConfig, FaultInjector
from langchain_herd.server.replay_state import (
    ReplayFinish,
    ReplayReply,
    ReplayState,
    last_user_turn,
)
from langchain_herd.server.schemas import ChatRequest, GenerateParameters, GenerateRequest
from langchain_herd.server.sse import (
    SSE_DONE,
    SlotStreamingResponse,
    StreamDropped,
    install_drop_log_filter,
    sse_event,
)
from langchain_herd.server.state import parse_body
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ServerLimits

REPLAY_NOTE = (
    "REPLAY: recorded answers of real models (MMLU-Pro, TIGER-AI-Lab eval_results, "
    "Apache-2.0); no model runs on this server"
)

QUESTION_HEADER = "x-replay-question-id"
"""Response header naming the recorded question that was answered."""


def create_replay_app(
    table: ReplayTable,
    *,
    models: Sequence[str] | None = None,
    model_id: str | None = None,
    max_input_tokens: int = 8192,
    max_total_tokens: int = 16384,
    max_concurrent_requests: int = 64,
    faults: FaultConfig | None = None,
    default_max_new_tokens: int = 100,
    compat_return_full_text: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    fault_route: FaultRoute | None = None,
) -> Starlette:
    """Build the replay app.

    Args:
        table: the recorded answers (:meth:`ReplayTable.load`).
        models: the recorded models to answer for (names as :meth:`ReplayTable.resolve_model`
            reads them); default every model of the table.
        model_id: the server's own name in ``/info`` and ``/v1/models`` (default
            :data:`~langchain_herd.replay.REPLAY_MODEL_ID`).
        max_input_tokens: longest accepted prompt (estimated tokens).
        max_total_tokens: most prompt plus new tokens per request.
        max_concurrent_requests: requests in flight beyond this get 429 ``overloaded``.
        faults: faults to inject from the start.
        default_max_new_tokens: ``max_new_tokens`` when a request omits it.
        compat_return_full_text: ``POST /``'s default for ``return_full_text``.
        max_body_bytes: larger request bodies get 413 (before they are read when declared).
        body_timeout_s: a request body must be in within this many seconds of its head.
        header_timeout_s: a request head must be in within this many seconds.
        fault_route: who may use ``/_herd/faults`` (default: anyone, for a loopback server).

    Raises:
        ValueError: an unknown model, no models, or inconsistent limits.
    """
    if not 0 < max_input_tokens < max_total_tokens:
        raise ValueError(
            f"need 0 < max_input_tokens < max_total_tokens, got {max_input_tokens} and "
            f"{max_total_tokens}"
        )
    if max_concurrent_requests < 1:
        raise ValueError(f"max_concurrent_requests must be >= 1, got {max_concurrent_requests}")
    served = resolve_models(table, models)
    http_limits = HttpLimits(
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        header_timeout_s=header_timeout_s,
    )
    install_drop_log_filter()
    state = ReplayState(
        table=table,
        models=tuple(served),
        model_id=model_id or REPLAY_MODEL_ID,
        limits=ServerLimits(
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            max_concurrent_requests=max_concurrent_requests,
            default_max_new_tokens=default_max_new_tokens,
        ),
        faults=FaultInjector(faults),
        compat_return_full_text=compat_return_full_text,
    )
    routes = [
        Route("/", compat_generate, methods=["POST"]),
        Route("/", health, methods=["GET"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/generate_stream", generate_stream, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/_herd/faults", get_faults, methods=["GET"]),
        Route("/_herd/faults", set_faults, methods=["POST"]),
        Route("/_herd/faults", clear_faults, methods=["DELETE"]),
    ]
    counters = HttpCounters()
    app = Starlette(routes=routes, middleware=http_middleware(http_limits, counters))
    app.state.herd = state
    app.state.started_at = int(time.time())
    install_http_state(app, http_limits, counters, fault_route or FaultRoute())
    return app


def resolve_models(table: ReplayTable, names: Sequence[str] | None) -> list[str]:
    """The table's models ``names`` mean (all of them for None or an empty list).

    Raises:
        ValueError: a name that is no recorded model.
    """
    if not names:
        return table.models
    chosen: list[str] = []
    for name in names:
        resolved = table.resolve_model(name)
        if resolved is None:
            raise ValueError(
                f"{name!r} is not a recorded model of {Path(table.source).name}; choose from "
                f"{', '.join(table.models)}"
            )
        if resolved not in chosen:
            chosen.append(resolved)
    return chosen


def _replay_description(state: ReplayState) -> dict[str, Any]:
    return {
        "note": REPLAY_NOTE,
        "questions": len(state.table.unique_rows),
        "models": {m: {"active_params_b": state.table.cost(m)} for m in state.models},
    }


async def info(request: Request) -> Response:
    """``GET /info``: TGI's ``Info`` object, plus a ``replay`` entry saying what is served."""
    state: ReplayState = request.app.state.herd
    limits = state.limits
    return JSONResponse(
        {
            "model_id": state.model_id,
            "model_sha": None,
            "model_dtype": "replay",
            "model_device_type": "replay",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_best_of": limits.max_best_of,
            "max_stop_sequences": limits.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens,
            "max_input_length": limits.max_input_tokens,
            "max_total_tokens": limits.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": None,
            "docker_label": None,
            "herd_version": __version__,
            **herd_info(request),
            "replay": _replay_description(state),
        }
    )


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the server, then each recorded model as an adapter of it (the way
    vLLM lists LoRA modules), so ``herd check`` can verify an expert's ``adapter_id``."""
    state: ReplayState = request.app.state.herd
    started: int = request.app.state.started_at

    def entry(name: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": started,
            "owned_by": "herd-replay",
            "root": name,
            "parent": parent,
            "max_model_len": state.limits.max_total_tokens,
            "replay": True,
        }

    models = [entry(state.model_id, None)] + [entry(m, state.model_id) for m in state.models]
    return JSONResponse({"object": "list", "data": models, "replay": _replay_description(state)})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    state: ReplayState = request.app.state.herd
    text = state.metrics.render(queue_size=0, in_flight=state.in_flight)
    text += request.app.state.http_counters.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


# ------------------------------------------------------------------ admission and faults


async def _admitted(
    state: ReplayState, make: Callable[[], ReplayReply]
) -> tuple[ReplayReply | None, Response | None]:
    """Take a slot, play the faults, and plan the reply; on failure, the error response.

    The slot is held on success (the caller releases it) and freed on failure.
    """
    state.metrics.record_request()
    if not state.try_acquire():
        return None, _error(state, TGIError.overloaded())
    try:
        delay = state.faults.latency_s
        if delay > 0:
            await asyncio.sleep(delay)
        failure = state.faults.take_failure()
        if failure is not None:
            raise failure
        reply = make()
        if state.faults.take_empty():
            reply = ReplayReply(reply.model, reply.question_id, (), "eos_token", reply.input_tokens)
        return reply, None
    except TGIError as error:
        state.release()
        return None, _error(state, error)


def _error(state: ReplayState, error: TGIError) -> JSONResponse:
    # Unlike TGI, errors of a streaming request are HTTP errors too: nothing was generated,
    # and a 4xx that names the unknown question is the clearest answer a client can get.
    state.metrics.record_failure(error.error_type)
    return JSONResponse(error.to_json(), status_code=error.status_code)


def _record(state: ReplayState, started: float, reply: ReplayReply) -> None:
    state.metrics.record_success(
        time.perf_counter() - started, reply.generated_tokens, reply.input_tokens
    )


async def _pieces(state: ReplayState, reply: ReplayReply) -> AsyncIterator[tuple[int, str]]:
    """The reply's tokens (index from 1), with the drop and token-delay faults applied; an
    end-of-sequence token (empty text) closes a reply that ended by itself."""
    drop_after = state.faults.drop_stream_after
    delay = state.faults.token_delay_s
    tokens = [*reply.pieces, *([""] if reply.finish == "eos_token" else [])]
    for index, text in enumerate(tokens, start=1):
        if drop_after is not None and index > drop_after:
            state.metrics.record_failure("dropped")
            raise StreamDropped(f"stream dropped after {drop_after} tokens (injected fault)")
        if delay:
            await asyncio.sleep(delay)
        yield index, text


# ------------------------------------------------------------------ OpenAI chat route


def _chat_finish(finish: ReplayFinish) -> str:
    return "stop" if finish == "eos_token" else finish  # TGI's names, eos as OpenAI's "stop"


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: the recorded reply of the model named by ``model``."""
    state: ReplayState = request.app.state.herd
    started = time.perf_counter()
    try:
        body = await parse_body(request, ChatRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)

    def make() -> ReplayReply:
        if body.tools or body.response_format is not None:
            raise TGIError.validation(
                "the replay server answers with recorded text only; it has no tools, "
                "grammars or response_format"
            )
        users = [m.text() for m in body.messages if m.role == "user"]
        if not users:
            raise TGIError.validation("replay: the request has no user message to look up")
        model = state.model_for(body.model)
        prompt = "\n".join(m.text() for m in body.messages)
        budget = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
        return state.reply(
            model, users[-1], prompt=prompt, max_new_tokens=budget, stop=body.stop_sequences()
        )

    reply, failed = await _admitted(state, make)
    if reply is None:
        assert failed is not None
        return failed
    headers = {QUESTION_HEADER: reply.question_id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _chat_stream(state, reply, include_usage=include_usage, started=started)
        response = SlotStreamingResponse(events, on_close=state.release)
        response.headers.update(headers)
        return response
    try:
        _record(state, started, reply)
        return JSONResponse(
            {
                "object": "chat.completion",
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "created": int(time.time()),
                "model": reply.model,
                "system_fingerprint": f"herd-replay-{__version__}",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.text},
                        "logprobs": None,
                        "finish_reason": _chat_finish(reply.finish),
                    }
                ],
                "usage": _usage(reply),
            },
            headers=headers,
        )
    finally:
        state.release()


def _usage(reply: ReplayReply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.generated_tokens,
        "total_tokens": reply.input_tokens + reply.generated_tokens,
    }


async def _chat_stream(
    state: ReplayState, reply: ReplayReply, *, include_usage: bool, started: float
) -> AsyncIterator[bytes]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    last = len(reply.pieces) + (1 if reply.finish == "eos_token" else 0)

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None) -> bytes:
        return sse_event(
            {
                "object": "chat.completion.chunk",
                "id": chunk_id,
                "created": created,
                "model": reply.model,
                "system_fingerprint": f"herd-replay-{__version__}",
                "choices": choices,
                "usage": usage,
            }
        )

    async for index, text in _pieces(state, reply):
        finish = _chat_finish(reply.finish) if index == last else None
        delta = {"role": "assistant", "content": text}
        yield chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], None)
    _record(state, started, reply)
    if include_usage:
        yield chunk([], _usage(reply))
    yield SSE_DONE


# ------------------------------------------------------------------ TGI generate routes


async def compat_generate(request: Request) -> Response:
    """``POST /``: generate or stream, depending on ``stream``."""
    state: ReplayState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    params = body.parameters or GenerateParameters()
    if params.return_full_text is None:
        params.return_full_text = state.compat_return_full_text
    return await _generate(state, body.inputs, params, stream=body.stream, as_list=True)


async def generate(request: Request) -> Response:
    """``POST /generate``: one reply object."""
    state: ReplayState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    params = body.parameters or GenerateParameters()
    return await _generate(state, body.inputs, params, stream=False, as_list=False)


async def generate_stream(request: Request) -> Response:
    """``POST /generate_stream``: tokens as server-sent events."""
    state: ReplayState = request.app.state.herd
    try:
        body = await parse_body(request, GenerateRequest)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    params = body.parameters or GenerateParameters()
    return await _generate(state, body.inputs, params, stream=True, as_list=False)


async def _generate(
    state: ReplayState, inputs: str, params: GenerateParameters, *, stream: bool, as_list: bool
) -> Response:
    started = time.perf_counter()

    def make() -> ReplayReply:
        if params.grammar is not None:
            raise TGIError.validation(
                "the replay server answers with recorded text only; it has no grammars"
            )
        model = state.model_for(params.adapter_id)
        return state.reply(
            model,
            last_user_turn(inputs),
            prompt=inputs,
            max_new_tokens=params.max_new_tokens,
            stop=list(params.stop),
        )

    reply, failed = await _admitted(state, make)
    if reply is None:
        assert failed is not None
        return failed
    headers = {QUESTION_HEADER: reply.question_id}
    prefix = inputs if params.return_full_text else ""
    if stream:
        events = _generate_stream(state, reply, params, prefix=prefix, started=started)
        response = SlotStreamingResponse(events, on_close=state.release)
        response.headers.update(headers)
        return response
    try:
        _record(state, started, reply)
        out: dict[str, Any] = {"generated_text": prefix + reply.text}
        if params.details:
            tokens = [_token(i, t) for i, t in enumerate([*reply.pieces], start=1)]
            if reply.finish == "eos_token":
                tokens.append(_token(0, ""))
            out["details"] = {
                "finish_reason": reply.finish,
                "generated_tokens": reply.generated_tokens,
                "seed": None,
                "prefill": [],
                "tokens": tokens,
            }
        return JSONResponse([out] if as_list else out, headers=headers)
    finally:
        state.release()


def _token(index: int, text: str) -> dict[str, Any]:
    # Replayed text has no tokenizer ids: pieces are numbered, the end-of-sequence is id 0.
    return {"id": index, "text": text, "logprob": 0.0, "special": text == ""}


async def _generate_stream(
    state: ReplayState,
    reply: ReplayReply,
    params: GenerateParameters,
    *,
    prefix: str,
    started: float,
) -> AsyncIterator[bytes]:
    last = len(reply.pieces) + (1 if reply.finish == "eos_token" else 0)
    async for index, text in _pieces(state, reply):
        final = index == last
        payload: dict[str, Any] = {
            "index": index,
            "token": _token(index if text else 0, text),
            "generated_text": prefix + reply.text if final else None,
            "details": None,
        }
        if final and params.details:
            payload["details"] = {
                "finish_reason": reply.finish,
                "generated_tokens": reply.generated_tokens,
                "seed": None,
                "input_length": reply.input_tokens,
            }
        yield sse_event(payload)
    _record(state, started, reply)
