"""The ``deploy`` section of a herd config: the inference servers the experts run on.

A herd config describes experts by URL; ``deploy`` adds what runs behind those URLs, so that
``herd compose`` can write a docker-compose file or Kubernetes manifests for the whole herd:
one TGI, vLLM or SGLang server per ``deploy.servers`` entry, the router replicas, and Redis
when ``state.backend`` is ``redis``. An expert names its server with ``server:``, and the
config is checked both ways when it loads: the expert's URL, model, protocol, adapter and
served model name must agree with the server, and each server's command line must use only
flags its pinned version documents (:mod:`langchain_herd.deploy.launcher_flags`).

Example:
    .. code-block:: yaml

        experts:
          - name: stem
            server: tgi-stem
            url: http://tgi-stem:8081
            protocol: tgi
            model_id: your-org/hivemind-stem-llama3-8b
            routes: [stem]
        deploy:
          servers:
            - name: tgi-stem
              launcher: tgi
              model_id: your-org/hivemind-stem-llama3-8b
              port: 8081
              gpus: [0]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from langchain_herd._version import __version__
from langchain_herd.deploy.launcher_flags import Launcher, check_command, documented_flags
from langchain_herd.deploy.launchers import LAUNCHER_SPECS, LauncherSpec

if TYPE_CHECKING:
    from langchain_herd.config import ExpertConfig

#: A DNS-1035 label: a compose service, a Kubernetes Deployment and Service, and the host
#: name experts use, all at once.
DNS_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
#: Redis image for ``state.backend: redis`` (a real tag of the official image).
DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"
#: The router's image: build it from this package (``pip install 'langchain-herd[router-server,
#: redis]'``); no public image is published.
DEFAULT_ROUTER_IMAGE = f"langchain-herd:{__version__}"


class _Strict(BaseModel):
    # The same rules as langchain_herd.config's models (which import this module).
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraAdapterSpec(_Strict):
    """A LoRA adapter a server loads at start-up, chosen per request by name.

    TGI names an adapter from the hub by its hub id (``--lora-adapters org/adapter``), and a
    local one as ``name=/path``; vLLM (``--lora-modules name=path``) and SGLang
    (``--lora-paths name=path``) take any name for a hub id or a path.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    """What requests name: TGI's ``adapter_id``, vLLM's and SGLang's ``model``."""
    source: str | None = Field(default=None, pattern=r"^[^\s,=]+$")
    """Hub id or absolute path inside the container; default ``name`` (a hub id)."""

    @property
    def location(self) -> str:
        """Where the server loads the adapter from."""
        return self.source or self.name

    def tgi_spec(self) -> str:
        """This adapter as one item of TGI's ``--lora-adapters``."""
        return f"{self.name}={self.source}" if self.source else self.name


