"""Two ``herd serve-router`` replicas on one herd config share breakers and sticky threads
through a real redis-server, and keep serving on local state while Redis is gone.

Everything is real and on loopback: two router processes, two TGI-protocol expert servers
(the tiny model; their ``/_herd/faults`` hooks make an expert fail) and a redis-server
process that the last test kills and restarts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from langchain_herd.server import ServerThread, create_app, load_backend
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
HERD = [sys.executable, "-m", "langchain_herd.cli"]
STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."
HUM_Q = "Which philosopher wrote the Critique of Pure Reason, and in which century?"
EXPERT = "x-herd-expert"
THREAD = "x-herd-thread-id"
RECONNECT_S = 0.5


class Replica:
    """One ``herd serve-router`` process, its stderr kept in a file."""

    def __init__(self, name: str, config: Path, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"router-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *HERD,
                    "serve-router",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve-router {self.name} exited:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"serve-router {self.name} not ready in {timeout_s}s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ask(self, question: str, thread: str | None = None) -> httpx.Response:
        headers = {THREAD: thread} if thread else {}
        body = {"model": "herd", "messages": [{"role": "user", "content": question}]}
        response = httpx.post(
            f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=60
        )
        assert response.status_code == 200, (self.name, response.text)
        return response

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=10).json()
        return body

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@dataclass
class Herd:
    """The expert servers (name -> URL) and the two router replicas."""

    experts: dict[str, str]
    a: Replica
    b: Replica


def write_config(path: Path, experts: dict[str, str], redis_url: str) -> Path:
    gen = {"max_new_tokens": 4}
    config = {
        "name": "replicas",
        "experts": [
            {
                "name": "stem",
                "url": experts["stem"],
                "protocol": "openai",
                "model_id": "tiny-stem",
                "routes": ["stem"],
                "generation": gen,
            },
            {
                "name": "general",
                "url": experts["general"],
                "protocol": "openai",
                "model_id": "tiny-general",
                "routes": ["humanities", "social_sciences", "other"],
                "generation": gen,
            },
        ],
        # A margin of 1: a thread never leaves its expert, whatever the new turn's scores.
        "router": {"sticky": {"margin": 1.0}},
        "fallback": {
            "default_expert": "general",
            "breaker": {"failure_threshold": 2, "cooldown_s": 120},
        },
        "state": {"backend": "redis", "url": redis_url, "reconnect_s": RECONNECT_S},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def herd(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herd]:
    workdir = tmp_path_factory.mktemp("replicas")
    ports = {name: free_port() for name in ("stem", "general")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    config = write_config(workdir / "herd.yaml", urls, redis_server.url)
    # The routers start (imports, classifier) while this process loads the expert model.
    a, b = Replica("a", config, workdir), Replica("b", config, workdir)
    servers: list[ServerThread] = []
    try:
        backend = load_backend("tiny")
        for name, port in ports.items():
            app = create_app(
                backend, model_id=f"tiny-{name}", max_input_tokens=512, max_total_tokens=1024
            )
            servers.append(ServerThread(app, port=port).start())
        a.wait_ready()
        b.wait_ready()
        yield Herd(urls, a, b)
    finally:
        for replica in (a, b):  # both shut down at once
            replica.terminate()
        a.stop()
        b.stop()
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
def fresh_state(herd: Herd, redis_server: RedisServer) -> Iterator[None]:
    """Each test starts with closed breakers, no threads and no faults."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    yield
    for url in herd.experts.values():
        httpx.delete(f"{url}/_herd/faults")


def fail_next(url: str, count: int) -> None:
    reply = httpx.post(f"{url}/_herd/faults", json={"fail_next": count, "fail_status": 503})
    reply.raise_for_status()


def pending_failures(url: str) -> int:
    return int(httpx.get(f"{url}/_herd/faults").json()["fail_next"])


def open_stem_through(replica: Replica, herd: Herd) -> None:
    """Two failures of the stem expert, seen by ``replica``: its breaker opens (threshold 2)."""
    fail_next(herd.experts["stem"], 2)
    for _ in range(2):
        answer = replica.ask(STEM_Q)
        assert answer.headers[EXPERT] == "general"  # fell back
        attempts = answer.json()["herd"]["attempts"]
        assert attempts[0]["expert"] == "stem" and not attempts[0]["ok"]
    assert pending_failures(herd.experts["stem"]) == 0


def assert_stem_skipped_by(replica: Replica, herd: Herd) -> None:
    """``replica`` answers a stem question without calling the stem expert at all."""
    stem = herd.experts["stem"]
    fail_next(stem, 1)  # a call to stem would use this up
    answer = replica.ask(STEM_Q)
    assert answer.headers[EXPERT] == "general"
    decision = answer.json()["herd"]
    assert "circuit open" in decision["skipped"]["stem"], decision
    assert [a["expert"] for a in decision["attempts"]] == ["general"]
    assert pending_failures(stem) == 1, "the stem expert must not have been called"
    assert replica.health()["experts"]["stem"]["breaker"]["state"] == "open"
    httpx.delete(f"{stem}/_herd/faults")


def test_breaker_opened_through_one_replica_is_honoured_by_the_other(herd: Herd) -> None:
    assert herd.b.ask(STEM_Q).headers[EXPERT] == "stem"
    open_stem_through(herd.a, herd)
    assert_stem_skipped_by(herd.b, herd)


def test_thread_sticks_to_its_expert_across_replicas(herd: Herd) -> None:
    a, b = herd.a, herd.b
    assert a.ask(STEM_Q, thread="t-stem").headers[EXPERT] == "stem"
    assert a.ask(HUM_Q, thread="t-hum").headers[EXPERT] == "general"
    assert b.ask(HUM_Q).headers[EXPERT] == "general"  # no thread: routed on its own
    assert b.ask(HUM_Q, thread="t-stem").headers[EXPERT] == "stem"
    assert b.ask(STEM_Q, thread="t-hum").headers[EXPERT] == "general"


def test_replicas_serve_through_a_redis_outage_and_share_again_after(
    herd: Herd, redis_server: RedisServer
) -> None:
    replicas = (herd.a, herd.b)
    down = {r.name: r.output().count("is unreachable") for r in replicas}
    redis_server.stop()
    started = time.monotonic()
    for _ in range(3):
        for replica in replicas:
            assert replica.ask(STEM_Q).headers[EXPERT] in ("stem", "general")
            # /health reads each breaker: from local state now.
            assert replica.health()["experts"]["stem"]["breaker"]["state"] in ("open", "closed")
    assert time.monotonic() - started < 30
    for replica in replicas:
        log = replica.output()
        assert log.count("is unreachable") == down[replica.name] + 1, log[-3000:]
        assert f"Redis at {redis_server.url} is unreachable" in log
        assert "local state" in log

    back = {r.name: r.output().count("reachable again") for r in replicas}
    redis_server.start()  # same port, empty: nothing persisted
    time.sleep(RECONNECT_S + 0.2)
    for replica in replicas:
        replica.ask(HUM_Q)
        log = replica.output()
        assert log.count("reachable again") == back[replica.name] + 1, log[-3000:]
    # Shared again: failures seen through B open the breaker for A.
    open_stem_through(herd.b, herd)
    assert_stem_skipped_by(herd.a, herd)
