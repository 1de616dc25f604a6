"""How each inference server is started: its image, entrypoint, port, cache and flags.

One ``Launcher`` per server kind turns a ``ServerSpec`` into the argument list its program
takes. Every flag written here is in that launcher's documented list
(:mod:`langchain_herd.deploy.launcher_flags`), and ``ServerSpec`` checks the whole argument
list against it when a config loads, ``extra_args`` included.

Example:
    .. code-block:: python

        from langchain_herd.deploy.launchers import LAUNCHER_SPECS
        from langchain_herd.deploy.spec import ServerSpec

        server = ServerSpec(name="vllm-stem", launcher="vllm", model_id="org/m", gpus=[0])
        print(LAUNCHER_SPECS["vllm"].args(server))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_herd.deploy.launcher_flags import Launcher, documented_flags

if TYPE_CHECKING:
    from langchain_herd.deploy.spec import ServerSpec


def _tgi_args(server: ServerSpec) -> list[str]:
    args = ["--model-id", server.model_id]
    if server.revision:
        args += ["--revision", server.revision]
    # Docker and Kubernetes set HOSTNAME to the container's name, and TGI reads --hostname
    # from that variable: without the flag it would not listen on localhost.
    args += ["--hostname", "0.0.0.0", "--port", str(server.listen_port)]
    args += ["--num-shard", str(server.shard_count)]
    if server.quantize:
        args += ["--quantize", server.quantize]
    if server.dtype:
        args += ["--dtype", server.dtype]
    if server.max_input_tokens is not None:
        args += ["--max-input-tokens", str(server.max_input_tokens)]
    if server.max_total_tokens is not None:
        args += ["--max-total-tokens", str(server.max_total_tokens)]
    if server.adapters:
        args += ["--lora-adapters", ",".join(a.tgi_spec() for a in server.adapters)]
    if server.gpu_memory_fraction is not None:
        args += ["--cuda-memory-fraction", f"{server.gpu_memory_fraction:g}"]
    if server.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def _vllm_args(server: ServerSpec) -> list[str]:
    args = [server.model_id]
    if server.revision:
        args += ["--revision", server.revision]
    args += ["--host", "0.0.0.0", "--port", str(server.listen_port)]
    args += ["--tensor-parallel-size", str(server.shard_count)]
    if server.served_model_name:
        args += ["--served-model-name", server.served_model_name]
    if server.quantize:
        args += ["--quantization", server.quantize]
    if server.dtype:
        args += ["--dtype", server.dtype]
    if server.max_total_tokens is not None:
        args += ["--max-model-len", str(server.max_total_tokens)]
    if server.gpu_memory_fraction is not None:
        args += ["--gpu-memory-utilization", f"{server.gpu_memory_fraction:g}"]
    if server.adapters:
        args += ["--enable-lora", "--lora-modules"]
        args += [f"{a.name}={a.location}" for a in server.adapters]
        # vLLM's default --max-loras is 1: the adapters would take turns in every batch.
        args += ["--max-loras", str(server.max_loras or len(server.adapters))]
        if server.max_lora_rank is not None:
            args += ["--max-lora-rank", str(server.max_lora_rank)]
    if server.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def _sglang_args(server: ServerSpec) -> list[str]:
    args = ["--model-path", server.model_id]
    if server.revision:
        args += ["--revision", server.revision]
    # SGLang listens on 127.0.0.1 unless told otherwise.
    args += ["--host", "0.0.0.0", "--port", str(server.listen_port)]
    args += ["--tp-size", str(server.shard_count)]
    if server.served_model_name:
        args += ["--served-model-name", server.served_model_name]
    if server.quantize:
        args += ["--quantization", server.quantize]
    if server.dtype:
        args += ["--dtype", server.dtype]
    if server.max_total_tokens is not None:
        args += ["--context-length", str(server.max_total_tokens)]
    if server.gpu_memory_fraction is not None:
        args += ["--mem-fraction-static", f"{server.gpu_memory_fraction:g}"]
    if server.adapters:
        args += ["--enable-lora", "--lora-paths"]
        args += [f"{a.name}={a.location}" for a in server.adapters]
        if server.max_loras is not None:
            args += ["--max-loras-per-batch", str(server.max_loras)]
        if server.max_lora_rank is not None:
            args += ["--max-lora-rank", str(server.max_lora_rank)]
    if server.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def _curl_health(port: int) -> list[str]:
    return ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://localhost:{port}/health"]


def _python_health(port: int) -> list[str]:
    code = f"import urllib.request; urllib.request.urlopen('http://localhost:{port}/health')"
    return ["CMD", "python3", "-c", code]


@dataclass(frozen=True)
class LauncherSpec:
    """What ``herd compose`` needs to know to run one kind of inference server."""

    name: Launcher
    """``tgi``, ``vllm`` or ``sglang``."""
    entrypoint: tuple[str, ...] | None
    """The program the arguments go to; None keeps the image's own entrypoint (TGI's
    ``/tgi-entrypoint.sh`` activates its virtualenv before ``text-generation-launcher``)."""
    default_port: int
    """The port the server listens on when the config names none (TGI's image sets
    ``PORT=80``; vLLM's default is 8000, SGLang's 30000)."""
    cache_dir: str
    """Where the image keeps the Hugging Face cache (TGI's image sets ``HF_HOME=/data``)."""
    default_shm: str
    """``/dev/shm`` size: TGI's docs run with ``--shm-size 1g``; vLLM and SGLang run with
    ``--ipc=host`` in theirs, which a compose file or a pod does not get."""
    build_args: Callable[[ServerSpec], list[str]]
    managed: frozenset[str]
    """Flags ``build_args`` writes; ``extra_args`` may not repeat them."""
    health_test: Callable[[int], list[str]]
    """Compose healthcheck command on the server's ``/health`` (curl is in TGI's image;
    vLLM's and SGLang's have python3)."""

    @property
    def image(self) -> str:
        """The image pinned with the documented flag list."""
        return documented_flags(self.name).image

    @property
    def version(self) -> str:
        """The server version pinned with the documented flag list."""
        return documented_flags(self.name).version

    def args(self, server: ServerSpec) -> list[str]:
        """The server's full argument list: the config's settings, then ``extra_args``."""
        return self.build_args(server) + list(server.extra_args)


LAUNCHER_SPECS: dict[Launcher, LauncherSpec] = {
    "tgi": LauncherSpec(
        name="tgi",
        entrypoint=None,
        default_port=80,
        cache_dir="/data",
        default_shm="1g",
        build_args=_tgi_args,
        managed=frozenset(
            {
                "--model-id",
                "--revision",
                "--hostname",
                "--port",
                "--num-shard",
                "--sharded",
                "--quantize",
                "--dtype",
                "--max-input-tokens",
                "--max-input-length",
                "--max-total-tokens",
                "--lora-adapters",
                "--cuda-memory-fraction",
                "--trust-remote-code",
                "--huggingface-hub-cache",
            }
        ),
        health_test=_curl_health,
    ),
    "vllm": LauncherSpec(
        name="vllm",
        entrypoint=("vllm", "serve"),
        default_port=8000,
        cache_dir="/root/.cache/huggingface",
        default_shm="16g",
        build_args=_vllm_args,
        managed=frozenset(
            {
                "--model",
                "--revision",
                "--host",
                "--port",
                "--tensor-parallel-size",
                "--served-model-name",
                "--quantization",
                "--dtype",
                "--max-model-len",
                "--gpu-memory-utilization",
                "--enable-lora",
                "--lora-modules",
                "--max-loras",
                "--max-lora-rank",
                "--trust-remote-code",
            }
        ),
        health_test=_python_health,
    ),
    "sglang": LauncherSpec(
        name="sglang",
        entrypoint=("python3", "-m", "sglang.launch_server"),
        default_port=30000,
        cache_dir="/root/.cache/huggingface",
        default_shm="16g",
        build_args=_sglang_args,
        managed=frozenset(
            {
                "--model-path",
                "--model",
                "--revision",
                "--host",
                "--port",
                "--tp-size",
                "--tensor-parallel-size",
                "--served-model-name",
                "--quantization",
                "--dtype",
                "--context-length",
                "--mem-fraction-static",
                "--enable-lora",
                "--lora-paths",
                "--max-loras-per-batch",
                "--max-lora-rank",
                "--trust-remote-code",
            }
        ),
        health_test=_python_health,
    ),
}
