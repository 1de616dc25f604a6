"""Tokens go only where configured and never show up in logs, reprs or traces.

The endpoints here are minimal real HTTP servers on loopback that record the headers each
request carried: the headers are what this test is about, so the answers are canned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.load import dumpd
from langchain_core.tracers.context import collect_runs

from langchain_herd import HerdRouter
from langchain_herd.config import parse_config
from tests.unit.fakes import KeywordClassifier

SECRET = "herd-secret-token-0123456789"
HUB_TOKEN = "hf_environmentTokenMustNotLeak42"


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        if self.path.endswith("/v1/chat/completions"):
            reply: Any = {
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
        elif body.get("stream"):
            assert "inputs" in body
            event = {
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
            data = f"data: {json.dumps(event)}\n\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        else:
            assert "inputs" in body
            reply = [{"generated_text": "generate ok"}]
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def recorders() -> Iterator[list[ThreadingHTTPServer]]:
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        server.seen = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_token_only_to_its_endpoint_and_never_leaked(
    protocol: str,
    recorders: list[ThreadingHTTPServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HERD_TEST_TOKEN", SECRET)
    open_server, private_server = recorders
    config = parse_config(
        {
            "experts": [
                {
                    "name": "open",
                    "url": f"http://127.0.0.1:{open_server.server_port}",
                    "protocol": protocol,
                    "routes": ["stem"],
                },
                {
                    "name": "private",
                    "url": f"http://127.0.0.1:{private_server.server_port}",
                    "protocol": protocol,
                    "routes": ["other"],
                },
            ],
            "auth": [{"token_env": "HERD_TEST_TOKEN", "experts": ["private"]}],
        }
    )
    router = HerdRouter.from_config(
        config, classifier=KeywordClassifier({"stem": "integral", "other": "tax"})
    )
    caplog.set_level(logging.DEBUG)
    with collect_runs() as collector:
        router.invoke("an integral please")
        router.invoke("a tax question")
        asyncio.run(router.ainvoke("a tax question"))  # the async client too

    open_headers = open_server.seen  # type: ignore[attr-defined]
    private_headers = private_server.seen  # type: ignore[attr-defined]
    assert len(open_headers) == 1 and len(private_headers) == 2
    for headers in open_headers:
        assert HUB_TOKEN not in json.dumps(headers)
        assert SECRET not in json.dumps(headers)
        assert headers.get("authorization", "") == ""
    for headers in private_headers:
        assert headers["authorization"] == f"Bearer {SECRET}"

    places = {
        "logs": caplog.text,
        "router repr": repr(router) + repr(router.experts),
        "model reprs": " ".join(repr(e.model) + str(e.model) for e in router.experts.values()),
        "serialized models": json.dumps(
            [dumpd(e.model) for e in router.experts.values()], default=str
        ),
        "config": repr(config) + config.model_dump_json(),
        "traces": json.dumps(
            [run.model_dump(mode="json") for run in collector.traced_runs], default=str
        ),
    }
    assert collector.traced_runs, "the router must open traced runs"
    for place, text in places.items():
        assert SECRET not in text, f"token leaked into {place}"
        assert HUB_TOKEN not in text, f"HF_TOKEN leaked into {place}"
