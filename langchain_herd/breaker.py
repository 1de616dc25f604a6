"""Per-expert circuit breaker: stop calling an expert that keeps failing, then probe it.

States follow the usual pattern: *closed* (calls flow), *open* (calls are skipped until the
cooldown ends), *half-open* (one probe call is let through; success closes the breaker,
failure opens it again). Thread-safe, and cheap enough to consult from async code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerStatus:
    """A snapshot of one breaker, for decisions and dashboards."""

    state: BreakerState
    consecutive_failures: int
    retry_in_s: float


class Breaker(Protocol):
    """What the engine needs of a breaker: in-process (``CircuitBreaker``) or shared by
    router replicas (``langchain_herd.shared_state``)."""

    def allow(self) -> bool:
        """Whether a call may go through now (claims the single probe when half-open)."""
        ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...

    def release_probe(self) -> None:
        """Give the probe slot back when a probe call ended neither ok nor failed."""
        ...

    def status(self) -> BreakerStatus: ...


class CircuitBreaker:
    """Counts consecutive failures of one expert.

    Example:
        >>> breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30)
        >>> breaker.record_failure(); breaker.record_failure()
        >>> breaker.allow()
        False
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (claims the single probe when half-open)."""
        with self._lock:
            state = self._state(self._clock())
            if state == "closed":
                return True
            if state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probe_in_flight or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probe_in_flight = False

    def release_probe(self) -> None:
        """Give the probe slot back when a probe call ended neither ok nor failed (cancelled)."""
        with self._lock:
            self._probe_in_flight = False

    def status(self) -> BreakerStatus:
        with self._lock:
            now = self._clock()
            state = self._state(now)
            retry_in = 0.0
            if state == "open" and self._opened_at is not None:
                retry_in = self.cooldown_s - (now - self._opened_at)
            return BreakerStatus(state, self._failures, retry_in)
