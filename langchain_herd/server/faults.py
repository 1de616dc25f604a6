"""Fault injection, so tests can make an expert fail in each way a real one fails.

Faults apply to the generation routes only (``/``, ``/generate``, ``/generate_stream``,
``/v1/chat/completions``); ``/health``, ``/info``, ``/metrics`` and ``/_herd/*`` always answer.
Per request, in this order: ``latency_ms`` is slept (holding a concurrency slot, so it also helps
to provoke 429s), then a pending ``fail_next`` answers with an HTTP error in TGI's shape (also on
streaming requests: it plays a failing proxy or server, before any byte of the stream), then a
pending ``empty_next`` answers 200 with empty text, ``drop_stream_after`` cuts every
streaming reply after that many tokens, and ``token_delay_ms`` slows every streamed token (a
slow server: a stream that is reliably still running when a test looks at it).
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict, Field

from langchain_herd.server.tgi_errors import TGIError


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
        self._config = config.model_copy() if config else FaultConfig()

    @property
    def config(self) -> FaultConfig:
        """A snapshot of the current faults (counters show what is left)."""
        with self._lock:
            return self._config.model_copy()

    def replace(self, config: FaultConfig) -> None:
        """Install ``config`` instead of the current faults."""
        with self._lock:
            self._config = config.model_copy()

    def clear(self) -> None:
        """Remove every fault."""
        self.replace(FaultConfig())

    @property
    def latency_s(self) -> float:
        """Seconds to sleep before answering."""
        with self._lock:
            return self._config.latency_ms / 1000.0

    @property
    def drop_stream_after(self) -> int | None:
        """Tokens after which a stream is cut, or None."""
        with self._lock:
            return self._config.drop_stream_after

    @property
    def token_delay_s(self) -> float:
        """Seconds to sleep before each streamed token."""
        with self._lock:
            return self._config.token_delay_ms / 1000.0

    def take_failure(self) -> TGIError | None:
        """Consume one pending failure and return its error, or None when none is pending."""
        with self._lock:
            if self._config.fail_next <= 0:
                return None
            self._config.fail_next -= 1
            return self._config.failure()

    def take_empty(self) -> bool:
        """Consume one pending empty answer; True when one was pending."""
        with self._lock:
            if self._config.empty_next <= 0:
                return False
            self._config.empty_next -= 1
            return True
