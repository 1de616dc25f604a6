"""``herd compose CONFIG --kubernetes``: manifests for the herd on a GPU cluster.

One Deployment and Service per inference server (``nvidia.com/gpu`` limits, startup,
readiness and liveness probes on ``/health``, ``/dev/shm`` in memory, ``HF_TOKEN`` from the
herd's Secret), the router Deployment with several replicas, its Service and a ConfigMap with
the herd config, and Redis when ``state.backend`` is ``redis``. Secrets are never written:
the header says which keys the herd's Secret needs.

Example:
    .. code-block:: python

        from pathlib import Path

        from langchain_herd.config import load_config
        from langchain_herd.deploy.kubernetes import kubernetes_manifests
        from langchain_herd.deploy.topology import plan

        path = Path("tgi_configs/hivemind.yaml")
        topology = plan(load_config(path, resolve_secrets=False))
        docs = kubernetes_manifests(topology, config_text=path.read_text())
        print([(doc["kind"], doc["metadata"]["name"]) for doc in docs])
"""

from __future__ import annotations

from typing import Any

from langchain_herd._version import __version__
from langchain_herd.deploy.launcher_flags import launcher_provenance
from langchain_herd.deploy.spec import ServerSpec
from langchain_herd.deploy.topology import (
    HF_TOKEN_ENV,
    ROUTER_CONFIG_PATH,
    ROUTER_KEYS_ENV,
    Topology,
)

CONFIG_KEY = ROUTER_CONFIG_PATH.rsplit("/", 1)[1]
CONFIG_DIR = ROUTER_CONFIG_PATH.rsplit("/", 1)[0]


def _labels(topology: Topology, name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": topology.name,
        "app.kubernetes.io/managed-by": "herd-compose",
    }


def _selector(topology: Topology, name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": topology.name}


def _secret_name(topology: Topology) -> str:
    return f"{topology.name}-secrets"


def _secret_env(topology: Topology, name: str, *, required: bool) -> dict[str, Any]:
    ref = {"name": _secret_name(topology), "key": name, "optional": not required}
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _deployment(
    topology: Topology,
    name: str,
    component: str,
    container: dict[str, Any],
    *,
    replicas: int = 1,
    volumes: list[dict[str, Any]] | None = None,
    recreate: bool = False,
) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    spec: dict[str, Any] = {"replicas": replicas}
    if recreate:
        # A new pod cannot get the GPUs before the old one has let go of them.
        spec["strategy"] = {"type": "Recreate"}
    spec["selector"] = {"matchLabels": _selector(topology, name)}
    spec["template"] = {"metadata": {"labels": _labels(topology, name, component)}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(topology, name, component)},
        "spec": spec,
    }


def _service(
    topology: Topology, name: str, component: str, port: int, *, port_name: str = "http"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(topology, name, component)},
        "spec": {
            "selector": _selector(topology, name),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name}],
        },
    }


def _http_probe(period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _quantity(size: str) -> str:
    """Compose's ``1g`` as Kubernetes' ``1Gi``."""
    return size[:-1] + {"k": "Ki", "m": "Mi", "g": "Gi"}[size[-1]]


def server_manifests(topology: Topology, server: ServerSpec) -> list[dict[str, Any]]:
    """The Deployment and Service of one inference server."""
    launcher = server.launcher_spec
    container: dict[str, Any] = {"name": "server", "image": server.image_ref}
    if launcher.entrypoint is not None:
        container["command"] = list(launcher.entrypoint)
    container["args"] = server.args()
    container["ports"] = [{"name": "http", "containerPort": server.listen_port}]
    env = [_secret_env(topology, HF_TOKEN_ENV, required=False)]
    env += [{"name": k, "value": v} for k, v in server.env.items()]
    container["env"] = env
    container["resources"] = {"limits": {"nvidia.com/gpu": len(server.gpus)}}
    container["volumeMounts"] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "hf-cache", "mountPath": launcher.cache_dir},
    ]
    # Weights download and load before /health answers: up to an hour for a 70B model.
    container["startupProbe"] = _http_probe(10, 360)
    container["readinessProbe"] = _http_probe(10, 3)
    container["livenessProbe"] = _http_probe(30, 5)
    claim = topology.deploy.hf_cache_claim
    cache: dict[str, Any] = (
        {"name": "hf-cache", "persistentVolumeClaim": {"claimName": claim}}
        if claim
        else {"name": "hf-cache", "emptyDir": {}}
    )
    volumes = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(server.shm)}},
        cache,
    ]
    return [
        _deployment(
            topology, server.name, "inference-server", container, volumes=volumes, recreate=True
        ),
        _service(topology, server.name, "inference-server", server.listen_port),
    ]


