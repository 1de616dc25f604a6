"""API keys for the endpoint: ``Authorization: Bearer <key>``, checked before anything else.

Keys come from ``HERD_ROUTER_API_KEYS`` (comma-separated, so keys can be rotated: old and new
both valid for a while). Each presented key is compared with every configured key in
constant time (``hmac.compare_digest``, no early exit), so neither a key's content nor which
key matched can be learned from response timing. ``/health`` stays open for load balancers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Collection, Sequence

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from langchain_herd.endpoint.openai_errors import ApiError

API_KEYS_ENV = "HERD_ROUTER_API_KEYS"
"""Environment variable with the endpoint's API keys, comma-separated."""
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without a key."""


def keys_from_env(environ: dict[str, str] | None = None) -> list[SecretStr]:
    """The API keys in ``HERD_ROUTER_API_KEYS`` (none when unset or blank)."""
    raw = (os.environ if environ is None else environ).get(API_KEYS_ENV, "")
    return [SecretStr(key.strip()) for key in raw.split(",") if key.strip()]


def key_matches(presented: str, keys: Sequence[SecretStr]) -> bool:
    """Whether ``presented`` is one of ``keys``, comparing with every key in constant time."""
    # Digests first: compare_digest returns early on a length mismatch, which would tell a
    # caller the key's length; digests all have the same one.
    given = hashlib.sha256(presented.encode()).digest()
    matched = False
    for key in keys:
        expected = hashlib.sha256(key.get_secret_value().encode()).digest()
        # `|` rather than `or`: every key is compared whatever the earlier ones said.
        matched = hmac.compare_digest(given, expected) | matched
    return matched


class ApiKeyMiddleware:
    """ASGI middleware that answers 401 (OpenAI's shape) unless a valid key is presented.

    Args:
        app: the app to guard.
        keys: accepted keys; none turns the check off.
        open_paths: paths answered without a key.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[SecretStr],
        open_paths: Collection[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.keys = list(keys)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            error = ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>' (one of the keys in "
                f"{API_KEYS_ENV} where the router runs)",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif not key_matches(token.strip(), self.keys):
            error = ApiError(
                401,
                "invalid API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            await self.app(scope, receive, send)
            return
        await error.response()(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""
