"""Both servers on loopback for the malformed-input and fuzzing tests, and the checks they share.

A tiny-model ``herd serve`` app (TGI and OpenAI routes), and a ``herd serve-router`` app whose
one expert is that server, each served by uvicorn in a thread. The checks hold every reply
to the contract for a client fault: a 4xx in the route's error shape, with a JSON body. The
local server answers in TGI's shape on every route, its chat route included, as TGI does
(huggingface_hub reads ``error_type`` there); the router answers in OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from langchain_herd import HerdRouter
from langchain_herd.config import parse_config
from langchain_herd.endpoint import create_router_app
from langchain_herd.server import ServerThread, create_app, load_backend

KEY = "hostile-key-0123456789"
TGI_ROUTES = ("/", "/generate", "/generate_stream")
CHAT_ROUTE = "/v1/chat/completions"


@dataclass
class Servers:
    """The local server's and the router's base URLs, and one client for both."""

    local: str
    router: str
    http: httpx.Client

    def post(
        self, url: str, body: Any, *, raw: bool = False, timeout: float = 30
    ) -> httpx.Response:
        """POST a JSON body (``raw``: bytes or text sent as they are)."""
        content = body if raw else json.dumps(body)
        headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        return self.http.post(url, content=content, headers=headers, timeout=timeout)

    def assert_healthy(self) -> None:
        """Both servers answer /health and a normal request."""
        assert self.http.get(f"{self.local}/health").status_code == 200
        reply = self.post(f"{self.local}/generate", {"inputs": "hi", "parameters": GREEDY})
        assert reply.status_code == 200, reply.text
        assert self.http.get(f"{self.router}/health").status_code == 200
        chat = self.post(f"{self.router}{CHAT_ROUTE}", chat_body("What is 2 + 2?"))
        assert chat.status_code == 200, chat.text


GREEDY = {"max_new_tokens": 2, "do_sample": False}


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    """A small chat request."""
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 2, **extra}


@contextmanager
def hostile_servers() -> Iterator[Servers]:
    """Start the tiny local server and a router over it; stop both afterwards."""
    backend = load_backend("tiny")
    local = ServerThread(
        create_app(
            backend,
            model_id="tiny",
            max_input_tokens=900,
            max_total_tokens=1024,
            default_max_new_tokens=3,  # bodies that do not say stay fast
        )
    ).start()
    config = {
        "name": "hostile",
        "experts": [
            {
                "name": "solo",
                "url": local.url,
                "protocol": "openai",
                "model_id": "tiny",
                "routes": ["stem", "humanities", "social_sciences", "other"],
                "generation": {"max_new_tokens": 4},
            }
        ],
        "fallback": {"default_expert": "solo"},
    }
    router = ServerThread(
        create_router_app(
            HerdRouter.from_config(parse_config(config)), api_keys=[KEY], health_interval_s=0.5
        )
    ).start()
    http = httpx.Client(timeout=30, trust_env=False)
    try:
        yield Servers(local.url, router.url, http)
    finally:
        http.close()
        router.stop()
        local.stop()


def strict_json(text: str) -> Any:
    """Parse JSON as the spec has it: ``NaN`` and ``Infinity`` are errors, not numbers."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def sse_payloads(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, each parsed strictly (``[DONE]`` kept as text)."""
    lines = [line[len("data:") :].strip() for line in text.splitlines() if line.startswith("data:")]
    return [line if line == "[DONE]" else strict_json(line) for line in lines]


def _error_body(reply: httpx.Response, statuses: tuple[int, ...]) -> Any:
    """The error a reply carries (its body, or the first error event of a 200 stream), or
    None; asserts 2xx or one of ``statuses``, never 5xx or 424, all strict JSON."""
    assert reply.status_code < 500 and reply.status_code != 424, (reply.status_code, reply.text)
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        assert reply.status_code == 200
        events = [e for e in sse_payloads(reply.text) if e != "[DONE]"]
        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        return errors[0] if errors else None
    body = strict_json(reply.text)
    if reply.status_code < 400:
        return None
    assert reply.status_code in statuses, reply.status_code
    return body


def tgi_error_of(reply: httpx.Response) -> dict[str, Any] | None:
    """The TGI error a reply carries (its body, or an error event of a 200 stream), or None.

    Asserts that a TGI route answered 2xx or a client error in TGI's shape, all strict JSON.
    """
    error = _error_body(reply, (400, 413, 422))
    if error is None:
        return None
    assert isinstance(error, dict) and set(error) == {"error", "error_type"}, error
    assert error["error_type"] in ("validation", "template_error", "tool_error"), error
    assert isinstance(error["error"], str) and error["error"], error
    return error


def openai_error_of(reply: httpx.Response) -> dict[str, Any] | None:
    """The OpenAI error a router reply carries (its body, or an error event of a 200 stream),
    or None; asserts 2xx or a 4xx in OpenAI's shape, all strict JSON."""
    body = _error_body(reply, (400, 404, 413, 422))
    if body is None:
        return None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert error["type"] == "invalid_request_error", error
    assert isinstance(error["message"], str) and error["message"], error
    return error
