"""Everything the routes share: the backend, limits, faults, metrics and in-flight count."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from langchain_herd.json_body import JsonBodyError, aloads_body
from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.faults import FaultInjector
from langchain_herd.server.metrics import ServerMetrics
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ServerLimits

logger = logging.getLogger("langchain_herd.server")

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class ServerState:
    """The shared state of one app.

    Attributes:
        backend: the model.
        model_id: the name reported to clients.
        limits: the router limits.
        faults: the injected faults.
        metrics: the Prometheus metrics.
        compat_return_full_text: ``POST /``'s default for ``return_full_text``. TGI uses true
            for models whose hub pipeline tag is ``text-generation`` (and when it has none),
            so a client that does not send the flag gets the prompt back in front of the reply.
        adapters: LoRA adapter ids listed in ``/v1/models``: those loaded on the backend,
            then any listed only (``create_app(adapters=...)``).
    """

    backend: GenerationBackend
    model_id: str
    limits: ServerLimits
    faults: FaultInjector
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    compat_return_full_text: bool = True
    adapters: tuple[str, ...] = ()
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def in_flight(self) -> int:
        """Generation requests currently admitted."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Admit one generation request, or say no when ``max_concurrent_requests`` are in."""
        with self._lock:
            if self._in_flight >= self.limits.max_concurrent_requests:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Free the slot of a finished request."""
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)

    async def apply_latency(self) -> None:
        """Sleep the injected latency, if any."""
        delay = self.faults.latency_s
        if delay > 0:
            await asyncio.sleep(delay)

    def error_response(self, error: TGIError) -> JSONResponse:
        """Count the failure and answer with TGI's error body and status."""
        self.metrics.record_failure(error.error_type)
        return JSONResponse(error.to_json(), status_code=error.status_code)


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """Read a JSON body into ``model``, failing the way TGI's JSON extractor does.

    The body is decoded strictly (:func:`~langchain_herd.json_body.loads_body`): invalid
    UTF-8, ``NaN``/``Infinity``, lone surrogates and deep nesting are client errors here, not
    failures during generation or a 500 from the parser.

    Raises:
        TGIError: 400 for a body that is not strict JSON, 422 for JSON that cannot be used
            or has the wrong shape (all with a ``validation`` error type, so clients raise
            ``ValidationError``).
    """
    raw = await request.body()
    try:
        data = await aloads_body(raw)
    except JsonBodyError as exc:
        status = 400 if exc.kind == "syntax" else 422
        raise TGIError(
            f"Failed to parse the request body as JSON: {exc.message}", "validation", status
        ) from exc
    if not isinstance(data, dict):
        raise TGIError(
            f"Failed to deserialize the JSON body into the target type: the body is a JSON "
            f"{_json_type(data)}; send a JSON object such as {model.__name__}'s "
            f"{_EXAMPLES.get(model.__name__, '{...}')}",
            "validation",
            422,
        )
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        detail = "; ".join(
            f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors(include_url=False)
        )
        raise TGIError(
            f"Failed to deserialize the JSON body into the target type: {detail}", "validation", 422
        ) from exc


_EXAMPLES = {
    "GenerateRequest": '{"inputs": "...", "parameters": {...}}',
    "ChatRequest": '{"messages": [{"role": "user", "content": "..."}]}',
}


def _json_type(data: object) -> str:
    if isinstance(data, list):
        return "array"
    if isinstance(data, str):
        return "string"
    if isinstance(data, bool):
        return "boolean"
    if data is None:
        return "null"
    return "number"


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"
