"""``herd compose CONFIG``: a docker-compose file for the herd's servers, router and Redis.

Each ``deploy.servers`` entry becomes a service running its launcher's image with the flags
derived from the config (every one in the launcher's documented list), its GPUs reserved by
id, ``HF_TOKEN`` passed through from the environment, a shared volume for the Hugging Face
cache, ``shm_size`` for NCCL, its port published on the host's loopback only, and a
healthcheck on ``/health``. The router runs ``herd serve-router`` on the mounted config once
every server is healthy; Redis runs when ``state.backend`` is ``redis``.

Example:
    .. code-block:: python

        from langchain_herd.config import load_config
        from langchain_herd.deploy.compose import compose_file
        from langchain_herd.deploy.topology import plan

        topology = plan(load_config("tgi_configs/hivemind.yaml", resolve_secrets=False))
        print(sorted(compose_file(topology, config_source="./hivemind.yaml")["services"]))
"""

from __future__ import annotations

from typing import Any

from langchain_herd.deploy.launcher_flags import launcher_provenance
from langchain_herd.deploy.spec import ServerSpec
from langchain_herd.deploy.topology import (
    HF_TOKEN_ENV,
    ROUTER_CONFIG_PATH,
    ROUTER_KEYS_ENV,
    Topology,
)

#: The named volume every server keeps the Hugging Face cache in.
HF_CACHE_VOLUME = "hf-cache"


def _health(test: list[str], *, start_period: str) -> dict[str, Any]:
    return {
        "test": test,
        "interval": "15s",
        "timeout": "5s",
        "retries": 5,
        # Failures while the weights download and load do not count.
        "start_period": start_period,
    }


def server_service(server: ServerSpec) -> dict[str, Any]:
    """The compose service of one inference server."""
    launcher = server.launcher_spec
    port = server.listen_port
    service: dict[str, Any] = {"image": server.image_ref}
    if launcher.entrypoint is not None:
        service["entrypoint"] = list(launcher.entrypoint)
    service["command"] = server.args()
    # A bare name passes the variable through only when it is set, never as "".
    service["environment"] = [HF_TOKEN_ENV] + [f"{k}={v}" for k, v in server.env.items()]
    service["ports"] = [f"127.0.0.1:{port}:{port}"]
    service["volumes"] = [f"{HF_CACHE_VOLUME}:{launcher.cache_dir}"]
    service["shm_size"] = server.shm
    service["deploy"] = {
        "resources": {
            "reservations": {
                "devices": [
                    {
                        "driver": "nvidia",
                        "device_ids": [str(gpu) for gpu in server.gpus],
                        "capabilities": ["gpu"],
                    }
                ]
            }
        }
    }
    service["healthcheck"] = _health(launcher.health_test(port), start_period="30m")
    service["restart"] = "unless-stopped"
    return service


def _router_service(topology: Topology, config_source: str) -> dict[str, Any]:
    router = topology.deploy.router
    required = f"${{{ROUTER_KEYS_ENV}:?set {ROUTER_KEYS_ENV} to the keys clients send}}"
    environment = [f"{ROUTER_KEYS_ENV}={required}"]
    environment += [name for name in topology.secret_env if name != ROUTER_KEYS_ENV]
    if topology.replicas > 1:
        last = router.port + topology.replicas - 1
        ports = [f"{router.port}-{last}:{router.port}"]
    else:
        ports = [f"{router.port}:{router.port}"]
    depends: dict[str, Any] = {
        server.name: {"condition": "service_healthy"} for server in topology.deploy.servers
    }
    if topology.redis is not None:
        depends[topology.redis.name] = {"condition": "service_healthy"}
    service: dict[str, Any] = {
        "image": router.image,
        "command": topology.router_command(),
        "environment": environment,
        "ports": ports,
        "volumes": [f"{config_source}:{ROUTER_CONFIG_PATH}:ro"],
        "depends_on": depends,
        "healthcheck": _health(
            [
                "CMD",
                "python3",
                "-c",
                "import urllib.request; "
                f"urllib.request.urlopen('http://localhost:{router.port}/health')",
            ],
            start_period="60s",
        ),
        "restart": "unless-stopped",
    }
    if topology.replicas > 1:
        service["deploy"] = {"replicas": topology.replicas}
    return service


def compose_file(topology: Topology, *, config_source: str) -> dict[str, Any]:
    """The docker-compose document for a planned herd.

    Args:
        topology: what to run (:func:`langchain_herd.deploy.topology.plan`).
        config_source: the herd config file as the compose file mounts it into the router
            (relative to the compose file's folder, or absolute).
    """
    services: dict[str, Any] = {
        server.name: server_service(server) for server in topology.deploy.servers
    }
    redis = topology.redis
    if redis is not None:
        services[redis.name] = {
            "image": redis.image,
            "command": redis.command(),
            "healthcheck": _health(
                ["CMD", "redis-cli", "-p", str(redis.port), "ping"], start_period="10s"
            ),
            "restart": "unless-stopped",
        }
    services[topology.deploy.router.name] = _router_service(topology, config_source)
    return {
        "name": topology.name,
        "services": services,
        "volumes": {HF_CACHE_VOLUME: {}},
    }


def compose_header(topology: Topology, *, command: str) -> list[str]:
    """Comment lines that say what the file is and how to run it."""
    from langchain_herd._version import __version__

    needed = " ".join(f"{name}=..." for name in topology.secret_env)
    lines = [
        f"docker-compose file for herd {topology.name!r}, written by `{command}` "
        f"(langchain-herd {__version__}); edit the herd config and run it again.",
        f"Run: HF_TOKEN=... {needed} docker compose -f <this file> up -d",
        "Servers publish their ports on 127.0.0.1 only; the router publishes "
        f"{topology.deploy.router.port} and needs {ROUTER_KEYS_ENV}.",
        f"The router image ({topology.deploy.router.image}) is built from this package with its "
        "router-server and redis extras; set deploy.router.image to yours.",
    ]
    lines += launcher_provenance(sorted({s.launcher for s in topology.deploy.servers}))
    return lines
