"""Breakers and sticky sessions shared by router replicas through Redis, with local fallback.

Several replicas of one router behind a load balancer should agree on which expert is
failing (a breaker opened by failures seen through one replica is honoured by all) and on
which expert has a conversation thread. ``RedisState`` keeps both in Redis:

- a breaker is a hash ``<prefix>breaker:<expert>`` (``failures``, ``opened_at``) plus a probe
  slot ``<prefix>breaker:<expert>:probe``, changed only by Lua scripts that read Redis's own
  clock (``TIME``), so replicas on different hosts share one time line, and claim the
  half-open probe with ``SET NX PX``, so exactly one replica probes;
- a thread's expert is a string ``<prefix>thread:<id>`` that expires after the sticky ttl.

When Redis cannot be reached (refused, timed out, gone mid-run) every operation falls back to
an in-process ``CircuitBreaker`` / ``InMemorySessions`` seeded with what this replica itself
recorded, one warning is logged, requests keep flowing, and Redis is tried again every
``reconnect_s`` (a second warning says when it is back). Socket timeouts are short so a dead
Redis costs a request at most one timeout per ``reconnect_s``.

redis-py is imported only when a ``RedisState`` is made: ``pip install 'langchain-herd[redis]'``.

Example:
    .. code-block:: python

        from langchain_herd.shared_state import RedisState

        state = RedisState("redis://localhost:6379/0", key_prefix="herd:")
        engine = HerdEngine(
            experts,
            classifier,
            breaker_factory=state.breaker_factory(failure_threshold=3, cooldown_s=30),
            sessions=state.sessions(ttl_s=3600),
        )
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from langchain_herd.backpressure import Backoff, LocalBackoff
from langchain_herd.breaker import Breaker, BreakerState, BreakerStatus, CircuitBreaker
from langchain_herd.errors import ConfigError
from langchain_herd.sessions import InMemorySessions, SessionStore

if TYPE_CHECKING:
    from redis import Redis

    from langchain_herd.config import HerdConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Milliseconds on Redis's clock: every replica reads the same one.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: breaker hash, probe slot. ARGV: cooldown ms, probe token, probe lease ms.
# Returns 1 (closed: go), 2 (half-open: this caller holds the probe), 0 (skip).
_ALLOW = (
    """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return 1 end
"""
    + _NOW_MS
    + """
if now - tonumber(opened) < tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 2 end
return 0
"""
)

# KEYS: breaker hash, probe slot. ARGV: failure threshold. A failed probe, or one failure too
# many, (re)opens the breaker now.
_RECORD_FAILURE = (
    """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if redis.call('EXISTS', KEYS[2]) == 1 or failures >= tonumber(ARGV[1]) then
"""
    + _NOW_MS
    + """
  redis.call('HSET', KEYS[1], 'opened_at', string.format('%d', now))
end
redis.call('DEL', KEYS[2])
return failures
"""
)

# KEYS: probe slot. ARGV: token. Frees the slot only if this replica holds it.
_RELEASE_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: breaker hash. ARGV: cooldown ms. Returns {failures, state code, ms until the probe}.
_STATUS = (
    """
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return {failures, 0, 0} end
"""
    + _NOW_MS
    + """
