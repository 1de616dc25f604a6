"""Soak under faults: thousands of concurrent requests through the herd while its experts fail.

Starts four local expert servers (the project's TGI-protocol server with the tiny model; two
on the OpenAI chat route, two on TGI's generate API), three as ``ServerThread``s in this
process and one as its own ``python -m langchain_herd.server`` process. Each injects random
faults (``FaultConfig.random``): HTTP 5xx, 429, stalls longer than the router's timeout,
streams cut mid-way, empty answers, slow tokens (from after a fault-free warm-up). While the
requests run, one expert at a time is taken down and brought back on its port (``--restarts``,
by default one per 300 requests): a server thread stopped (connections refused meanwhile) or
the process SIGKILLed and restarted.

Requests go through ``HerdRouter`` (``ainvoke``, ``astream``, ``invoke``, ``stream``; tools
bound on some) and through the ``serve-router`` app (``create_router_app`` served by uvicorn
in this process; plain and streamed, tools on some), mixed at random from ``--seed``. Every
request must end in exactly one of: an answer, or one clear error that lists every attempt
(``AllExpertsFailedError``, ``ExpertsOverloadedError`` among them, or the endpoint's error
JSON with its ``attempts``), or, for a stream that broke after tokens were sent (where no
fallback is possible), ``StreamInterruptedError`` naming the expert. Anything else (a bare
exception, a stream without ``[DONE]``) counts as *unclear*, and a request still running
``hang_after_s`` past its deadline as *hung* (left behind, so a call that never ends cannot
stall the run).

Every request has a deadline: ``max_attempts`` x the experts' ``timeout_s`` (what the router
promises at worst) plus ``--margin-s``; the sync paths are held to it too.

Printed: requests in = answers + errors (+ unclear + hung, which must be 0), the deadline
overrun, breaker trips, failovers, failure kinds, p50/p99 latency, requests/s, open file
descriptors, asyncio tasks and threads before and after, and RSS sampled over the run (start,
mid, end and its slope). With ``--redis``, breakers and sticky threads live in a real
``redis-server`` and the endpoint runs as two replicas sharing them.

    nice -n 15 .venv/bin/python bench/soak.py [--requests 3000] [--concurrency 16] [--seed 1]
        [--redis] [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (  # bench/common.py (the script's folder is on sys.path)
    emit,
    free_port,
    percentile,
    redis_server,
    wait_healthy,
)

from langchain_herd import HerdRouter
from langchain_herd.breaker import Breaker, BreakerStatus
from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.decision import RouteDecision
from langchain_herd.endpoint import create_router_app
from langchain_herd.engine import DECISION_KEY, has_answer
from langchain_herd.errors import AllExpertsFailedError, StreamInterruptedError
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.faults import FaultConfig, RandomFaults

QUESTIONS = (
    "Compute the derivative of the polynomial x^3 + 2x with respect to x.",
    "Which philosopher wrote the Critique of Pure Reason, and in which century?",
    "What does the law of demand say about price and quantity demanded?",
    "How many bones does an adult human body have?",
    "Solve for x: 2x + 3 = 11. Show the steps.",
    "Which novel begins with 'Call me Ishmael'?",
    "What is the role of a central bank in setting interest rates?",
    "Which vitamin deficiency causes scurvy?",
)
#: A tool whose forced call is short: the tiny model's tokens are characters, and the call
#: (``{"function": {"_name": "t"}}``) must fit in ``tool_max_tokens``.
TOOL = {
    "type": "function",
    "function": {
        "name": "t",
        "description": "Look the answer up.",
        "parameters": {"type": "object", "properties": {}},
    },
}
SURFACES = ("ainvoke", "astream", "invoke", "stream", "endpoint", "endpoint_stream")
SURFACE_WEIGHTS = (0.2, 0.2, 0.15, 0.15, 0.15, 0.15)
#: Expert name, protocol and the MMLU group it serves; the last one runs in its own process.
EXPERTS = (
    ("stem", "openai", "stem"),
    ("humanities", "openai", "humanities"),
    ("social", "tgi", "social_sciences"),
    ("other", "tgi", "other"),
)
PROCESS_EXPERT = "other"


@dataclass
class SoakOptions:
    """One soak run's settings (the command line's options)."""

    requests: int = 3000
    concurrency: int = 16
    seed: int = 1
    redis: bool = False
    expert_timeout_s: float = 3.0
    """Each expert's ``timeout_s``: the router's per-attempt deadline."""
    max_attempts: int = 3
    margin_s: float = 2.0
    """Slack on top of ``max_attempts x expert_timeout_s`` before a request is late."""
    hang_after_s: float = 30.0
    """A request still running this long past its deadline is recorded as hung and left."""
    max_new_tokens: int = 8
    tool_max_tokens: int = 40
    """``max_tokens`` of requests with tools (forced, ``tool_choice: required``): the tiny
    model's grammar-bound call of ``TOOL`` takes about 30 tokens (cut shorter, the expert
    answers 422: it cannot parse the call)."""
    tools_share: float = 0.2
    restarts: int = 10
    """How many times an expert is taken down and brought back, one at a time, in turn, at
    even shares of the requests (0: never)."""
    down_s: float = 1.0
    """How long a stopped expert stays down (connections are refused meanwhile)."""
    process_expert: bool = True
    """Run one expert as its own process and SIGKILL it when its turn comes."""
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 2.0
    faults: RandomFaults = field(
        default_factory=lambda: RandomFaults(
            server_error=0.04,
            overloaded=0.04,
            stall=0.02,
            stall_ms=5000,
            cut_stream=0.05,
            cut_max_tokens=3,
            empty=0.03,
            slow_tokens=0.03,
            slow_token_ms=500,
        )
    )
    server_slots: int = 16
    """Each expert's ``max_concurrent_requests`` (beyond it: 429)."""
    progress_every: int = 0
    """Print a progress line every this many requests (0: every tenth of the run)."""

    @property
    def deadline_s(self) -> float:
        return self.max_attempts * self.expert_timeout_s + self.margin_s


