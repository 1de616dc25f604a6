"""Server-sent events as TGI writes them, and the two pieces a stream needs around Starlette.

- :class:`SlotStreamingResponse` frees the request's concurrency slot however the stream ends
  (finished, failed, client gone, or never started).
- :class:`StreamDropped` is raised to cut a stream on purpose (the ``drop_stream_after`` fault):
  an exception after the headers were sent makes uvicorn close the connection without ending
  the chunked body, which clients see as ``httpx.RemoteProtocolError``. A log filter keeps that
  deliberate cut out of uvicorn's error log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_DONE = b"data: [DONE]\n\n"
"""The OpenAI end-of-stream marker (sent by the chat route only, like TGI)."""

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers TGI sends with its streams (no proxy buffering)."""


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One ``data: {json}`` event."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class StreamDropped(Exception):
    """Raised inside a stream to cut the connection abruptly (an injected fault)."""


class SlotStreamingResponse(StreamingResponse):
    """An SSE response that calls ``on_close`` exactly once when its ASGI call ends.

    Args:
        content: the byte chunks to send.
        on_close: frees what the request held (its concurrency slot).
    """

    def __init__(self, content: AsyncIterable[bytes], *, on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def error_stream_response(
    error: Mapping[str, Any], *, on_close: Callable[[], None] | None = None, trailer: bytes = b""
) -> SlotStreamingResponse:
    """A 200 stream holding one error event (and ``trailer``), as TGI reports errors in streams.

    Args:
        error: the ``{"error", "error_type"}`` body.
        on_close: frees the request's slot, if it holds one.
        trailer: bytes sent after the error (the chat route's ``[DONE]``).
    """

    async def events() -> AsyncIterator[bytes]:
        yield sse_event(error)
        if trailer:
            yield trailer

    return SlotStreamingResponse(events(), on_close=on_close or (lambda: None))


class _DroppedStreamLogFilter(logging.Filter):
    """Hides uvicorn's traceback for streams cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _contains_drop(exc)


def _contains_drop(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:  # the drop may come wrapped in an exception group
        if isinstance(exc, StreamDropped):
            return True
        grouped = getattr(exc, "exceptions", None)  # an exception group (no 3.10 builtin)
        if isinstance(grouped, tuple):
            return any(_contains_drop(inner) for inner in grouped)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


_filter_installed = False


def install_drop_log_filter() -> None:
    """Attach the filter to uvicorn's error logger (once per process)."""
    global _filter_installed
    if not _filter_installed:
        logging.getLogger("uvicorn.error").addFilter(_DroppedStreamLogFilter())
        _filter_installed = True
