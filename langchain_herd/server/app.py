"""The Starlette app: TGI's routes, OpenAI's chat route, and the ``/_herd/faults`` test hooks.

Every request passes :class:`~langchain_herd.http_limits.HttpLimitsMiddleware` first (body size
and time limits, cancellation when the client leaves); ``/info`` states the limits and who may
use ``/_herd/faults`` (see :class:`FaultRoute`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
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
    HttpLimitsMiddleware,
    is_loopback,
    openai_error_shape,
    tgi_error_shape,
)
from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.chat_routes import chat_completions, list_models
from langchain_herd.server.faults import FaultConfig, FaultInjector
from langchain_herd.server.generate_routes import compat_generate, generate, generate_stream
from langchain_herd.server.sse import install_drop_log_filter
from langchain_herd.server.state import ServerState, parse_body
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ServerLimits

TGI_VERSION = "3.3.4"
"""The TGI release whose protocol this server follows, reported as ``version`` in ``/info``."""

FAULTS_KEY_ENV = "HERD_FAULTS_KEY"
"""Environment variable with the key ``/_herd/faults`` requires (``herd serve`` reads it)."""


@dataclass(frozen=True)
class FaultRoute:
    """Who may use ``/_herd/faults``.

    Attributes:
        enabled: False answers 403 on the route (``herd serve`` beyond loopback without a key).
        key: when set, the route requires ``Authorization: Bearer <key>``.

    Example:
        >>> FaultRoute(key=SecretStr("k")).mode
        'key'
    """

    enabled: bool = True
    key: SecretStr | None = None

    @property
    def mode(self) -> Literal["open", "key", "off"]:
        """``open`` (anyone who reaches the server), ``key`` or ``off``."""
        if not self.enabled:
            return "off"
        return "key" if self.key is not None and self.key.get_secret_value() else "open"

    @classmethod
    def for_host(cls, host: str, key: str | SecretStr | None) -> FaultRoute:
        """The policy of a server listening on ``host``: open on loopback, else only with a key.

        A key, when given, is required on loopback too.
        """
        secret = key if isinstance(key, SecretStr) or key is None else SecretStr(key)
        if secret is not None and not secret.get_secret_value():
            secret = None
        return cls(enabled=secret is not None or is_loopback(host), key=secret)

    def refusal(self, request: Request) -> Response | None:
        """The 403 for a request this policy refuses, or None."""
        if self.mode == "open":
            return None
        if self.mode == "off":
            message = (
                "fault injection is off: this server listens beyond loopback; start it with "
                f"{FAULTS_KEY_ENV}=<key> and send 'Authorization: Bearer <key>' to use it"
            )
        else:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            assert self.key is not None
            given = hashlib.sha256(token.strip().encode()).digest()
            expected = hashlib.sha256(self.key.get_secret_value().encode()).digest()
            if scheme.lower() == "bearer" and hmac.compare_digest(given, expected):
                return None
            message = (
                "fault injection needs 'Authorization: Bearer <key>' with the key in "
                f"{FAULTS_KEY_ENV} where the server runs"
            )
        return JSONResponse({"error": message, "error_type": "validation"}, status_code=403)


def error_shape(path: str, status: int, message: str, code: str) -> dict[str, Any]:
    """A size or time refusal's body: TGI's on TGI's routes; on the OpenAI routes OpenAI's,
    plus TGI's ``error_type`` so clients reading either shape understand it."""
    if path.startswith("/v1/"):
        return {**openai_error_shape(path, status, message, code), "error_type": "validation"}
    return tgi_error_shape(path, status, message, code)


def http_middleware(limits: HttpLimits, counters: HttpCounters) -> list[Middleware]:
    """The request guard every herd TGI-protocol app (model or replay) runs behind."""
    return [
        Middleware(HttpLimitsMiddleware, limits=limits, error_shape=error_shape, counters=counters)
    ]


def install_http_state(
    app: Starlette, limits: HttpLimits, counters: HttpCounters, fault_route: FaultRoute
) -> None:
    """Keep what ``/info``, ``/metrics``, the fault routes and the server thread read."""
    app.state.http_limits = limits  # ServerThread and `herd serve` set uvicorn's head limits
    app.state.http_counters = counters
    app.state.fault_route = fault_route


def herd_info(request: Request) -> dict[str, Any]:
    """The herd's entries in ``/info``: the HTTP limits and the fault route's policy."""
    limits: HttpLimits = request.app.state.http_limits
    fault_route: FaultRoute = request.app.state.fault_route
    return {"herd_http_limits": limits.describe(), "herd_fault_route": fault_route.mode}