class ServerSpec(_Strict):
    """One inference server: a compose service, or a Kubernetes Deployment and Service.

    Unset values keep the launcher's own default. Every flag the server gets is checked
    against the documented flags of the pinned version when the config loads.

    Example:
        >>> ServerSpec(name="vllm-stem", launcher="vllm", model_id="org/m", gpus=[0]).image_ref
        'vllm/vllm-openai:v0.33.0'
    """

    name: str = Field(pattern=DNS_LABEL)
    """Service name, Kubernetes name and host name (lowercase letters, digits, ``-``)."""
    launcher: Launcher
    """``tgi`` (text-generation-launcher), ``vllm`` (``vllm serve``) or ``sglang``
    (``python3 -m sglang.launch_server``)."""
    image: str | None = None
    """Container image; default the version whose flags are documented in the package
    (TGI 3.3.6, vLLM 0.33.0, SGLang 0.5.23). Another version may accept other flags."""
    model_id: str
    """Hub id (or path in the container) of the model the server loads."""
    revision: str | None = None
    """Hub revision of the model (branch, tag or commit)."""
    served_model_name: str | None = None
    """vLLM and SGLang: the name ``/v1/models`` lists and requests send; default
    ``model_id``. (TGI has no such flag.)"""
    quantize: str | None = None
    """TGI ``--quantize``, vLLM and SGLang ``--quantization``; one of the launcher's
    documented values (``awq``, ``gptq``, ``awq_marlin``...). Pre-quantized checkpoints
    need none, but naming it pins the kernel."""
    dtype: str | None = None
    """``--dtype`` (TGI: ``float16`` or ``bfloat16``, and not with ``quantize``)."""
    max_input_tokens: int | None = Field(default=None, ge=1)
    """TGI ``--max-input-tokens``. vLLM and SGLang have one limit: ``max_total_tokens``."""
    max_total_tokens: int | None = Field(default=None, ge=2)
    """Prompt plus answer: TGI ``--max-total-tokens``, vLLM ``--max-model-len``, SGLang
    ``--context-length``."""
    adapters: list[LoraAdapterSpec] = Field(default_factory=list)
    """LoRA adapters loaded at start-up (TGI ``--lora-adapters``, vLLM ``--enable-lora
    --lora-modules``, SGLang ``--enable-lora --lora-paths``)."""
    max_loras: int | None = Field(default=None, ge=1)
    """Adapters in one batch: vLLM ``--max-loras`` (default here: every adapter), SGLang
    ``--max-loras-per-batch``."""
    max_lora_rank: int | None = Field(default=None, ge=1)
    """Largest adapter rank: vLLM and SGLang ``--max-lora-rank`` (vLLM's default is 16)."""
    gpus: list[int] = Field(min_length=1)
    """GPU ids the server gets (compose ``device_ids``; on Kubernetes only their number
    counts, as ``nvidia.com/gpu``)."""
    shards: int | None = Field(default=None, ge=1)
    """Tensor-parallel shards: TGI ``--num-shard``, vLLM ``--tensor-parallel-size``,
    SGLang ``--tp-size``; default one per GPU."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port the server listens on; default the launcher's (TGI image 80, vLLM 8000, SGLang
    30000). Compose publishes it on the host's loopback interface."""
    gpu_memory_fraction: float | None = Field(default=None, gt=0, le=1)
    """Share of GPU memory to use: TGI ``--cuda-memory-fraction``, vLLM
    ``--gpu-memory-utilization``, SGLang ``--mem-fraction-static``. Needed to share a GPU."""
    trust_remote_code: bool = False
    """``--trust-remote-code`` (runs the model repository's code: pin ``revision``)."""
    shm_size: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[kmg]$")
    """``/dev/shm`` size such as ``1g`` (NCCL needs it for sharding); default by launcher."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables (never secrets: those come from the environment)."""
    extra_args: list[str] = Field(default_factory=list)
    """More flags, appended verbatim; each must be a documented flag of the launcher and not
    one the fields above already write."""

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"env key {key!r} is not a variable name")
            if key == "HF_TOKEN":
                raise ValueError(
                    "env must not hold HF_TOKEN: it is passed through from the environment "
                    "(compose) or a Secret (Kubernetes), never written in the config"
                )
        return value

    @property
    def launcher_spec(self) -> LauncherSpec:
        """How this server's launcher is run."""
        return LAUNCHER_SPECS[self.launcher]

    @property
    def image_ref(self) -> str:
        """The image to run."""
        return self.image or self.launcher_spec.image

    @property
    def listen_port(self) -> int:
        """The port the server listens on."""
        return self.port or self.launcher_spec.default_port

    @property
    def shard_count(self) -> int:
        """Tensor-parallel shards."""
        return self.shards or len(self.gpus)

    @property
    def served_name(self) -> str:
        """The model name ``/v1/models`` lists (TGI: its ``model_id``)."""
        return self.served_model_name or self.model_id

    @property
    def shm(self) -> str:
        """``/dev/shm`` size."""
        return self.shm_size or self.launcher_spec.default_shm

    def args(self) -> list[str]:
        """The launcher's full argument list for this server."""
        return self.launcher_spec.args(self)

    def adapter(self, name: str) -> LoraAdapterSpec | None:
        """The adapter of that name, if the server loads one."""
        return next((a for a in self.adapters if a.name == name), None)

    @model_validator(mode="after")
    def _check(self) -> ServerSpec:
        where = f"server {self.name!r} ({self.launcher})"
        if self.launcher == "tgi":
            for key in ("served_model_name", "max_loras", "max_lora_rank"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{where}: {key} has no TGI flag; remove it (TGI lists its model_id, "
                        "and loads every adapter of --lora-adapters)"
                    )
            if self.quantize and self.dtype:
                raise ValueError(
                    f"{where}: TGI takes dtype or quantize, not both (launcher.md: --dtype "
                    "'cannot be used with --quantize'); remove dtype"
                )
            for adapter in self.adapters:
                if adapter.source and not adapter.source.startswith("/"):
                    raise ValueError(
                        f"{where}: adapter {adapter.name!r}: TGI names a hub adapter by its hub "
                        f"id; set name: {adapter.source} and drop source (source is for a local "
                        "path, /...)"
                    )
        elif self.max_input_tokens is not None:
            flag = "--max-model-len" if self.launcher == "vllm" else "--context-length"
            raise ValueError(
                f"{where}: max_input_tokens is TGI's; {self.launcher} has one limit, "
                f"max_total_tokens ({flag}): set that, and each expert's max_input_tokens"
            )
        if (
            self.max_input_tokens is not None
            and self.max_total_tokens is not None
            and self.max_input_tokens >= self.max_total_tokens
        ):
            raise ValueError(
                f"{where}: max_input_tokens ({self.max_input_tokens}) must be below "
                f"max_total_tokens ({self.max_total_tokens}), which counts the answer too"
            )
        if len(set(self.gpus)) != len(self.gpus) or min(self.gpus) < 0:
            raise ValueError(f"{where}: gpus {self.gpus} must be distinct ids from 0")
        if self.shard_count > len(self.gpus):
            raise ValueError(
                f"{where}: {self.shard_count} shards need as many GPUs; gpus lists {self.gpus}"
            )
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: adapter names repeat: {names}")
        if self.adapters and self.launcher == "sglang" and any(":" in n for n in names):
            raise ValueError(f"{where}: SGLang adapter names may not hold ':' ({names})")
        managed = self.launcher_spec.managed
        for token in self.extra_args:
            flag = token.partition("=")[0]
            if flag in managed:
                raise ValueError(
                    f"{where}: extra_args repeats {flag}, which a field already writes; set "
                    "the field instead"
                )
        problems = check_command(self.launcher, self.args())
        if problems:
            doc = documented_flags(self.launcher)
            raise ValueError(
                f"{where}: its command line is not what {doc.program} {doc.version} documents: "
                + "; ".join(problems)
            )
        return self


class RouterDeploySpec(_Strict):
    """The router service: ``herd serve-router`` replicas in front of the experts."""

    name: str = Field(default="router", pattern=DNS_LABEL)
    """Service and Kubernetes name."""
    image: str = DEFAULT_ROUTER_IMAGE
    """An image with this package and its ``router-server`` and ``redis`` extras."""
    replicas: int = Field(default=2, ge=1)
    """Router replicas on Kubernetes (compose runs one unless ``--replicas`` says more);
    with more than one, use ``state: {backend: redis}`` so they share breakers and
    sessions."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port the router listens on."""


class DeploySpec(_Strict):
    """What runs behind the experts' URLs, for ``herd compose``."""

    servers: list[ServerSpec] = Field(min_length=1)
    """The inference servers."""
    router: RouterDeploySpec = Field(default_factory=RouterDeploySpec)
    """The router service."""
    redis_image: str | None = DEFAULT_REDIS_IMAGE
    """Redis for ``state.backend: redis``, run as the host of ``state.url``; None when that
    Redis runs elsewhere."""
    hf_cache_claim: str | None = Field(default=None, pattern=DNS_LABEL)
    """Kubernetes: a PersistentVolumeClaim (ReadWriteMany) for the Hugging Face cache;
    default an emptyDir per pod (weights download again on every start)."""

    def server(self, name: str) -> ServerSpec | None:
        """The server of that name."""
        return next((s for s in self.servers if s.name == name), None)

    @model_validator(mode="after")
    def _check(self) -> DeploySpec:
        names = [s.name for s in self.servers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"deploy.servers names must be unique; repeated: {repeated}")
        if self.router.name in names:
            raise ValueError(
                f"deploy.router.name {self.router.name!r} is also a server's name; rename one"
            )
        ports = [s.listen_port for s in self.servers] + [self.router.port]
        clashing = sorted({p for p in ports if ports.count(p) > 1})
        if clashing:
            raise ValueError(
                f"deploy: ports {clashing} are used twice (servers and router share the "
                "host's loopback in compose); give each server its own port"
            )
        by_gpu: dict[int, list[ServerSpec]] = {}
        for server in self.servers:
            for gpu in server.gpus:
                by_gpu.setdefault(gpu, []).append(server)
        for gpu, sharing in by_gpu.items():
            if len(sharing) < 2:
                continue
            fractions = [s.gpu_memory_fraction for s in sharing]
            if any(f is None for f in fractions) or sum(f or 0 for f in fractions) > 1:
                raise ValueError(
                    f"deploy: GPU {gpu} is shared by {[s.name for s in sharing]}; give each a "
                    "gpu_memory_fraction, together at most 1, or give them different gpus"
                )
        return self


def _expected_openai_model(expert: ExpertConfig, server: ServerSpec) -> str | None:
    """The ``model`` an expert on this server must send on the OpenAI route."""
    adapter = expert.adapter_id
    if server.launcher == "tgi":
        # TGI reads any model other than "tgi" as an adapter id.
        return adapter or "tgi"
    if server.launcher == "vllm":
        return adapter or server.served_name
    # SGLang picks an adapter from "<served name>:<adapter>".
    return f"{server.served_name}:{adapter}" if adapter else server.served_name


def check_expert_servers(experts: Sequence[ExpertConfig], deploy: DeploySpec | None) -> None:
    """Check that each expert agrees with the server it names; raise ``ValueError`` naming
    the key and the fix otherwise. Called by ``HerdConfig``'s validation."""
    used: set[str] = set()
    for index, expert in enumerate(experts):
        if expert.server is None:
            continue
        key = f"experts[{index}] ({expert.name})"
        if deploy is None:
            raise ValueError(
                f"{key}.server {expert.server!r} needs a deploy section that lists it; add "
                "deploy.servers, or remove server"
            )
        server = deploy.server(expert.server)
        if server is None:
            raise ValueError(
                f"{key}.server {expert.server!r} is not in deploy.servers; known: "
                f"{[s.name for s in deploy.servers]}"
            )
        used.add(server.name)
        _check_one(key, expert, server)
    if deploy is not None:
        unused = [s.name for s in deploy.servers if s.name not in used]
        if unused:
            raise ValueError(
                f"deploy.servers {unused} serve no expert; point an expert at each with "
                "server: <name>, or remove them"
            )


def _check_one(key: str, expert: ExpertConfig, server: ServerSpec) -> None:
    expected_url = f"http://{server.name}:{server.listen_port}"
    parts = urlsplit(expert.url)
    host = parts.hostname or ""
    if (
        parts.scheme != "http"
        or not (host == server.name or host.startswith(server.name + "."))
        or parts.port != server.listen_port
        or parts.path not in ("", "/")
    ):
        raise ValueError(
            f"{key}.url {expert.url!r} does not reach server {server.name!r}, which listens at "
            f"{expected_url}; set url: {expected_url}"
        )
    if expert.model_id != server.model_id:
        raise ValueError(
            f"{key}.model_id {expert.model_id!r} is not the model server {server.name!r} "
            f"loads; set model_id: {server.model_id}"
        )
    if server.launcher != "tgi" and expert.protocol != "openai":
        raise ValueError(
            f"{key}.protocol is {expert.protocol!r}, but {server.launcher} serves only the "
            "OpenAI route; set protocol: openai"
        )
    if expert.adapter_id is not None and server.adapter(expert.adapter_id) is None:
        known = [a.name for a in server.adapters] or "none"
        raise ValueError(
            f"{key}.adapter_id {expert.adapter_id!r} is not an adapter of server "
            f"{server.name!r} (its adapters: {known}); add it to the server's adapters or fix "
            "adapter_id"
        )
    if expert.protocol == "openai":
        expected = _expected_openai_model(expert, server)
        if expert.chat_model_name != expected:
            raise ValueError(
                f"{key} sends model {expert.chat_model_name!r}, but on {server.launcher} "
                f"server {server.name!r} it must send {expected!r}; set openai_model: {expected}"
            )
    limit = expert.max_input_tokens
    if limit is not None:
        if server.max_input_tokens is not None and limit > server.max_input_tokens:
            raise ValueError(
                f"{key}.max_input_tokens {limit} is above server {server.name!r}'s "
                f"max_input_tokens {server.max_input_tokens}; lower it"
            )
        if server.max_total_tokens is not None and limit >= server.max_total_tokens:
            raise ValueError(
                f"{key}.max_input_tokens {limit} leaves no room for an answer in server "
                f"{server.name!r}'s max_total_tokens {server.max_total_tokens}; lower it"
            )