@dataclass
class Result:
    """How one request ended."""

    index: int
    surface: str
    tools: bool
    status: str
    """``answer``, ``error`` (clear, listing its attempts), ``unclear`` or ``hung``."""
    kind: str
    """What kind of answer or error: ``answer``, ``all_experts_failed``, ``no_expert_available``,
    ``experts_overloaded`` (every expert said 429 or is backing off after one),
    ``stream_interrupted``, or the unclear error's type."""
    latency_s: float
    attempts: list[dict[str, Any]]
    detail: str = ""


# -- counting what the herd does ----------------------------------------------------------


class CountingBreaker:
    """A breaker that counts its trips (a failure that turned it open) and passes all through."""

    def __init__(self, inner: Breaker, name: str, trips: Counter[str]) -> None:
        self.inner = inner
        self.name = name
        self.trips = trips
        self._lock = threading.Lock()

    def allow(self) -> bool:
        return self.inner.allow()

    def record_success(self) -> None:
        self.inner.record_success()

    def record_failure(self) -> None:
        with self._lock:
            before = self.inner.status().state
            self.inner.record_failure()
            if before != "open" and self.inner.status().state == "open":
                self.trips[self.name] += 1

    def release_probe(self) -> None:
        self.inner.release_probe()

    def status(self) -> BreakerStatus:
        return self.inner.status()


def count_trips(router: HerdRouter, trips: Counter[str]) -> None:
    """Wrap every breaker of ``router`` so its trips land in ``trips``."""
    breakers = router.engine.breakers
    for name, breaker in list(breakers.items()):
        breakers[name] = CountingBreaker(breaker, name, trips)


def pending_tasks() -> int:
    """Unfinished asyncio tasks in this process, over every event loop (servers included)."""
    # type(), not isinstance(): isinstance reads __class__, which some of torch's and
    # transformers' lazy objects compute (slowly, with warnings) on the heap's 600k objects.
    task_types = {asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task)}
    return sum(1 for o in gc.get_objects() if type(o) in task_types and not o.done())


@dataclass
class Gauges:
    """Open file descriptors, threads and asyncio tasks of this process (and RSS)."""

    fds: int
    threads: int
    tasks: int
    rss_mb: float
    sockets: dict[str, int]
    """TCP sockets by state and side: ``client:ESTABLISHED``, ``server:CLOSE_WAIT``, ..."""

    @classmethod
    def now(cls, server_ports: set[int]) -> Gauges:
        me = psutil.Process()
        sockets: Counter[str] = Counter()
        for conn in me.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                continue
            side = "server" if conn.laddr and conn.laddr.port in server_ports else "client"
            sockets[f"{side}:{conn.status}"] += 1
        return cls(
            me.num_fds(),
            threading.active_count(),
            pending_tasks(),
            rss_mb(me),
            dict(sorted(sockets.items())),
        )


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


