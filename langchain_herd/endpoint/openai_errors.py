"""Errors in OpenAI's wire shape, and the herd's exceptions mapped onto them.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and raise by status
(``BadRequestError`` for 400, ``AuthenticationError`` for 401, ...), so every refusal of the
endpoint, its own or the herd's, leaves in that shape with the status a client expects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from langchain_herd.breaker import Breaker
from langchain_herd.errors import (
    AllExpertsFailedError,
    CapabilityError,
    ConfigError,
    ContextLengthError,
    ExpertsOverloadedError,
    InputError,
    StreamInterruptedError,
)
from langchain_herd.failures import classify_failure

logger = logging.getLogger("langchain_herd.endpoint")

#: Failure kinds that mean the expert refused the request itself, not that it is unwell.
_REQUEST_KINDS = frozenset({"invalid_input", "client_error"})


class ApiError(Exception):
    """A refusal the endpoint sends as OpenAI's error body.

    Example:
        >>> ApiError(404, "no such model", code="model_not_found", param="model").status
        404
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        error_fields: Mapping[str, Any] | None = None,
        body_fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _type_for(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.error_fields = dict(error_fields or {})
        """Extra keys inside ``error`` (e.g. the failed attempts)."""
        self.body_fields = dict(body_fields or {})
        """Extra top-level keys (e.g. ``herd``: the decision), ignored by OpenAI clients."""

    def payload(self) -> dict[str, Any]:
        """The JSON body (also the data of a stream's error event)."""
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
            **self.error_fields,
        }
        return {"error": error, **self.body_fields}

    def response(self) -> JSONResponse:
        return JSONResponse(self.payload(), status_code=self.status, headers=self.headers)


def _type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def api_error_for(exc: BaseException, breakers: Mapping[str, Breaker] | None = None) -> ApiError:
    """The OpenAI-shaped error for anything a chat completion raised.

    Args:
        exc: what the router (or the endpoint) raised.
        breakers: the herd's breakers, to tell a client when an open one will be probed.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthError):  # before CapabilityError: it is one
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ExpertsOverloadedError):  # before AllExpertsFailedError: it is one
        # Back-pressure passed on: the client should slow down, not treat the herd as down.
        return ApiError(
            429,
            str(exc),
            code="experts_overloaded",
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            error_fields={"attempts": [a.model_dump(mode="json") for a in exc.attempts]},
            body_fields={"herd": exc.decision.metadata()},
        )
    if isinstance(exc, AllExpertsFailedError):
        return _all_failed(exc, breakers or {})
    if isinstance(exc, CapabilityError):
        return ApiError(400, str(exc), code="unsupported_by_herd")
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), code="invalid_request")
    if isinstance(exc, StreamInterruptedError):
        return ApiError(
            502, str(exc), code="stream_interrupted", error_fields={"expert": exc.expert}
        )
    if isinstance(exc, ConfigError):
        logger.error("herd configuration error: %s", exc)
        return ApiError(500, f"the herd is misconfigured: {exc}", code="herd_config_error")
    failure = classify_failure(exc)
    if failure is not None:
        # The engine re-raises an expert failure whose kind the herd does not fall back on.
        if failure.kind in _REQUEST_KINDS:
            return ApiError(
                400, f"the expert refused the request: {failure.message}", code="expert_refused"
            )
        return ApiError(
            502, f"the expert failed ({failure.kind}): {failure.message}", code=failure.kind
        )
    logger.exception("chat completion failed unexpectedly", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error")


def _all_failed(exc: AllExpertsFailedError, breakers: Mapping[str, Breaker]) -> ApiError:
    decision = exc.decision
    attempts = [attempt.model_dump(mode="json") for attempt in decision.attempts]
    status, code, headers = 502, "all_experts_failed", {}
    if decision.attempts and all(a.failure in _REQUEST_KINDS for a in decision.attempts):
        # Every expert refused the request itself (too long, a tool call max_tokens cut
        # short): the client's to fix, not a herd outage.
        status, code = 400, "expert_refused"
    elif not decision.attempts:
        # Nobody was called (every candidate's breaker is open): a retry later may succeed.
        status, code = 503, "no_expert_available"
        waits = [breakers[n].status().retry_in_s for n in decision.skipped if n in breakers]
        if waits:
            headers["Retry-After"] = str(max(1, math.ceil(min(waits))))
    return ApiError(
        status,
        str(exc),
        code=code,
        headers=headers,
        error_fields={"attempts": attempts},
        body_fields={"herd": decision.metadata()},
    )
