"""Start and stop the local TGI-protocol servers a herd config lists (``herd up``).

Each server runs as a child process (``python -m langchain_herd.server``) so a crash or a
slow model load never takes the caller down with it. A server already answering on its
port is reused, which lets ``herd up`` in one terminal serve ``herd route`` in another.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from langchain_herd.config import HerdConfig, LocalServerConfig
from langchain_herd.errors import HerdError


class LocalServerError(HerdError, RuntimeError):
    """A local expert server did not come up; the message includes the end of its log."""


def is_healthy(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``GET {url}/health`` answers 200."""
    try:
        return httpx.get(f"{url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def server_command(server: LocalServerConfig, base_dir: Path | None = None) -> list[str]:
    """The command line that runs one local server (adapter folders relative to
    ``base_dir``, the config's folder)."""
    # The model id reported to clients is the model's own (as TGI reports the hub id), so
    # an expert's `model_id` and its answers' `model_name` agree.
    model_id = ["--model-id", server.model_id] if server.model_id else []
    return [
        sys.executable,
        "-m",
        "langchain_herd.server",
        "--model",
        server.model,
        *model_id,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--max-input-tokens",
        str(server.max_input_tokens),
        "--max-total-tokens",
        str(server.max_total_tokens),
        "--max-concurrent-requests",
        str(server.max_concurrent_requests),
        "--max-batch-size",
        str(server.max_batch_size),
        "--lora-batching",
        server.lora_batching,
        "--max-body-bytes",
        str(server.max_body_bytes),
        *_adapter_args(server, base_dir or Path.cwd()),
    ]


def _adapter_args(server: LocalServerConfig, base_dir: Path) -> list[str]:
    specs = []
    for name, source in server.lora_adapters.items():
        folder = base_dir / Path(source).expanduser()
        specs.append(f"{name}={folder}" if folder.exists() else f"{name}={source}")
    return ["--lora-adapters", ",".join(specs)] if specs else []


class LocalHerd:
    """Context manager that brings a config's local servers up and takes them down.

    Example:
        .. code-block:: python

            with LocalHerd(load_config("bundled:local")) as herd:
                print(herd.urls)
    """

    def __init__(
        self,
        config: HerdConfig,
        *,
        startup_timeout_s: float = 600.0,
        log_dir: Path | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="herd-logs-"))
        self.on_wait = on_wait
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.reused: list[str] = []

    @property
    def urls(self) -> dict[str, str]:
        return {server.name: server.url for server in self.config.local_servers}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self) -> LocalHerd:
        for server in self.config.local_servers:
            if is_healthy(server.url):
                self.reused.append(server.name)
                continue
            log = self.log_path(server.name).open("wb")
            self.processes[server.name] = subprocess.Popen(
                server_command(server, self.config.base_dir), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            for server in self.config.local_servers:
                if server.name in self.processes:
                    self._wait(server)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, server: LocalServerConfig) -> None:
        process = self.processes[server.name]
        started = time.monotonic()
        while True:
            if is_healthy(server.url):
                return
            waited = time.monotonic() - started
            if process.poll() is not None:
                raise LocalServerError(
                    f"local server {server.name!r} exited with code {process.returncode} before "
                    f"answering on {server.url} (is port {server.port} taken?); end of its log "
                    f"{self.log_path(server.name)}:\n{self._tail(server.name)}"
                )
            if waited > self.startup_timeout_s:
                raise LocalServerError(
                    f"local server {server.name!r} not healthy on {server.url} after "
                    f"{waited:.0f}s; end of its log:\n{self._tail(server.name)}"
                )
            if self.on_wait is not None:
                self.on_wait(server.name, waited)
            time.sleep(0.5)

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.log_path(name)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> LocalHerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
