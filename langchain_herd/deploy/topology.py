"""What a deployed herd runs, resolved from its config: servers, router, Redis and secrets.

Both writers (:mod:`~langchain_herd.deploy.compose` and
:mod:`~langchain_herd.deploy.kubernetes`) start from one ``Topology``, so they agree on
names, ports and what needs a secret, and a config that cannot be deployed fails here once,
with the reason and the fix.

Example:
    .. code-block:: python

        from langchain_herd.config import load_config
        from langchain_herd.deploy.topology import plan

        topology = plan(load_config("tgi_configs/hivemind.yaml", resolve_secrets=False))
        print([server.name for server in topology.deploy.servers], topology.redis)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from langchain_herd.config import BUNDLED_PREFIX
from langchain_herd.deploy.spec import DNS_LABEL, DeploySpec
from langchain_herd.errors import ConfigError

if TYPE_CHECKING:
    from langchain_herd.config import HerdConfig

#: Where the router finds its herd config in the container.
ROUTER_CONFIG_PATH = "/config/herd.yaml"
#: The variable ``herd serve-router`` reads its API keys from.
ROUTER_KEYS_ENV = "HERD_ROUTER_API_KEYS"
#: Hugging Face token for gated models, passed to every inference server.
HF_TOKEN_ENV = "HF_TOKEN"


@dataclass(frozen=True)
class RedisService:
    """The Redis the router replicas share (``state.backend: redis``)."""

    name: str
    """Service name: the host of ``state.url``."""
    port: int
    """Port of ``state.url``."""
    image: str
    """Container image."""

    def command(self) -> list[str]:
        """``redis-server`` without persistence: breakers and sessions are short-lived."""
        return ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]


@dataclass(frozen=True)
class Topology:
    """Everything ``herd compose`` writes, resolved and checked."""

    name: str
    """The herd's name as a DNS label (compose project, Kubernetes name prefix)."""
    deploy: DeploySpec
    """Servers and router."""
    redis: RedisService | None
    """Redis to run, if the state is shared through one the herd runs itself."""
    secret_env: dict[str, bool]
    """Variables the router needs from the environment or a Secret -> required."""
    replicas: int
    """Router replicas."""
    warnings: list[str] = field(default_factory=list)
    """What works but deserves a look (printed by the command, not written)."""

    def router_command(self) -> list[str]:
        """The router container's command."""
        port = str(self.deploy.router.port)
        return ["herd", "serve-router", ROUTER_CONFIG_PATH, "--host", "0.0.0.0", "--port", port]


def dns_name(text: str) -> str:
    """``text`` as a DNS label: lowercase, ``-`` for anything else, 63 characters at most."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    if not label or not label[0].isalpha():
        label = f"herd-{label}".strip("-")
    return label


def plan(
    config: HerdConfig, *, replicas: int | None = None, source: str = "the config"
) -> Topology:
    """Resolve and check what deploying ``config`` runs.

    Args:
        config: the herd.
        replicas: router replicas; default ``deploy.router.replicas``.
        source: how errors name the config (its path).

    Raises:
        ConfigError: the config has no ``deploy.servers``, or its Redis cannot run as a
            service of the herd.
    """
    deploy = config.deploy
    if deploy is None:
        raise ConfigError(
            f"{source} has no deploy section, so there are no servers to write: add "
            "deploy.servers (one TGI, vLLM or SGLang server per entry) and name each expert's "
            "server with server: <name> (see the repository's tgi_configs/hivemind.yaml)"
        )
    taken = {server.name for server in deploy.servers} | {deploy.router.name}
    redis: RedisService | None = None
    warnings: list[str] = []
    state = config.state
    if state.backend == "redis" and deploy.redis_image is not None:
        assert state.url is not None  # StateConfig requires it for redis
        parts = urlsplit(state.url)
        host = parts.hostname or ""
        if parts.scheme != "redis" or not re.match(DNS_LABEL, host):
            raise ConfigError(
                f"{source}: state.url {state.url!r} is not a Redis the herd can run (that needs "
                "redis://<service-name>:<port>/<db>, e.g. redis://redis:6379/0); use such a "
                "URL, or set deploy.redis_image: null if this Redis runs elsewhere"
            )
        if host in taken:
            raise ConfigError(
                f"{source}: state.url's host {host!r} is also a server or the router; rename one"
            )
        redis = RedisService(name=host, port=parts.port or 6379, image=deploy.redis_image)
    secret_env = {ROUTER_KEYS_ENV: True}
    for auth in config.auth:
        secret_env[auth.token_env] = auth.required
    external = [e.name for e in config.experts if e.server is None]
    if external:
        warnings.append(
            f"experts {external} name no deploy server: the router calls their URLs as "
            "configured, and nothing is deployed for them"
        )
    classifier = config.router.classifier.path
    if not classifier.startswith(BUNDLED_PREFIX):
        warnings.append(
            f"router.classifier.path {classifier!r} is not bundled with the package: the router "
            "image or a volume must provide it at the same path next to /config/herd.yaml"
        )
    replicas = replicas or deploy.router.replicas
    if state.backend == "memory" and replicas > 1:
        warnings.append(
            f"{replicas} router replicas with state.backend memory keep separate breakers and "
            "sticky sessions; set state: {backend: redis, url: redis://redis:6379/0}"
        )
    return Topology(
        name=dns_name(config.name),
        deploy=deploy,
        redis=redis,
        secret_env=secret_env,
        replicas=replicas,
        warnings=warnings,
    )
