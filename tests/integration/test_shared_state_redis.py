"""Breakers and sticky sessions shared through a real redis-server by two "replicas" (two
``RedisState`` clients, each as a separate router process would have), and the fallback to
local state while Redis is gone.

The experts are fakes: the subject here is the shared state, not the expert calls
(tests/integration/test_replicas_redis.py runs real router processes and expert servers).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from langchain_core.runnables import RunnableConfig

from langchain_herd import HerdEngine, HerdRouter
from langchain_herd.config import parse_config
from langchain_herd.experts import Expert
from langchain_herd.shared_state import RedisBreaker, RedisSessions, RedisState, redacted_url
from tests.redis_server import RedisServer, running_redis
from tests.unit.fakes import KeywordClassifier, ScriptedChat

LOGGER = "langchain_herd.shared_state"
CLASSIFIER = KeywordClassifier({"other": "tax", "stem": "integral", "humanities": "poem"})


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def replica(server: RedisServer) -> RedisState:
    return RedisState(server.url, key_prefix="test:", reconnect_s=0.3)


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


# -- breakers --------------------------------------------------------------------------------


def test_failures_through_one_replica_open_the_breaker_for_the_other(
    redis_server: RedisServer,
) -> None:
    a = replica(redis_server).breaker("stem", failure_threshold=2, cooldown_s=30)
    b = replica(redis_server).breaker("stem", failure_threshold=2, cooldown_s=30)
    a.record_failure()
    assert b.allow() and b.status().state == "closed"
    assert b.status().consecutive_failures == 1
    b.record_failure()  # consecutive across replicas: 1 (a) + 1 (b)
    assert not a.allow() and not b.allow()
    status = a.status()
    assert status.state == "open" and status.consecutive_failures == 2
    assert 29 < status.retry_in_s <= 30


def test_half_open_probe_is_claimed_by_exactly_one_and_success_closes_for_both(
    redis_server: RedisServer,
) -> None:
    replicas = [replica(redis_server), replica(redis_server)]
    breakers = [state.breaker("stem", failure_threshold=1, cooldown_s=0.2) for state in replicas]
    breakers[0].record_failure()
    assert [b.allow() for b in breakers] == [False, False]
    time.sleep(0.25)
    assert {b.status().state for b in breakers} == {"half_open"}
    # 16 threads per replica race for the probe slot.
    granted: list[int] = []
    barrier = threading.Barrier(32)

    def race(index: int) -> None:
        barrier.wait()
        if breakers[index % 2].allow():
            granted.append(index)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 1, granted
    prober = breakers[granted[0] % 2]
    prober.record_success()
    for breaker in breakers:
        assert breaker.status().state == "closed" and breaker.status().consecutive_failures == 0
        assert breaker.allow() and breaker.allow()


def test_failed_probe_reopens_for_both_and_release_frees_only_own_probe(
    redis_server: RedisServer,
) -> None:
    a = replica(redis_server).breaker("stem", failure_threshold=3, cooldown_s=0.2)
    b = replica(redis_server).breaker("stem", failure_threshold=3, cooldown_s=0.2)
    for _ in range(3):
        a.record_failure()
    time.sleep(0.25)
    assert a.allow()  # a holds the probe
    b.release_probe()  # b holds none: a's probe stays claimed
    assert not b.allow()
    a.release_probe()  # cancelled probe: the slot is free again
    assert b.allow()
    b.record_failure()  # the probe failed: open again, everywhere
    assert a.status().state == "open" and b.status().state == "open"
    assert not a.allow()


def test_probe_slot_of_a_dead_replica_expires(redis_server: RedisServer) -> None:
    a = replica(redis_server).breaker("stem", failure_threshold=1, cooldown_s=0, probe_lease_s=0.2)
    b = replica(redis_server).breaker("stem", failure_threshold=1, cooldown_s=0)
    a.record_failure()
    assert a.allow()  # and then a's process dies without recording the outcome
    assert not b.allow()
    time.sleep(0.25)
    assert b.allow()


# -- sticky sessions -----------------------------------------------------------------------


def test_sticky_thread_set_by_one_replica_is_read_by_the_other_until_ttl(
    redis_server: RedisServer,
) -> None:
    a = replica(redis_server).sessions(ttl_s=0.5)
    b = replica(redis_server).sessions(ttl_s=0.5)
    assert b.get("t1") is None
    a.set("t1", "stem")
    assert b.get("t1") == "stem"
    b.set("t1", "humanities")
    assert a.get("t1") == "humanities"
    raw = redis.Redis.from_url(redis_server.url)  # the TTL lives in Redis itself
    assert 0 < raw.pttl("test:thread:t1") <= 500
    time.sleep(0.6)
    assert a.get("t1") is None and b.get("t1") is None
    raw.close()


# -- the engine and from_config ----------------------------------------------------------------


def engine(state: RedisState, models: dict[str, ScriptedChat]) -> HerdRouter:
    experts = [Expert(name, model, routes=[name]) for name, model in models.items()]
    return HerdRouter(
        engine=HerdEngine(
            experts,
            CLASSIFIER,
            default_expert="other",
            breaker_factory=state.breaker_factory(failure_threshold=2, cooldown_s=60),
            sessions=state.sessions(ttl_s=60),
        )
    )


def models() -> dict[str, ScriptedChat]:
    return {
        "other": ScriptedChat(reply="O"),
        "stem": ScriptedChat(reply="S"),
        "humanities": ScriptedChat(reply="H"),
    }


async def test_two_engines_share_breakers_and_threads(redis_server: RedisServer) -> None:
    models_a, models_b = models(), models()
    router_a = engine(replica(redis_server), models_a)
    router_b = engine(replica(redis_server), models_b)
    models_a["stem"].error = httpx.ConnectError("[Errno 111] Connection refused")
    assert router_a.invoke("integral of x").content == "O"  # stem failed, fell back
    assert (await router_a.ainvoke("integral of x")).content == "O"
    assert models_a["stem"].calls == 2
    _, decision = await router_b.ainvoke_with_decision("integral of x")
    assert models_b["stem"].calls == 0, "replica B must skip the expert A saw failing"
    assert "circuit open" in decision.skipped["stem"]

    thread: RunnableConfig = {"configurable": {"thread_id": "conv-1"}}
    assert router_a.invoke("write a poem", thread).content == "H"
    # A terse follow-up scores every expert alike: alone it would go to the default, "other".
    assert router_b.invoke("and a shorter one?").content == "O"
    answer, decision = router_b.invoke_with_decision("and a shorter one?", thread)
    assert answer.content == "H" and decision.sticky is not None


def test_from_config_wires_redis_state(redis_server: RedisServer) -> None:
    routes = ["stem", "humanities", "social_sciences", "other"]
    experts = [{"name": "stem", "url": "http://127.0.0.1:9", "routes": routes}]
    base = {"experts": experts, "fallback": {"breaker": {"failure_threshold": 2}}}
    shared = HerdRouter.from_config(
        parse_config({**base, "state": {"backend": "redis", "url": redis_server.url}})
    )
    breaker = shared.breakers["stem"]
    assert isinstance(breaker, RedisBreaker) and breaker.failure_threshold == 2
    assert isinstance(shared.engine.sessions, RedisSessions)
    local = HerdRouter.from_config(parse_config(base))
    assert not isinstance(local.breakers["stem"], RedisBreaker)


# -- Redis going away ------------------------------------------------------------------------


async def test_redis_killed_mid_run_falls_back_then_reconnects(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    state_a, state_b = replica(redis_server), replica(redis_server)
    models_a, models_b = models(), models()
    router_a, router_b = engine(state_a, models_a), engine(state_b, models_b)
    thread: RunnableConfig = {"configurable": {"thread_id": "conv-2"}}
    assert router_a.invoke("write a poem", thread).content == "H"

    redis_server.stop()
    started = time.monotonic()
    # Requests keep flowing through both replicas, sync and async, on local state.
    for _ in range(3):
        assert router_a.invoke("integral of x").content == "S"
        assert (await router_b.ainvoke("integral of x")).content == "S"
    # A's own memory of the thread survives the outage; B never saw it.
    assert router_a.invoke("and a shorter one?", thread).content == "H"
    assert router_b.invoke("and a shorter one?", thread).content == "O"
    # Breakers work per process meanwhile.
    models_a["stem"].error = httpx.ConnectError("refused")
    router_a.invoke("integral of x")
    router_a.invoke("integral of x")
    assert router_a.breakers["stem"].status().state == "open"
    assert router_b.breakers["stem"].status().state == "closed"
    assert time.monotonic() - started < 3, "a dead Redis must not stall requests"
    assert not state_a.shared and not state_b.shared
    down = messages(caplog, "is unreachable")
    assert len(down) == 2, down  # one per replica (process), not one per operation
    assert redis_server.url in down[0] and "local state" in down[0]

    redis_server.start()
    time.sleep(0.35)  # reconnect_s
    models_a["stem"].error = None
    assert router_b.invoke("write a poem", thread).content == "H"
    # A's local breaker (open) is set aside: the restarted Redis has stem closed.
    assert router_a.invoke("integral of x").content == "S"
    assert state_a.shared and state_b.shared
    assert len(messages(caplog, "reachable again")) == 2
    # Shared again: failures through B open the breaker for A.
    models_b["stem"].error = httpx.ConnectError("refused")
    router_b.invoke("integral of x")
    router_b.invoke("integral of x")
    stem_calls = models_a["stem"].calls
    assert router_a.invoke("integral of x").content == "O"
    assert models_a["stem"].calls == stem_calls
    # The thread B answered after the restart is A's again.
    assert router_a.invoke("and a shorter one?", thread).content == "H"
    assert len(messages(caplog, "reachable again")) == 2
    assert len(messages(caplog, "is unreachable")) == 2


def test_unanswering_redis_times_out_fast_and_is_not_retried_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis that accepts connections but never answers (a hung host) costs one short
    timeout, then local state until the next reconnect attempt."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # never accepted: connects succeed, replies never come
        port = hung.getsockname()[1]
        state = RedisState(
            f"redis://:s3cret@127.0.0.1:{port}/0", reconnect_s=60, socket_timeout_s=0.2
        )
        breaker, sessions = state.breaker("stem"), state.sessions()
        started = time.monotonic()
        assert breaker.allow()
        first = time.monotonic() - started
        sessions.set("t", "stem")
        assert sessions.get("t") == "stem"
        breaker.record_failure()
        assert breaker.status().consecutive_failures == 1
        rest = time.monotonic() - started - first
    assert first < 1.0 and rest < 0.05, (first, rest)
    down = messages(caplog, "is unreachable")
    assert len(down) == 1 and "Timeout" in down[0]
    assert "s3cret" not in caplog.text and ":***@" in down[0]


def test_redacted_url() -> None:
    assert redacted_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert redacted_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redacted_url("rediss://:pw@[::1]:6380") == "rediss://:***@[::1]:6380"
