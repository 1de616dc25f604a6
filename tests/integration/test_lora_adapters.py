"""Multi-LoRA on the local server: PEFT adapters loaded at start, picked per request.

Real PEFT adapters (random LoRA weights, saved with ``save_pretrained``) on the tiny model,
a real server on loopback, and the clients the herd uses (huggingface_hub, openai).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import peft
import pytest
import torch
from huggingface_hub import InferenceClient
from openai import OpenAI

from langchain_herd.errors import ConfigError
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.adapters import AdapterSpec, parse_adapter_specs

PROMPT = "the question of the day is"


def make_adapter(folder: Path, seed: int) -> Path:
    """A LoRA adapter for the tiny model whose weights move its greedy output."""
    from langchain_herd.server.tiny_model import build_tiny_parts

    torch.manual_seed(seed)
    model, _ = build_tiny_parts()
    config = peft.LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    lora = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in lora.named_parameters():
            if "lora_" in name:
                weight.normal_(0.0, 2.0)
    lora.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(root / name, seed) for name, seed in (("stem", 1), ("law", 2))}


@pytest.fixture(scope="module")
def url(adapters: dict[str, Path]) -> Iterator[str]:
    backend = load_backend("tiny")
    backend.load_adapters(parse_adapter_specs(",".join(f"{n}={p}" for n, p in adapters.items())))
    server = ServerThread(create_app(backend)).start()
    yield server.url
    server.stop()


def generate(url: str, adapter: str | None) -> str:
    client = InferenceClient(model=url)
    extra = {} if adapter is None else {"adapter_id": adapter}
    return client.text_generation(PROMPT, max_new_tokens=8, do_sample=False, **extra)


def test_each_request_picks_its_adapter(url: str) -> None:
    base, stem, law = generate(url, None), generate(url, "stem"), generate(url, "law")
    assert len({base, stem, law}) == 3, (base, stem, law)
    # Repeatable, and the base model is back after an adapter (adapters are switched per
    # request under the model lock, not left on).
    assert generate(url, "stem") == stem and generate(url, None) == base
    assert generate(url, "tiny") == base  # the served name is the base model
    # The chat route picks by `model`, through the official openai client.
    chat = OpenAI(base_url=f"{url}/v1", api_key="none")

    def ask(model: str) -> str | None:
        reply = chat.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=8,
            temperature=0,
        )
        return reply.choices[0].message.content

    assert len({ask("tgi"), ask("stem"), ask("law")}) == 3


def test_unknown_adapter_is_a_4xx_naming_the_loaded_ones(url: str) -> None:
    reply = httpx.post(
        f"{url}/generate", json={"inputs": PROMPT, "parameters": {"adapter_id": "medicine"}}
    )
    assert reply.status_code == 422
    assert reply.json()["error_type"] == "validation"
    assert "'medicine'" in reply.json()["error"] and "['stem', 'law']" in reply.json()["error"]
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "medicine", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 422 and "['stem', 'law']" in chat.json()["error"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_info_and_models_list_the_adapters(url: str) -> None:
    assert httpx.get(f"{url}/info").json()["herd_lora_adapters"] == ["stem", "law"]
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in models] == [
        ("tiny", None),
        ("stem", "tiny"),
        ("law", "tiny"),
    ]


def test_bad_adapter_folders_are_config_errors(tmp_path: Path, adapters: dict[str, Path]) -> None:
    backend = load_backend("tiny")
    with pytest.raises(ConfigError, match=r"has no adapter_config\.json"):
        backend.load_adapters([AdapterSpec("x", str(tmp_path))])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(
        (adapters["stem"] / "adapter_config.json").read_text()
    )
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match="only safetensors"):
        backend.load_adapters([AdapterSpec("x", str(pickled))])
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        parse_adapter_specs("a=/x,a=/y")


def test_herd_up_serves_adapters_from_a_config(adapters: dict[str, Path], tmp_path: Path) -> None:
    # `local_servers[].lora_adapters` -> `herd serve --lora-adapters name=path` in a process
    # of its own; the folder is relative to the config's folder.
    import shutil
    import socket

    from langchain_herd.config import load_config
    from langchain_herd.local_servers import LocalHerd

    shutil.copytree(adapters["stem"], tmp_path / "stem-lora")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "herd.yaml").write_text(
        f"""
name: lora
local_servers:
  - {{name: base, model: tiny, port: {port}, lora_adapters: {{stem: stem-lora}}}}
experts:
  - {{name: stem, url: "http://127.0.0.1:{port}", protocol: tgi, adapter_id: stem,
      routes: [stem, humanities, social_sciences, other]}}
"""
    )
    with LocalHerd(load_config(tmp_path / "herd.yaml"), startup_timeout_s=120) as herd:
        url = herd.urls["base"]
        assert httpx.get(f"{url}/info").json()["herd_lora_adapters"] == ["stem"]
        assert generate(url, "stem") != generate(url, None)
