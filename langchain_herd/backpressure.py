"""Back-pressure: an expert that answers 429 (TGI's ``overloaded``) is busy, not broken.

A breaker measures health; counting 429s there turns a burst of load into an outage (three
busy answers and a healthy expert is skipped for the whole cooldown). The rule here instead:

- a 429 never counts against the breaker (a half-open probe that got one gives its slot back);
- the expert is *backed off*: skipped for the server's ``Retry-After`` when it sends one, else
  for ``backoff_s``, never longer than ``max_backoff_s`` (a hostile or mistaken header must not
  become an outage either);
- the request moves on to the next expert at once (``rate_limited`` is in ``fallback_on`` by
  default);
- any answer from the expert ends its back-off (a request in flight finished, so a slot is
  free again);
- when every candidate is overloaded or backing off, the caller gets
  ``ExpertsOverloadedError`` at once, with ``retry_after_s``. The router does not wait: the
  caller owns the deadline and the retry policy, and requests parked inside the router would
  hold threads and connections and return in one wave when the back-offs end.

Back-offs live in this process (``LocalBackoff``) or, when breakers are shared through Redis,
in Redis (``langchain_herd.shared_state.RedisBackoff``), so every replica backs off together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from langchain_herd.errors import ConfigError
from langchain_herd.failures import Failure

DEFAULT_BACKOFF_S = 1.0
"""Back-off after a 429 without ``Retry-After``: about one generation on a busy server."""
DEFAULT_MAX_BACKOFF_S = 30.0
"""Longest back-off, whatever ``Retry-After`` says."""


class Backoff(Protocol):
    """One expert's back-off: in-process (``LocalBackoff``) or shared by router replicas."""

    def remaining_s(self) -> float:
        """Seconds until the expert may be called again; 0 when it may be called now."""
        ...

    def back_off(self, seconds: float) -> None:
        """Skip the expert for ``seconds`` from now (a longer back-off already set stays)."""
        ...

    def clear(self) -> None:
        """End the back-off now (the expert answered)."""
        ...


class LocalBackoff:
    """A back-off in this process; thread-safe.

    Example:
        >>> backoff = LocalBackoff()
        >>> backoff.back_off(5.0); backoff.remaining_s() > 4
        True
        >>> backoff.clear(); backoff.remaining_s()
        0.0
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def remaining_s(self) -> float:
        with self._lock:
            return max(self._until - self._clock(), 0.0)

    def back_off(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def clear(self) -> None:
        with self._lock:
            self._until = 0.0


class BackPressure:
    """How long an expert is backed off after a 429, and each expert's back-off.

    Args:
        names: the experts.
        backoff_s: back-off when the server sends no ``Retry-After``.
        max_backoff_s: cap on any back-off, ``Retry-After`` included.
        backoff_factory: makes each expert's back-off from its name (shared state across
            replicas); default ``LocalBackoff``.

    Example:
        >>> pressure = BackPressure(["a"], backoff_s=0.5, max_backoff_s=10)
        >>> pressure.delay_for(Failure("rate_limited", "busy", 429, retry_after_s=3600))
        10
    """

    def __init__(
        self,
        names: list[str],
        *,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        backoff_factory: Callable[[str], Backoff] | None = None,
    ) -> None:
        if not 0 <= backoff_s <= max_backoff_s:
            raise ConfigError(
                f"back-off needs 0 <= backoff_s <= max_backoff_s, got backoff_s={backoff_s} "
                f"and max_backoff_s={max_backoff_s}"
            )
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        make = backoff_factory or (lambda _name: LocalBackoff())
        self.backoffs: dict[str, Backoff] = {name: make(name) for name in names}

    def delay_for(self, failure: Failure) -> float:
        """The back-off a 429 earns: the server's ``Retry-After`` or ``backoff_s``, capped."""
        wanted = failure.retry_after_s if failure.retry_after_s is not None else self.backoff_s
        return min(wanted, self.max_backoff_s)

    def overloaded(self, name: str, failure: Failure) -> None:
        """``name`` answered 429: back it off."""
        delay = self.delay_for(failure)
        if delay > 0:
            self.backoffs[name].back_off(delay)

    def answered(self, name: str) -> None:
        """``name`` answered: a slot is free again, so its back-off ends."""
        self.backoffs[name].clear()

    def remaining_s(self, name: str) -> float:
        """Seconds ``name`` is still backed off (0: call it)."""
        return self.backoffs[name].remaining_s()
