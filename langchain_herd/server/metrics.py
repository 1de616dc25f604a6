"""The server's Prometheus metrics, named like TGI's, rendered as text by hand.

Hand-written rather than ``prometheus_client`` to keep the dependency list short; the format is
Prometheus' text exposition (``# TYPE`` lines, ``_bucket``/``_sum``/``_count`` histograms).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Request duration histogram buckets, in seconds."""

TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
"""Generated-token and input-length histogram buckets."""


class Histogram:
    """A cumulative Prometheus histogram (not thread-safe: :class:`ServerMetrics` locks)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one value."""
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        """Exposition lines for this histogram under ``name``."""
        lines = [f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {_number(self.total)}")
        lines.append(f"{name}_count {self.count}")
        return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class ServerMetrics:
    """Counters and histograms of the generation routes.

    Every generation request counts once in ``tgi_request_count`` and ends in either
    ``tgi_request_success`` or ``tgi_request_failure{err=...}`` (``err`` is TGI's error type, or
    ``dropped`` / ``cancelled`` for streams cut by a fault or by the client).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.request_count = 0
        self.success = 0
        self.failures: Counter[str] = Counter()
        self.duration = Histogram(DURATION_BUCKETS)
        self.generated_tokens = Histogram(TOKEN_BUCKETS)
        self.input_length = Histogram(TOKEN_BUCKETS)

    def record_request(self) -> None:
        """A generation request arrived."""
        with self._lock:
            self.request_count += 1

    def record_success(self, duration_s: float, generated_tokens: int, input_length: int) -> None:
        """A generation request was answered in full."""
        with self._lock:
            self.success += 1
            self.duration.observe(duration_s)
            self.generated_tokens.observe(generated_tokens)
            self.input_length.observe(input_length)

    def record_failure(self, err: str) -> None:
        """A generation request failed with error type ``err``."""
        with self._lock:
            self.failures[err] += 1

    def render(self, *, queue_size: int, in_flight: int) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = [
                "# TYPE tgi_request_count counter",
                f"tgi_request_count {self.request_count}",
                "# TYPE tgi_request_success counter",
                f"tgi_request_success {self.success}",
                "# TYPE tgi_request_failure counter",
            ]
            lines += [
                f'tgi_request_failure{{err="{err}"}} {count}'
                for err, count in sorted(self.failures.items())
            ]
            lines += self.duration.render("tgi_request_duration")
            lines += self.generated_tokens.render("tgi_request_generated_tokens")
            lines += self.input_length.render("tgi_request_input_length")
        lines += [
            "# TYPE tgi_queue_size gauge",
            f"tgi_queue_size {queue_size}",
            "# TYPE herd_requests_in_flight gauge",
            f"herd_requests_in_flight {in_flight}",
        ]
        return "\n".join(lines) + "\n"
