"""``POST /v1/chat/completions``: one request, one ``HerdRouter.ainvoke`` or ``astream``.

Routing, fallbacks, breakers, pins and sticky threads are the router's; this handler reads
the body (size-limited), translates it, calls the router and translates the answer back.

A stream is opened before the response starts: the router falls back only before the first
token, so until that token arrives a failure can still be answered with a proper status
(502/503, 400) and the ``x-herd-expert`` header can name the expert actually streaming.
After it, a failure can only be reported in-band: a last SSE event with OpenAI's error body,
then ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from langchain_core.messages import AIMessageChunk
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from langchain_herd.chat_models import STREAMING_KEY, HerdRouter
from langchain_herd.decision import RouteDecision
from langchain_herd.endpoint.body import read_json
from langchain_herd.endpoint.metrics import RouterMetrics
from langchain_herd.endpoint.openai_errors import ApiError, api_error_for
from langchain_herd.endpoint.schemas import parse_request
from langchain_herd.endpoint.to_langchain import THREAD_HEADER, RouterCall, router_call
from langchain_herd.endpoint.to_openai import ChunkWriter, completion, decision_headers
from langchain_herd.engine import DECISION_KEY
from langchain_herd.errors import AllExpertsFailedError, StreamInterruptedError
from langchain_herd.server.sse import SSE_DONE, SSE_HEADERS, sse_event


class ChatCompletions:
    """The chat completion route over one router.

    Args:
        router: the herd.
        metrics: where decisions are counted.
        max_body_bytes: largest accepted request body.
    """

    def __init__(self, router: HerdRouter, metrics: RouterMetrics, max_body_bytes: int) -> None:
        self.router = router
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        """The Starlette endpoint."""
        body = parse_request(await read_json(request, self.max_body_bytes))
        call = router_call(body, self.router, thread_id=request.headers.get(THREAD_HEADER))
        if call.stream:
            return await self._stream(call)
        return await self._invoke(call)

    def _failed(self, exc: Exception) -> ApiError:
        if isinstance(exc, AllExpertsFailedError):
            self.metrics.record_decision(exc.decision)
        return api_error_for(exc, self.router.breakers)

    async def _invoke(self, call: RouterCall) -> Response:
        try:
            answer = await self.router.ainvoke(call.messages, call.config, **call.kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        decision = RouteDecision.model_validate(answer.response_metadata[DECISION_KEY])
        self.metrics.record_decision(decision)
        headers = decision_headers(decision, decision.answered_by)
        return JSONResponse(completion(answer, decision), headers=headers)

    async def _stream(self, call: RouterCall) -> Response:
        chunks = self.router.astream(call.messages, call.config, **call.kwargs)
        try:
            first = await chunks.__anext__()
        except Exception as exc:
            await _close(chunks)
            raise self._failed(exc) from exc
        snapshot = first.response_metadata.get(STREAMING_KEY)
        before = RouteDecision.model_validate(snapshot) if snapshot else None
        expert = before.streaming if before else None
        writer = ChunkWriter(expert, include_usage=call.include_usage)
        return StreamingResponse(
            self._events(first, chunks, writer, before),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **decision_headers(before, expert)},
        )

    async def _events(
        self,
        first: AIMessageChunk,
        chunks: AsyncIterator[AIMessageChunk],
        writer: ChunkWriter,
        before: RouteDecision | None,
    ) -> AsyncIterator[bytes]:
        final: RouteDecision | None = None
        try:
            async for chunk in _prepend(first, chunks):
                decided = chunk.response_metadata.get(DECISION_KEY)
                if decided:
                    final = RouteDecision.model_validate(decided)
                event = writer.delta(chunk)
                if event is not None:
                    yield sse_event(event)
            for event in writer.finish(final):
                yield sse_event(event)
            if final is not None:
                self.metrics.record_decision(final)
        except Exception as exc:
            if isinstance(exc, StreamInterruptedError):
                self.metrics.record_broken_stream(before, exc.expert)
            yield sse_event(api_error_for(exc, self.router.breakers).payload())
        finally:
            # Also on a client that went away: closing the router's stream closes the
            # expert's, and frees a half-open breaker's probe slot.
            await _close(chunks)
        yield SSE_DONE


async def _close(chunks: AsyncIterator[AIMessageChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        # Shielded: on a client disconnect the response's task is being cancelled, and an
        # unshielded await would be cancelled too, leaving the expert's stream open.
        with anyio.CancelScope(shield=True):
            await aclose()


async def _prepend(
    first: AIMessageChunk, rest: AsyncIterator[AIMessageChunk]
) -> AsyncIterator[AIMessageChunk]:
    yield first
    async for chunk in rest:
        yield chunk