class MemorySampler:
    """Samples the RSS of this process (the routers, the endpoint and three experts) every
    ``every_s`` seconds, and apart from it the expert process's (which restarts reset)."""

    def __init__(self, every_s: float, extra: Callable[[], list[psutil.Process]]) -> None:
        self.every_s = every_s
        self.extra = extra
        self.samples: list[tuple[float, float]] = []
        self.expert_process_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        me = psutil.Process()
        while True:
            self.samples.append((time.monotonic() - self._started, rss_mb(me)))
            for process in self.extra():
                with suppress(psutil.Error):
                    self.expert_process_mb.append(rss_mb(process))
            if self._stop.wait(self.every_s):
                return

    def summary(self) -> dict[str, Any]:
        values = [mb for _, mb in self.samples]
        if len(values) < 2:
            return {"samples": len(values)}
        # The slope over the second half: the first fills caches, pools and the model's
        # buffers; a leak keeps growing after that.
        half = self.samples[len(self.samples) // 2 :]
        slope = _slope(half) * 60 if len(half) >= 2 else 0.0
        growth = half[-1][1] - half[0][1]
        return {
            "samples": len(values),
            "start_mb": values[0],
            "mid_mb": values[len(values) // 2],
            "end_mb": values[-1],
            "max_mb": max(values),
            "second_half_slope_mb_per_min": slope,
            "second_half_growth_mb": growth,
            "flat": growth < max(32.0, 0.05 * values[len(values) // 2]),
            "expert_process_max_mb": max(self.expert_process_mb, default=None),
        }


def _slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


# -- the expert servers -------------------------------------------------------------------


class _QuietCancelled(logging.Filter):
    """Drops uvicorn's traceback for each request cancelled by a forced server stop: the
    bench cuts them on purpose (what the clients saw is what the soak counts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is asyncio.CancelledError)


logging.getLogger("uvicorn.error").addFilter(_QuietCancelled())


class ThreadExpert:
    """An expert served by a ``ServerThread``; ``bounce`` stops it and starts it again."""

    def __init__(self, name: str, app: Any, port: int, faults: FaultConfig) -> None:
        self.name = name
        self.app = app
        self.port = port
        self.faults = faults
        self.server = ServerThread(app, port=port).start()

    def inject(self) -> None:
        """Start the random faults (the server runs without them until then)."""
        self.app.state.herd.faults.replace(self.faults)

    def bounce(self, down_s: float) -> str:
        # A short graceful window, then forced: in-flight requests are cut like a crash's.
        self.server.stop(timeout=0.5)
        time.sleep(down_s)
        self.server = ServerThread(self.app, port=self.port).start()
        return f"{self.name}: server stopped, {down_s:g}s of refused connections, started"

    def processes(self) -> list[psutil.Process]:
        return []

    def stop(self) -> None:
        self.server.stop(timeout=2)


class ProcessExpert:
    """An expert in its own ``python -m langchain_herd.server`` process; ``bounce`` SIGKILLs
    it and starts a new one on the same port (its faults are set again over HTTP)."""

    def __init__(self, name: str, port: int, faults: FaultConfig, slots: int, workdir: Path):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.faults = faults
        self.slots = slots
        self.log = workdir / f"expert-{name}.log"
        self.injecting = False
        self.process: subprocess.Popen[bytes] | None = None
        self._start()

    def inject(self) -> None:
        """Start the random faults, now and in every restarted process."""
        self.injecting = True
        self._set_faults()

    def _set_faults(self) -> None:
        body = self.faults.model_dump(mode="json")
        httpx.post(f"{self.url}/_herd/faults", json=body, timeout=10).raise_for_status()

    def _start(self) -> None:
        # Kept before waiting, so a stop (an interrupted run) finds the process to end.
        with self.log.open("ab") as log:
            self.process = process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "langchain_herd.server",
                    "--model",
                    "tiny",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--max-input-tokens",
                    "512",
                    "--max-total-tokens",
                    "1024",
                    "--max-concurrent-requests",
                    str(self.slots),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.url, process, self.log, f"expert {self.name}")
        if self.injecting:
            self._set_faults()

    def bounce(self, down_s: float) -> str:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        time.sleep(down_s)
        started = time.monotonic()
        self._start()
        return (
            f"{self.name}: process SIGKILLed, restarted "
            f"({time.monotonic() - started + down_s:.1f}s down)"
        )

    def processes(self) -> list[psutil.Process]:
        with suppress(psutil.Error):
            return [psutil.Process(self.process.pid)] if self.process else []
        return []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def herd_config(urls: dict[str, str], options: SoakOptions, redis_url: str | None) -> HerdConfig:
    experts = [
        {
            "name": name,
            "url": urls[name],
            "protocol": protocol,
            "model_id": f"tiny-{name}",
            "routes": [group],
            "timeout_s": options.expert_timeout_s,
            "generation": {"max_new_tokens": options.max_new_tokens},
        }
        for name, protocol, group in EXPERTS
    ]
    state: dict[str, Any] = {"backend": "memory"}
    if redis_url is not None:
        state = {"backend": "redis", "url": redis_url, "key_prefix": "soak:", "reconnect_s": 1.0}
    return parse_config(
        {
            "name": "soak",
            "experts": experts,
            "fallback": {
                "max_attempts": options.max_attempts,
                "breaker": {
                    "failure_threshold": options.breaker_threshold,
                    "cooldown_s": options.breaker_cooldown_s,
                },
            },
            "state": state,
        }
    )


# -- one request per surface --------------------------------------------------------------


@dataclass
class Plan:
    index: int
    surface: str
    tools: bool
    question: str
    thread: str | None


def plans(options: SoakOptions) -> list[Plan]:
    rng = random.Random(options.seed)
    out = []
    for index in range(options.requests):
        surface = rng.choices(SURFACES, SURFACE_WEIGHTS)[0]
        thread = f"thread-{rng.randrange(50)}" if rng.random() < 0.3 else None
        out.append(
            Plan(index, surface, rng.random() < options.tools_share, rng.choice(QUESTIONS), thread)
        )
    return out


def _attempts(decision: Any) -> list[dict[str, Any]]:
    if isinstance(decision, RouteDecision):
        return [a.model_dump(mode="json") for a in decision.attempts]
    if isinstance(decision, dict):
        return list(decision.get("attempts") or [])
    return []


def router_error(plan: Plan, exc: BaseException, latency: float) -> Result:
    """An exception from ``HerdRouter``: clear when it lists its attempts (or names the
    expert whose stream broke), unclear otherwise."""
    if isinstance(exc, AllExpertsFailedError):
        attempts = _attempts(exc.decision)
        text = str(exc)
        listed = all(a["expert"] in text for a in attempts) and all(
            name in text for name in exc.decision.skipped
        )
        kind = "all_experts_failed" if attempts else "no_expert_available"
        if type(exc).__name__ == "ExpertsOverloadedError":  # back-pressure: every one said 429
            kind = "experts_overloaded"
        status = "error" if listed and (attempts or exc.decision.skipped) else "unclear"
        return Result(plan.index, plan.surface, plan.tools, status, kind, latency, attempts, text)
    if isinstance(exc, StreamInterruptedError):
        return Result(
            plan.index,
            plan.surface,
            plan.tools,
            "error",
            "stream_interrupted",
            latency,
            [{"expert": exc.expert, "ok": False, "failure": "stream_broken", "error": str(exc)}],
            str(exc),
        )
    return Result(
        plan.index,
        plan.surface,
        plan.tools,
        "unclear",
        type(exc).__name__,
        latency,
        [],
        f"{type(exc).__name__}: {exc}"[:500],
    )


def router_answer(plan: Plan, message: Any, decision: Any, latency: float) -> Result:
    attempts = _attempts(decision)
    ok = decision is not None and has_answer(message) and bool(attempts) and attempts[-1]["ok"]
    return Result(
        plan.index,
        plan.surface,
        plan.tools,
        "answer" if ok else "unclear",
        "answer" if ok else "answer_without_text_or_decision",
        latency,
        attempts,
    )


class Surfaces:
    """Runs one planned request through its surface."""

    def __init__(
        self,
        router: HerdRouter,
        endpoints: list[str],
        http: httpx.AsyncClient,
        hard_cap_s: float,
        tool_max_tokens: int,
    ) -> None:
        self.router = router
        self.tooled = router.bind_tools([TOOL], tool_choice="required").bind(
            max_tokens=tool_max_tokens
        )
        self.tool_max_tokens = tool_max_tokens
        self.endpoints = itertools.cycle(endpoints)
        self.http = http
        self.hard_cap_s = hard_cap_s

    def _model(self, plan: Plan) -> Any:
        return self.tooled if plan.tools else self.router

    @staticmethod
    def _config(plan: Plan) -> dict[str, Any]:
        return {"configurable": {"thread_id": plan.thread}} if plan.thread else {}

    async def run(self, plan: Plan) -> Result:
        started = time.monotonic()
        try:
            if plan.surface in ("invoke", "stream"):
                return await self._sync(plan, started)
            return await asyncio.wait_for(self._async(plan, started), self.hard_cap_s)
        except asyncio.TimeoutError:
            latency = time.monotonic() - started
            return Result(
                plan.index, plan.surface, plan.tools, "hung", "hung", latency, [], "never ended"
            )

    async def _async(self, plan: Plan, started: float) -> Result:
        if plan.surface == "ainvoke":
            try:
                answer = await self._model(plan).ainvoke(plan.question, self._config(plan))
            except Exception as exc:
                return router_error(plan, exc, time.monotonic() - started)
            decision = answer.response_metadata.get(DECISION_KEY)
            return router_answer(plan, answer, decision, time.monotonic() - started)
        if plan.surface == "astream":
            merged: Any = None
            try:
                async for chunk in self._model(plan).astream(plan.question, self._config(plan)):
                    merged = chunk if merged is None else merged + chunk
            except Exception as exc:
                return router_error(plan, exc, time.monotonic() - started)
            decision = merged.response_metadata.get(DECISION_KEY) if merged else None
            return router_answer(plan, merged, decision, time.monotonic() - started)
        return await self._endpoint(plan, started, stream=plan.surface == "endpoint_stream")

    async def _sync(self, plan: Plan, started: float) -> Result:
        """A sync call in its own daemon thread, so a call that never ends is left behind
        (and reported as hung) instead of blocking the run."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()

        def settle(result: Result) -> None:
            if not done.done():
                done.set_result(result)

        def work() -> None:
            try:
                if plan.surface == "invoke":
                    answer = self._model(plan).invoke(plan.question, self._config(plan))
                    decision = answer.response_metadata.get(DECISION_KEY)
                    message: Any = answer
                else:
                    message = None
                    for chunk in self._model(plan).stream(plan.question, self._config(plan)):
                        message = chunk if message is None else message + chunk
                    decision = message.response_metadata.get(DECISION_KEY) if message else None
                result = router_answer(plan, message, decision, time.monotonic() - started)
            except Exception as exc:
                result = router_error(plan, exc, time.monotonic() - started)
            with suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(settle, result)

        threading.Thread(target=work, name=f"soak-sync-{plan.index}", daemon=True).start()
        return await asyncio.wait_for(done, self.hard_cap_s)

    async def _endpoint(self, plan: Plan, started: float, *, stream: bool) -> Result:
        body: dict[str, Any] = {
            "model": "herd",
            "messages": [{"role": "user", "content": plan.question}],
            "stream": stream,
        }
        if plan.tools:
            body["tools"] = [TOOL]
            body["tool_choice"] = "required"
            body["max_tokens"] = self.tool_max_tokens
        headers = {"x-herd-thread-id": plan.thread} if plan.thread else {}
        url = f"{next(self.endpoints)}/v1/chat/completions"
        try:
            async with self.http.stream("POST", url, json=body, headers=headers) as reply:
                if reply.status_code != 200:
                    raw = await reply.aread()
                    return endpoint_error(plan, reply.status_code, raw, time.monotonic() - started)
                if not stream:
                    raw = await reply.aread()
                    return endpoint_answer(plan, json.loads(raw), time.monotonic() - started)
                return await endpoint_stream(plan, reply, started)
        except httpx.HTTPError as exc:
            latency = time.monotonic() - started
            detail = f"{type(exc).__name__}: {exc}"
            return Result(
                plan.index, plan.surface, plan.tools, "unclear", "http", latency, [], detail
            )


def endpoint_error(plan: Plan, status: int, raw: bytes, latency: float) -> Result:
    """An error answer of the endpoint: clear when OpenAI-shaped and listing its attempts."""
    try:
        body = json.loads(raw)
        error = body["error"]
        code, message = error.get("code"), error["message"]
    except (ValueError, KeyError, TypeError):
        detail = f"HTTP {status}: {raw[:300]!r}"
        return Result(
            plan.index, plan.surface, plan.tools, "unclear", "not_json", latency, [], detail
        )
    attempts = list(error.get("attempts") or [])
    skipped = (body.get("herd") or {}).get("skipped") or {}
    listed = all(a["expert"] in message for a in attempts) and all(n in message for n in skipped)
    clear = code in ("all_experts_failed", "no_expert_available", "experts_overloaded") and listed
    clear = clear and bool(attempts or skipped)
    clear = clear or code == "stream_interrupted"
    return Result(
        plan.index,
        plan.surface,
        plan.tools,
        "error" if clear else "unclear",
        str(code),
        latency,
        attempts,
        f"HTTP {status}: {message[:300]}",
    )


def endpoint_answer(plan: Plan, body: dict[str, Any], latency: float) -> Result:
    message = body["choices"][0]["message"]
    decision = body.get("herd") or {}
    attempts = list(decision.get("attempts") or [])
    ok = bool((message.get("content") or "").strip() or message.get("tool_calls"))
    ok = ok and bool(decision.get("answered_by"))
    kind = "answer" if ok else "answer_without_text_or_decision"
    return Result(
        plan.index, plan.surface, plan.tools, "answer" if ok else "unclear", kind, latency, attempts
    )


async def endpoint_stream(plan: Plan, reply: httpx.Response, started: float) -> Result:
    text, calls, decision, error, done = "", 0, None, None, False
    async for line in reply.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            error = event
            continue
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            calls += len(delta.get("tool_calls") or [])
        decision = event.get("herd") or decision
    latency = time.monotonic() - started
    if not done:
        detail = "the stream ended without [DONE]"
        return Result(
            plan.index, plan.surface, plan.tools, "unclear", "no_done", latency, [], detail
        )
    if error is not None:
        return endpoint_error(plan, 200, json.dumps(error).encode(), latency)
    attempts = list((decision or {}).get("attempts") or [])
    ok = bool(text.strip() or calls) and bool((decision or {}).get("answered_by"))
    kind = "answer" if ok else "answer_without_text_or_decision"
    return Result(
        plan.index, plan.surface, plan.tools, "answer" if ok else "unclear", kind, latency, attempts
    )


# -- the run ------------------------------------------------------------------------------


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"soak [{time.monotonic() - _T0:6.1f}s]: {message}", file=sys.stderr, flush=True)


@contextmanager
def experts_up(options: SoakOptions, workdir: Path) -> Iterator[tuple[dict[str, str], list[Any]]]:
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        servers: list[Any] = []
        for offset, (name, _protocol, _group) in enumerate(EXPERTS):
            faults = FaultConfig(
                random=options.faults.model_copy(update={"seed": options.seed * 100 + offset})
            )
            port = free_port()
            server: Any
            if name == PROCESS_EXPERT and options.process_expert:
                server = ProcessExpert(name, port, faults, options.server_slots, workdir)
            else:
                # A model of its own (the tiny one loads in ms once imported), as each expert
                # has in production: one expert's backlog must not hold up the others.
                app = create_app(
                    load_backend("tiny"),
                    model_id=f"tiny-{name}",
                    max_input_tokens=512,
                    max_total_tokens=1024,
                    max_concurrent_requests=options.server_slots,
                )
                server = ThreadExpert(name, app, port, faults)
            stack.callback(server.stop)
            servers.append(server)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls, servers


def run_soak(options: SoakOptions) -> dict[str, Any]:
    """Run one soak and return its figures (see the module's docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="herd-soak-"))
    trips: Counter[str] = Counter()
    log("starting the experts" + (" and redis-server" if options.redis else ""))
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(workdir)) if options.redis else None
        urls, servers = stack.enter_context(experts_up(options, workdir))
        config = herd_config(urls, options, redis_url)
        router = HerdRouter.from_config(config)
        count_trips(router, trips)
        endpoints: list[str] = []
        for _replica in range(2 if options.redis else 1):
            replica = HerdRouter.from_config(config)
            count_trips(replica, trips)
            app = create_router_app(replica, api_keys=[], health_interval_s=5.0)
            endpoint = ServerThread(app).start()
            stack.callback(endpoint.stop)
            endpoints.append(endpoint.url)
        log(
            f"{len(servers)} experts and {len(endpoints)} router endpoint(s) up"
            + (f", state in Redis at {redis_url}" if redis_url else "")
        )
        results = asyncio.run(_drive(options, router, endpoints, servers, trips))
        log("stopping the servers")
    log("done")
    return results


async def _drive(
    options: SoakOptions,
    router: HerdRouter,
    endpoints: list[str],
    servers: list[Any],
    trips: Counter[str],
) -> dict[str, Any]:
    hard_cap = options.deadline_s + options.hang_after_s
    limits = httpx.Limits(max_connections=options.concurrency * 2)
    http = httpx.AsyncClient(timeout=hard_cap, limits=limits, trust_env=False)
    surfaces = Surfaces(router, endpoints, http, hard_cap, options.tool_max_tokens)
    ports = {server.port for server in servers} | {httpx.URL(url).port or 0 for url in endpoints}

    # Warm up at full concurrency, before any fault: connection and thread pools grow to what
    # this load keeps open, so the "before" gauges count what a running herd holds and a
    # difference after the run is what the run leaked.
    warm = plans(SoakOptions(requests=options.concurrency, seed=options.seed + 1))
    pending = iter(warm)

    async def warm_worker() -> None:
        for plan in pending:
            await surfaces.run(plan)

    await asyncio.gather(*(warm_worker() for _ in range(options.concurrency)))
    for server in servers:
        await asyncio.to_thread(server.inject)
    await asyncio.sleep(0.5)
    before = Gauges.now(ports)
    log(f"warmed up; {options.requests} requests, {options.concurrency} at a time")
    for name in trips:
        trips[name] = 0

    todo = plans(options)
    results: list[Result] = []
    every = options.progress_every or max(1, options.requests // 10)
    started = time.monotonic()
    bounces: list[str] = []
    finished = asyncio.Event()

    # Restarts are due at even shares of the requests (not on a clock), so a slow machine and
    # a fast one see the same number; one expert at a time, in turn.
    marks = [options.requests * (k + 1) // (options.restarts + 1) for k in range(options.restarts)]
    # A mark passed while an expert is still coming back is skipped, not queued: restarts
    # back to back would say more about this machine's process start-up than about the herd.
    due = asyncio.Event()
    restarting = asyncio.Event()
    skipped_restarts: list[int] = []

    async def bouncer() -> None:
        for server in itertools.cycle(servers):
            await due.wait()
            due.clear()
            if finished.is_set():
                return
            restarting.set()
            note = await asyncio.to_thread(server.bounce, options.down_s)
            restarting.clear()
            bounces.append(f"{time.monotonic() - started:.1f}s {note}")
            log(note)

    queue = iter(todo)

    async def worker() -> None:
        for plan in queue:
            results.append(await surfaces.run(plan))
            if marks and len(results) >= marks[0]:
                mark = marks.pop(0)
                if restarting.is_set() or due.is_set():
                    skipped_restarts.append(mark)
                else:
                    due.set()
            if len(results) % every == 0:
                tally = Counter(r.status for r in results)
                elapsed = time.monotonic() - started
                log(
                    f"{len(results)}/{options.requests} done in {elapsed:.0f}s "
                    f"({len(results) / elapsed:.1f} req/s): {dict(tally)}, "
                    f"breaker trips {sum(trips.values())}, rss {rss_mb(psutil.Process()):.0f} MB"
                )

    def processes() -> list[psutil.Process]:
        return [p for server in servers for p in server.processes()]

    with MemorySampler(0.5, processes) as memory:
        chaos = asyncio.create_task(bouncer())
        await asyncio.gather(*(worker() for _ in range(options.concurrency)))
        wall = time.monotonic() - started
        finished.set()
        due.set()
        await chaos  # a restart under way ends before anything is measured
    await http.aclose()
    # Give pools and servers a moment to settle: a closed connection's task ends a little
    # after the response does.
    await asyncio.sleep(1.0)
    after = Gauges.now(ports)
    log("measured after the run")
    figures = summarize(options, results, wall, before, after, memory, trips, bounces, servers)
    figures["restarts_skipped_at"] = skipped_restarts
    return figures


def summarize(
    options: SoakOptions,
    results: list[Result],
    wall: float,
    before: Gauges,
    after: Gauges,
    memory: MemorySampler,
    trips: Counter[str],
    bounces: list[str],
    servers: list[Any],
) -> dict[str, Any]:
    status = Counter(r.status for r in results)
    kinds = Counter(f"{r.status}:{r.kind}" for r in results)
    latencies = [r.latency_s * 1000 for r in results]
    answered = [r.latency_s * 1000 for r in results if r.status == "answer"]
    contract = options.max_attempts * options.expert_timeout_s
    overrun = max((r.latency_s - contract for r in results), default=0.0)
    late = [r for r in results if r.latency_s > options.deadline_s]
    failed = Counter(
        a.get("failure") or "?" for r in results for a in r.attempts if not a.get("ok", False)
    )
    failovers = sum(max(0, len(r.attempts) - 1) for r in results)
    examples: dict[str, list[str]] = {}
    for r in results:
        for a in r.attempts:
            seen = examples.setdefault(a.get("failure") or "?", [])
            if not a.get("ok", False) and len(seen) < 3 and a.get("error") not in seen:
                seen.append(str(a.get("error"))[:300])
    by_surface: dict[str, dict[str, Any]] = {}
    for surface in SURFACES:
        mine = [r for r in results if r.surface == surface]
        if mine:
            by_surface[surface] = {
                "requests": len(mine),
                **dict(Counter(r.status for r in mine)),
                "p50_ms": percentile([r.latency_s * 1000 for r in mine], 0.5),
                "max_ms": max(r.latency_s * 1000 for r in mine),
            }
    fired: dict[str, int] = Counter()
    for server in servers:
        if isinstance(server, ThreadExpert):
            fired.update(server.app.state.herd.faults.fired)
    problems = [asdict(r) for r in results if r.status in ("unclear", "hung")]
    return {
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "faults"},
            "faults": options.faults.model_dump(),
            "deadline_s": options.deadline_s,
        },
        "requests_in": len(results),
        "answers": status["answer"],
        "errors": status["error"],
        "unclear": status["unclear"],
        "hung": status["hung"],
        "balanced": len(results) == options.requests
        and status["answer"] + status["error"] == len(results),
        "outcomes": dict(sorted(kinds.items())),
        "by_surface": by_surface,
        "deadline": {
            "contract_s": contract,
            "deadline_s": options.deadline_s,
            "max_overrun_beyond_contract_s": overrun,
            "past_deadline": len(late),
            "past_deadline_by_surface": dict(Counter(r.surface for r in late)),
            "late": [asdict(r) for r in late[:10]],
        },
        "breaker_trips": sum(trips.values()),
        "breaker_trips_by_expert": dict(trips),
        "failovers": failovers,
        "failed_attempts_by_kind": dict(failed),
        "failure_examples": {kind: seen for kind, seen in examples.items() if seen},
        "faults_fired_in_thread_experts": dict(fired),
        "restarts": bounces,
        "latency_ms": {
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "answers_p50": percentile(answered, 0.5) if answered else None,
            "answers_p99": percentile(answered, 0.99) if answered else None,
        },
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "before": asdict(before),
        "after": asdict(after),
        "memory": memory.summary(),
        "problems": problems[:50],
    }


def print_report(r: dict[str, Any]) -> None:
    d, m, lat = r["deadline"], r["memory"], r["latency_ms"]
    b, a = r["before"], r["after"]
    print(
        f"requests in {r['requests_in']} = answers {r['answers']} + errors {r['errors']}"
        f" (+ unclear {r['unclear']} + hung {r['hung']}): "
        f"{'OK' if r['balanced'] else 'NOT BALANCED'}"
    )
    print(
        f"deadline {d['deadline_s']:g}s (contract {d['contract_s']:g}s): past deadline "
        f"{d['past_deadline']}, max overrun beyond the contract "
        f"{d['max_overrun_beyond_contract_s']:+.2f}s"
    )
    print(f"breaker trips {r['breaker_trips']} {r['breaker_trips_by_expert']}")
    print(f"failovers {r['failovers']}; failed attempts by kind {r['failed_attempts_by_kind']}")
    print(f"outcomes {r['outcomes']}")
    print(f"random faults fired (thread experts) {r['faults_fired_in_thread_experts']}")
    print(f"restarts {len(r['restarts'])}")
    print(
        f"latency p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms; "
        f"{r['requests_per_s']:.1f} requests/s over {r['wall_s']:.0f}s"
    )
    print(
        f"fds {b['fds']} -> {a['fds']}, threads {b['threads']} -> {a['threads']}, "
        f"asyncio tasks {b['tasks']} -> {a['tasks']}"
    )
    print(f"sockets before {b['sockets']}")
    print(f"sockets after  {a['sockets']}")
    if "start_mb" in m:
        print(
            f"rss (this process) start {m['start_mb']:.0f} MB, mid {m['mid_mb']:.0f} MB, "
            f"end {m['end_mb']:.0f} "
            f"MB, second-half slope {m['second_half_slope_mb_per_min']:+.1f} MB/min: "
            f"{'flat' if m['flat'] else 'GROWING'}"
        )
    for problem in r["problems"][:10]:
        print(f"  problem: {problem['surface']} {problem['status']} {problem['detail'][:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = SoakOptions()
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--redis", action="store_true", help="Redis state, two endpoint replicas")
    parser.add_argument(
        "--restarts", type=int, default=None, help="expert restarts (default: 1 per 300 requests)"
    )
    parser.add_argument("--margin-s", type=float, default=defaults.margin_s)
    parser.add_argument(
        "--no-process-expert",
        action="store_true",
        help="run every expert as a server thread (no process is SIGKILLed)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # A SIGTERM must still stop the expert process and redis-server (the with-blocks' exits).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = SoakOptions(
        requests=args.requests,
        concurrency=args.concurrency,
        seed=args.seed,
        redis=args.redis,
        restarts=args.requests // 300 if args.restarts is None else args.restarts,
        margin_s=args.margin_s,
        process_expert=not args.no_process_expert,
    )
    results = run_soak(options)
    emit(results, args.out)
    print_report(results)
    return 0 if results["balanced"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
