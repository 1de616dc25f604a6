"""Prometheus metrics of the endpoint, in a registry of its own.

Each app gets its own ``CollectorRegistry`` (not prometheus-client's global one), so several
apps in one process, as in tests, neither collide nor mix their counts. Expert calls,
failures and failovers are read from each request's decision trail (``decision.attempts``);
breaker states are read at scrape time, so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langchain_herd.breaker import Breaker
from langchain_herd.decision import RouteDecision

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""Gauge values of ``herd_router_breaker_state``."""

#: Routes measured under their own label; anything else (404s, probes) is "other", so a
#: scanner cannot blow up the label set.
KNOWN_ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/info", "/metrics"})

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class _BreakerCollector(Collector):
    def __init__(self, breakers: Mapping[str, Breaker]) -> None:
        self.breakers = breakers

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "herd_router_breaker_state",
            "Circuit breaker state per expert (0 closed, 1 half-open, 2 open)",
            labels=["expert"],
        )
        failures = GaugeMetricFamily(
            "herd_router_breaker_consecutive_failures",
            "Consecutive failures counted by each expert's breaker",
            labels=["expert"],
        )
        for name, breaker in self.breakers.items():
            status = breaker.status()
            state.add_metric([name], BREAKER_STATES.get(status.state, -1))
            failures.add_metric([name], status.consecutive_failures)
        yield state
        yield failures


class RouterMetrics:
    """The endpoint's counters and histograms.

    Args:
        breakers: the herd's breakers, read at every scrape.

    Example:
        >>> from langchain_herd.breaker import CircuitBreaker
        >>> metrics = RouterMetrics({"stem": CircuitBreaker()})
        >>> b"herd_router_breaker_state" in metrics.render()
        True
    """

    def __init__(self, breakers: Mapping[str, Breaker]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "herd_router_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "herd_router_request_duration_seconds",
            "End-to-end time of a request, until the last byte of its answer (streams too)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.expert_calls = Counter(
            "herd_router_expert_calls",
            "Calls to each expert (attempts in the decision trail)",
            ["expert"],
            registry=self.registry,
        )
        self.expert_failures = Counter(
            "herd_router_expert_failures",
            "Failed expert calls, by expert and failure kind",
            ["expert", "kind"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "herd_router_failovers",
            "Moves to the next expert after a failed attempt",
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "herd_router_decision_duration_seconds",
            "Time the classifier took to score a request (decision.classify_ms)",
            buckets=_DECISION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_BreakerCollector(breakers))

    def record_decision(self, decision: RouteDecision) -> None:
        """Count one request's attempts, failures and failovers, and its decision time."""
        self.decision_seconds.observe(decision.classify_ms / 1000)
        for attempt in decision.attempts:
            self.expert_calls.labels(attempt.expert).inc()
            if not attempt.ok:
                self.expert_failures.labels(attempt.expert, attempt.failure or "unknown").inc()
        # An ensemble calls several experts by design: only its failed calls moved on.
        if decision.strategy is None:
            failovers = len(decision.attempts) - 1
        else:
            failovers = sum(not attempt.ok for attempt in decision.attempts)
        if failovers > 0:
            self.failovers.inc(failovers)

    def record_broken_stream(self, before: RouteDecision | None, expert: str) -> None:
        """A stream broke after its first token: the final decision never comes, so count the
        decision as it stood at the first token plus the broken call."""
        if before is not None:
            self.record_decision(before)
        self.expert_calls.labels(expert).inc()
        self.expert_failures.labels(expert, "stream_broken").inc()

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """ASGI middleware counting every request by status and timing it to its last byte.

    Pure ASGI (not Starlette's ``BaseHTTPMiddleware``) so streamed answers pass untouched and
    their duration includes the whole stream.
    """

    def __init__(self, app: ASGIApp, metrics: RouterMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in KNOWN_ROUTES else "other"
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "recorded": False}

        def record() -> None:
            if not state["recorded"]:
                state["recorded"] = True
                self.metrics.requests.labels(route, str(state["status"])).inc()
                self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

        async def send_and_measure(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last byte leaves: a client that scrapes right after its answer
                # must already see it counted.
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_and_measure)
        finally:
            record()  # a request that ended without a complete answer (error, disconnect)
