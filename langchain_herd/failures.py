"""Sort an expert's exception into a failure kind, so fallback rules can name kinds.

The clients raise a zoo of classes (see the TGI field notes): the openai client's
``APIStatusError``/``APIConnectionError``/``APITimeoutError`` on the OpenAI route, huggingface_hub's
``TextGenerationError`` family for TGI error payloads on the generate routes,
``HfHubHTTPError`` on the chat route, bare ``httpx`` transport errors for refused
connections, timeouts and dropped streams. ``classify_failure`` maps each to one kind, or
to None for exceptions that are not the expert's fault (bugs, bad arguments), which the
router re-raises instead of hiding them behind a fallback.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime

import httpx
import openai
from huggingface_hub.errors import (
    GenerationError,
    HfHubHTTPError,
    IncompleteGenerationError,
    OverloadedError,
    TextGenerationError,
    ValidationError,
)

from langchain_herd.config import FailureKind
from langchain_herd.errors import EmptyAnswerError

#: 4xx answers that say the input does not fit this expert (too long, bad parameters for
#: its model), so another expert may still take it.
INVALID_INPUT_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class Failure:
    """What went wrong with one call, in terms fallback rules understand."""

    kind: FailureKind
    message: str
    status_code: int | None = None
    retry_after_s: float | None = None
    """Seconds the server asked the caller to wait (``Retry-After``), when it said."""


def _status_of(exc: BaseException) -> int | None:
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _retry_after_of(exc: BaseException) -> float | None:
    """The ``Retry-After`` of the failed response, in seconds (delta-seconds or an HTTP date)."""
    for candidate in (exc, exc.__cause__):
        headers = getattr(getattr(candidate, "response", None), "headers", None)
        value = headers.get("retry-after") if headers is not None else None
        if value:
            return parse_retry_after(str(value))
    return None


def parse_retry_after(value: str) -> float | None:
    """``Retry-After`` as seconds from now; None when it is neither form HTTP allows.

    Example:
        >>> parse_retry_after("2"), parse_retry_after("soon")
        (2.0, None)
    """
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(seconds, 0.0)


def _kind_for_status(status: int) -> FailureKind:
    if status == 429:
        return "rate_limited"
    if status == 424:  # TGI's status for a failed generation
        return "generation_error"
    if status >= 500:
        return "server_error"
    if status in INVALID_INPUT_STATUSES:
        return "invalid_input"
    return "client_error"


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    # Keep decisions and error lists readable: the first line says what happened.
    first = text.splitlines()[0]
    return f"{type(exc).__name__}: {first}"


def _body_reason(body: object) -> str | None:
    """The reason in an error body: OpenAI's ``{"error": {"message"}}`` or TGI's ``{"error"}``."""
    error = body
    if isinstance(error, dict):
        error = error.get("error", error.get("message"))
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, str) and error.strip():
        return error.strip().splitlines()[0][:500]
    return None


def classify_failure(exc: BaseException) -> Failure | None:
    """Return the failure kind of an expert's exception, or None if it is not one.

    A ``rate_limited`` failure carries the server's ``Retry-After`` when it sent one.
    """
    failure = _classify(exc)
    if failure is not None and failure.kind == "rate_limited":
        return replace(failure, retry_after_s=_retry_after_of(exc))
    return failure


def _in_stream_kind(body: object) -> FailureKind:
    """The kind of an error event inside an OpenAI-protocol stream.

    TGI sends an overload as ``{"error": "Model is overloaded", "error_type": "overloaded"}``
    and the openai client keeps only the text; vLLM and SGLang send an OpenAI error object
    with a ``code``. An overload is back-pressure, not a broken expert; TGI's request errors
    (its 422s: validation, tool and template errors, each message prefixed with its kind)
    are the request's fault, e.g. a tool call that ``max_tokens`` cut short.
    """
    if isinstance(body, dict):
        code = body.get("code")
        overload_types = {"overloaded", "rate_limit_exceeded"}
        if code in (429, "429") or body.get("type") in overload_types:
            return "rate_limited"
        if code in (400, "400", 422, "422") or body.get("type") == "invalid_request_error":
            return "invalid_input"
        body = body.get("message")
    if isinstance(body, str):
        if "overloaded" in body.lower():
            return "rate_limited"
        if body.startswith(_TGI_REQUEST_ERRORS):
            return "invalid_input"
    return "generation_error"


#: How TGI's request errors begin (``InferError`` and ``ValidationError`` displays).
_TGI_REQUEST_ERRORS = ("Input validation error", "Tool error", "Template error")


def _classify(exc: BaseException) -> Failure | None:
    status = _status_of(exc)
    message = _message(exc)
    if isinstance(exc, EmptyAnswerError):
        return Failure("empty_answer", message, status)
    if isinstance(exc, TextGenerationError):
        # TGI said why in its error payload; trust the payload's type over the status. Inside
        # a stream there is no status: record the one TGI gives that error type.
        if isinstance(exc, OverloadedError):
            return Failure("rate_limited", message, status or 429)
        if isinstance(exc, ValidationError):
            return Failure("invalid_input", message, status or 422)
        if isinstance(exc, (GenerationError, IncompleteGenerationError)):
            return Failure("generation_error", message, status or 424)
        # An error_type the client does not know: the status is all there is to go on.
        if status is not None:
            return Failure(_kind_for_status(status), message, status)
        return Failure("generation_error", message, status)
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", message, status)
    if isinstance(exc, openai.APIConnectionError):
        return Failure("connection", message, status)
    if isinstance(exc, openai.APIStatusError):
        # The client's message is only "Error code: 422"; the server's reason is in the body.
        reason = _body_reason(exc.body)
        detailed = f"{message}: {reason}" if reason else message
        return Failure(_kind_for_status(exc.status_code), detailed, exc.status_code)
    if isinstance(exc, openai.APIError):
        # An error event inside a stream (TGI's `data: {"error": ...}`): no HTTP status, and
        # the client keeps only the event's "error" value, so TGI's error_type is lost.
        reason = _body_reason(exc.body)
        if reason and reason not in message:  # the client's own message is generic
            message = f"{message} ({reason})"
        return Failure(_in_stream_kind(exc.body), message, status)
    if isinstance(exc, (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError)):
        return Failure("timeout", message, status)
    if isinstance(exc, (HfHubHTTPError, httpx.HTTPStatusError)):
        if status is None:
            return Failure("connection", message, status)
        return Failure(_kind_for_status(status), message, status)
    if isinstance(exc, httpx.HTTPError):
        # Refused, reset, or dropped mid-response: the transport failed.
        return Failure("connection", message, status)
    if isinstance(exc, ConnectionError):
        return Failure("connection", message, status)
    return None
