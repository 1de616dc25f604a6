"""A minimal real HTTP endpoint on loopback that records the headers of every request.

It speaks just enough of TGI's generate route (``POST /``, plain and streamed), the chat route
(``POST /v1/chat/completions``, plain and streamed) and the probe routes (``/health``,
``/info``, ``/v1/models``) for the clients the herd builds. The headers are what the tests
using it are about, so the answers are canned. ``mode`` makes it fail the way an expert can:
``deny`` answers 401, ``slow`` answers after the client gave up, ``redirect`` sends a 307 to
another server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "deny", "slow", "redirect"]

SLOW_S = 2.0
"""How long a ``slow`` server takes (tests give their clients far less)."""

_CHAT_REPLY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "system_fingerprint": "t",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": "chat ok"},
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}
_GENERATE_EVENT = {
    "index": 1,
    "token": {"id": 1, "text": "generate ok", "logprob": 0.0, "special": False},
    "generated_text": "generate ok",
    "details": {
        "finish_reason": "eos_token",
        "generated_tokens": 1,
        "input_length": 3,
        "seed": None,
    },
}
_CHAT_CHUNKS = [
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "chat ok"}}],
    },
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    },
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
]
_PROBES: dict[str, Any] = {
    "/health": {},
    "/info": {"model_id": "m", "max_input_tokens": 900, "max_total_tokens": 1024},
    "/v1/models": {"object": "list", "data": [{"id": "m", "object": "model"}]},
}


class RecordingServer(ThreadingHTTPServer):
    """The endpoint, serving from a daemon thread once started.

    Example:
        .. code-block:: python

            server = RecordingServer().start()
            httpx.post(f"{server.url}/v1/chat/completions", json={...})
            server.seen[0]["headers"].get("authorization")
            server.stop()
    """

    daemon_threads = True

    def __init__(self, mode: Mode = "ok", redirect_to: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode: Mode = mode
        self.redirect_to = redirect_to
        self.seen: list[dict[str, Any]] = []
        """Per request: ``method``, ``path`` and ``headers`` (names lower-cased)."""
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def start(self) -> RecordingServer:
        # A short poll: `stop` waits for the loop to notice.
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up on a slow answer closed its socket: expected

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.seen.append({"method": method, "path": path, "headers": headers})

    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of each request (None where there was none)."""
        with self._lock:
            return [entry["headers"].get("authorization") for entry in self.seen]


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _record(self) -> None:
        self.server.record(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _failed(self) -> bool:
        """Answer as the mode says; True when that was the whole answer."""
        mode = self.server.mode
        if mode == "deny":
            self._send(401, json.dumps({"error": "invalid credentials"}).encode())
            return True
        if mode == "slow":
            time.sleep(SLOW_S)
            return False
        if mode == "redirect":
            self.send_response(307)
            self.send_header("location", f"{self.server.redirect_to}{self.path}")
            self.send_header("content-length", "0")
            self.end_headers()
            return True
        return False

    def do_GET(self) -> None:
        self._record()
        if self._failed():
            return
        path = self.path.split("?")[0]
        if path in _PROBES:
            self._send(200, json.dumps(_PROBES[path]).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self._record()
        if self._failed():
            return
        if self.path.endswith("/v1/chat/completions"):
            if body.get("stream"):
                events = [*(json.dumps(c) for c in _CHAT_CHUNKS), "[DONE]"]
                data = "".join(f"data: {e}\n\n" for e in events).encode()
                self._send(200, data, "text/event-stream")
            else:
                self._send(200, json.dumps(_CHAT_REPLY).encode())
        elif "inputs" not in body:
            self._send(422, b'{"error": "inputs missing", "error_type": "validation"}')
        elif body.get("stream"):
            data = f"data: {json.dumps(_GENERATE_EVENT)}\n\n".encode()
            self._send(200, data, "text/event-stream")
        else:
            self._send(200, json.dumps([{"generated_text": "generate ok"}]).encode())
