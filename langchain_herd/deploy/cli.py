"""``herd compose CONFIG [-o FILE] [--kubernetes] [--replicas N]``: deployment files for a herd.

Writes a docker-compose file (default) or Kubernetes manifests (``--kubernetes``) for the
config's ``deploy`` section, to ``-o FILE`` or standard output; warnings go to standard error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from langchain_herd.errors import HerdError

__all__ = ["build_parser", "compose_main", "render_deployment"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``herd compose``."""
    parser = argparse.ArgumentParser(
        prog="herd compose",
        description=(
            "Write a docker-compose file (or, with --kubernetes, Kubernetes manifests) that runs "
            "the herd: one TGI, vLLM or SGLang server per deploy.servers entry, the router "
            "(herd serve-router) and Redis when state.backend is redis."
        ),
    )
    parser.add_argument(
        "config", metavar="CONFIG", help="herd config: a YAML file or bundled:<name>"
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="file (default stdout)")
    parser.add_argument(
        "--kubernetes", action="store_true", help="write Kubernetes manifests instead"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="router replicas (default: deploy.router.replicas on Kubernetes, 1 in compose)",
    )
    return parser


def _mount_source(config_file: Path, output: Path | None) -> str:
    """The config file as the compose file (in ``output``'s folder) names it."""
    base = (output.parent if output is not None else Path.cwd()).resolve()
    relative = os.path.relpath(config_file.resolve(), base)
    if relative.startswith(".."):
        return str(config_file.resolve())
    return relative if relative.startswith(".") else f"./{relative}"


def render_deployment(
    config: str | Path,
    *,
    kubernetes: bool = False,
    replicas: int | None = None,
    output: Path | None = None,
    command: str = "herd compose",
) -> tuple[str, list[str]]:
    """The deployment file's text for a herd config, and the warnings to show.

    Raises:
        ConfigError: the config is invalid or has nothing to deploy.
    """
    from langchain_herd.config import load_config, resolve_config_path
    from langchain_herd.deploy.render import render_yaml
    from langchain_herd.deploy.topology import plan

    file = resolve_config_path(config)
    herd = load_config(config, resolve_secrets=False)
    if kubernetes:
        from langchain_herd.deploy.kubernetes import kubernetes_header, kubernetes_manifests

        topology = plan(herd, replicas=replicas, source=str(config))
        docs = kubernetes_manifests(topology, config_text=file.read_text(encoding="utf-8"))
        header = kubernetes_header(topology, command=command)
    else:
        from langchain_herd.deploy.compose import compose_file, compose_header

        topology = plan(herd, replicas=replicas or 1, source=str(config))
        docs = [compose_file(topology, config_source=_mount_source(file, output))]
        header = compose_header(topology, command=command)
    return render_yaml(docs, header=header), topology.warnings


def compose_main(argv: list[str] | None = None) -> int:
    """Run ``herd compose`` with ``argv`` (without the ``compose`` word); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.replicas is not None and args.replicas < 1:
        print("herd compose: --replicas must be at least 1", file=sys.stderr)
        return 2
    try:
        text, warnings = render_deployment(
            args.config,
            kubernetes=args.kubernetes,
            replicas=args.replicas,
            output=args.output,
            command="herd compose " + shlex.join(argv),
        )
    except HerdError as exc:
        print(f"herd compose: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"herd compose: warning: {warning}", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        kind = "Kubernetes manifests" if args.kubernetes else "docker-compose file"
        print(f"wrote {kind} to {args.output}", file=sys.stderr)
    return 0
