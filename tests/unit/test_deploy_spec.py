"""The deploy section: servers checked against their launcher's documented flags, experts
checked against their servers, and errors that name the key and the fix."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from langchain_herd import ConfigError
from langchain_herd.config import parse_config
from langchain_herd.deploy.launcher_flags import (
    FLAGS_DIR,
    LAUNCHERS,
    Launcher,
    check_command,
    documented_flags,
)
from langchain_herd.deploy.launchers import LAUNCHER_SPECS
from langchain_herd.deploy.spec import LoraAdapterSpec, ServerSpec


def herd(launcher: str = "tgi", **server: Any) -> dict[str, Any]:
    """One expert on one server, valid as it stands."""
    port = {"tgi": 8081, "vllm": 8001, "sglang": 30001}[launcher]
    spec = {"name": "srv", "launcher": launcher, "model_id": "org/base", "port": port}
    spec["gpus"] = [0]
    spec.update(server)
    expert: dict[str, Any] = {
        "name": "stem",
        "server": "srv",
        "url": f"http://srv:{port}",
        "protocol": "tgi" if launcher == "tgi" else "openai",
        "model_id": "org/base",
        "routes": ["stem", "humanities", "social_sciences", "other"],
    }
    if launcher != "tgi":
        expert["openai_model"] = "org/base"
    return {"name": "t", "experts": [expert], "deploy": {"servers": [spec]}}


def expert_of(data: dict[str, Any]) -> dict[str, Any]:
    expert: dict[str, Any] = data["experts"][0]
    return expert


def fails(data: dict[str, Any], *patterns: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="herd.yaml")
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), message
    return message


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_minimal_server_per_launcher_loads(launcher: str) -> None:
    config = parse_config(herd(launcher))
    assert config.deploy is not None
    server = config.deploy.servers[0]
    assert server.image_ref == documented_flags(server.launcher).image
    assert check_command(server.launcher, server.args()) == []


# -- the documented flag lists -----------------------------------------------------------


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_each_flag_list_names_its_version_source_and_image(launcher: Launcher) -> None:
    raw = json.loads((FLAGS_DIR / f"{launcher}.json").read_text())
    assert raw["launcher"] == launcher
    assert raw["source"] and raw["method"]
    doc = documented_flags(launcher)
    # The default image is the version whose flags were written down.
    assert doc.image.endswith(doc.version) and doc.version in doc.source
    assert LAUNCHER_SPECS[launcher].image == doc.image
    assert len(doc.flags) > 50
    assert all(name.startswith("--") for name in doc.flags)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_flag_the_launchers_write_is_documented(launcher: Launcher) -> None:
    doc = documented_flags(launcher)
    undocumented = sorted(LAUNCHER_SPECS[launcher].managed - set(doc.flags))
    assert undocumented == []


def test_documented_choices_come_from_the_sources() -> None:
    tgi = documented_flags("tgi").flags
    assert tgi["--quantize"].choices is not None and "awq" in tgi["--quantize"].choices
    assert tgi["--dtype"].choices == ("bfloat16", "float16")
    assert tgi["--trust-remote-code"].values == "none"
    vllm = documented_flags("vllm").flags
    assert vllm["--quantization"].choices is not None
    assert {"awq_marlin", "gptq_marlin"} <= set(vllm["--quantization"].choices)
    assert vllm["--lora-modules"].values == "many"
    sglang = documented_flags("sglang").flags
    assert sglang["--tp-size"].values == "one" and sglang["--enable-lora"].values == "none"


def test_check_command_reports_each_kind_of_problem() -> None:
    assert check_command("vllm", ["org/m", "--max-model-len", "-1", "--enable-lora"]) == []
    assert check_command("vllm", ["org/m", "--max-model-len=8192"]) == []
    problems = check_command(
        "vllm",
        ["org/m", "--bogus", "--port", "--quantization", "awq9", "--enable-lora", "yes"],
    )
    text = "\n".join(problems)
    assert "--bogus is not a documented flag of vllm serve 0.33.0" in text
    assert "--port needs a value" in text
    assert "'awq9' is not one of vllm serve 0.33.0's documented choices" in text
    assert "'yes' is a value that follows no flag taking one" in text
    assert check_command("sglang", ["--enable-lora=yes"]) == [
        "--enable-lora is a switch in python3 -m sglang.launch_server 0.5.23; it takes no value"
    ]


# -- servers -------------------------------------------------------------------------------


def test_extra_args_must_be_documented_flags() -> None:
    fails(
        herd("vllm", extra_args=["--max-num-seqs", "64", "--not-a-vllm-flag"]),
        r"--not-a-vllm-flag is not a documented flag of vllm serve 0\.33\.0",
    )
    config = parse_config(herd("vllm", extra_args=["--max-num-seqs", "64"]))
    assert config.deploy is not None
    assert config.deploy.servers[0].args()[-2:] == ["--max-num-seqs", "64"]


def test_extra_args_may_not_repeat_a_managed_flag() -> None:
    fails(herd("tgi", extra_args=["--port=9000"]), r"extra_args repeats --port.*set the field")


@pytest.mark.parametrize(
    ("launcher", "value", "flag"),
    [("tgi", "awq_marlin", "--quantize"), ("vllm", "nf4", "--quantization")],
)
def test_quantize_must_be_a_documented_choice(launcher: str, value: str, flag: str) -> None:
    fails(herd(launcher, quantize=value), rf"{flag} '{value}' is not one of .*documented choices")


def test_tgi_refuses_dtype_with_quantize_and_vllm_flags() -> None:
    fails(herd("tgi", quantize="awq", dtype="float16"), r"dtype or quantize, not both")
    fails(herd("tgi", served_model_name="x"), r"served_model_name has no TGI flag")
    fails(herd("tgi", max_loras=2), r"max_loras has no TGI flag")


def test_vllm_has_no_separate_input_limit() -> None:
    fails(herd("vllm", max_input_tokens=100), r"set that, and each expert's max_input_tokens")


def test_token_limits_and_shards_are_consistent() -> None:
    fails(herd("tgi", max_input_tokens=8192, max_total_tokens=8192), r"must be below")
    fails(herd("tgi", shards=2), r"2 shards need as many GPUs")
    fails(herd("tgi", gpus=[1, 1]), r"distinct ids")


def test_tgi_names_hub_adapters_by_their_id() -> None:
    fails(
        herd("tgi", adapters=[{"name": "stem", "source": "org/stem-lora"}]),
        r"set name: org/stem-lora and drop source",
    )
    server = ServerSpec(
        name="s",
        launcher="tgi",
        model_id="m",
        gpus=[0],
        adapters=[
            LoraAdapterSpec(name="org/a"),
            LoraAdapterSpec(name="local", source="/adapters/local"),
        ],
    )
    assert server.args()[-2:] == ["--lora-adapters", "org/a,local=/adapters/local"]


def test_secrets_are_not_config() -> None:
    fails(herd("tgi", env={"HF_TOKEN": "hf_x"}), r"env must not hold HF_TOKEN")


def test_ports_and_gpus_are_not_shared_by_accident() -> None:
    data = herd("tgi")
    second = copy.deepcopy(data["deploy"]["servers"][0]) | {"name": "srv2"}
    data["deploy"]["servers"].append(second)
    data["experts"].append(expert_of(data) | {"name": "b", "server": "srv2"})
    fails(copy.deepcopy(data), r"ports \[8081\] are used twice")
    second["port"] = 8082
    data["experts"][1]["url"] = "http://srv2:8082"
    fails(copy.deepcopy(data), r"GPU 0 is shared by \['srv', 'srv2'\].*gpu_memory_fraction")
    for server in data["deploy"]["servers"]:
        server["gpu_memory_fraction"] = 0.45
    config = parse_config(data)
    assert config.deploy is not None and len(config.deploy.servers) == 2


def test_server_names_are_dns_labels() -> None:
    fails(herd("tgi", name="TGI_stem"), r"deploy\.servers\.0\.name")


# -- experts against their servers ---------------------------------------------------------


def test_an_expert_names_a_server_that_exists() -> None:
    data = herd("tgi")
    expert_of(data)["server"] = "nope"
    fails(data, r"experts\[0\] \(stem\)\.server 'nope' is not in deploy\.servers.*\['srv'\]")
    data = herd("tgi")
    del data["deploy"]
    fails(data, r"needs a deploy section that lists it")


def test_every_server_serves_an_expert() -> None:
    data = herd("tgi")
    expert_of(data)["server"] = None
    fails(data, r"deploy\.servers \['srv'\] serve no expert")


def test_url_must_reach_the_server() -> None:
    data = herd("tgi")
    expert_of(data)["url"] = "http://srv:9999"
    fails(data, r"experts\[0\] \(stem\)\.url .* set url: http://srv:8081")
    expert_of(data)["url"] = "http://other-host:8081"
    fails(data, r"set url: http://srv:8081")
    expert_of(data)["url"] = "http://srv.herd.svc.cluster.local:8081"
    assert parse_config(data).experts[0].server == "srv"


def test_model_ids_agree() -> None:
    data = herd("tgi")
    expert_of(data)["model_id"] = "org/other"
    fails(data, r"\.model_id 'org/other' is not the model .* set model_id: org/base")


@pytest.mark.parametrize("launcher", ["vllm", "sglang"])
def test_vllm_and_sglang_experts_use_the_openai_route(launcher: str) -> None:
    data = herd(launcher)
    expert_of(data)["protocol"] = "tgi"
    fails(data, rf"{launcher} serves only the OpenAI route; set protocol: openai")


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [("vllm", "org/base"), ("sglang", "org/base")],
)
def test_openai_model_is_the_served_name(launcher: str, expected: str) -> None:
    data = herd(launcher)
    del expert_of(data)["openai_model"]
    fails(data, rf"sends model 'tgi'.*set openai_model: {expected}")
    data = herd(launcher, served_model_name="base")
    fails(data, r"set openai_model: base")


def test_adapter_must_be_on_the_server_and_named_right() -> None:
    adapters = [{"name": "stem", "source": "org/stem-lora"}]
    data = herd("vllm", adapters=adapters)
    expert_of(data)["adapter_id"] = "math"
    fails(data, r"adapter_id 'math' is not an adapter of server 'srv' .*\['stem'\]")
    expert_of(data)["adapter_id"] = "stem"
    fails(data, r"set openai_model: stem")
    expert_of(data)["openai_model"] = "stem"
    config = parse_config(data)
    assert config.deploy is not None
    args = config.deploy.servers[0].args()
    assert args[args.index("--lora-modules") + 1] == "stem=org/stem-lora"
    assert args[args.index("--max-loras") + 1] == "1"


def test_sglang_picks_an_adapter_with_served_name_colon_adapter() -> None:
    data = herd("sglang", adapters=[{"name": "stem", "source": "org/stem-lora"}])
    expert_of(data)["adapter_id"] = "stem"
    fails(data, r"set openai_model: org/base:stem")
    expert_of(data)["openai_model"] = "org/base:stem"
    parse_config(data)


def test_tgi_reads_any_openai_model_as_an_adapter() -> None:
    data = herd("tgi")
    expert_of(data)["protocol"] = "openai"
    expert_of(data)["openai_model"] = "org/base"
    fails(data, r"must send 'tgi'; set openai_model: tgi")
    del expert_of(data)["openai_model"]
    parse_config(data)


def test_expert_input_limit_fits_the_server() -> None:
    data = herd("tgi", max_input_tokens=4000, max_total_tokens=4096)
    expert_of(data)["max_input_tokens"] = 5000
    fails(data, r"max_input_tokens 5000 is above server 'srv'")
    data = herd("vllm", max_total_tokens=4096)
    expert_of(data)["max_input_tokens"] = 4096
    fails(data, r"leaves no room for an answer")
