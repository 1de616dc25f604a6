"""Asking an expert's endpoint what it serves: health, model, LoRA adapters, context limits.

One ``GET`` per route, with a short timeout, and nothing raised: each route's reply (or why
there was none) is kept for the caller to judge. What the servers answer:

- TGI: ``/health`` (200 once ready) and ``/info``, whose ``model_id``, ``max_input_tokens``
  and ``max_total_tokens`` are the model and its limits. ``/info`` has no adapter list
  (TGI's router ``Info`` struct); LoRA adapters are loaded at start (``--lora-adapters``) and
  cannot be listed. TGI's ``/v1/models`` has one entry, the model, without limits.
- vLLM and SGLang: ``/health`` and ``/v1/models``, one entry per served model with its
  ``max_model_len`` (prompt plus answer), and one per LoRA adapter whose ``parent`` is the base
  model. ``/info`` is not served.

The router reads input limits from here (:mod:`langchain_herd.context_limits`) and
``herd check`` reports on it all (:mod:`langchain_herd.check`).

Example:
    .. code-block:: python

        from langchain_herd.probes import INFO, probe_endpoint

        probe = probe_endpoint("http://127.0.0.1:8080", [INFO])
        probe.limits(None)  # EndpointLimits(max_input_tokens=1024, max_total_tokens=2048, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

HEALTH = "/health"
"""TGI, vLLM and SGLang: 200 when the server can answer."""
INFO = "/info"
"""TGI only: the model id and the router's limits."""
MODELS = "/v1/models"
"""The OpenAI route's model list (vLLM and SGLang add ``max_model_len`` and adapters)."""
ALL_ROUTES: tuple[str, ...] = (HEALTH, INFO, MODELS)

PROBE_TIMEOUT_S = 2.0
"""Default timeout of one probe request: a server that is up answers these in milliseconds."""


@dataclass(frozen=True)
class RouteReply:
    """What one ``GET`` got back."""

    status: int | None
    """HTTP status; None when no HTTP answer came (refused, timed out, ...)."""
    body: Any = None
    """The parsed JSON body, when there was one."""
    error: str | None = None
    """Why there is no status, or no JSON where JSON was expected."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def why_not(self) -> str:
        """A short reason this reply is no use."""
        if self.status is None:
            return self.error or "no answer"
        if not self.ok:
            return f"HTTP {self.status}"
        return self.error or "unexpected body"


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``/v1/models``."""

    id: str
    """The name requests use (``model``)."""
    root: str | None = None
    """vLLM: the model path or hub id behind the name; for an adapter, its path."""
    parent: str | None = None
    """vLLM/SGLang: set on LoRA adapters, the base model's name."""
    max_model_len: int | None = None
    """vLLM/SGLang: prompt plus answer tokens the model accepts."""


@dataclass(frozen=True)
class EndpointLimits:
    """An endpoint's token limits, as configured or as the server reported them."""

    max_input_tokens: int | None
    """Longest prompt accepted, whatever the answer's length (TGI's ``max_input_tokens``, or
    the config's ``max_input_tokens``)."""
    max_total_tokens: int | None
    """Prompt plus answer must fit in this (TGI's ``max_total_tokens``, vLLM's
    ``max_model_len``)."""
    source: str
    """Where ``max_input_tokens`` came from (``config``, ``/info``), and ``max_total_tokens``
    unless ``total_source`` says otherwise."""
    total_source: str | None = None
    """Where ``max_total_tokens`` came from, when not ``source`` (``/v1/models``)."""

    def input_budget(self, answer_tokens: int) -> tuple[int | None, str]:
        """The longest prompt for an answer of ``answer_tokens``, and which limit sets it."""
        options: list[tuple[int, str]] = []
        if self.max_input_tokens is not None:
            options.append((self.max_input_tokens, f"max_input_tokens from {self.source}"))
        if self.max_total_tokens is not None:
            options.append(
                (
                    max(self.max_total_tokens - answer_tokens, 0),
                    f"{self.max_total_tokens} total tokens from "
                    f"{self.total_source or self.source} less "
                    f"{answer_tokens} for the answer",
                )
            )
        if not options:
            return None, f"no limit from {self.source}"
        return min(options, key=lambda option: option[0])


