"""``python -m langchain_herd.server``: serve a model over TGI's protocol from the command line.

Example::

    python -m langchain_herd.server --model tiny --host 127.0.0.1 --port 8081
    python -m langchain_herd.server --model smollm2 --port 0 --fail-next 2 --fail-status 503
    python -m langchain_herd.server --replay gemma-7b,Phi-3-mini-4k-instruct --port 8392

``--replay [MODEL,...]`` (same as ``--model replay[:MODEL,...]``) serves recorded answers of
real models without loading one (:mod:`langchain_herd.server.replay_app`).

Once listening it logs ``serving <model> on http://host:port (...)`` (with the real port when
``--port 0``), saying who can reach it (loopback only, or beyond this machine), whether
``/_herd/faults`` is open, needs a key or is off, and the body limit. It listens on 127.0.0.1
unless ``--host`` says otherwise; beyond loopback ``/_herd/faults`` is off unless
``HERD_FAULTS_KEY`` is set, and then requires ``Authorization: Bearer <key>``. SIGINT and
SIGTERM shut it down gracefully and the command exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import Any

from langchain_herd.errors import HerdError
from langchain_herd.http_limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    reach_of,
)

logger = logging.getLogger("langchain_herd.server")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m langchain_herd.server",
        description="Serve a local model over Hugging Face TGI's HTTP protocol (CPU).",
    )
    parser.add_argument(
        "--model",
        default="tiny",
        help="'tiny' (random test model), 'smollm2', a transformers model folder, a .gguf file, "
        "or 'replay[:MODEL,...]' (recorded answers, see --replay)",
    )
    parser.add_argument(
        "--replay",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL,...",
        help="serve recorded answers of these models (default: all) instead of running a "
        "model; same as --model replay[:MODEL,...]",
    )
    parser.add_argument(
        "--replay-table",
        default=None,
        help="replay table to serve (default: the bundled MMLU-Pro answers)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only; beyond it "
        "/_herd/faults is off unless HERD_FAULTS_KEY is set)",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    parser.add_argument("--model-id", default=None, help="name reported to clients")
    parser.add_argument("--cache-dir", default=None, help="where converted GGUF models are kept")
    # Unset limits take the model server's defaults (1024, 2048, 8) or, for a replay, ones
    # that fit every recorded prompt and the herd's concurrent ensemble calls (8192, 16384, 64).
    parser.add_argument("--max-input-tokens", type=int, default=None)
    parser.add_argument("--max-total-tokens", type=int, default=None)
    parser.add_argument("--max-concurrent-requests", type=int, default=None)
    parser.add_argument("--default-max-new-tokens", type=int, default=100)
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="most concurrent requests that share one forward pass per token (default 8; "
        "1: one request at a time)",
    )
    parser.add_argument(
        "--lora-batching",
        choices=["mixed", "grouped"],
        default="mixed",
        help="requests for different LoRA adapters share a batch (mixed, default) or each "
        "adapter batches apart (grouped)",
    )
    parser.add_argument(
        "--lora-adapters",
        default="",
        help="PEFT LoRA adapters to load at start, as TGI's flag: name=path (a folder with "
        "adapter_config.json and adapter_model.safetensors) or a hub id, comma-separated; "
        "requests pick one by adapter_id (generate routes) or model (chat route)",
    )
    http = parser.add_argument_group("HTTP limits (stated in /info)")
    http.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"larger request bodies get 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    http.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds for a request body to arrive after its head, else 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    http.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds for a request head to arrive, else 408 and the connection closed "
        f"(default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    faults = parser.add_argument_group("fault injection (also settable via POST /_herd/faults)")
    faults.add_argument("--fail-next", type=int, default=0, help="fail this many requests")
    faults.add_argument("--fail-status", type=int, default=503, help="HTTP status of failures")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    faults.add_argument(
        "--drop-stream-after", type=int, default=None, help="cut streams after this many tokens"
    )
    faults.add_argument("--empty-next", type=int, default=0, help="answer this many with ''")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def serve_main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean shutdown, 2 for bad options or a model that cannot
        be loaded or served.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Imported here so `--help` answers without loading starlette, uvicorn or torch.
    from langchain_herd.server.adapters import parse_adapter_specs
    from langchain_herd.server.app import FAULTS_KEY_ENV, FaultRoute, create_app
    from langchain_herd.server.faults import FaultConfig
    from langchain_herd.server.loading import load_backend
    from langchain_herd.server.server_thread import (
        HerdUvicornServer,
        bind_socket,
        url_for,
        uvicorn_config,
    )

    try:
        faults = FaultConfig(
            fail_next=args.fail_next,
            fail_status=args.fail_status,
            latency_ms=args.latency_ms,
            drop_stream_after=args.drop_stream_after,
            empty_next=args.empty_next,
        )
        fault_route = FaultRoute.for_host(args.host, os.environ.get(FAULTS_KEY_ENV))
        http = {
            "max_body_bytes": args.max_body_bytes,
            "body_timeout_s": args.body_timeout,
            "header_timeout_s": args.header_timeout,
            "fault_route": fault_route,
        }
        sock = bind_socket(args.host, args.port)
    except (HerdError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    replay = replay_models(args)
    try:
        if replay is not None:
            app = _replay_app(args, replay, faults, http)
            serving = f"a replay of {', '.join(app.state.herd.models)}"
        else:
            backend = load_backend(args.model, cache_dir=args.cache_dir)
            backend.max_batch_size = args.max_batch_size
            backend.lora_batching = args.lora_batching
            backend.load_adapters(parse_adapter_specs(args.lora_adapters))
            app = create_app(
                backend,
                model_id=args.model_id,
                max_input_tokens=_or(args.max_input_tokens, 1024),
                max_total_tokens=_or(args.max_total_tokens, 2048),
                max_concurrent_requests=_or(args.max_concurrent_requests, 8),
                faults=faults,
                default_max_new_tokens=args.default_max_new_tokens,
                **http,
            )
            serving = args.model
    except (HerdError, ValueError, OSError, ImportError) as exc:
        sock.close()
        logger.error("%s", exc)
        return 2

    faults_said = {
        "open": "/_herd/faults open",
        "key": f"/_herd/faults needs the key in {FAULTS_KEY_ENV}",
        "off": f"/_herd/faults off (set {FAULTS_KEY_ENV} to enable it with a key)",
    }[fault_route.mode]
    said = f"{reach_of(args.host)}; {faults_said}; bodies up to {args.max_body_bytes} bytes"

    def announce(sockets: list[socket.socket]) -> None:
        url = url_for(sockets[0] if sockets else sock)
        logger.info("serving %s on %s (%s)", serving, url, said)

    server = HerdUvicornServer(uvicorn_config(app, log_level=args.log_level), on_ready=announce)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    logger.info("stopped")
    return 0


def replay_models(args: argparse.Namespace) -> list[str] | None:
    """The recorded models to replay (``[]``: all of them), or None to run a model."""
    spec: str | None = args.replay
    if spec is None and (args.model == "replay" or args.model.startswith("replay:")):
        spec = args.model.partition(":")[2]
    if spec is None:
        return None
    return [name.strip() for name in spec.split(",") if name.strip()]


def _replay_app(
    args: argparse.Namespace, models: list[str], faults: Any, http: dict[str, Any]
) -> Any:
    from langchain_herd.replay import ReplayTable
    from langchain_herd.server.replay_app import create_replay_app

    return create_replay_app(
        ReplayTable.load(args.replay_table),
        models=models,
        model_id=args.model_id,
        max_input_tokens=_or(args.max_input_tokens, 8192),
        max_total_tokens=_or(args.max_total_tokens, 16384),
        max_concurrent_requests=_or(args.max_concurrent_requests, 64),
        faults=faults,
        default_max_new_tokens=args.default_max_new_tokens,
        **http,
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
