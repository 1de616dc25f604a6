"""``herd serve``'s HTTP layer under hostile and slow clients, through a real uvicorn on loopback.

Raw sockets play the clients no library would be: a declared 10 GB body, a chunked body with
no end, a head or a body that trickles, a client that leaves mid-generation. Limits are set
small (a 4 KiB body, half-second timeouts) so nothing here waits long; the tiny model is the
backend, and a generation of 3000 tokens (seconds on a CPU) is what a departing client stops.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from langchain_herd.config import LocalServerConfig
from langchain_herd.http_limits import DEFAULT_MAX_BODY_BYTES, HttpLimits, is_loopback, reach_of
from langchain_herd.local_servers import server_command
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.app import FaultRoute
from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.cli import build_parser
from langchain_herd.server.server_thread import ServerStartError

LIMIT = 4096
TIMEOUT_S = 0.5
HTTP = httpx.Client(timeout=10, trust_env=False)
LONG = 3000  # tokens: seconds of generation, far longer than a test waits before leaving


@pytest.fixture(scope="module")
def backend() -> GenerationBackend:
    return load_backend("tiny")


@pytest.fixture(scope="module")
def server(backend: GenerationBackend) -> Iterator[ServerThread]:
    app = create_app(
        backend,
        max_input_tokens=100,
        max_total_tokens=LONG + 100,
        max_body_bytes=LIMIT,
        body_timeout_s=TIMEOUT_S,
        header_timeout_s=TIMEOUT_S,
    )
    with ServerThread(app) as running:
        yield running


def address(server: ServerThread) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def head(path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: herd", *lines]) + "\r\n\r\n").encode()


def exchange(server: ServerThread, *pieces: bytes) -> tuple[int, bytes]:
    """Send ``pieces``, then read until the server closes the connection: status and body."""
    with socket.create_connection(address(server), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), body


def metric(server: ServerThread, name: str) -> float:
    for line in HTTP.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_declared_body_over_the_limit_is_refused_unread(server: ServerThread) -> None:
    # 10 GB announced, two bytes sent: a server waiting for the body would answer 408 after
    # the body timeout, not 413.
    status, body = exchange(server, head("/generate", "Content-Length: 10000000000") + b"{}")
    assert status == 413
    error = json.loads(body)
    assert error["error_type"] == "validation" and str(LIMIT) in error["error"]
    # The chat route answers in OpenAI's shape (plus TGI's error_type).
    status, body = exchange(server, head("/v1/chat/completions", "Content-Length: 99999999"))
    assert status == 413
    error = json.loads(body)
    assert error["error"]["code"] == "request_too_large" and error["error_type"] == "validation"


def test_chunked_body_is_cut_at_the_limit(server: ServerThread) -> None:
    piece = b"400\r\n" + b" " * 1024 + b"\r\n"  # 1 KiB chunks, and never the final 0-chunk
    status, body = exchange(server, head("/generate", "Transfer-Encoding: chunked"), *([piece] * 5))
    assert status == 413 and json.loads(body)["error_type"] == "validation"
    assert (
        HTTP.post(f"{server.url}/generate", json={"inputs": "x" * (LIMIT + 1)}).status_code == 413
    )


def test_slow_body_is_cut_off_while_health_answers(server: ServerThread) -> None:
    with socket.create_connection(address(server), timeout=5) as slow:
        slow.sendall(head("/generate", "Content-Length: 1000") + b'{"inputs": "')
        # The body is pending on the server; other clients are served meanwhile.
        assert HTTP.get(f"{server.url}/health").status_code == 200
        assert HTTP.get(f"{server.url}/info").status_code == 200
        received = b""
        while chunk := slow.recv(65536):  # no more bytes sent: the server must end it
            received += chunk
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"body-timeout" in received and b"connection: close" in received.lower()
    assert metric(server, 'herd_http_refused_total{reason="body_timeout"}') >= 1


def test_slow_or_silent_head_is_cut_off(server: ServerThread) -> None:
    status, body = exchange(server, b"POST /generate HTTP/1.1\r\nHost: her")
    assert status == 408 and b"request head" in body
    status, _ = exchange(server)  # connects, says nothing
    assert status == 408
    status, _ = exchange(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
    assert status == 431


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"inputs": "hello world", "parameters": {"max_new_tokens": LONG}}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hello"}], "max_tokens": LONG},
        ),
    ],
)
def test_client_gone_stops_a_non_streaming_generation(
    server: ServerThread, backend: GenerationBackend, path: str, body: dict[str, object]
) -> None:
    stopped = backend.stopped_generations
    failures = 'tgi_request_failure{err="cancelled"}'
    cancelled = metric(server, failures)
    success = metric(server, "tgi_request_success")
    data = json.dumps(body).encode()
    with socket.create_connection(address(server), timeout=5) as client:
        client.sendall(head(path, f"Content-Length: {len(data)}") + data)
        deadline = time.monotonic() + 30
        while metric(server, "herd_requests_in_flight") != 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
    # The client is gone; the backend must stop between tokens (seen by its own counter),
    # long before the 3000 tokens would have been generated.
    deadline = time.monotonic() + 30
    while backend.stopped_generations == stopped:
        assert time.monotonic() < deadline, "the generation was not stopped"
        time.sleep(0.01)
    assert metric(server, failures) == cancelled + 1
    assert metric(server, "tgi_request_success") == success
    assert metric(server, "herd_requests_in_flight") == 0
    # ... and the model is free for the next client at once.
    reply = HTTP.post(
        f"{server.url}/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}
    )
    assert reply.status_code == 200


def test_info_states_the_limits_and_the_fault_route(server: ServerThread) -> None:
    info = HTTP.get(f"{server.url}/info").json()
    assert info["herd_http_limits"] == HttpLimits(LIMIT, TIMEOUT_S, TIMEOUT_S).describe()
    assert info["herd_fault_route"] == "open"


def test_bind_policy_for_the_fault_route(backend: GenerationBackend) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("expert.internal")
    assert reach_of("127.0.0.1") == "loopback only"
    assert FaultRoute.for_host("127.0.0.1", None).mode == "open"
    assert FaultRoute.for_host("0.0.0.0", None).mode == "off"
    assert FaultRoute.for_host("0.0.0.0", "k").mode == "key"
    # An app whose fault route is open is not served beyond loopback (refused before binding).
    with pytest.raises(ServerStartError, match="/_herd/faults"):
        ServerThread(create_app(backend), host="0.0.0.0").start()
    # With a key, the route answers only to it.
    keyed = create_app(backend, fault_route=FaultRoute(key=SecretStr("sesame")))
    with ServerThread(keyed) as running:
        faults = f"{running.url}/_herd/faults"
        assert HTTP.post(faults, json={"fail_next": 1}).status_code == 403
        wrong = HTTP.get(faults, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and "HERD_FAULTS_KEY" in wrong.json()["error"]
        good = HTTP.post(faults, json={"fail_next": 1}, headers={"Authorization": "Bearer sesame"})
        assert good.status_code == 200 and good.json()["fail_next"] == 1
        assert HTTP.get(f"{running.url}/info").json()["herd_fault_route"] == "key"
    off = create_app(backend, fault_route=FaultRoute(enabled=False))
    with ServerThread(off) as running:
        refused = HTTP.delete(f"{running.url}/_herd/faults")
        assert refused.status_code == 403 and "off" in refused.json()["error"]


def test_local_servers_pass_their_body_limit_to_herd_serve() -> None:
    server = LocalServerConfig(name="a", port=8081, max_body_bytes=1234)
    command = server_command(server)
    args = build_parser().parse_args(command[3:])  # after `python -m langchain_herd.server`
    assert args.max_body_bytes == 1234
    assert LocalServerConfig(name="a", port=8081).max_body_bytes == DEFAULT_MAX_BODY_BYTES