@dataclass(frozen=True)
class EndpointProbe:
    """The replies of one endpoint to the probed routes."""

    url: str
    """The server root."""
    replies: dict[str, RouteReply] = field(default_factory=dict)
    """Route (``/health``, ``/info``, ``/v1/models``) to its reply."""

    @property
    def reachable(self) -> bool:
        """Whether any route got an HTTP answer."""
        return any(reply.status is not None for reply in self.replies.values())

    def transport_error(self) -> str:
        """Why no route got an answer (for an unreachable endpoint)."""
        errors = {reply.error for reply in self.replies.values() if reply.error}
        return "; ".join(sorted(errors)) or "no answer"

    @property
    def info(self) -> dict[str, Any] | None:
        """TGI's ``/info``, when the server is TGI (or speaks its protocol)."""
        reply = self.replies.get(INFO)
        if reply is None or not reply.ok or not isinstance(reply.body, dict):
            return None
        return reply.body if isinstance(reply.body.get("model_id"), str) else None

    @property
    def models(self) -> list[ServedModel] | None:
        """``/v1/models``' entries, when the route answered a model list."""
        reply = self.replies.get(MODELS)
        if reply is None or not reply.ok or not isinstance(reply.body, dict):
            return None
        data = reply.body.get("data")
        if not isinstance(data, list):
            return None
        return [
            ServedModel(
                id=entry["id"],
                root=_str(entry.get("root")),
                parent=_str(entry.get("parent")),
                max_model_len=_int(entry.get("max_model_len")),
            )
            for entry in data
            if isinstance(entry, dict) and isinstance(entry.get("id"), str)
        ]

    def base_models(self) -> list[ServedModel]:
        """Entries of ``/v1/models`` that are models, not adapters."""
        return [model for model in self.models or [] if model.parent is None]

    def adapters(self) -> list[ServedModel]:
        """Entries of ``/v1/models`` that are LoRA adapters (they name a ``parent``)."""
        return [model for model in self.models or [] if model.parent is not None]

    def model_entry(self, name: str | None) -> ServedModel | None:
        """The ``/v1/models`` entry requests named ``name`` use: itself, or for an adapter
        its base model; the only base model when ``name`` is not listed."""
        entries = self.models or []
        by_id = {entry.id: entry for entry in entries}
        entry = by_id.get(name) if name is not None else None
        if entry is not None and entry.parent is not None and entry.max_model_len is None:
            entry = by_id.get(entry.parent, entry)
        if entry is None:
            bases = self.base_models()
            entry = bases[0] if len(bases) == 1 else None
        return entry

    def limits(self, served_model: str | None) -> EndpointLimits | None:
        """The token limits this endpoint reported for ``served_model`` (None: none).

        TGI's ``/info`` gives both limits; ``/v1/models`` gives ``max_model_len``, the total.
        When both answered (a TGI server), the tighter total wins.
        """
        max_input = max_total = None
        total_source = None
        info = self.info
        if info is not None:
            max_input = _int(info.get("max_input_tokens")) or _int(info.get("max_input_length"))
            max_total = _int(info.get("max_total_tokens"))
            total_source = INFO if max_total is not None else None
        entry = self.model_entry(served_model)
        if entry is not None and entry.max_model_len is not None:
            if max_total is None or entry.max_model_len < max_total:
                max_total, total_source = entry.max_model_len, MODELS
            elif entry.max_model_len == max_total:
                total_source = f"{INFO} and {MODELS}"
        if max_input is None and max_total is None:
            return None
        return EndpointLimits(max_input, max_total, INFO if info else MODELS, total_source)

    def why_no_limits(self) -> str:
        """Why :meth:`limits` found none, for the decision trail."""
        if not self.reachable:
            return f"{self.url} unreachable: {self.transport_error()}"
        said = ", ".join(
            f"{route} {reply.why_not()}" for route, reply in self.replies.items() if not reply.ok
        )
        return f"{self.url} reports no token limit" + (f" ({said})" if said else "")


def probe_endpoint(
    url: str,
    routes: Sequence[str] = ALL_ROUTES,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    token: SecretStr | None = None,
) -> EndpointProbe:
    """``GET`` each route of the server at ``url``; never raises for what the server does.

    Args:
        url: the server root.
        routes: the routes to ask, in order; when the first gets no HTTP answer at all
            (refused, timed out), the others are not tried.
        timeout_s: per request.
        token: sent as a bearer token (only to this endpoint; None sends no
            ``Authorization`` header).
    """
    headers = {"authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    replies: dict[str, RouteReply] = {}
    with httpx.Client(timeout=timeout_s, headers=headers) as client:
        for route in routes:
            reply = _get(client, url.rstrip("/") + route, json_body=route != HEALTH)
            replies[route] = reply
            if reply.status is None:
                # Down or unreachable: the other routes would only wait out the same timeout.
                for rest in routes[len(replies) :]:
                    replies[rest] = reply
                break
    return EndpointProbe(url=url, replies=replies)


def _get(client: httpx.Client, url: str, *, json_body: bool) -> RouteReply:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return RouteReply(
            None, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        )
    if not json_body or not 200 <= response.status_code < 300:
        return RouteReply(response.status_code)
    try:
        return RouteReply(response.status_code, response.json())
    except ValueError:
        return RouteReply(response.status_code, error="not JSON")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