local left = tonumber(ARGV[1]) - (now - tonumber(opened))
if left > 0 then return {failures, 1, left} end
return {failures, 2, 0}
"""
)

_STATES: dict[int, BreakerState] = {0: "closed", 1: "open", 2: "half_open"}

# KEYS: back-off key. ARGV: ms. A longer back-off already set stays (it expires on its own).
_BACK_OFF = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class _Link:
    """The Redis connection and whether it is usable now; decides Redis or local per call."""

    def __init__(self, client: Redis, url: str, reconnect_s: float) -> None:
        self.client = client
        self.url = redacted_url(url)
        self.reconnect_s = reconnect_s
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        return self._down

    def run(self, remote: Callable[[Redis], T], local: Callable[[], T]) -> T:
        """``remote`` on Redis; ``local`` when Redis is (or just went) unreachable."""
        from redis.exceptions import RedisError

        with self._lock:
            retrying = self._down
            if retrying:
                now = time.monotonic()
                if now < self._retry_at:
                    return local()
                # This caller tries Redis again; concurrent ones stay local meanwhile.
                self._retry_at = now + self.reconnect_s
        try:
            result = remote(self.client)
        except RedisError as exc:
            self._lost(exc)
            return local()
        if retrying:
            # Only the retry decides Redis is back: a call that began before the outage and
            # still got through says nothing about it.
            self._back()
        return result

    def _lost(self, exc: Exception) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self.reconnect_s
            if self._down:
                return
            self._down = True
        logger.warning(
            "Redis at %s is unreachable (%s: %s); the router runs on local state (this "
            "process's breakers and sticky sessions) and retries Redis every %gs",
            self.url,
            type(exc).__name__,
            exc,
            self.reconnect_s,
        )

    def _back(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
        # A warning like the outage's, so whoever saw that one also sees it end.
        logger.warning(
            "Redis at %s is reachable again; breakers and sticky sessions are shared again",
            self.url,
        )


class RedisState:
    """Breakers and sticky sessions in Redis, shared by every replica that uses the same URL
    and key prefix; falls back to local state while Redis is unreachable.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://`` for a socket).
        key_prefix: prefix of every key, so several herds can share one Redis.
        reconnect_s: while Redis is unreachable, how often it is tried again.
        socket_timeout_s: longest wait for Redis to connect or answer one command.

    Example:
        .. code-block:: python

            state = RedisState("redis://localhost:6379/0")
            breaker = state.breaker("stem", failure_threshold=3, cooldown_s=30)
            sessions = state.sessions(ttl_s=3600)
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "herd:",
        reconnect_s: float = 5.0,
        socket_timeout_s: float = 0.5,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry
        except ImportError as exc:
            raise ImportError(
                "state.backend redis needs the redis client: pip install 'langchain-herd[redis]'"
            ) from exc
        if reconnect_s <= 0 or socket_timeout_s <= 0:
            raise ConfigError("RedisState needs reconnect_s > 0 and socket_timeout_s > 0")
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            # One immediate retry on a broken connection (a pooled socket left over from a
            # restarted Redis), none on a timeout: a dead Redis must not hold a request.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
        )
        self.key_prefix = key_prefix
        self._link = _Link(client, url, reconnect_s)
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "allow": _ALLOW,
                "record_failure": _RECORD_FAILURE,
                "release_probe": _RELEASE_PROBE,
                "status": _STATUS,
                "back_off": _BACK_OFF,
            }.items()
        }

    @property
    def url(self) -> str:
        """The Redis URL, password redacted."""
        return self._link.url

    @property
    def shared(self) -> bool:
        """False while Redis is known to be unreachable (local state in use)."""
        return not self._link.down

    def breaker(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        probe_lease_s: float = 120.0,
    ) -> RedisBreaker:
        """The shared breaker of expert ``name``.

        Args:
            name: the expert.
            failure_threshold: consecutive failures (seen by any replica) that open it.
            cooldown_s: how long it skips the expert before one replica probes it.
            probe_lease_s: how long a claimed probe slot is held at most, so a replica that
                dies mid-probe does not block probes for ever; longer than a probe call.
        """
        return RedisBreaker(self, name, failure_threshold, cooldown_s, probe_lease_s)

    def breaker_factory(
        self,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        probe_lease_s: Mapping[str, float] | float = 120.0,
    ) -> Callable[[str], Breaker]:
        """``HerdEngine``'s ``breaker_factory``: a shared breaker per expert name
        (``probe_lease_s`` may be given per expert)."""

        def make(name: str) -> Breaker:
            lease = (
                probe_lease_s.get(name, 120.0)
                if isinstance(probe_lease_s, Mapping)
                else probe_lease_s
            )
            return self.breaker(
                name,
                failure_threshold=failure_threshold,
                cooldown_s=cooldown_s,
                probe_lease_s=lease,
            )

        return make

    def backoff(self, name: str) -> RedisBackoff:
        """The shared back-off of expert ``name`` after a 429 (``langchain_herd.backpressure``)."""
        return RedisBackoff(self, name)

    def sessions(self, ttl_s: float = 3600.0, max_threads: int = 10_000) -> RedisSessions:
        """The shared sticky sessions (``max_threads`` bounds the local fallback only)."""
        return RedisSessions(self, ttl_s, max_threads)

    def close(self) -> None:
        """Close the connections to Redis."""
        self._link.client.close()

    def _run(self, remote: Callable[[Redis], T], local: Callable[[], T]) -> T:
        return self._link.run(remote, local)

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Callable[[Redis], Any]:
        script = self._scripts[name]
        return lambda client: script(keys=keys, args=args, client=client)


