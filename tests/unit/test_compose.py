"""``herd compose``: the docker-compose file and Kubernetes manifests for the shipped herds
parse, run the documented flags of each launcher, and wire servers, router and Redis."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from langchain_herd import ConfigError, load_config
from langchain_herd.cli import main
from langchain_herd.config import parse_config
from langchain_herd.deploy.cli import render_deployment
from langchain_herd.deploy.launcher_flags import Launcher, check_command, documented_flags

ROOT = Path(__file__).resolve().parents[2]
DEPLOYABLE = sorted(
    path
    for path in (ROOT / "tgi_configs").glob("*.yaml")
    if load_config(path, resolve_secrets=False).deploy is not None
)


def compose(path: Path | str, **kwargs: Any) -> dict[str, Any]:
    text, _ = render_deployment(path, **kwargs)
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def manifests(path: Path | str, **kwargs: Any) -> list[dict[str, Any]]:
    text, _ = render_deployment(path, kubernetes=True, **kwargs)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def assert_documented(launcher: Launcher, args: list[str]) -> None:
    doc = documented_flags(launcher)
    for token in args:
        if token.startswith("--"):
            assert token.partition("=")[0] in doc.flags, (launcher, token)
    assert check_command(launcher, args) == []
    for flag, value in itertools.pairwise(args):
        if flag in ("--port", "--num-shard", "--tensor-parallel-size", "--tp-size"):
            assert value.isdigit(), (flag, value)
        if flag in ("--max-input-tokens", "--max-total-tokens", "--max-model-len"):
            assert value.isdigit(), (flag, value)
        if flag in ("--context-length", "--max-loras", "--max-lora-rank"):
            assert value.isdigit(), (flag, value)


@pytest.mark.parametrize("path", DEPLOYABLE, ids=lambda p: p.stem)
def test_every_flag_compose_writes_is_documented_for_its_launcher(path: Path) -> None:
    config = load_config(path, resolve_secrets=False)
    assert config.deploy is not None
    services = compose(path)["services"]
    for server in config.deploy.servers:
        service = services[server.name]
        assert service["image"] == server.image_ref
        assert_documented(server.launcher, service["command"])


@pytest.mark.parametrize("path", DEPLOYABLE, ids=lambda p: p.stem)
def test_every_flag_kubernetes_writes_is_documented_for_its_launcher(path: Path) -> None:
    config = load_config(path, resolve_secrets=False)
    assert config.deploy is not None
    docs = manifests(path)
    for server in config.deploy.servers:
        assert_documented(server.launcher, container(find(docs, "Deployment", server.name))["args"])


def test_hivemind_compose_runs_four_tgi_servers_redis_and_the_router() -> None:
    doc = compose(ROOT / "tgi_configs" / "hivemind.yaml")
    assert doc["name"] == "hivemind"
    services = doc["services"]
    servers = ["tgi-stem", "tgi-humanities", "tgi-social-sciences", "tgi-other"]
    assert list(services) == [*servers, "redis", "router"]
    for gpu, (name, port) in enumerate(zip(servers, [8081, 8082, 8083, 8084], strict=True)):
        service = services[name]
        assert service["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.6"
        assert "entrypoint" not in service  # TGI's own entrypoint activates its venv
        command = service["command"]
        assert command[command.index("--port") + 1] == str(port)
        assert command[command.index("--hostname") + 1] == "0.0.0.0"
        assert command[command.index("--num-shard") + 1] == "1"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": [str(gpu)], "capabilities": ["gpu"]}
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
        assert service["environment"] == ["HF_TOKEN"]
        assert service["volumes"] == ["hf-cache:/data"]
        assert service["shm_size"] == "1g"
        assert service["healthcheck"]["test"][-1] == f"http://localhost:{port}/health"
    assert doc["volumes"] == {"hf-cache": {}}
    assert services["redis"]["image"].startswith("redis:")
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"
    router = services["router"]
    assert router["command"] == [
        "herd",
        "serve-router",
        "/config/herd.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert router["environment"][0].startswith("HERD_ROUTER_API_KEYS=${HERD_ROUTER_API_KEYS:?")
    assert router["ports"] == ["8000:8000"]
    assert router["depends_on"] == {
        name: {"condition": "service_healthy"} for name in [*servers, "redis"]
    }
    assert router["volumes"] == ["./tgi_configs/hivemind.yaml:/config/herd.yaml:ro"]


def test_lora_flags_per_launcher() -> None:
    tgi = compose(ROOT / "tgi_configs" / "hivemind-lora.yaml")["services"]["tgi-llama3"]
    adapters = tgi["command"][tgi["command"].index("--lora-adapters") + 1].split(",")
    assert adapters == [
        "your-org/hivemind-stem-lora",
        "your-org/hivemind-humanities-lora",
        "your-org/hivemind-social-sciences-lora",
        "your-org/hivemind-other-lora",
    ]
    vllm = compose(ROOT / "tgi_configs" / "hivemind-lora-vllm.yaml")["services"]["vllm-llama3"]
    assert vllm["entrypoint"] == ["vllm", "serve"]
    command = vllm["command"]
    assert command[0] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert "--enable-lora" in command
    start = command.index("--lora-modules") + 1
    assert command[start : start + 4] == [
        "stem=your-org/hivemind-stem-lora",
        "humanities=your-org/hivemind-humanities-lora",
        "social_sciences=your-org/hivemind-social-sciences-lora",
        "other=your-org/hivemind-other-lora",
    ]
    assert command[command.index("--max-loras") + 1] == "4"
    sglang = compose(ROOT / "tgi_configs" / "hivemind-lora-sglang.yaml")["services"]
    command = sglang["sglang-llama3"]["command"]
    assert sglang["sglang-llama3"]["entrypoint"] == ["python3", "-m", "sglang.launch_server"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    start = command.index("--lora-paths") + 1
    assert command[start] == "stem=your-org/hivemind-stem-lora"


def test_sharded_and_quantized_servers() -> None:
    services = compose(ROOT / "tgi_configs" / "herd-mmlu.yaml")["services"]
    big = services["tgi-llama70b"]
    (device,) = big["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["4", "5"]
    assert big["command"][big["command"].index("--num-shard") + 1] == "2"
    assert big["command"][big["command"].index("--quantize") + 1] == "awq"
    vllm = compose(ROOT / "tgi_configs" / "herd-mmlu-vllm.yaml")["services"]["vllm-llama70b"]
    assert vllm["command"][vllm["command"].index("--tensor-parallel-size") + 1] == "2"
    assert vllm["command"][vllm["command"].index("--quantization") + 1] == "awq_marlin"
    sglang = compose(ROOT / "tgi_configs" / "herd-mmlu-sglang.yaml")["services"]
    tail = ["--quantization", "awq_marlin", "--context-length", "8192"]
    assert sglang["sglang-llama70b"]["command"][-4:] == tail


def test_memory_state_runs_no_redis_and_replicas_publish_a_port_range(
    tmp_path: Path,
) -> None:
    data = yaml.safe_load((ROOT / "tgi_configs" / "hivemind.yaml").read_text())
    data["state"] = {"backend": "memory"}
    path = tmp_path / "herd.yaml"
    path.write_text(yaml.safe_dump(data))
    doc = compose(path, replicas=3, output=tmp_path / "out" / "compose.yaml")
    assert "redis" not in doc["services"]
    router = doc["services"]["router"]
    assert "redis" not in router["depends_on"]
    assert router["deploy"] == {"replicas": 3}
    assert router["ports"] == ["8000-8002:8000"]
    # A config beside (or below) the compose file is mounted relatively, else absolutely.
    assert router["volumes"] == [f"{path}:/config/herd.yaml:ro"]
    beside = compose(path, output=tmp_path / "compose.yaml")["services"]["router"]
    assert beside["volumes"] == ["./herd.yaml:/config/herd.yaml:ro"]
    _, warnings = render_deployment(path, replicas=3)
    assert any("separate breakers" in w for w in warnings)


def test_external_redis_is_not_deployed(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "tgi_configs" / "hivemind.yaml").read_text())
    data["state"] = {"backend": "redis", "url": "rediss://cache.example.com:6380/0"}
    path = tmp_path / "herd.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"deploy\.redis_image: null"):
        compose(path)
    data["deploy"]["redis_image"] = None
    path.write_text(yaml.safe_dump(data))
    assert "redis" not in compose(path)["services"]


def test_kubernetes_manifests_for_hivemind() -> None:
    path = ROOT / "tgi_configs" / "hivemind.yaml"
    docs = manifests(path)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds[:2] == [("Deployment", "redis"), ("Service", "redis")]
    assert ("ConfigMap", "hivemind-config") in kinds
    assert kinds[-2:] == [("Deployment", "router"), ("Service", "router")]
    for name in ["tgi-stem", "tgi-humanities", "tgi-social-sciences", "tgi-other"]:
        deployment = find(docs, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        server = container(deployment)
        assert server["resources"]["limits"] == {"nvidia.com/gpu": 1}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
        (hf_token,) = [e for e in server["env"] if e["name"] == "HF_TOKEN"]
        assert hf_token["valueFrom"]["secretKeyRef"] == {
            "name": "hivemind-secrets",
            "key": "HF_TOKEN",
            "optional": True,
        }
        service = find(docs, "Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        port = server["ports"][0]["containerPort"]
        assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
    router = find(docs, "Deployment", "router")
    assert router["spec"]["replicas"] == 2  # deploy.router.replicas
    assert container(router)["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container(router)["command"][:3] == ["herd", "serve-router", "/config/herd.yaml"]
    keys = container(router)["env"][0]
    assert keys["name"] == "HERD_ROUTER_API_KEYS"
    assert keys["valueFrom"]["secretKeyRef"]["optional"] is False
    config_map = find(docs, "ConfigMap", "hivemind-config")
    text = config_map["data"]["herd.yaml"]
    assert text == path.read_text()
    assert parse_config(yaml.safe_load(text)).name == "hivemind"
    assert manifests(path, replicas=5)[-2]["spec"]["replicas"] == 5


def test_kubernetes_sharded_server_asks_for_two_gpus() -> None:
    docs = manifests(ROOT / "tgi_configs" / "herd-mmlu-vllm.yaml")
    big = container(find(docs, "Deployment", "vllm-llama70b"))
    assert big["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert big["command"] == ["vllm", "serve"]
    shm = find(docs, "Deployment", "vllm-llama70b")["spec"]["template"]["spec"]["volumes"][0]
    assert shm == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}


def test_a_config_without_servers_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"has no deploy section.*deploy\.servers"):
        render_deployment(ROOT / "tgi_configs" / "local.yaml")
    assert main(["compose", str(ROOT / "tgi_configs" / "local.yaml")]) == 2
    err = capsys.readouterr().err
    assert "herd compose:" in err and "add deploy.servers" in err


def test_cli_writes_the_file_with_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compose.yaml"
    assert main(["compose", str(ROOT / "tgi_configs" / "hivemind-vllm.yaml"), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# docker-compose file for herd 'hivemind-vllm'")
    assert "vllm serve flags checked against version 0.33.0" in text
    assert set(yaml.safe_load(text)["services"]) >= {"vllm-stem", "redis", "router"}
    assert "wrote docker-compose file" in capsys.readouterr().err
    assert main(["compose", str(ROOT / "tgi_configs" / "hivemind.yaml"), "--kubernetes"]) == 0
    stdout = capsys.readouterr().out
    assert "kubectl create secret generic hivemind-secrets" in stdout
    assert len([d for d in yaml.safe_load_all(stdout) if d]) == 13
