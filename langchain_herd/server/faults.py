"""Fault injection, so tests can make an expert fail in each way a real one fails.

Faults apply to the generation routes only (``/``, ``/generate``, ``/generate_stream``,
``/v1/chat/completions``); ``/health``, ``/info``, ``/metrics`` and ``/_herd/*`` always answer.
Per request, in this order: ``latency_ms`` is slept (holding a concurrency slot, so it also helps
to provoke 429s), then a pending ``fail_next`` answers with an HTTP error in TGI's shape (also on
streaming requests: it plays a failing proxy or server, before any byte of the stream), then a
pending ``empty_next`` answers 200 with empty text, ``drop_stream_after`` cuts every
streaming reply after that many tokens, and ``token_delay_ms`` slows every streamed token (a
slow server: a stream that is reliably still running when a test looks at it).

``random`` (:class:`RandomFaults`) adds faults drawn per request from a seeded generator, on
top of the deterministic ones above (which fire first): an HTTP 5xx, a 429, a stall longer
than a client's timeout, a stream cut after a few tokens, an empty answer, slow tokens. The
draws follow the seed in the order requests reach each hook, so a concurrent run is
repeatable in its mix of faults, not request by request. A soak benchmark
(``bench/soak.py``) uses it to make four experts fail the ways real ones do.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field, model_validator

from langchain_herd.server.tgi_errors import TGIError


class RandomFaults(BaseModel):
    """Faults drawn at random for each generation request, each with its own probability.

    Each kind is drawn independently where it applies (an error and a stall may hit the same
    request; a cut and slow tokens only hit streams); the 5xx and the 429 exclude each other.

    Example:
        >>> RandomFaults(seed=7, server_error=0.05, overloaded=0.05).overloaded
        0.05
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    """Seed of the generator the faults are drawn from (re-seeded whenever faults are set)."""
    server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of answering with HTTP ``server_error_status`` (before any byte of a
    stream, like a failing proxy)."""
    server_error_status: int = Field(default=503, ge=500, le=599)
    """Status of random server errors."""
    overloaded: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of answering 429 ``overloaded`` (TGI's answer to too many requests)."""
    stall: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of sleeping ``stall_ms`` before answering: longer than a client's timeout,
    it plays a hung server (and holds a concurrency slot meanwhile)."""
    stall_ms: float = Field(default=10_000.0, ge=0.0)
    """How long a stall lasts."""
    cut_stream: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of cutting a streaming reply abruptly after 0 to ``cut_max_tokens``
    tokens (0: before the first token, where a client may still fall back)."""
    cut_max_tokens: int = Field(default=3, ge=0)
    """Most tokens sent before a random cut."""
    empty: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of answering 200 with empty text."""
    slow_tokens: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability of sleeping ``slow_token_ms`` before each token of a stream."""
    slow_token_ms: float = Field(default=200.0, ge=0.0)
    """The delay per token of a slow stream."""

    @model_validator(mode="after")
    def _check_errors(self) -> RandomFaults:
        if self.server_error + self.overloaded > 1.0:
            raise ValueError(
                f"server_error + overloaded is {self.server_error + self.overloaded:g}: the two "
                f"exclude each other, so together they must be at most 1"
            )
        return self


class FaultConfig(BaseModel):
    """What to break, set at start (CLI flags) or at runtime (``POST /_herd/faults``).

    Example:
        >>> FaultConfig(fail_next=2, fail_status=503).fail_next
        2
    """

    model_config = ConfigDict(extra="forbid")

    fail_next: int = Field(default=0, ge=0)
    """Answer this many upcoming generation requests with ``fail_status``."""
    fail_status: int = Field(default=503, ge=400, le=599)
    """HTTP status of injected failures."""
    fail_error_type: str | None = None
    """``error_type`` of injected failures; by default derived from the status (429:
    ``overloaded``, 424 and 5xx: ``generation``, other 4xx: ``validation``)."""
    fail_message: str | None = None
    """``error`` text of injected failures (a default names the fault)."""
    latency_ms: float = Field(default=0.0, ge=0.0)
    """Sleep this long before answering each generation request."""
    drop_stream_after: int | None = Field(default=None, ge=0)
    """Close every streaming connection abruptly after this many tokens (None: never)."""
    empty_next: int = Field(default=0, ge=0)
    """Answer this many upcoming generation requests with HTTP 200 and empty text."""
    token_delay_ms: float = Field(default=0.0, ge=0.0)
    """Sleep this long before each streamed token."""
    random: RandomFaults | None = None
    """Faults drawn at random per request, after the deterministic ones (None: none)."""

    def failure(self) -> TGIError:
        """The error an injected failure answers with."""
        error_type = self.fail_error_type or _error_type_for_status(self.fail_status)
        message = self.fail_message or (
            f"injected fault: HTTP {self.fail_status} ({error_type}) from the herd test server"
        )
        return TGIError(message, error_type, self.fail_status)


