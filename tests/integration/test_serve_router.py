"""``herd serve-router``: the herd behind one OpenAI-compatible endpoint, end to end.

Everything is real and on loopback: two TGI-protocol expert servers running the tiny model
(their ``/_herd/faults`` hooks make experts fail), the router app served by uvicorn, and the
clients people point at such an endpoint: the official ``openai`` client (sync, async,
streaming), ``langchain_openai.ChatOpenAI`` (also as a ``create_agent`` model), and ``curl``.
The tiny model writes nonsense, but its tool calls are schema-valid: the expert server
enforces them with a grammar.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from langchain_herd import HerdRouter
from langchain_herd.cli import main as herd_main
from langchain_herd.config import parse_config
from langchain_herd.endpoint import create_router_app
from langchain_herd.endpoint.auth import API_KEYS_ENV
from langchain_herd.endpoint.cli import open_bind_refusal
from langchain_herd.server import ServerThread, create_app, load_backend
from tests.integration.agent_loop import ToolThenAnswer, add, added

KEY = "test-key-0123456789"
STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."
HUM_Q = "Which moral philosophy holds that the right act maximizes happiness, as Mill said?"
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ROOT = Path(__file__).resolve().parents[2]
#: One client for the whole module: a new one per call costs tens of ms (TLS setup).
HTTP = httpx.Client(timeout=60, trust_env=False)


@pytest.fixture(scope="module")
def experts() -> Iterator[dict[str, str]]:
    """Server ``a`` hosts the stem expert, ``b`` the humanities and general experts."""
    backend = load_backend("tiny")
    started = {
        name: ServerThread(
            create_app(backend, model_id="tiny", max_input_tokens=900, max_total_tokens=1024)
        ).start()
        for name in ("a", "b")
    }
    yield {name: server.url for name, server in started.items()}
    for server in started.values():
        server.stop()


@pytest.fixture(autouse=True)
def clear_faults(experts: dict[str, str]) -> Iterator[None]:
    yield
    for url in experts.values():
        HTTP.delete(f"{url}/_herd/faults")


def herd_config(experts: dict[str, str], **router: Any) -> dict[str, Any]:
    gen = {"max_new_tokens": 48}

    def expert(name: str, server: str, protocol: str, routes: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "url": experts[server],
            "protocol": protocol,
            "model_id": "tiny",
            "routes": routes,
            "generation": gen,
        }

    return {
        "name": "endpoint-e2e",
        "experts": [
            expert("stem", "a", "openai", ["stem"]),
            expert("humanities", "b", "tgi", ["humanities"]),
            expert("general", "b", "openai", ["social_sciences", "other"]),
        ],
        "router": router,
        "fallback": {"default_expert": "general"},
    }


class Endpoint:
    """A router app served on loopback, with the router kept for white-box checks."""

    def __init__(self, router: HerdRouter, server: ServerThread) -> None:
        self.router = router
        self.server = server
        self.url = server.url
        self.auth = {"Authorization": f"Bearer {KEY}"}

    def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return HTTP.post(
            f"{self.url}/v1/chat/completions",
            json=body,
            headers={**self.auth, **(headers or {})},
            timeout=60,
        )

    def metrics(self) -> str:
        return HTTP.get(f"{self.url}/metrics", headers=self.auth).text

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=KEY, max_retries=0)


def start_endpoint(config: dict[str, Any], *, max_body_bytes: int = 4 * 1024 * 1024) -> Endpoint:
    router = HerdRouter.from_config(parse_config(config))
    app = create_router_app(
        router, api_keys=[KEY], max_body_bytes=max_body_bytes, health_interval_s=0.2
    )
    return Endpoint(router, ServerThread(app).start())


@pytest.fixture(scope="module")
def endpoint(experts: dict[str, str]) -> Iterator[Endpoint]:
    """One endpoint for the tests that leave no state behind (no faults, no thread)."""
    shared = start_endpoint(herd_config(experts))
    yield shared
    shared.server.stop()


@pytest.fixture
def make_endpoint(experts: dict[str, str]) -> Iterator[Callable[..., Endpoint]]:
    """Fresh endpoints (own breakers, metrics, limits) for tests that count or break things."""
    started: list[Endpoint] = []

    def make(*, config: dict[str, Any] | None = None, max_body_bytes: int = 4 << 20) -> Endpoint:
        fresh = start_endpoint(config or herd_config(experts), max_body_bytes=max_body_bytes)
        started.append(fresh)
        return fresh

    yield make
    for fresh in started:
        fresh.server.stop()


def ask(question: str = STEM_Q, **extra: Any) -> dict[str, Any]:
    return {"model": "herd", "messages": [{"role": "user", "content": question}], **extra}


def expert_requests(experts: dict[str, str]) -> dict[str, float]:
    """Generation requests each expert server has received (its TGI metrics)."""
    counts = {}
    for name, url in experts.items():
        for line in HTTP.get(f"{url}/metrics").text.splitlines():
            if line.startswith("tgi_request_count "):
                counts[name] = float(line.split()[1])
    return counts


def sse_events(text: str) -> list[Any]:
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in data]


# -- the openai client ------------------------------------------------------------------------


async def test_openai_client_sync_and_async(endpoint: Endpoint) -> None:
    raw = endpoint.client().chat.completions.with_raw_response.create(
        model="herd", messages=[{"role": "user", "content": STEM_Q}], max_tokens=5
    )
    sync = raw.parse()
    assert raw.headers["x-herd-expert"] == "stem"
    assert raw.headers["x-herd-policy"] == "argmax"
    assert raw.headers["x-herd-scores"].startswith("stem=")
    herd = sync.model_extra["herd"]  # type: ignore[index]
    assert herd["answered_by"] == "stem" and herd["attempts"][0]["ok"]
    assert sync.model == "herd/stem" and sync.choices[0].finish_reason == "length"
    assert sync.usage is not None and sync.usage.completion_tokens == 5
    assert sync.usage.total_tokens == sync.usage.prompt_tokens + 5
    client = openai.AsyncOpenAI(base_url=f"{endpoint.url}/v1", api_key=KEY, max_retries=0)
    async_reply = await client.chat.completions.create(
        model="herd", messages=[{"role": "user", "content": STEM_Q}], max_tokens=5
    )
    assert async_reply.choices[0].message.content == sync.choices[0].message.content  # greedy


def test_openai_stream_with_usage_headers_and_decision(endpoint: Endpoint) -> None:
    stream = endpoint.client().chat.completions.create(
        model="herd",
        messages=[{"role": "user", "content": HUM_Q}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    # Headers are sent once the first token is in: the expert streaming is already known.
    assert stream.response.headers["x-herd-expert"] == "humanities"
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6
    assert usage_chunk.model_extra["herd"]["answered_by"] == "humanities"  # type: ignore[index]
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])
    whole = endpoint.client().chat.completions.create(
        model="herd", messages=[{"role": "user", "content": HUM_Q}], max_tokens=6
    )
    assert text == whole.choices[0].message.content


def test_openai_tools_plain_and_streamed(endpoint: Endpoint) -> None:
    client = endpoint.client()
    forced = {"type": "function", "function": {"name": "add"}}
    reply = client.chat.completions.create(
        model="herd",
        messages=[{"role": "user", "content": STEM_Q}],
        tools=[ADD_TOOL],
        tool_choice=forced,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "add"  # type: ignore[union-attr]
    assert set(json.loads(call.function.arguments)) == {"a", "b"}  # type: ignore[union-attr]
    herd = reply.model_extra["herd"]  # type: ignore[index]
    assert herd["requirements"] == ["tools"]
    assert herd["excluded"] == {"humanities": "cannot call tools"}
    stream = client.chat.completions.create(
        model="herd",
        messages=[{"role": "user", "content": STEM_Q}],
        tools=[ADD_TOOL],
        tool_choice="required",
        stream=True,
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "add"  # type: ignore[union-attr]
    arguments = "".join(d.function.arguments or "" for d in deltas)  # type: ignore[union-attr]
    assert set(json.loads(arguments)) == {"a", "b"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_loop_holds_its_expert_by_tool_call_id(endpoint: Endpoint) -> None:
    # An OpenAI client sends the assistant's tool call back without the herd's decision; the
    # call id alone keeps the loop's next request with the expert that made the call.
    client = endpoint.client()
    forced = {"type": "function", "function": {"name": "add"}}
    messages: list[Any] = [{"role": "user", "content": STEM_Q}]
    first = client.chat.completions.with_raw_response.create(
        model="herd",
        messages=messages,
        tools=[ADD_TOOL],
        tool_choice=forced,  # type: ignore[arg-type]
    )
    reply = first.parse()
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages += [
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    second = client.chat.completions.with_raw_response.create(
        model="herd", messages=messages, tools=[ADD_TOOL]
    )
    herd = second.parse().model_extra["herd"]  # type: ignore[index]
    assert second.headers["x-herd-expert"] == first.headers["x-herd-expert"]
    assert herd["sticky"].startswith("tool loop"), herd


def test_response_format_json_schema(endpoint: Endpoint) -> None:
    schema = {
        "type": "object",
        "properties": {"correct": {"type": "boolean"}},
        "required": ["correct"],
        "additionalProperties": False,
    }
    reply = endpoint.client().chat.completions.create(
        model="herd",
        messages=[{"role": "user", "content": STEM_Q}],
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    )
    content = reply.choices[0].message.content or ""
    assert isinstance(json.loads(content)["correct"], bool), content
    assert reply.model_extra["herd"]["requirements"] == ["structured_output:json_schema"]  # type: ignore[index]


# -- LangChain's ChatOpenAI and an agent ----------------------------------------------------


def chat_openai(endpoint: Endpoint, **fields: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="herd", base_url=f"{endpoint.url}/v1", api_key=KEY, max_retries=0, **fields
    )


async def test_chat_openai_invoke_stream_and_bind_tools(endpoint: Endpoint) -> None:
    llm = chat_openai(endpoint, max_tokens=5, stream_usage=True)
    answer = llm.invoke(STEM_Q)
    assert answer.response_metadata["model_name"] == "herd/stem"
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 5
    chunks = [chunk async for chunk in llm.astream(STEM_Q)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.text == answer.text
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] == 5

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    called = chat_openai(endpoint).bind_tools([add], tool_choice="add").invoke(STEM_Q)
    assert called.tool_calls[0]["name"] == "add"  # type: ignore[attr-defined]
    assert set(called.tool_calls[0]["args"]) == {"a", "b"}  # type: ignore[attr-defined]


def test_agent_with_chat_openai_over_the_endpoint(endpoint: Endpoint) -> None:
    added.clear()
    llm = ChatOpenAI(
        model="herd",
        base_url=f"{endpoint.url}/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-herd-thread-id": "agent-1"},
    )
    agent = create_agent(model=llm, tools=[add], middleware=[ToolThenAnswer()])
    out = agent.invoke({"messages": [("user", STEM_Q)]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"], kinds
    call = out["messages"][1].tool_calls[0]
    assert added == [(call["args"]["a"], call["args"]["b"])]
    assert out["messages"][2].text == str(sum(added[0]))
    assert out["messages"][3].text.strip() and not out["messages"][3].tool_calls
    assert [m.response_metadata["model_name"] for m in out["messages"][1::2]] == [
        "herd/stem",
        "herd/stem",
    ]
    assert endpoint.router.engine.sessions.get("agent-1") == "stem"


# -- curl, models, pins, threads ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(endpoint: Endpoint) -> None:
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "-H",
            f"Authorization: Bearer {KEY}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(ask(max_tokens=3)),
            f"{endpoint.url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    head, _, body = done.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 200") and "x-herd-expert: stem" in head
    assert json.loads(body)["usage"]["completion_tokens"] == 3
    streamed = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "-H",
            f"Authorization: Bearer {KEY}",
            "-d",
            json.dumps(ask(max_tokens=3, stream=True)),
            f"{endpoint.url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    events = sse_events(streamed.stdout)
    assert events[-1] == "[DONE]" and events[-2]["herd"]["answered_by"] == "stem"


def test_models_and_pins(endpoint: Endpoint) -> None:
    listed = endpoint.client().models.list()
    assert [m.id for m in listed.data] == ["herd", "herd/stem", "herd/humanities", "herd/general"]
    assert endpoint.client().models.retrieve("herd/stem").id == "herd/stem"
    pinned = endpoint.post(ask(model="herd/general", max_tokens=2))
    assert pinned.headers["x-herd-expert"] == "general"
    assert pinned.json()["herd"]["pinned"] == "general"
    streamed = endpoint.post(ask(model="herd/humanities", max_tokens=2, stream=True))
    assert streamed.headers["x-herd-expert"] == "humanities"
    missing = endpoint.post(ask(model="gpt-4o"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    nowhere = HTTP.get(f"{endpoint.url}/v2/nothing", headers=endpoint.auth)
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"


def test_sticky_thread_header(make_endpoint: Callable[..., Endpoint], experts: Any) -> None:
    # A wide margin: a thread's follow-up stays with its expert unless a new one is certain.
    endpoint = make_endpoint(config=herd_config(experts, sticky={"margin": 1.0}))
    thread = {"x-herd-thread-id": "conversation-7"}
    first = endpoint.post(ask(STEM_Q, max_tokens=2), headers=thread)
    assert first.headers["x-herd-expert"] == "stem"
    follow_up = endpoint.post(ask(HUM_Q, max_tokens=2), headers=thread)
    assert follow_up.headers["x-herd-expert"] == "stem"
    assert "conversation-7" in follow_up.json()["herd"]["sticky"]
    alone = endpoint.post(ask(HUM_Q, max_tokens=2))
    assert alone.headers["x-herd-expert"] == "humanities"


# -- health and metrics -----------------------------------------------------------------------


def test_health_reports_breakers_and_probes(
    make_endpoint: Callable[..., Endpoint], experts: dict[str, str]
) -> None:
    config = herd_config(experts)
    with socket.socket() as sock:  # a port nobody listens on: that expert's probe fails
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config["experts"][1]["url"] = dead
    endpoint = make_endpoint(config=config)
    deadline = time.monotonic() + 10
    while True:
        body = HTTP.get(f"{endpoint.url}/health").json()  # open: no key needed
        if all(entry["probe"] for entry in body["experts"].values()):
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["status"] == "ok" and body["usable_experts"] == ["stem", "general"]
    stem, humanities = body["experts"]["stem"], body["experts"]["humanities"]
    assert stem["breaker"] == {"state": "closed", "consecutive_failures": 0, "retry_in_s": 0.0}
    assert stem["probe"]["ok"] and stem["probe"]["latency_ms"] > 0
    assert not humanities["usable"] and "ConnectError" in humanities["probe"]["error"]
    for breaker in endpoint.router.breakers.values():
        for _ in range(3):
            breaker.record_failure()
    down = HTTP.get(f"{endpoint.url}/health")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert down.json()["experts"]["stem"]["breaker"]["state"] == "open"


def metric(text: str, sample: str) -> float:
    """The value of one sample (name and labels as exposed) in a Prometheus text page."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def test_metrics_move_with_calls_and_failures(
    make_endpoint: Callable[..., Endpoint], experts: dict[str, str]
) -> None:
    endpoint = make_endpoint()
    assert HTTP.get(f"{endpoint.url}/metrics").status_code == 401
    endpoint.post(ask(max_tokens=2))
    endpoint.post(ask(max_tokens=2, stream=True))
    HTTP.post(f"{experts['a']}/_herd/faults", json={"fail_next": 1, "fail_status": 503})
    assert endpoint.post(ask(max_tokens=2)).headers["x-herd-expert"] == "general"
    endpoint.post({"messages": "not a list"})
    text = endpoint.metrics()
    ok = 'herd_router_requests_total{route="/v1/chat/completions",status="200"}'
    assert metric(text, ok) == 3
    assert (
        metric(text, 'herd_router_requests_total{route="/v1/chat/completions",status="400"}') == 1
    )
    assert metric(text, 'herd_router_expert_calls_total{expert="stem"}') == 3
    assert metric(text, 'herd_router_expert_calls_total{expert="general"}') == 1
    failed = 'herd_router_expert_failures_total{expert="stem",kind="server_error"}'
    assert metric(text, failed) == 1
    assert metric(text, "herd_router_failovers_total") == 1
    assert metric(text, 'herd_router_breaker_state{expert="stem"}') == 0
    assert metric(text, 'herd_router_breaker_consecutive_failures{expert="stem"}') == 1
    assert metric(text, "herd_router_decision_duration_seconds_count") == 3
    latency = 'herd_router_request_duration_seconds_count{route="/v1/chat/completions"}'
    assert metric(text, latency) == 4


