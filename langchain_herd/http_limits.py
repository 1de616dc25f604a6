"""What both servers (``herd serve``, ``herd serve-router``) do about hostile or slow clients.

Two layers, because uvicorn alone bounds neither a request's size nor its pace:

- :func:`guarded_http_protocol`, uvicorn's own HTTP protocol with a deadline on the request
  head: a client that connects and sends nothing, or trickles its headers, or lets a response
  go and then trickles an unread body, gets ``408`` and is disconnected after
  ``header_timeout_s``; a header section past ``max_header_bytes`` gets ``431``. uvicorn has
  no such deadline (``timeout_keep_alive`` only runs between requests, and any byte resets it).
- :class:`HttpLimitsMiddleware`, an ASGI layer around the app: a declared ``Content-Length``
  over ``max_body_bytes`` gets ``413`` before a byte of the body is read; a chunked body is
  counted as it arrives and cut with ``413`` at the limit; the whole body must arrive within
  ``body_timeout_s`` of the head (else ``408``); and a client that leaves before its response
  starts has its request cancelled, which stops the generation it was waiting for.

Refusals close the connection (``Connection: close``): the rest of an unread body must not be
parsed as a next request. Their body takes the route's error shape (TGI's or OpenAI's), given
by the server as an :data:`ErrorShape`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NoReturn

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("langchain_herd.http")

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
"""2 MiB. The largest prompt any expert accepts (128k tokens, ~0.5 MB of text, ~1.2 MB when
non-ASCII text is JSON-escaped) fits; a body that takes seconds to parse and tokenize does not."""

DEFAULT_BODY_TIMEOUT_S = 30.0
"""The whole body within 30 s of the head: 2 MiB needs only ~70 KB/s."""

DEFAULT_HEADER_TIMEOUT_S = 10.0
"""A request head within 10 s of its first byte (or of connecting). Real clients send it in
one packet; nginx and Node allow 60 s, which keeps a trickling client's socket that long."""

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
"""64 KiB of request line and headers (nginx: 32 KiB, h11: 16 KiB; httptools has no limit)."""

ErrorShape = Callable[[str, int, str, str], dict[str, Any]]
"""``(path, status, message, code) -> JSON body`` of a refusal on that path."""


@dataclass(frozen=True)
class HttpLimits:
    """The size and time limits of one server's requests.

    Attributes:
        max_body_bytes: larger request bodies get 413, before they are read when declared.
        body_timeout_s: seconds after the request head by which the whole body must be in.
        header_timeout_s: seconds for a request head to arrive, counted from the connection
            (the first request) or from its first byte (later ones on a kept-alive connection).
        max_header_bytes: larger request heads get 431.

    Example:
        >>> HttpLimits(max_body_bytes=1024).describe()["max_body_bytes"]
        1024
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("body_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")

    def describe(self) -> dict[str, int | float]:
        """The limits as ``/info`` states them."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "body_timeout_s": self.body_timeout_s,
            "header_timeout_s": self.header_timeout_s,
            "max_header_bytes": self.max_header_bytes,
        }


class HttpCounters:
    """How often each limit refused a request, and how many clients left mid-request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str) -> None:
        """Count one event (``body_too_large``, ``body_timeout``, ``client_gone``, ...)."""
        with self._lock:
            self._counts[reason] += 1

    def get(self, reason: str) -> int:
        """How many ``reason`` events so far."""
        with self._lock:
            return self._counts[reason]

    def render(self) -> str:
        """Prometheus text: ``herd_http_refused_total`` and ``herd_http_client_gone_total``."""
        with self._lock:
            counts = dict(self._counts)
        lines = ["# TYPE herd_http_refused_total counter"]
        lines += [
            f'herd_http_refused_total{{reason="{reason}"}} {count}'
            for reason, count in sorted(counts.items())
            if reason != "client_gone"
        ]
        lines += [
            "# TYPE herd_http_client_gone_total counter",
            f"herd_http_client_gone_total {counts.get('client_gone', 0)}",
        ]
        return "\n".join(lines) + "\n"


def tgi_error_shape(path: str, status: int, message: str, code: str) -> dict[str, Any]:
    """TGI's ``{"error", "error_type"}`` body (every size or time refusal is ``validation``)."""
    return {"error": message, "error_type": "validation"}


def openai_error_shape(path: str, status: int, message: str, code: str) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}`` body."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Refused(Exception):
    """Raised into the app once a refusal was sent, to unwind its request."""


