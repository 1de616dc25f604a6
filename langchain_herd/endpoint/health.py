"""Background probes of each expert's own ``GET {url}/health``, and the endpoint's health.

The router's breakers only learn about an expert from real traffic; a quiet herd could be
half down without anyone knowing. A background task probes every expert server each
``interval_s`` (one request per distinct URL: several experts often share one server), and
``/health`` reports both views per expert. Probes are reported, never fed into the breakers:
routing stays the engine's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from langchain_herd.breaker import Breaker

logger = logging.getLogger("langchain_herd.endpoint")


@dataclass(frozen=True)
class Probe:
    """The outcome of one health probe."""

    time: float
    """When it was made (Unix seconds)."""
    ok: bool
    """Whether the server answered 200."""
    latency_ms: float
    """How long the answer took."""
    error: str | None = None
    """Why it was not ok."""


class HealthMonitor:
    """Probes expert servers in the background and keeps the latest outcome per expert.

    Args:
        urls: each expert's server root (None: nothing to probe, e.g. an in-process model).
        interval_s: seconds between probe rounds.
        timeout_s: per-probe timeout (default: the interval, at most 5 s).

    Example:
        .. code-block:: python

            monitor = HealthMonitor({"stem": "http://127.0.0.1:8080"}, interval_s=10)
            monitor.ensure_running()  # from inside the server's event loop
            monitor.last("stem")
    """

    def __init__(
        self,
        urls: Mapping[str, str | None],
        *,
        interval_s: float = 10.0,
        timeout_s: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"health_interval_s must be > 0, got {interval_s}")
        self.urls = dict(urls)
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else min(interval_s, 5.0)
        self._last: dict[str, Probe] = {}
        self._task: asyncio.Task[None] | None = None

    def last(self, expert: str) -> Probe | None:
        """The latest probe of this expert's server, or None before the first."""
        return self._last.get(expert)

    def ensure_running(self) -> None:
        """Start the probe loop in the running event loop, unless it already runs there.

        Called from the app's lifespan and from each request, so probes run whether or not
        the ASGI server sends lifespan events (the test ``ServerThread`` does not).
        """
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        if not any(self.urls.values()):
            return
        self._task = loop.create_task(self._run(), name="herd-health-probes")

    async def stop(self) -> None:
        """Stop the probe loop (the app's shutdown)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        # trust_env=False: an HTTP(S)_PROXY meant for the outside must not capture probes of
        # servers next to the router.
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            while True:
                await self.probe_all(client)
                await asyncio.sleep(self.interval_s)

    async def probe_all(self, client: httpx.AsyncClient) -> None:
        """One round: every distinct server once, concurrently."""
        by_url: dict[str, list[str]] = {}
        for name, url in self.urls.items():
            if url:
                by_url.setdefault(url, []).append(name)
        probes = await asyncio.gather(*(self._probe(client, url) for url in by_url))
        for (_, names), probe in zip(by_url.items(), probes, strict=True):
            for name in names:
                self._last[name] = probe

    @staticmethod
    async def _probe(client: httpx.AsyncClient, url: str) -> Probe:
        started = time.perf_counter()
        at = time.time()
        try:
            response = await client.get(f"{url}/health")
        except (httpx.HTTPError, OSError) as exc:
            latency = (time.perf_counter() - started) * 1000
            return Probe(at, False, latency, f"{type(exc).__name__}: {exc}"[:300])
        latency = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return Probe(at, False, latency, f"HTTP {response.status_code}")
        return Probe(at, True, latency)


def expert_health(breaker: Breaker, probe: Probe | None) -> dict[str, Any]:
    """One expert's entry in ``/health``: usable unless its breaker is open or its server
    failed the latest probe."""
    status = breaker.status()
    usable = status.state != "open" and (probe is None or probe.ok)
    return {
        "usable": usable,
        "breaker": {
            "state": status.state,
            "consecutive_failures": status.consecutive_failures,
            "retry_in_s": round(status.retry_in_s, 3),
        },
        "probe": None
        if probe is None
        else {**asdict(probe), "latency_ms": round(probe.latency_ms, 3)},
    }