def create_app(
    backend: GenerationBackend,
    *,
    model_id: str | None = None,
    max_input_tokens: int = 1024,
    max_total_tokens: int = 2048,
    max_concurrent_requests: int = 8,
    faults: FaultConfig | None = None,
    default_max_new_tokens: int = 100,
    compat_return_full_text: bool = True,
    adapters: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    fault_route: FaultRoute | None = None,
) -> Starlette:
    """Build the TGI-protocol app around a loaded backend.

    Args:
        backend: the model (see :func:`~langchain_herd.server.load_backend`).
        model_id: the name reported in ``/info``, ``/v1/models`` and chat replies (default:
            the backend's).
        max_input_tokens: longest accepted prompt.
        max_total_tokens: most prompt plus new tokens per request.
        max_concurrent_requests: requests in flight beyond this get 429 ``overloaded``.
        faults: faults to inject from the start (see :class:`FaultConfig`).
        default_max_new_tokens: ``max_new_tokens`` / ``max_tokens`` when a request omits it
            (TGI's default is 100).
        compat_return_full_text: ``POST /``'s default for ``return_full_text``; TGI uses true
            for text-generation models, so the prompt comes back in front of the reply.
        adapters: extra LoRA adapter ids to list in ``/v1/models`` the way vLLM lists its
            LoRA modules, without loading them (the base model answers requests naming them).
            Adapters loaded on the backend (``backend.load_adapters``) are listed and served
            on their own.
        max_body_bytes: larger request bodies get 413 (before they are read when declared).
        body_timeout_s: a request body must be in within this many seconds of its head.
        header_timeout_s: a request head must be in within this many seconds (applied by
            :class:`ServerThread` and ``herd serve``, which run uvicorn with it).
        fault_route: who may use ``/_herd/faults`` (default: anyone, for a loopback server;
            :class:`ServerThread` refuses to serve that beyond loopback).

    Returns:
        The app; serve it with :class:`ServerThread` or any ASGI server.

    Raises:
        ValueError: inconsistent limits.

    Example:
        >>> from langchain_herd.server import create_app, load_backend
        >>> app = create_app(load_backend("tiny"), max_concurrent_requests=2)
        >>> app.state.herd.limits.max_concurrent_requests
        2
    """
    if not 0 < max_input_tokens < max_total_tokens:
        raise ValueError(
            f"need 0 < max_input_tokens < max_total_tokens, got {max_input_tokens} and "
            f"{max_total_tokens}"
        )
    if max_concurrent_requests < 1:
        raise ValueError(f"max_concurrent_requests must be >= 1, got {max_concurrent_requests}")
    http_limits = HttpLimits(
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        header_timeout_s=header_timeout_s,
    )
    install_drop_log_filter()
    state = ServerState(
        backend=backend,
        model_id=model_id or backend.model_id,
        limits=ServerLimits(
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            max_concurrent_requests=max_concurrent_requests,
            default_max_new_tokens=default_max_new_tokens,
        ),
        faults=FaultInjector(faults),
        compat_return_full_text=compat_return_full_text,
        adapters=tuple(dict.fromkeys([*backend.adapters, *adapters])),
    )
    routes = [
        Route("/", compat_generate, methods=["POST"]),
        Route("/", health, methods=["GET"]),  # TGI answers health checks on GET / too
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


async def health(request: Request) -> Response:
    """``GET /health``: 200 with an empty body once the model is loaded (it is, by now)."""
    return Response(status_code=200)


async def info(request: Request) -> Response:
    """``GET /info``: TGI's ``Info`` object."""
    state: ServerState = request.app.state.herd
    limits = state.limits
    return JSONResponse(
        {
            "model_id": state.model_id,
            "model_sha": None,
            "model_dtype": state.backend.dtype,
            "model_device_type": state.backend.device_type,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_best_of": limits.max_best_of,
            "max_stop_sequences": limits.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens,
            "max_input_length": limits.max_input_tokens,  # the pre-2.0 name of the same limit
            "max_total_tokens": limits.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "max_batch_size": state.backend.max_batch_size,
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": None,
            "docker_label": None,
            "herd_version": __version__,
            # TGI's Info has no adapter list; requests pick these by adapter_id / model.
            "herd_lora_adapters": list(state.backend.adapters),
            **herd_info(request),
        }
    )


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    state: ServerState = request.app.state.herd
    text = state.metrics.render(queue_size=state.backend.queue_size, in_flight=state.in_flight)
    text += request.app.state.http_counters.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def get_faults(request: Request) -> Response:
    """``GET /_herd/faults``: the current faults, with what is left of their counters."""
    refused = request.app.state.fault_route.refusal(request)
    if refused is not None:
        return refused
    state: ServerState = request.app.state.herd
    return JSONResponse(state.faults.config.model_dump())


async def set_faults(request: Request) -> Response:
    """``POST /_herd/faults``: replace the faults with the posted :class:`FaultConfig`."""
    refused = request.app.state.fault_route.refusal(request)
    if refused is not None:
        return refused
    state: ServerState = request.app.state.herd
    try:
        config = await parse_body(request, FaultConfig)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    state.faults.replace(config)
    return JSONResponse(config.model_dump())


async def clear_faults(request: Request) -> Response:
    """``DELETE /_herd/faults``: remove every fault."""
    refused = request.app.state.fault_route.refusal(request)
    if refused is not None:
        return refused
    state: ServerState = request.app.state.herd
    state.faults.clear()
    return JSONResponse(state.faults.config.model_dump())