def _error_type_for_status(status: int) -> str:
    if status == 429:
        return "overloaded"
    if status == 424 or status >= 500:  # 424 is TGI's own status for generation errors
        return "generation"
    return "validation"


class FaultInjector:
    """The server's current faults; thread-safe, counters decrease as faults fire.

    Args:
        config: the faults to start with (none by default).
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random(0)
        self._fired: Counter[str] = Counter()
        self.replace(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        """A snapshot of the current faults (counters show what is left)."""
        with self._lock:
            return self._config.model_copy()

    def replace(self, config: FaultConfig) -> None:
        """Install ``config`` instead of the current faults."""
        with self._lock:
            self._config = config.model_copy(deep=True)
            self._rng = random.Random(config.random.seed if config.random else 0)

    @property
    def fired(self) -> dict[str, int]:
        """How many random faults of each kind fired since the server started."""
        with self._lock:
            return dict(self._fired)

    def _draw(self, kind: str, probability: float) -> bool:
        # Called with the lock held; a zero probability draws nothing, so a config without
        # random faults leaves the generator (and the seeded sequence) untouched.
        if probability <= 0.0 or self._rng.random() >= probability:
            return False
        self._fired[kind] += 1
        return True

    def clear(self) -> None:
        """Remove every fault."""
        self.replace(FaultConfig())

    @property
    def latency_s(self) -> float:
        """Seconds to sleep before answering (read once per request: a random stall is drawn)."""
        with self._lock:
            delay = self._config.latency_ms
            chance = self._config.random
            if chance is not None and self._draw("stall", chance.stall):
                delay += chance.stall_ms
            return delay / 1000.0

    @property
    def drop_stream_after(self) -> int | None:
        """Tokens after which a stream is cut, or None (read once per stream: a random cut is
        drawn)."""
        with self._lock:
            chance = self._config.random
            if (
                self._config.drop_stream_after is None
                and chance is not None
                and self._draw("cut_stream", chance.cut_stream)
            ):
                return self._rng.randint(0, chance.cut_max_tokens)
            return self._config.drop_stream_after

    @property
    def token_delay_s(self) -> float:
        """Seconds to sleep before each streamed token (read once per stream: random slow
        tokens are drawn)."""
        with self._lock:
            delay = self._config.token_delay_ms
            chance = self._config.random
            if chance is not None and self._draw("slow_tokens", chance.slow_tokens):
                delay += chance.slow_token_ms
            return delay / 1000.0

    def take_failure(self) -> TGIError | None:
        """Consume one pending failure and return its error, or None when none is pending."""
        with self._lock:
            if self._config.fail_next > 0:
                self._config.fail_next -= 1
                return self._config.failure()
            chance = self._config.random
            if chance is None or chance.server_error + chance.overloaded <= 0.0:
                return None
            roll = self._rng.random()
            if roll < chance.server_error:
                self._fired["server_error"] += 1
                status = chance.server_error_status
                return TGIError(
                    f"injected random fault: HTTP {status} from the herd test server",
                    _error_type_for_status(status),
                    status,
                )
            if roll < chance.server_error + chance.overloaded:
                self._fired["overloaded"] += 1
                return TGIError("Model is overloaded (injected random fault)", "overloaded", 429)
            return None

    def take_empty(self) -> bool:
        """Consume one pending empty answer; True when one was pending."""
        with self._lock:
            if self._config.empty_next > 0:
                self._config.empty_next -= 1
                return True
            chance = self._config.random
            return chance is not None and self._draw("empty", chance.empty)