# -- auth ----------------------------------------------------------------------------------------


def test_auth_required_except_health(endpoint: Endpoint) -> None:
    bare = openai.OpenAI(base_url=f"{endpoint.url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bare.chat.completions.create(model="herd", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    missing = HTTP.get(f"{endpoint.url}/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert HTTP.get(f"{endpoint.url}/health").status_code == 200
    assert HTTP.get(f"{endpoint.url}/v1/models", headers=endpoint.auth).status_code == 200


def test_cli_refuses_open_bind_without_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert herd_main(["serve-router", "bundled:local", "--host", "0.0.0.0"]) == 2
    said = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in said and API_KEYS_ENV in said
    assert open_bind_refusal("::", []) is not None
    assert open_bind_refusal("router.internal", []) is not None
    assert open_bind_refusal("127.0.0.1", []) is None and open_bind_refusal("::1", []) is None
    from pydantic import SecretStr

    assert open_bind_refusal("0.0.0.0", [SecretStr("k")]) is None


def test_cli_subprocess_serves_and_stops(experts: dict[str, str], tmp_path: Path) -> None:
    """What a deployment (and the two-replica test) does: run the command, wait for its
    ready line, call it, stop it with SIGTERM."""
    config = tmp_path / "herd.yaml"
    config.write_text(yaml.safe_dump(herd_config(experts)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
    env.update({API_KEYS_ENV: f"other,{KEY}", "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_herd.cli", "serve-router", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "serve-router: listening on http://127.0.0.1:" in line:
                break
        url = lines[-1].rsplit(" ", 1)[1].strip()
        assert any("auth on (2 key(s)" in line for line in lines), lines
        assert any("serve-router: loopback only (127.0.0.1)" in line for line in lines), lines
        started = time.perf_counter()
        assert HTTP.get(f"{url}/health").status_code == 200
        assert time.perf_counter() - started < 1.0
        reply = HTTP.post(
            f"{url}/v1/chat/completions",
            json=ask(max_tokens=2),
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert reply.status_code == 200 and reply.headers["x-herd-expert"] == "stem"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- refusals that never reach an expert --------------------------------------------------------


def test_body_limit_before_the_body_is_read(make_endpoint: Callable[..., Endpoint]) -> None:
    endpoint = make_endpoint(max_body_bytes=1024)
    host, port = endpoint.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\n"
    )

    def status_of(request: bytes, *more: bytes) -> str:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            for piece in more:
                sock.sendall(piece)
            return sock.recv(65536).split(b"\r\n", 1)[0].decode()

    # A gigabyte announced, 2 bytes sent: answered at once, the body never awaited.
    declared = (head + "Content-Length: 1000000000\r\n\r\n{}").encode()
    assert status_of(declared) == "HTTP/1.1 413 Request Entity Too Large"
    # Chunked, no length: counted as it arrives and refused past the limit, never finished.
    piece = b"200\r\n" + b" " * 512 + b"\r\n"
    chunked = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    assert status_of(chunked, piece, piece, piece).startswith("HTTP/1.1 413")
    small = endpoint.post(ask(max_tokens=1))
    assert small.status_code == 200
    big = endpoint.post(ask("x" * 2000))
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ("{not json", 400, None, "invalid_json"),
        ({"model": "herd"}, 400, "messages", "missing_required_parameter"),
        (ask(temperature="hot"), 400, "temperature", "invalid_type"),
        (ask(temperature=3), 400, "temperature", "invalid_value"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            400,
            "messages[0].content[0].text",
            "invalid_type",
        ),
        (
            {"messages": [{"role": "robot", "content": "hi"}]},
            400,
            "messages[0].role",
            "invalid_value",
        ),
        (ask(n=2), 400, "n", "unsupported_parameter"),
        (ask(logprobs=True), 400, "logprobs", "unsupported_parameter"),
        (ask(functions=[{"name": "f"}]), 400, "functions", "unsupported_parameter"),
        (ask(tool_choice="required"), 400, "tool_choice", "invalid_value"),
        (ask(model="nope"), 404, "model", "model_not_found"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            400,
            "messages[0].content[0].type",
            "unsupported_content",
        ),
        # Longer than every expert's input limit (the servers' /info says 900 tokens).
        (ask("word " * 3000), 400, "messages", "context_length_exceeded"),
        # Pinned to an expert that cannot call tools: the router refuses before any call.
        (ask(model="herd/humanities", tools=[ADD_TOOL]), 400, None, "unsupported_by_herd"),
    ],
)
def test_bad_requests_never_reach_an_expert(
    endpoint: Endpoint,
    experts: dict[str, str],
    body: Any,
    status: int,
    param: str | None,
    code: str,
) -> None:
    before = expert_requests(experts)
    if isinstance(body, str):
        reply = HTTP.post(
            f"{endpoint.url}/v1/chat/completions", content=body, headers=endpoint.auth
        )
    else:
        reply = endpoint.post(body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error" and error["message"]
    assert expert_requests(experts) == before
    for breaker in endpoint.router.breakers.values():
        assert breaker.status().consecutive_failures == 0


# -- experts failing ------------------------------------------------------------------------------


def test_all_experts_failed(
    make_endpoint: Callable[..., Endpoint], experts: dict[str, str]
) -> None:
    endpoint = make_endpoint()
    for url in experts.values():
        HTTP.post(f"{url}/_herd/faults", json={"fail_next": 6, "fail_status": 503})
    for stream in (False, True):
        reply = endpoint.post(ask(max_tokens=2, stream=stream))
        assert reply.status_code == 502, reply.text  # a stream too: nothing was sent yet
        body = reply.json()
        assert body["error"]["code"] == "all_experts_failed"
        attempts = body["error"]["attempts"]
        assert [a["expert"] for a in attempts] == ["stem", "general", "humanities"]
        # 503 from the OpenAI route is a server error; TGI's generate route calls it a
        # generation error.
        assert [a["failure"] for a in attempts] == [
            "server_error",
            "server_error",
            "generation_error",
        ]
        assert body["herd"]["attempts"] == attempts
    # Two failures each so far; a third opens every breaker, then nobody is even called.
    endpoint.post(ask(max_tokens=2))
    refused = endpoint.post(ask(max_tokens=2))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_expert_available"
    assert int(refused.headers["retry-after"]) >= 1
    assert set(refused.json()["herd"]["skipped"]) == {"stem", "general", "humanities"}
    with pytest.raises(openai.InternalServerError):
        endpoint.client().chat.completions.create(
            model="herd", messages=[{"role": "user", "content": STEM_Q}]
        )


def test_a_request_every_expert_refuses_is_the_clients_error(
    make_endpoint: Callable[..., Endpoint],
) -> None:
    # A forced tool call that max_tokens cuts short: each expert answers 422 (a tool error,
    # inside the stream when streaming). Found by the long fuzz run as 502s.
    endpoint = make_endpoint()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    for stream in (False, True):
        body = ask(max_tokens=2, stream=stream, tools=[tool], tool_choice="required")
        reply = endpoint.post(body)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["code"] == "expert_refused"
        assert {a["failure"] for a in error["attempts"]} == {"invalid_input"}
        assert "Tool error" in error["message"]
    for breaker in endpoint.router.breakers.values():
        assert breaker.status().consecutive_failures == 0


def test_stream_broken_after_first_token(
    make_endpoint: Callable[..., Endpoint], experts: dict[str, str]
) -> None:
    endpoint = make_endpoint()
    HTTP.post(f"{experts['a']}/_herd/faults", json={"drop_stream_after": 3})
    reply = endpoint.post(ask(max_tokens=12, stream=True))
    assert reply.status_code == 200 and reply.headers["x-herd-expert"] == "stem"
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "stream_interrupted" and error["expert"] == "stem"
    assert any(e["choices"][0]["delta"].get("content") for e in events[:-2])
    with pytest.raises(openai.APIError, match="stream broke"):
        for _ in endpoint.client().chat.completions.create(
            model="herd", messages=[{"role": "user", "content": STEM_Q}], stream=True
        ):
            pass
    failures = 'herd_router_expert_failures_total{expert="stem",kind="stream_broken"}'
    assert metric(endpoint.metrics(), failures) == 2


def test_client_gone_mid_stream_closes_the_expert_stream(
    endpoint: Endpoint, experts: dict[str, str]
) -> None:
    def in_flight() -> float:
        text = HTTP.get(f"{experts['a']}/metrics").text
        return metric(text, "herd_requests_in_flight")

    # A slow expert (100 ms a token) whose answer cannot end early: the grammar allows no end
    # before 400 characters, so its stream is surely still running when the client leaves.
    HTTP.post(f"{experts['a']}/_herd/faults", json={"token_delay_ms": 100})
    essay = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 400}}}
    long_answer = {
        "type": "json_schema",
        "json_schema": {"name": "essay", "schema": {**essay, "required": ["essay"]}},
    }
    with HTTP.stream(
        "POST",
        f"{endpoint.url}/v1/chat/completions",
        json=ask(stream=True, response_format=long_answer),
        headers=endpoint.auth,
    ) as reply:
        lines = reply.iter_lines()
        first = next(lines)
        assert first.startswith("data: ")
        seen = in_flight()
        assert seen == 1, f"expert stream not in flight at the first event {first!r}"
    deadline = time.monotonic() + 10
    while in_flight() != 0:
        assert time.monotonic() < deadline, "the expert's stream was left open"
        time.sleep(0.05)
    assert endpoint.router.breakers["stem"].status().consecutive_failures == 0
