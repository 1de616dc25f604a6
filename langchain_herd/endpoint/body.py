"""Reading a request body under a size limit, without ever holding more than the limit.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
chunked upload (no length declared) is counted as it arrives and refused as soon as it passes
the limit. Either way a huge body never reaches memory, nor the JSON parser.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from langchain_herd.endpoint.openai_errors import ApiError
from langchain_herd.json_body import JsonBodyError, aloads_body

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""4 MiB: far above any chat request with tools, far below what would strain a router."""


def _too_large(limit: int, declared: int | None = None) -> ApiError:
    size = f"{declared} bytes" if declared is not None else "more bytes"
    return ApiError(
        413,
        f"the request body ({size}) exceeds this endpoint's limit of {limit} bytes "
        f"(herd serve-router --max-body-bytes)",
        code="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to be larger than ``limit``.

    Raises:
        ApiError: 413 when too large, 400 for a malformed ``Content-Length``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "the Content-Length header is not a number") from None
        if size > limit:
            raise _too_large(limit, size)
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


async def read_json(request: Request, limit: int) -> Any:
    """The decoded JSON body, under the size limit.

    Decoded strictly (:func:`~langchain_herd.json_body.loads_body`): invalid UTF-8, ``NaN``,
    lone surrogates and deep nesting are refused here, naming the field where one is to blame.

    Raises:
        ApiError: 413 when too large, 400 when it is not strict JSON.
    """
    raw = await read_body(request, limit)
    try:
        return await aloads_body(raw)
    except JsonBodyError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_json") from None