class RedisBreaker:
    """One expert's circuit breaker, kept in Redis: ``CircuitBreaker``'s semantics across
    replicas. Made by ``RedisState.breaker``.

    Example:
        .. code-block:: python

            breaker = RedisState("redis://localhost:6379/0").breaker("stem", failure_threshold=2)
            breaker.record_failure(); breaker.record_failure()
            assert not breaker.allow()  # in every replica
    """

    def __init__(
        self,
        state: RedisState,
        name: str,
        failure_threshold: int,
        cooldown_s: float,
        probe_lease_s: float,
    ) -> None:
        if failure_threshold < 1 or cooldown_s < 0 or probe_lease_s <= 0:
            raise ConfigError(
                "a breaker needs failure_threshold >= 1, cooldown_s >= 0 and probe_lease_s > 0"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_lease_s = probe_lease_s
        self._state = state
        self._key = f"{state.key_prefix}breaker:{name}"
        self._probe_key = f"{self._key}:probe"
        # Used while Redis is unreachable; fed with this replica's outcomes all along.
        self.local = CircuitBreaker(failure_threshold, cooldown_s)
        self._lock = threading.Lock()
        self._probe_token: str | None = None

    @property
    def _cooldown_ms(self) -> int:
        return int(self.cooldown_s * 1000)

    def allow(self) -> bool:
        """Whether a call may go through now (claims the single probe when half-open)."""
        token = uuid.uuid4().hex
        lease_ms = max(1, int(self.probe_lease_s * 1000))
        remote = self._state._script(
            "allow", [self._key, self._probe_key], [self._cooldown_ms, token, lease_ms]
        )
        verdict = self._state._run(lambda client: int(remote(client)), lambda: -1)
        if verdict == -1:
            return self.local.allow()
        if verdict == 2:
            with self._lock:
                self._probe_token = token
        return verdict > 0

    def record_success(self) -> None:
        self.local.record_success()
        with self._lock:
            self._probe_token = None
        keys = (self._key, self._probe_key)
        self._state._run(lambda client: client.delete(*keys), lambda: 0)

    def record_failure(self) -> None:
        self.local.record_failure()
        with self._lock:
            self._probe_token = None
        remote = self._state._script(
            "record_failure", [self._key, self._probe_key], [self.failure_threshold]
        )
        self._state._run(remote, lambda: None)

    def release_probe(self) -> None:
        """Give the probe slot back when a probe call ended neither ok nor failed."""
        self.local.release_probe()
        with self._lock:
            token, self._probe_token = self._probe_token, None
        if token is not None:
            remote = self._state._script("release_probe", [self._probe_key], [token])
            self._state._run(remote, lambda: None)

    def status(self) -> BreakerStatus:
        remote = self._state._script("status", [self._key], [self._cooldown_ms])

        def shared(client: Redis) -> BreakerStatus:
            failures, code, left_ms = remote(client)
            return BreakerStatus(_STATES[int(code)], int(failures), int(left_ms) / 1000)

        return self._state._run(shared, self.local.status)


class RedisBackoff:
    """One expert's back-off after a 429, kept in Redis as a key that expires when it ends
    (Redis's clock), so every replica skips an overloaded expert together. Made by
    ``RedisState.backoff``.

    Example:
        .. code-block:: python

            backoff = RedisState("redis://localhost:6379/0").backoff("stem")
            backoff.back_off(2.0)
            assert backoff.remaining_s() > 1  # in every replica
    """

    def __init__(self, state: RedisState, name: str) -> None:
        self.name = name
        self._state = state
        self._key = f"{state.key_prefix}backoff:{name}"
        # Used while Redis is unreachable; fed with this replica's 429s all along.
        self.local = LocalBackoff()

    def remaining_s(self) -> float:
        key = self._key

        def shared(client: Redis) -> float:
            return max(int(client.pttl(key)), 0) / 1000

        return self._state._run(shared, self.local.remaining_s)

    def back_off(self, seconds: float) -> None:
        self.local.back_off(seconds)
        remote = self._state._script("back_off", [self._key], [max(1, int(seconds * 1000))])
        self._state._run(remote, lambda: None)

    def clear(self) -> None:
        self.local.clear()
        key = self._key
        self._state._run(lambda client: client.delete(key), lambda: 0)


class RedisSessions:
    """Sticky sessions in Redis: thread id -> expert, expiring ``ttl_s`` after the last turn.
    Made by ``RedisState.sessions``.

    Example:
        .. code-block:: python

            sessions = RedisState("redis://localhost:6379/0").sessions(ttl_s=3600)
            sessions.set("t1", "stem")
            assert sessions.get("t1") == "stem"  # in every replica
    """

    def __init__(self, state: RedisState, ttl_s: float, max_threads: int) -> None:
        self.ttl_s = ttl_s
        self._state = state
        # Used while Redis is unreachable, and for threads written only during an outage.
        self.local = InMemorySessions(ttl_s, max_threads)

    def _key(self, thread_id: str) -> str:
        return f"{self._state.key_prefix}thread:{thread_id}"

    def get(self, thread_id: str) -> str | None:
        key = self._key(thread_id)
        value = self._state._run(lambda client: client.get(key), lambda: None)
        return str(value) if value is not None else self.local.get(thread_id)

    def set(self, thread_id: str, expert: str) -> None:
        self.local.set(thread_id, expert)
        key, ttl_ms = self._key(thread_id), max(1, int(self.ttl_s * 1000))
        self._state._run(lambda client: client.set(key, expert, px=ttl_ms), lambda: None)


@dataclass(frozen=True)
class SharedState:
    """What replicas may share, as the engine takes it: breakers, sessions, back-offs."""

    breakers: Callable[[str], Breaker]
    sessions: SessionStore
    backoffs: Callable[[str], Backoff] | None
    """None: the engine's default, in this process."""


def state_from_config(herd: HerdConfig) -> SharedState:
    """The engine's breaker factory, session store and back-off factory for ``herd.state``:
    in this process (``memory``) or shared through one Redis client (``redis``), so an
    outage is noticed, logged and survived once.

    Example:
        .. code-block:: python

            state = state_from_config(load_config("herd.yaml"))
            engine = HerdEngine(
                experts,
                classifier,
                breaker_factory=state.breakers,
                sessions=state.sessions,
                backoff_factory=state.backoffs,
            )
    """
    breaker = herd.fallback.breaker
    sticky = herd.router.sticky
    if herd.state.backend == "memory":
        return SharedState(
            lambda _name: CircuitBreaker(breaker.failure_threshold, breaker.cooldown_s),
            InMemorySessions(sticky.ttl_s, sticky.max_threads),
            None,
        )
    assert herd.state.url is not None  # StateConfig's validator requires it for redis
    state = RedisState(
        herd.state.url, key_prefix=herd.state.key_prefix, reconnect_s=herd.state.reconnect_s
    )
    # A probe is one expert call; twice its deadline covers a client retry. A replica that
    # dies mid-probe frees the slot when the lease ends.
    leases = {expert.name: 2 * expert.timeout_s + 5 for expert in herd.experts}
    return SharedState(
        state.breaker_factory(
            failure_threshold=breaker.failure_threshold,
            cooldown_s=breaker.cooldown_s,
            probe_lease_s=leases,
        ),
        state.sessions(sticky.ttl_s, sticky.max_threads),
        state.backoff,
    )