def _router_manifests(topology: Topology, config_text: str) -> list[dict[str, Any]]:
    router = topology.deploy.router
    config_map = f"{topology.name}-config"
    env = [
        _secret_env(topology, name, required=required)
        for name, required in topology.secret_env.items()
    ]
    container: dict[str, Any] = {
        "name": "router",
        "image": router.image,
        "command": topology.router_command(),
        "ports": [{"name": "http", "containerPort": router.port}],
        "env": env,
        "volumeMounts": [{"name": "herd-config", "mountPath": CONFIG_DIR, "readOnly": True}],
        # /health is 503 while no expert is usable: take the replica out of the Service,
        # but only restart it when it stops answering at all.
        "readinessProbe": _http_probe(10, 3),
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 20},
    }
    volumes = [
        {
            "name": "herd-config",
            "configMap": {"name": config_map, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
        }
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map, "labels": _labels(topology, config_map, "router")},
            "data": {CONFIG_KEY: config_text},
        },
        _deployment(
            topology,
            router.name,
            "router",
            container,
            replicas=topology.replicas,
            volumes=volumes,
        ),
        _service(topology, router.name, "router", router.port),
    ]


def _redis_manifests(topology: Topology) -> list[dict[str, Any]]:
    redis = topology.redis
    if redis is None:
        return []
    container = {
        "name": "redis",
        "image": redis.image,
        "args": redis.command(),
        "ports": [{"name": "redis", "containerPort": redis.port}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
    }
    return [
        _deployment(topology, redis.name, "redis", container),
        _service(topology, redis.name, "redis", redis.port, port_name="redis"),
    ]


def kubernetes_manifests(topology: Topology, *, config_text: str) -> list[dict[str, Any]]:
    """Every manifest of a planned herd, in the order ``kubectl apply`` should see them.

    Args:
        topology: what to run (:func:`langchain_herd.deploy.topology.plan`).
        config_text: the herd config file's text, for the router's ConfigMap.
    """
    docs: list[dict[str, Any]] = []
    docs += _redis_manifests(topology)
    for server in topology.deploy.servers:
        docs += server_manifests(topology, server)
    docs += _router_manifests(topology, config_text)
    return docs


def kubernetes_header(topology: Topology, *, command: str) -> list[str]:
    """Comment lines that say what the manifests are and which Secret they need."""
    secret = _secret_name(topology)
    literals = " ".join(
        f"--from-literal={name}=..." for name in [HF_TOKEN_ENV, *topology.secret_env]
    )
    lines = [
        f"Kubernetes manifests for herd {topology.name!r}, written by `{command}` "
        f"(langchain-herd {__version__}); edit the herd config and run it again.",
        f"First: kubectl create secret generic {secret} {literals}",
        f"({ROUTER_KEYS_ENV}: the router's API keys; {HF_TOKEN_ENV}: for gated models, "
        "optional.) Then: kubectl apply -f <this file>",
        "GPU ids of the config are not pinned here: each server asks for as many nvidia.com/gpu.",
        f"The router image ({topology.deploy.router.image}) is built from this package with its "
        "router-server and redis extras; set deploy.router.image to yours.",
    ]
    lines += launcher_provenance(sorted({s.launcher for s in topology.deploy.servers}))
    return lines
