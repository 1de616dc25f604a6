"""What the HTTP endpoint and shared state cost: ``herd serve-router`` against the in-process
router and against the expert called directly, in the same run.

Starts one local expert server (the tiny model, its own process), a ``redis-server`` on a
free port, and ``herd serve-router`` processes on one herd config with in-process state and
with Redis state, one and two replicas each. Then, interleaving the variants so machine noise
hits them alike, it sends the same chat request:

- straight to the expert's ``/v1/chat/completions`` over HTTP (the floor);
- through ``HerdRouter`` in this process (the in-process router), ``invoke`` and
  ``ainvoke``; the endpoint runs the async path, so that is its baseline;
- through the endpoint: 1 and 2 replicas (alternating), in-process and Redis state. Every
  request names a conversation thread, so sticky sessions are read and written each time.

It prints p50/p95 latency per variant, throughput with concurrent clients, and the added
milliseconds. Targets: the endpoint adds under 5 ms p50 beyond the in-process router, and
Redis state under 2 ms beyond in-process state.

    .venv/bin/python bench/serve_router.py [--iterations 200] \
        [--out bench/results/serve_router.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import (  # bench/common.py (the script's folder is on sys.path)
    emit,
    free_port,
    redis_server,
    summary,
    wait_healthy,
)

from langchain_herd import HerdRouter
from langchain_herd.classifiers.registry import resolve_classifier
from langchain_herd.config import parse_config
from langchain_herd.local_servers import LocalHerd

QUESTION = (
    "Which of the following is the derivative of x^3 + 2x?\nA. 3x^2 + 2\nB. x^2 + 2\n"
    "C. 3x + 2\nD. x^3\nAnswer with the letter only."
)
MAX_TOKENS = 4
TARGET_ENDPOINT_MS = 5.0
TARGET_REDIS_MS = 2.0


@contextmanager
def serve_router(config: Path, workdir: Path, name: str) -> Iterator[str]:
    port = free_port()
    log = workdir / f"{name}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langchain_herd.cli",
            "serve-router",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log, f"serve-router {name}")
        yield url
    finally:
        process.terminate()
        process.wait(20)


def herd_config(expert_url: str, state: dict[str, Any]) -> dict[str, Any]:
    labels = list(resolve_classifier("bundled:mmlu-group-tfidf").labels)
    return {
        "name": "bench-herd",
        "experts": [
            {
                "name": "live",
                "url": expert_url,
                "protocol": "openai",
                "routes": labels,
                "generation": {"max_new_tokens": MAX_TOKENS},
            }
        ],
        # Never let a noisy moment open the only expert's breaker mid-run.
        "fallback": {"breaker": {"failure_threshold": 1000}},
        "state": state,
    }


def run(iterations: int, clients: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    expert_port = free_port()
    expert_url = f"http://127.0.0.1:{expert_port}"
    local = parse_config(
        {
            "experts": [{"name": "live", "url": expert_url}],
            "local_servers": [
                {
                    "name": "bench-tiny",
                    "model": "tiny",
                    "port": expert_port,
                    "max_concurrent_requests": 64,
                }
            ],
        }
    )
    body = {
        "model": "tgi",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
    }
    with ExitStack() as stack:
        stack.enter_context(LocalHerd(local))
        redis_url = stack.enter_context(redis_server(workdir))
        configs = {}
        for state_name, state in {
            "memory": {"backend": "memory"},
            "redis": {"backend": "redis", "url": redis_url, "key_prefix": "bench:"},
        }.items():
            path = workdir / f"herd-{state_name}.yaml"
            path.write_text(yaml.safe_dump(herd_config(expert_url, state)))
            configs[state_name] = path
        print("bench: starting 4 serve-router processes", file=sys.stderr, flush=True)
        routers = {
            key: stack.enter_context(serve_router(configs[key.split("-")[0]], workdir, key))
            for key in ("memory-a", "memory-b", "redis-a", "redis-b")
        }
        in_process = HerdRouter.from_config(configs["memory"])
        http = stack.enter_context(httpx.Client(timeout=60))
        thread_ids = (f"thread-{n % 50}" for n in itertools.count())

        def direct() -> None:
            http.post(f"{expert_url}/v1/chat/completions", json=body).raise_for_status()

        def routed_in_process() -> None:
            config = {"configurable": {"thread_id": next(thread_ids)}}
            in_process.invoke(QUESTION, config, max_tokens=MAX_TOKENS)

        # The endpoint runs the router's async path (ainvoke, the async OpenAI client): the
        # same path in this process is the baseline the endpoint's own cost is read against.
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)

        def routed_in_process_async() -> None:
            config = {"configurable": {"thread_id": next(thread_ids)}}
            loop.run_until_complete(in_process.ainvoke(QUESTION, config, max_tokens=MAX_TOKENS))

        def endpoint(urls: list[str]) -> Callable[[], None]:
            cycle = itertools.cycle(urls)

            def call() -> None:
                reply = http.post(
                    f"{next(cycle)}/v1/chat/completions",
                    json={**body, "model": "herd"},
                    headers={"x-herd-thread-id": next(thread_ids)},
                )
                reply.raise_for_status()
                assert reply.headers["x-herd-expert"] == "live", reply.headers

            return call

        variants: dict[str, Callable[[], None]] = {
            "direct": direct,
            "in_process": routed_in_process,
            "in_process_async": routed_in_process_async,
            "endpoint_memory_1": endpoint([routers["memory-a"]]),
            "endpoint_memory_2": endpoint([routers["memory-a"], routers["memory-b"]]),
            "endpoint_redis_1": endpoint([routers["redis-a"]]),
            "endpoint_redis_2": endpoint([routers["redis-a"], routers["redis-b"]]),
        }
        for _ in range(10):  # warm connections, caches, the model and each process
            for call in variants.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(iterations):
            for name, call in variants.items():
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1000)
            if (index + 1) % max(1, iterations // 10) == 0:
                print(f"  latency: {index + 1}/{iterations} rounds", file=sys.stderr, flush=True)

        throughput: dict[str, float] = {}
        per_variant = max(clients * 10, iterations // 2)
        pool = stack.enter_context(ThreadPoolExecutor(clients))
        for name, call in variants.items():
            if name.startswith("in_process"):
                continue  # one interpreter's GIL, not the endpoint's capacity
            started = time.perf_counter()
            list(pool.map(lambda _, call=call: call(), range(per_variant)))
            throughput[name] = per_variant / (time.perf_counter() - started)
            print(f"  throughput: {name} done", file=sys.stderr, flush=True)

    stats = {name: summary(values) for name, values in times.items()}
    p50 = {name: s["p50_ms"] for name, s in stats.items()}
    endpoint_added = p50["endpoint_memory_1"] - p50["in_process_async"]
    endpoint_added_sync = p50["endpoint_memory_1"] - p50["in_process"]
    redis_added = p50["endpoint_redis_1"] - p50["endpoint_memory_1"]
    redis_added_2 = p50["endpoint_redis_2"] - p50["endpoint_memory_2"]
    return {
        "iterations": iterations,
        "latency": stats,
        "p50_over_direct": {name: value / p50["direct"] for name, value in p50.items()},
        "throughput_rps": throughput,
        "throughput_over_direct": {
            name: value / throughput["direct"] for name, value in throughput.items()
        },
        "clients": clients,
        "endpoint_added_beyond_in_process_p50_ms": endpoint_added,
        "endpoint_added_beyond_in_process_sync_p50_ms": endpoint_added_sync,
        "redis_added_beyond_memory_p50_ms": redis_added,
        "redis_added_beyond_memory_2_replicas_p50_ms": redis_added_2,
        "targets": {
            "endpoint_added_under_5ms": endpoint_added < TARGET_ENDPOINT_MS,
            "redis_added_under_2ms": redis_added < TARGET_REDIS_MS
            and redis_added_2 < TARGET_REDIS_MS,
        },
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"{'variant':<22}{'p50 ms':>9}{'p95 ms':>9}{'p50/direct':>12}{'req/s':>9}")
    for name, stats in results["latency"].items():
        rps = results["throughput_rps"].get(name)
        print(
            f"{name:<22}{stats['p50_ms']:>9.2f}{stats['p95_ms']:>9.2f}"
            f"{results['p50_over_direct'][name]:>12.2f}"
            f"{'-' if rps is None else f'{rps:.1f}':>9}"
        )
    print(
        f"endpoint adds {results['endpoint_added_beyond_in_process_p50_ms']:.2f} ms p50 beyond "
        f"the in-process router's async path (target < {TARGET_ENDPOINT_MS:g}), "
        f"{results['endpoint_added_beyond_in_process_sync_p50_ms']:.2f} ms beyond its sync "
        f"path; Redis state adds "
        f"{results['redis_added_beyond_memory_p50_ms']:.2f} ms (1 replica) and "
        f"{results['redis_added_beyond_memory_2_replicas_p50_ms']:.2f} ms (2 replicas) "
        f"(target < {TARGET_REDIS_MS:g})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.iterations, args.clients)
    print_table(results)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
