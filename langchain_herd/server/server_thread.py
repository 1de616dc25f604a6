"""Running the app with uvicorn: in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from langchain_herd.errors import HerdError
from langchain_herd.http_limits import HttpLimits, guarded_http_protocol, is_loopback

logger = logging.getLogger("langchain_herd.server")


class ServerStartError(HerdError, RuntimeError):
    """The server did not come up (port taken, app failed to start, health never answered)."""


class HerdUvicornServer(uvicorn.Server):
    """uvicorn's server with a readiness callback and a signal handling that returns cleanly.

    uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown, which would turn a clean stop
    into ``KeyboardInterrupt`` or a signal exit; this server just stops (a second signal forces
    the exit).

    Args:
        config: the uvicorn configuration.
        on_ready: called with the listening sockets once the server accepts connections.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_ready: Callable[[list[socket.socket]], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_ready is not None and not self.should_exit:
            self._on_ready(list(sockets or []))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the OS picks a free one).

    Raises:
        ServerStartError: the address cannot be bound (port taken, bad host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every JSON reply waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def http_limits_of(app: ASGIApp) -> HttpLimits:
    """The limits an app keeps in ``app.state.http_limits`` (the defaults if it keeps none)."""
    limits = getattr(getattr(app, "state", None), "http_limits", None)
    return limits if isinstance(limits, HttpLimits) else HttpLimits()


def uvicorn_config(
    app: ASGIApp, *, log_level: str = "warning", lifespan: Literal["on", "off"] = "off"
) -> uvicorn.Config:
    """The uvicorn settings shared by the thread and the CLIs (``herd serve``, ``serve-router``).

    Args:
        app: the ASGI app; its ``state.http_limits`` set the request-head timeout and size.
        log_level: uvicorn's log level.
        lifespan: ``off`` for apps with no startup work (the model server: the model is
            loaded before the app is built), ``on`` for those that have some.
    """
    return uvicorn.Config(
        app,
        log_level=log_level,
        lifespan=lifespan,
        timeout_graceful_shutdown=5,  # open streams must not hold a shutdown forever
        access_log=False,
        http=guarded_http_protocol(http_limits_of(app)),
    )


def exposure_refusal(app: ASGIApp, host: str) -> str | None:
    """Why serving ``app`` on ``host`` is refused, or None.

    Beyond loopback, a herd app must not offer ``/_herd/faults`` to anyone (the model server's
    ``state.fault_route``), nor the router endpoint without API keys (its ``state.api_auth``).
    """
    if is_loopback(host):
        return None
    state = getattr(app, "state", None)
    if getattr(getattr(state, "fault_route", None), "mode", None) == "open":
        return (
            f"refusing to serve /_herd/faults to anyone on {host}: pass "
            "fault_route=FaultRoute(key=...) (or FaultRoute(enabled=False)) to create_app, or "
            "listen on 127.0.0.1"
        )
    if getattr(state, "api_auth", None) is False:
        return (
            f"refusing to serve the router on {host} without API keys: pass api_keys=[...] to "
            "create_router_app (or set HERD_ROUTER_API_KEYS), or listen on 127.0.0.1"
        )
    return None


class ServerThread:
    """Serves an app on loopback from a background thread.

    Args:
        app: the ASGI app (usually from :func:`~langchain_herd.server.create_app`).
        host: interface to listen on.
        port: TCP port; 0 lets the OS choose a free one.
        startup_timeout: seconds to wait for ``/health`` to answer 200.
        log_level: uvicorn's log level.

    Example:
        >>> from langchain_herd.server import ServerThread, create_app, load_backend
        >>> with ServerThread(create_app(load_backend("tiny"))) as server:
        ...     server.url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 30.0,
        log_level: str = "warning",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._server: HerdUvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server.

        Raises:
            ServerStartError: the server is not running.
        """
        if self._url is None:
            raise ServerStartError("the server is not running: call start() or use `with`")
        return self._url

    def start(self) -> ServerThread:
        """Start serving and wait until ``/health`` answers.

        Returns:
            self, for chaining.

        Raises:
            ServerStartError: it did not come up within ``startup_timeout``, or it would serve
                beyond loopback what needs a key there (see :func:`exposure_refusal`).
        """
        if self._thread is not None:
            return self
        refusal = exposure_refusal(self.app, self.host)
        if refusal is not None:
            raise ServerStartError(refusal)
        sock = bind_socket(self.host, self.port)
        url = url_for(sock)
        server = HerdUvicornServer(uvicorn_config(self.app, log_level=self.log_level))
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() / stop()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"herd-server-{url}", daemon=True)
        self._thread.start()
        try:
            self._wait_healthy(url)
        except BaseException:
            self.stop()
            raise
        self._url = url
        return self

    def _wait_healthy(self, url: str) -> None:
        # No proxies: an HTTP(S)_PROXY from the environment must not capture loopback calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                raise ServerStartError(f"the server thread exited during startup: {self._error!r}")
            try:
                with opener.open(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.02)
        raise ServerStartError(
            f"{url}/health did not answer 200 within {self.startup_timeout} s ({last_error})"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully (forcefully after ``timeout`` seconds) and wait for the thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5.0)
        if thread.is_alive():
            logger.warning("server thread %s did not stop", thread.name)
        self._server = self._thread = self._url = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._url or "stopped"
        return f"ServerThread({state})"
