"""A herd whose experts are LoRA adapters on one local server: its base model and adapter folders.

``herd swarm``, ``herd compare-experts`` and the scripts that build such a herd read it from the
herd config (``local_servers[].lora_adapters`` and the experts' ``adapter_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from langchain_herd.config import HerdConfig, LocalServerConfig, load_config
from langchain_herd.errors import ConfigError

__all__ = ["HerdAdapters", "read_herd"]


@dataclass(frozen=True)
class HerdAdapters:
    """The herd's base model, its adapters and which expert runs which adapter.

    Attributes:
        config: the herd config.
        base: the local server's model (``smollm2``, ``tiny``, a folder).
        adapters: adapter name -> folder.
        expert_adapter: expert name -> adapter name, for the experts on that server.
    """

    config: HerdConfig
    base: str
    adapters: dict[str, Path]
    expert_adapter: dict[str, str] = field(default_factory=dict)


def read_herd(config: str | Path, server: str | None = None) -> HerdAdapters:
    """The base model and adapters of ``config``'s local server (``server`` names it).

    Raises:
        ConfigError: no local server with adapters, several and no ``server``, or an adapter
            folder that does not exist (run the script that builds them first).
    """
    herd = load_config(config)
    chosen = _server(herd, server)
    base_dir = herd.base_dir or Path.cwd()
    adapters: dict[str, Path] = {}
    for name, source in chosen.lora_adapters.items():
        folder = (base_dir / Path(source).expanduser()).resolve()
        if not folder.is_dir():
            raise ConfigError(
                f"{config}: adapter {name!r} is {folder}, which does not exist; build the "
                "adapters first (scripts/build_lora_herd.sh for tgi_configs/local-lora.yaml)"
            )
        adapters[name] = folder
    url = f"http://{chosen.host}:{chosen.port}"
    expert_adapter = {
        expert.name: expert.adapter_id
        for expert in herd.experts
        if expert.adapter_id in adapters and expert.url.rstrip("/") == url
    }
    return HerdAdapters(herd, chosen.model, adapters, expert_adapter)


def _server(herd: HerdConfig, name: str | None) -> LocalServerConfig:
    servers = [s for s in herd.local_servers if s.lora_adapters]
    if name is not None:
        servers = [s for s in servers if s.name == name]
    if not servers:
        what = f"a local server named {name!r}" if name else "a local server"
        raise ConfigError(
            f"herd {herd.name!r} has no {what} with lora_adapters; this command needs one "
            "(see tgi_configs/local-lora.yaml)"
        )
    if len(servers) > 1:
        names = ", ".join(s.name for s in servers)
        raise ConfigError(
            f"herd {herd.name!r} has several servers with adapters ({names}): pick one"
        )
    return servers[0]
