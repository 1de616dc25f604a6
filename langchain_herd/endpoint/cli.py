"""``herd serve-router CONFIG``: serve the herd as an OpenAI-compatible endpoint with uvicorn.

Example::

    HERD_ROUTER_API_KEYS=key1,key2 herd serve-router bundled:local --host 0.0.0.0 --port 8000

It listens on 127.0.0.1 unless ``--host`` says otherwise, and refuses to listen beyond
loopback without API keys (anyone on the network could spend the herd). It prints whether
auth is on, then, once it accepts connections, who can reach it (``loopback only`` or
``beyond this machine``) with its body and time limits, and ``serve-router: listening on
http://HOST:PORT`` (the real port with ``--port 0``), so scripts and tests can wait for that
line. SIGINT and SIGTERM stop it gracefully, exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence

from pydantic import SecretStr

from langchain_herd.chat_models import CONFIG_ENV
from langchain_herd.endpoint.auth import API_KEYS_ENV, keys_from_env
from langchain_herd.endpoint.body import DEFAULT_MAX_BODY_BYTES
from langchain_herd.errors import HerdError
from langchain_herd.http_limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    is_loopback,
    reach_of,
)

logger = logging.getLogger("langchain_herd.endpoint")

PREFIX = "serve-router:"
"""Start of every line this command prints."""


def open_bind_refusal(host: str, keys: Sequence[SecretStr]) -> str | None:
    """Why listening on ``host`` with these keys is refused, or None when it is allowed."""
    if keys or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without API keys: anyone who can reach it could call "
        f"the herd. Set {API_KEYS_ENV}=<key>[,<key>...] (clients send 'Authorization: Bearer "
        f"<key>'), or listen on 127.0.0.1 only"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="herd serve-router",
        description="Serve the herd as one OpenAI-compatible HTTP endpoint "
        "(/v1/chat/completions, /v1/models, /health, /metrics).",
    )
    parser.add_argument(
        "config",
        metavar="CONFIG",
        nargs="?",
        default=os.environ.get(CONFIG_ENV),
        help=f"herd config: a YAML file or bundled:<name> (default: ${CONFIG_ENV})",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"interface to listen on (default 127.0.0.1: this machine only; any other host "
        f"needs API keys in {API_KEYS_ENV})",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds for a request body to arrive after its head, else 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds for a request head to arrive, else 408 and the connection closed "
        f"(default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=10.0,
        help="seconds between probes of each expert's /health (default 10)",
    )
    parser.add_argument(
        "--no-local-servers",
        action="store_true",
        help="do not start the config's local_servers (they run elsewhere, e.g. `herd up`)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def serve_router_main(argv: list[str] | None = None) -> int:
    """Run the endpoint until SIGINT/SIGTERM.

    Returns:
        0 after a clean shutdown; 2 for a missing or invalid config, a refused bind or a
        port that cannot be bound.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: the health probes would write two lines per expert
    # every interval. Its failures still surface through the probes and the decisions.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not args.config:
        print(f"{PREFIX} no CONFIG given and {CONFIG_ENV} is not set", file=sys.stderr)
        return 2
    keys = keys_from_env()
    refusal = open_bind_refusal(args.host, keys)
    if refusal is not None:
        print(f"{PREFIX} {refusal}", file=sys.stderr)
        return 2
    try:
        return _serve(args, keys)
    except HerdError as exc:
        print(f"{PREFIX} {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace, keys: list[SecretStr]) -> int:
    # Imported here so `--help` and the bind check answer without loading the herd.
    from langchain_herd.chat_models import HerdRouter
    from langchain_herd.config import load_config
    from langchain_herd.endpoint.app import create_router_app
    from langchain_herd.local_servers import LocalHerd
    from langchain_herd.server.server_thread import (
        HerdUvicornServer,
        bind_socket,
        url_for,
        uvicorn_config,
    )

    config = load_config(args.config)
    sock = bind_socket(args.host, args.port)  # first: a taken port fails before anything starts
    auth = (
        f"auth on ({len(keys)} key(s) from {API_KEYS_ENV})"
        if keys
        else f"auth off (set {API_KEYS_ENV} to require 'Authorization: Bearer <key>')"
    )

    reach = (
        f"{PREFIX} {reach_of(args.host)} ({args.host}); bodies up to {args.max_body_bytes} "
        f"bytes, within {args.body_timeout:g} s; request heads within {args.header_timeout:g} s"
    )

    def announce(sockets: list[socket.socket]) -> None:
        # Two lines, the URL last on the second: scripts wait for it and take the last word.
        print(reach, flush=True)
        print(f"{PREFIX} listening on {url_for(sockets[0] if sockets else sock)}", flush=True)

    local = config.local_servers and not args.no_local_servers
    try:
        # Local servers first: the router asks its experts for their input limits at start.
        with LocalHerd(config, on_wait=_waiting) if local else contextlib.nullcontext():
            router = HerdRouter.from_config(config)
            app = create_router_app(
                router,
                api_keys=keys,
                max_body_bytes=args.max_body_bytes,
                health_interval_s=args.health_interval,
                body_timeout_s=args.body_timeout,
                header_timeout_s=args.header_timeout,
            )
            experts = ", ".join(router.experts)
            print(f"{PREFIX} herd {router.engine.name!r} ({experts}); {auth}", flush=True)
            # Input limits and tokenizers now, not on the first request of each expert.
            for name, limit in router.engine.context.prepare().items():
                print(f"{PREFIX} {name}: {limit}", flush=True)
            # lifespan on: it starts the health probes before the first request.
            served = uvicorn_config(app, log_level=args.log_level, lifespan="on")
            server = HerdUvicornServer(served, on_ready=announce)
            server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _waiting(name: str, waited: float) -> None:
    if int(waited * 2) % 20 == 0:
        print(f"{PREFIX} waiting for local server {name!r} ({waited:.0f}s)...", file=sys.stderr)
