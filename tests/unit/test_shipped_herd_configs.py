"""Every herd config in tgi_configs/ loads and builds a router (no network: clients are lazy),
and the deployable ones describe the herds their comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_herd import HerdRouter, load_config
from langchain_herd.config import HerdConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "tgi_configs").glob("*.yaml"))
GROUPS = ["humanities", "other", "social_sciences", "stem"]
DEPLOYABLE = [
    "hivemind",
    "hivemind-lora",
    "herd-mmlu",
    "hivemind-vllm",
    "hivemind-lora-vllm",
    "herd-mmlu-vllm",
    "hivemind-sglang",
    "hivemind-lora-sglang",
    "herd-mmlu-sglang",
]


def load(name: str) -> HerdConfig:
    return load_config(ROOT / "tgi_configs" / f"{name}.yaml", resolve_secrets=False)


def test_the_shipped_deployable_configs_are_all_there() -> None:
    assert {path.stem for path in CONFIGS} >= set(DEPLOYABLE)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_builds_a_router(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERD_ENDPOINT_TOKEN", "secret-value")  # production-tgi.yaml's auth
    config = load_config(path)
    router = HerdRouter.from_config(config)
    assert set(router.engine.experts) == {expert.name for expert in config.experts}
    # The bundled group classifier's labels all have an expert (the engine checks it too).
    assert set(config.route_labels()) >= set(GROUPS)


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_deployable_configs_share_state_and_name_a_server_for_every_expert(name: str) -> None:
    config = load(name)
    assert config.deploy is not None
    assert config.state.backend == "redis"
    assert config.state.url == "redis://redis:6379/0"
    assert all(expert.server for expert in config.experts)
    assert config.router.classifier.path == "bundled:mmlu-group-tfidf"
    launcher = {"vllm": "vllm", "sglang": "sglang"}.get(name.rsplit("-", 1)[-1], "tgi")
    assert {server.launcher for server in config.deploy.servers} == {launcher}
    if launcher != "tgi":
        assert {expert.protocol for expert in config.experts} == {"openai"}


@pytest.mark.parametrize("name", ["hivemind", "hivemind-vllm", "hivemind-sglang"])
def test_hivemind_is_four_fine_tuned_llama3_experts_one_gpu_each(name: str) -> None:
    config = load(name)
    assert config.deploy is not None
    assert [e.routes for e in config.experts] == [
        ["stem"],
        ["humanities"],
        ["social_sciences"],
        ["other"],
    ]
    assert all(e.model_id.startswith("your-org/hivemind-") for e in config.experts)
    assert [server.gpus for server in config.deploy.servers] == [[0], [1], [2], [3]]
    assert all(not server.adapters for server in config.deploy.servers)


@pytest.mark.parametrize(
    ("name", "openai_model"),
    [
        ("hivemind-lora", None),
        ("hivemind-lora-vllm", "{adapter}"),
        ("hivemind-lora-sglang", "meta-llama/Meta-Llama-3-8B-Instruct:{adapter}"),
    ],
)
def test_hivemind_lora_is_one_server_with_four_adapters(
    name: str, openai_model: str | None
) -> None:
    config = load(name)
    assert config.deploy is not None
    (server,) = config.deploy.servers
    assert server.model_id == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert len(server.adapters) == 4
    assert server.gpus == [0]
    for expert in config.experts:
        assert expert.adapter_id is not None
        assert server.adapter(expert.adapter_id) is not None
        expected = openai_model and openai_model.format(adapter=expert.adapter_id)
        assert expert.openai_model == expected


@pytest.mark.parametrize("name", ["herd-mmlu", "herd-mmlu-vllm", "herd-mmlu-sglang"])
def test_herd_mmlu_mixes_sizes_and_quantizations(name: str) -> None:
    config = load(name)
    assert config.deploy is not None
    costs = sorted(expert.cost for expert in config.experts)
    assert costs[0] <= 8 and costs[-1] >= 70
    quantized = [server.quantize for server in config.deploy.servers if server.quantize]
    assert any("awq" in q for q in quantized) and any("gptq" in q for q in quantized)
    generalist = config.expert(config.default_expert)
    assert sorted(generalist.routes) == GROUPS
    big = next(s for s in config.deploy.servers if s.name == generalist.server)
    assert big.shard_count == 2
