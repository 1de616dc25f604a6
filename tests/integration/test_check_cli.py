"""``herd check CONFIG`` against real local servers on loopback: an all-good config exits 0;
deliberate mismatches (model id, a limit above the server's, a port nobody listens on, an
adapter the server does not list) are each reported and exit 1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from langchain_herd.check import check_config
from langchain_herd.cli import main
from langchain_herd.config import parse_config
from langchain_herd.server import ServerThread, create_app, load_backend


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    lora = ServerThread(
        create_app(
            backend,
            model_id="tiny-base",
            max_input_tokens=256,
            max_total_tokens=512,
            adapters=["math-lora", "law-lora"],
        )
    ).start()
    plain = ServerThread(
        create_app(backend, model_id="tiny-plain", max_input_tokens=128, max_total_tokens=512)
    ).start()
    yield {"lora": lora.url, "plain": plain.url}
    lora.stop()
    plain.stop()


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    from langchain_herd.server.tiny_model import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def write(tmp_path: Path, experts: list[dict[str, Any]]) -> Path:
    path = tmp_path / "herd.yaml"
    path.write_text(yaml.safe_dump({"name": "checked", "experts": experts}))
    return path


def good_experts(servers: dict[str, str], tokenizer: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "generate",
            "url": servers["lora"],
            "protocol": "tgi",
            "model_id": "tiny-base",
            "max_input_tokens": 200,
            "tokenizer": tokenizer,
            "generation": {"max_new_tokens": 16},
        },
        {
            "name": "math",
            "url": servers["lora"],
            "protocol": "openai",
            "model_id": "tiny-base",
            "adapter_id": "math-lora",
            "tokenizer": tokenizer,
        },
        {
            "name": "plain",
            "url": servers["plain"],
            "protocol": "tgi",
            "model_id": "tiny-plain",
            "adapter_id": "some-lora",
            "tokenizer": tokenizer,
        },
    ]


def test_the_local_server_lists_adapters_like_vllm(servers: dict[str, str]) -> None:
    import httpx

    data = httpx.get(f"{servers['lora']}/v1/models").json()["data"]
    assert [(m["id"], m["parent"], m["max_model_len"]) for m in data] == [
        ("tiny-base", None, 512),
        ("math-lora", "tiny-base", None),
        ("law-lora", "tiny-base", None),
    ]


def test_an_all_good_config_exits_0_in_a_subprocess(
    servers: dict[str, str], tiny_tokenizer: str, tmp_path: Path
) -> None:
    config = write(tmp_path, good_experts(servers, tiny_tokenizer))
    done = subprocess.run(
        [sys.executable, "-m", "langchain_herd.cli", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.splitlines()[0].split() == ["EXPERT", "CHECK", "STATUS", "DETAIL"]
    assert "no problems found in 3 expert(s)" in out
    assert "PROBLEM" not in out
    # TGI lists no adapters: said, not guessed.
    plain_adapter = next(
        line for line in out.splitlines() if line.startswith("plain ") and " adapter " in line
    )
    assert "UNVERIFIABLE" in plain_adapter and "not verifiable" in plain_adapter
    math_adapter = next(
        line for line in out.splitlines() if line.startswith("math ") and " adapter " in line
    )
    assert "OK" in math_adapter


def test_each_mismatch_is_reported_and_exits_1(
    servers: dict[str, str], tiny_tokenizer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experts = [
        {
            "name": "wrong-model",
            "url": servers["plain"],
            "protocol": "tgi",
            "model_id": "llama-70b",
        },
        {
            "name": "too-long",
            "url": servers["plain"],
            "protocol": "tgi",
            "model_id": "tiny-plain",
            "max_input_tokens": 4096,
        },
        {"name": "nobody", "url": dead_url(), "protocol": "openai", "model_id": "x"},
        {
            "name": "bad-adapter",
            "url": servers["lora"],
            "protocol": "openai",
            "model_id": "tiny-base",
            "adapter_id": "chem-lora",
        },
        {
            "name": "lost-tokenizer",
            "url": servers["plain"],
            "protocol": "tgi",
            "model_id": "tiny-plain",
            "tokenizer": str(tmp_path / "nowhere"),
        },
    ]
    config = write(tmp_path, experts)
    assert main(["check", str(config), "--json", "--timeout", "2"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    problems = {
        (f["expert"], f["check"]): f["detail"]
        for f in report["findings"]
        if f["status"] == "problem"
    }
    assert set(problems) == {
        ("wrong-model", "model_id"),
        ("too-long", "context_limit"),
        ("nobody", "reachable"),
        ("bad-adapter", "adapter"),
        ("lost-tokenizer", "tokenizer"),
    }
    assert (
        "'llama-70b'" in problems["wrong-model", "model_id"]
        and "tiny-plain" in problems["wrong-model", "model_id"]
    )
    assert "4096 is above the server's 128" in problems["too-long", "context_limit"]
    assert "unreachable" in problems["nobody", "reachable"]
    assert (
        "'chem-lora' is not among the server's adapters (math-lora, law-lora)"
        in problems["bad-adapter", "adapter"]
    )
    # The table says the same, with a summary.
    assert main(["check", str(config)]) == 1
    table = capsys.readouterr().out
    assert "5 problem(s) in 5 of 5 expert(s)" in table


def test_a_limit_left_to_the_probe_and_a_default_model_id(servers: dict[str, str]) -> None:
    config = parse_config({"experts": [{"name": "a", "url": servers["lora"], "protocol": "tgi"}]})
    findings = {f.check: f for f in check_config(config).findings}
    assert findings["model_id"].status == "warning" and "tiny-base" in findings["model_id"].detail
    assert findings["context_limit"].status == "ok"
    assert (
        findings["context_limit"].detail
        == "256 input tokens (max_input_tokens from /info), learned by probe"
    )
    assert findings["tokenizer"].status == "warning"
    assert findings["reachable"].detail.endswith("(TGI 3.3.4)")
