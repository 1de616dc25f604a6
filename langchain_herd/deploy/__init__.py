"""Deploying a herd: the ``deploy`` config section and ``herd compose``.

- :mod:`~langchain_herd.deploy.spec`: ``ServerSpec`` and ``DeploySpec``, the servers behind the
  experts, checked against the experts when a config loads.
- :mod:`~langchain_herd.deploy.launcher_flags`: the flags TGI, vLLM and SGLang document at the
  pinned versions, and ``check_command``.
- :mod:`~langchain_herd.deploy.launchers`: image, entrypoint, port, cache and arguments per
  launcher.
- :mod:`~langchain_herd.deploy.topology`: what a config deploys, resolved and checked.
- :mod:`~langchain_herd.deploy.compose` and :mod:`~langchain_herd.deploy.kubernetes`: the
  writers; :mod:`~langchain_herd.deploy.cli`: ``herd compose``.

Example:
    .. code-block:: python

        from langchain_herd.deploy import render_deployment

        text, warnings = render_deployment("tgi_configs/hivemind.yaml")
        print(text)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_herd.deploy.cli import render_deployment
    from langchain_herd.deploy.compose import compose_file
    from langchain_herd.deploy.kubernetes import kubernetes_manifests
    from langchain_herd.deploy.launcher_flags import check_command, documented_flags
    from langchain_herd.deploy.spec import DeploySpec, LoraAdapterSpec, RouterDeploySpec, ServerSpec
    from langchain_herd.deploy.topology import Topology, plan

# Imported on first use: langchain_herd.config imports deploy.spec, and the writers import
# langchain_herd.config, so nothing here may import them eagerly.
_EXPORTS: dict[str, str] = {
    "DeploySpec": "langchain_herd.deploy.spec",
    "LoraAdapterSpec": "langchain_herd.deploy.spec",
    "RouterDeploySpec": "langchain_herd.deploy.spec",
    "ServerSpec": "langchain_herd.deploy.spec",
    "Topology": "langchain_herd.deploy.topology",
    "check_command": "langchain_herd.deploy.launcher_flags",
    "compose_file": "langchain_herd.deploy.compose",
    "documented_flags": "langchain_herd.deploy.launcher_flags",
    "kubernetes_manifests": "langchain_herd.deploy.kubernetes",
    "plan": "langchain_herd.deploy.topology",
    "render_deployment": "langchain_herd.deploy.cli",
}

__all__ = [
    "DeploySpec",
    "LoraAdapterSpec",
    "RouterDeploySpec",
    "ServerSpec",
    "Topology",
    "check_command",
    "compose_file",
    "documented_flags",
    "kubernetes_manifests",
    "plan",
    "render_deployment",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_herd.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