class HttpLimitsMiddleware:
    """ASGI middleware enforcing the body limits of :class:`HttpLimits` and stopping the work
    of clients that leave.

    Args:
        app: the app to guard.
        limits: the limits.
        error_shape: the JSON body of a refusal on a path.
        counters: where refusals and departures are counted (a new one by default).

    Example:
        >>> from starlette.applications import Starlette
        >>> app = HttpLimitsMiddleware(Starlette(), HttpLimits(), openai_error_shape)
        >>> app.limits.max_body_bytes
        2097152
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: HttpLimits,
        error_shape: ErrorShape,
        counters: HttpCounters | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.error_shape = error_shape
        self.counters = counters or HttpCounters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _GuardedRequest(self, scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limits.max_body_bytes:
            self.counters.add("body_too_large")
            await request.refuse_now(413, request.too_large(declared), "request_too_large")
            return
        await request.run()


class _GuardedRequest:
    """One request under :class:`HttpLimitsMiddleware`: counts and times its body, then, once
    the body is in, watches for the client leaving (the ASGI server's next ``receive``)."""

    def __init__(
        self, guard: HttpLimitsMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.guard = guard
        self.scope = scope
        self._receive = receive
        self._send = send
        self.deadline = time.monotonic() + guard.limits.body_timeout_s
        self.received = 0
        self.body_done = False
        self.started = False  # the response's head went out (the app's or a refusal's)
        self.refused = False
        self.gone = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.cancel_scope = anyio.CancelScope()

    def too_large(self, size: int | None) -> str:
        told = f"{size} bytes" if size is not None else "more bytes"
        return (
            f"the request body ({told}) exceeds this server's limit of "
            f"{self.guard.limits.max_body_bytes} bytes (--max-body-bytes)"
        )

    async def run(self) -> None:
        try:
            with self.cancel_scope:
                await self.guard.app(self.scope, self.receive, self.send)
        except Exception:
            if not self.refused:
                raise
            # The refusal is the answer; whatever the app made of it is moot.
        finally:
            if self.watcher is not None:
                self.watcher.cancel()
        if self.cancel_scope.cancelled_caught:
            self.guard.counters.add("client_gone")
            logger.info(
                "%s %s: the client left before its answer; request cancelled",
                self.scope.get("method"),
                self.scope.get("path"),
            )
            # nginx's 499 "client closed request": the server drops it (the client is gone),
            # but middleware outside this one (request metrics) counts it as that, not a 500.
            await self._send({"type": "http.response.start", "status": 499, "headers": []})
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive(self) -> Message:
        if self.body_done:
            # The server's own receive now belongs to the watcher; the app (a streaming
            # response listening for a disconnect) learns of it from the watcher.
            await self.gone.wait()
            return {"type": "http.disconnect"}
        limits = self.guard.limits
        try:
            with anyio.fail_after(max(self.deadline - time.monotonic(), 0.0)):
                message = await self._receive()
        except TimeoutError:
            self.guard.counters.add("body_timeout")
            await self.refuse(
                408,
                f"the request body did not arrive within {limits.body_timeout_s:g} s "
                "(--body-timeout)",
                "request_timeout",
            )
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > limits.max_body_bytes:
                self.guard.counters.add("body_too_large")
                await self.refuse(413, self.too_large(None), "request_too_large")
            if not message.get("more_body", False):
                self.body_done = True
                self.watcher = asyncio.get_running_loop().create_task(self._watch())
        elif message["type"] == "http.disconnect":
            self.body_done = True
            self.gone.set()
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # a refusal already answered: drop what the app still sends
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _watch(self) -> None:
        # After the last body message the server's receive returns only when the client
        # disconnects or the response is complete.
        await self._receive()
        self.gone.set()
        if not self.started:
            self.cancel_scope.cancel()

    async def refuse(self, status: int, message: str, code: str) -> NoReturn:
        """Answer ``status`` (if the response has not started) and unwind the app."""
        if not self.started:
            await self.refuse_now(status, message, code)
        self.refused = True
        raise _Refused(message)

    async def refuse_now(self, status: int, message: str, code: str) -> None:
        self.started = True
        self.refused = True
        body = json.dumps(self.guard.error_shape(self.scope["path"], status, message, code))
        content = body.encode()
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": content, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses a malformed length before the app runs
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``127.0.0.1``, ``::1``, ``localhost``).

    A host name other than ``localhost`` counts as not loopback: it may resolve to any interface.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def reach_of(host: str) -> str:
    """How a start line says who can reach a server listening on ``host``."""
    if is_loopback(host):
        return "loopback only"
    return "reachable beyond this machine"


def guarded_http_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools or h11, whichever it picks) with the head limits.

    Pass it as ``uvicorn.Config(http=...)``.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        """Times out and size-limits request heads (see the module docstring)."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0
            self._arm()

        def _in_request(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_bytes = 0
                self._head_timer = self.loop.call_later(limits.header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def data_received(self, data: bytes) -> None:
            if not self._in_request():
                self._arm()  # the first byte of a new request head (or of a trickled body)
            before = getattr(self, "cycle", None)
            if self._head_timer is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if getattr(self, "cycle", None) is not before:
                self._disarm()  # a head is complete: the app and its body limits take over
            elif self._head_timer is not None and self._head_bytes > limits.max_header_bytes:
                self._disarm()
                self._reject(431, f"request head over {limits.max_header_bytes} bytes")

        def on_response_complete(self) -> None:
            cycle = getattr(self, "cycle", None)
            super().on_response_complete()
            if cycle is not None and cycle.more_body and not self.transport.is_closing():
                # Answered before its body was read (401, 404, a refusal): the rest of that
                # body must not be parsed, or waited for, as the head of a next request.
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _expire(self) -> None:
            self._head_timer = None
            if self._in_request():
                return  # pipelined heads wait for the running request; its body is timed above
            self._reject(408, f"no complete request head within {limits.header_timeout_s:g} s")

        def _reject(self, status: int, reason: str) -> None:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            logger.info("closing a connection from %s: %s", self.client, reason)
            body = reason.encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "content-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            transport.write(head.encode() + body)
            transport.close()

    return GuardedHTTPProtocol
