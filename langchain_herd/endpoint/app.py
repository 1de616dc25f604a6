"""``create_router_app``: the herd behind one OpenAI-compatible HTTP endpoint.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``),
``GET /health``, ``GET /info`` (the endpoint's settings and limits) and ``GET /metrics``.
Any OpenAI client works against it; what the herd adds (the decision, sticky threads, pins)
rides in headers, an extra ``herd`` body field and ``model`` ids, all of which such a client
can ignore.

Every request passes :class:`~langchain_herd.http_limits.HttpLimitsMiddleware`: bodies over
``max_body_bytes`` get 413 before they are read, slow bodies 408, and a client that leaves
before its answer cancels the call to the expert (which stops its generation).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from langchain_herd._version import __version__
from langchain_herd.chat_models import HerdRouter
from langchain_herd.endpoint.auth import ApiKeyMiddleware, keys_from_env
from langchain_herd.endpoint.body import DEFAULT_MAX_BODY_BYTES
from langchain_herd.endpoint.chat_completions import ChatCompletions
from langchain_herd.endpoint.health import HealthMonitor, expert_health
from langchain_herd.endpoint.metrics import CONTENT_TYPE, RequestMetricsMiddleware, RouterMetrics
from langchain_herd.endpoint.openai_errors import ApiError
from langchain_herd.endpoint.to_langchain import EXPERT_PREFIX, HERD_MODEL
from langchain_herd.http_limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    HttpCounters,
    HttpLimits,
    HttpLimitsMiddleware,
    openai_error_shape,
)


def create_router_app(
    router: HerdRouter,
    *,
    api_keys: Sequence[str | SecretStr] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    health_interval_s: float = 10.0,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
) -> Starlette:
    """Build the endpoint's ASGI app over a router.

    Args:
        router: the herd (e.g. ``HerdRouter.from_config("bundled:local")``).
        api_keys: keys accepted as ``Authorization: Bearer <key>`` on every route but
            ``/health``; None reads ``HERD_ROUTER_API_KEYS``, empty turns auth off.
        max_body_bytes: larger request bodies get 413 before they are read.
        health_interval_s: seconds between background probes of each expert's ``/health``.
        body_timeout_s: a request body must be in within this many seconds of its head.
        header_timeout_s: a request head must be in within this many seconds (applied when
            served by ``herd serve-router`` or :class:`~langchain_herd.server.ServerThread`).

    Returns:
        The app: serve it with uvicorn (``herd serve-router``) or any ASGI server.

    Example:
        .. code-block:: python

            from openai import OpenAI

            app = create_router_app(HerdRouter.from_config("bundled:local"), api_keys=["k"])
            # uvicorn.run(app, port=8000), then:
            client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="k")
            client.chat.completions.create(model="herd", messages=[{"role": "user", ...}])
    """
    limits = HttpLimits(
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        header_timeout_s=header_timeout_s,
    )
    counters = HttpCounters()
    if api_keys is None:
        keys = keys_from_env()
    else:
        keys = [k if isinstance(k, SecretStr) else SecretStr(k) for k in api_keys]
        keys = [k for k in keys if k.get_secret_value()]
    metrics = RouterMetrics(router.breakers)
    monitor = HealthMonitor(
        {name: expert.url for name, expert in router.experts.items()},
        interval_s=health_interval_s,
    )
    chat = ChatCompletions(router, metrics, max_body_bytes)
    created = int(time.time())

    def model_entry(model_id: str, **extra: object) -> dict[str, object]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "herd", **extra}

    def models_listed() -> list[dict[str, object]]:
        entries = [model_entry(HERD_MODEL, herd={"routes": True, "name": router.engine.name})]
        for name, expert in router.experts.items():
            entries.append(
                model_entry(
                    EXPERT_PREFIX + name,
                    root=expert.model_id,
                    herd={"expert": name, "routes": list(expert.routes)},
                )
            )
        return entries

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": models_listed()})

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model"]
        for entry in models_listed():
            if entry["id"] == wanted:
                return JSONResponse(entry)
        raise ApiError(
            404, f"the model {wanted!r} does not exist", param="model", code="model_not_found"
        )

    async def health(request: Request) -> Response:
        experts = {
            name: expert_health(router.breakers[name], monitor.last(name))
            for name in router.experts
        }
        usable = [name for name, entry in experts.items() if entry["usable"]]
        body = {
            "status": "ok" if usable else "unavailable",
            "herd": router.engine.name,
            "usable_experts": usable,
            "auth": bool(keys),
            "experts": experts,
        }
        return JSONResponse(body, status_code=200 if usable else 503)

    async def info(request: Request) -> Response:
        body = {
            "herd": router.engine.name,
            "herd_version": __version__,
            "experts": list(router.experts),
            "auth": bool(keys),
            "limits": limits.describe(),
            "client_gone": counters.get("client_gone"),
        }
        return JSONResponse(body)

    async def scrape(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        monitor.ensure_running()
        yield
        await monitor.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat.handle, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/info", info, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        middleware=[
            Middleware(RequestMetricsMiddleware, metrics=metrics),  # outermost: counts 401s too
            Middleware(
                HttpLimitsMiddleware,
                limits=limits,
                error_shape=openai_error_shape,
                counters=counters,
            ),
            Middleware(ApiKeyMiddleware, keys=keys),
            Middleware(_StartProbes, monitor=monitor),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.router = router
    app.state.metrics = metrics
    app.state.health = monitor
    app.state.http_limits = limits  # ServerThread and serve-router set uvicorn's head limits
    app.state.http_counters = counters
    app.state.api_auth = bool(keys)  # ServerThread refuses a keyless app beyond loopback
    return app


class _StartProbes:
    """Starts the health probes on the first request when the server sent no lifespan."""

    def __init__(self, app: ASGIApp, monitor: HealthMonitor) -> None:
        self.app = app
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.monitor.ensure_running()
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"no route {request.method} {request.url.path}; see /v1/chat/completions, /v1/models"
        )
        error = ApiError(404, message, code="not_found")
    elif exc.status_code == 405:
        error = ApiError(
            405,
            f"method {request.method} is not allowed on {request.url.path}",
            code="method_not_allowed",
            headers=exc.headers,
        )
    else:
        error = ApiError(exc.status_code, str(exc.detail))
    return error.response()
