"""The `herd` command as a user runs it: real subprocesses, real local servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERD = [sys.executable, "-m", "langchain_herd.cli"]
STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_config(tmp_path: Path) -> tuple[Path, str]:
    """The local.yaml herd, pointed at a tiny-model server on a free port."""
    config = yaml.safe_load((ROOT / "tgi_configs" / "local.yaml").read_text())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config["local_servers"] = [{"name": "tiny", "model": "tiny", "port": port}]
    for expert in config["experts"]:
        expert["url"] = url
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, url


def herd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERD, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_route_decision_only_needs_no_server() -> None:
    result = herd("route", "tgi_configs/local.yaml", STEM_Q, "--decision-only")
    assert result.returncode == 0, result.stderr
    assert "ranking:  stem >" in result.stdout
    assert "scores:   stem=" in result.stdout


def test_route_starts_local_servers_and_answers(tmp_path: Path) -> None:
    config, url = tiny_config(tmp_path)
    result = herd("route", str(config), STEM_Q, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["answer"].strip()
    assert out["decision"]["answered_by"] == "stem"
    assert out["decision"]["attempts"][0]["ok"] is True
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")  # the servers it started are gone again


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts:\n  - name: a\n    url: http://127.0.0.1:1\n    protcol: tgi\n")
    result = herd("route", str(bad), "hi")
    assert result.returncode == 2
    assert "experts.0.protcol: unknown key" in result.stderr
    assert str(bad) in result.stderr


def test_up_serves_until_terminated(tmp_path: Path) -> None:
    config, url = tiny_config(tmp_path)
    process = subprocess.Popen(
        [*HERD, "up", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "herd is up" in line or not line:
                break
        assert any("herd is up" in line for line in lines), lines
        assert httpx.get(f"{url}/health").status_code == 200
        reply = httpx.post(
            f"{url}/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": 3}}
        )
        assert reply.status_code == 200 and reply.json()["generated_text"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_demo_prints_table_and_summary(tmp_path: Path) -> None:
    config, _ = tiny_config(tmp_path)
    out = tmp_path / "demo.json"
    result = herd("demo", "--config", str(config), "-n", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "routing accuracy:" in result.stdout
    assert "answer accuracy:" in result.stdout
    assert "routing MMLU" in result.stderr, "progress bar"
    summary = json.loads(out.read_text())["summary"]
    assert summary["questions"] == 8
    assert summary["failed_requests"] == 0
    assert summary["routing_accuracy"] >= 0.5, "the bundled router should route most right"


@pytest.mark.slow
def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's main job, on SmolLM2 (converted once, then cached)."""
    out = tmp_path / "demo.json"
    env = {**os.environ}
    result = subprocess.run(
        [*HERD, "demo", "-n", "8", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["questions"] == 8 and summary["failed_requests"] == 0
    assert summary["unparsed_answers"] < 8, "SmolLM2 answers with letters most of the time"
