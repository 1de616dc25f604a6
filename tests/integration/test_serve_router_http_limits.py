"""``herd serve-router``'s HTTP layer under slow and departing clients, on loopback.

One tiny-model expert server and the router endpoint in front of it, both real uvicorn
servers; raw sockets play the slow clients. (Body size limits are covered in
``test_serve_router.py``, the bind refusal of the command line too.)
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from langchain_herd import HerdRouter
from langchain_herd.config import parse_config
from langchain_herd.endpoint import create_router_app
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.server_thread import ServerStartError

KEY = "router-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT_S = 0.5
LONG = 3000  # tokens: seconds of generation, far longer than a test waits before leaving
HTTP = httpx.Client(timeout=30, trust_env=False)


@pytest.fixture(scope="module")
def backend() -> GenerationBackend:
    return load_backend("tiny")


@pytest.fixture(scope="module")
def expert(backend: GenerationBackend) -> Iterator[str]:
    app = create_app(backend, model_id="tiny", max_input_tokens=900, max_total_tokens=LONG + 900)
    with ServerThread(app) as running:
        yield running.url


def router_for(expert: str) -> HerdRouter:
    config: dict[str, Any] = {
        "name": "http-limits",
        "experts": [
            {
                "name": "only",
                "url": expert,
                "protocol": "openai",
                "model_id": "tiny",
                "routes": ["stem", "humanities", "social_sciences", "other"],
                "generation": {"max_new_tokens": LONG},
            }
        ],
        "fallback": {"default_expert": "only"},
    }
    return HerdRouter.from_config(parse_config(config))


@pytest.fixture(scope="module")
def endpoint(expert: str) -> Iterator[tuple[ServerThread, HerdRouter]]:
    router = router_for(expert)
    app = create_router_app(
        router,
        api_keys=[KEY],
        body_timeout_s=TIMEOUT_S,
        header_timeout_s=TIMEOUT_S,
        health_interval_s=60,
    )
    with ServerThread(app) as running:
        yield running, router


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def head(*lines: str) -> bytes:
    start = ["POST /v1/chat/completions HTTP/1.1", "Host: herd", AUTH_LINE]
    return ("\r\n".join([*start, *lines]) + "\r\n\r\n").encode()


AUTH_LINE = f"Authorization: Bearer {KEY}"


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_slow_body_and_slow_head_are_cut_off_while_health_answers(
    endpoint: tuple[ServerThread, HerdRouter],
) -> None:
    server, _ = endpoint
    with socket.create_connection(address(server.url), timeout=5) as slow:
        slow.sendall(head("Content-Length: 500") + b'{"model": "herd", ')
        assert HTTP.get(f"{server.url}/health").status_code == 200
        received = read_all(slow)
    assert received.startswith(b"HTTP/1.1 408 ")
    error = json.loads(received.partition(b"\r\n\r\n")[2])
    assert error["error"]["code"] == "request_timeout"  # OpenAI's shape
    with socket.create_connection(address(server.url), timeout=5) as silent:
        silent.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: her")
        assert read_all(silent).startswith(b"HTTP/1.1 408 ")


def test_info_states_the_limits(endpoint: tuple[ServerThread, HerdRouter]) -> None:
    server, _ = endpoint
    info = HTTP.get(f"{server.url}/info", headers=AUTH).json()
    assert info["limits"]["body_timeout_s"] == TIMEOUT_S
    assert info["limits"]["header_timeout_s"] == TIMEOUT_S
    assert info["limits"]["max_body_bytes"] == 4 * 1024 * 1024
    assert info["auth"] is True and info["experts"] == ["only"]
    assert HTTP.get(f"{server.url}/info").status_code == 401  # behind the key like the rest


def test_client_gone_cancels_the_expert_call(
    endpoint: tuple[ServerThread, HerdRouter], expert: str, backend: GenerationBackend
) -> None:
    server, router = endpoint

    def expert_in_flight() -> float:
        for line in HTTP.get(f"{expert}/metrics").text.splitlines():
            if line.startswith("herd_requests_in_flight "):
                return float(line.split()[1])
        return 0.0

    stopped = backend.stopped_generations
    body = json.dumps(
        {"model": "herd", "messages": [{"role": "user", "content": "Tell me about Mill."}]}
    ).encode()
    with socket.create_connection(address(server.url), timeout=5) as client:
        client.sendall(head(f"Content-Length: {len(body)}") + body)
        deadline = time.monotonic() + 30
        while expert_in_flight() != 1:
            assert time.monotonic() < deadline, "the expert never got the request"
            time.sleep(0.01)
    # The client left: the router drops its call, the expert sees its client leave and
    # stops the generation between tokens (its backend's own counter says so).
    deadline = time.monotonic() + 30
    while backend.stopped_generations == stopped:
        assert time.monotonic() < deadline, "the expert's generation was not stopped"
        time.sleep(0.01)
    info = HTTP.get(f"{server.url}/info", headers=AUTH).json()
    assert info["client_gone"] == 1
    # Leaving is not the expert's fault: its breaker counts no failure.
    assert router.breakers["only"].status().consecutive_failures == 0
    requests = HTTP.get(f"{server.url}/metrics", headers=AUTH).text
    assert 'status="499"' in requests


def test_keyless_router_is_not_served_beyond_loopback(expert: str) -> None:
    app = create_router_app(router_for(expert), api_keys=[])
    # Refused before anything binds: no need to open a public port to test it.
    with pytest.raises(ServerStartError, match="without API keys"):
        ServerThread(app, host="0.0.0.0").start()
