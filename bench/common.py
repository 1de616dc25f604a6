"""What every benchmark shares: percentiles, writing its figures out, and the servers
(a ``redis-server``, a process's ``/health``) several of them start."""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def emit(results: dict[str, Any], out: Path | None) -> None:
    """Print the figures as JSON and, with ``out``, write them there."""
    text = json.dumps(results, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of latencies in milliseconds."""
    return {
        "p50_ms": percentile(values, 0.5),
        "p95_ms": percentile(values, 0.95),
        "mean_ms": statistics.fmean(values),
        "n": len(values),
    }


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Wait until ``url/health`` answers 200; fail with the log's tail if the process exits."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not healthy after 120 s: {log.read_text()[-2000:]}")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A ``redis-server`` on a free loopback port, nothing persisted; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; run scripts/setup.sh")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        import redis  # the `redis` extra

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(10)
