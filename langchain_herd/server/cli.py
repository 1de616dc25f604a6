"""``python -m langchain_herd.server``: serve a model over TGI's protocol from the command line.

Example::

    python -m langchain_herd.server --model tiny --host 127.0.0.1 --port 8081
    python -m langchain_herd.server --model smollm2 --port 0 --fail-next 2 --fail-status 503

Once listening it logs ``serving <model> on http://host:port`` (with the real port when
``--port 0``). SIGINT and SIGTERM shut it down gracefully and the command exits 0.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from langchain_herd.errors import HerdError

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
        help="'tiny' (random test model), 'smollm2', a transformers model folder, or a .gguf file",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    parser.add_argument("--model-id", default=None, help="name reported to clients")
    parser.add_argument("--cache-dir", default=None, help="where converted GGUF models are kept")
    parser.add_argument("--max-input-tokens", type=int, default=1024)
    parser.add_argument("--max-total-tokens", type=int, default=2048)
    parser.add_argument("--max-concurrent-requests", type=int, default=8)
    parser.add_argument("--default-max-new-tokens", type=int, default=100)
    parser.add_argument(
        "--lora-adapters",
        default="",
        help="comma-separated adapter ids to list in /v1/models as vLLM lists LoRA modules "
        "(listing only: requests naming one are answered by the base model)",
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
    from langchain_herd.server.app import create_app
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
        sock = bind_socket(args.host, args.port)
    except (HerdError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        backend = load_backend(args.model, cache_dir=args.cache_dir)
        app = create_app(
            backend,
            model_id=args.model_id,
            max_input_tokens=args.max_input_tokens,
            max_total_tokens=args.max_total_tokens,
            max_concurrent_requests=args.max_concurrent_requests,
            faults=faults,
            default_max_new_tokens=args.default_max_new_tokens,
            adapters=[name.strip() for name in args.lora_adapters.split(",") if name.strip()],
        )
    except (HerdError, ValueError) as exc:
        sock.close()
        logger.error("%s", exc)
        return 2

    def announce(sockets: list[socket.socket]) -> None:
        logger.info("serving %s on %s", args.model, url_for(sockets[0] if sockets else sock))

    server = HerdUvicornServer(uvicorn_config(app, log_level=args.log_level), on_ready=announce)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    logger.info("stopped")
    return 0
