"""The Starlette app: TGI's routes, OpenAI's chat route, and the ``/_herd/faults`` test hooks."""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from langchain_herd._version import __version__
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
        adapters: LoRA adapter ids listed in ``/v1/models`` the way vLLM lists its LoRA modules
            (for clients that check them; listing only: the base model answers requests
            naming them, and TGI itself lists none).

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
        adapters=tuple(adapters),
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
    app = Starlette(routes=routes)
    app.state.herd = state
    app.state.started_at = int(time.time())
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
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": None,
            "docker_label": None,
            "herd_version": __version__,
        }
    )


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    state: ServerState = request.app.state.herd
    text = state.metrics.render(queue_size=state.backend.queue_size, in_flight=state.in_flight)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def get_faults(request: Request) -> Response:
    """``GET /_herd/faults``: the current faults, with what is left of their counters."""
    state: ServerState = request.app.state.herd
    return JSONResponse(state.faults.config.model_dump())


async def set_faults(request: Request) -> Response:
    """``POST /_herd/faults``: replace the faults with the posted :class:`FaultConfig`."""
    state: ServerState = request.app.state.herd
    try:
        config = await parse_body(request, FaultConfig)
    except TGIError as error:
        return JSONResponse(error.to_json(), status_code=error.status_code)
    state.faults.replace(config)
    return JSONResponse(config.model_dump())


async def clear_faults(request: Request) -> Response:
    """``DELETE /_herd/faults``: remove every fault."""
    state: ServerState = request.app.state.herd
    state.faults.clear()
    return JSONResponse(state.faults.config.model_dump())
