"""The examples as a user runs them: ``python examples/<name>.py`` on the local SmolLM2 herd.

Each example starts the herd of ``$HERD_CONFIG`` (default ``bundled:local``) unless its server
already answers, and stops only what it started. Here ``$HERD_CONFIG`` is the bundled herd moved
to a free port, so the tests never meet a ``herd up`` on 8391: one SmolLM2 server is shared by
the module, and one test lets an example start and stop its own. Checked lines are the ones
routing and the tool loop fix (deterministic), not the wording of SmolLM2's answers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from langchain_herd import load_config
from langchain_herd.local_servers import LocalHerd, is_healthy
from tests.integration.test_cli import free_port

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "langchain_herd" / "configs" / "local.yaml"

pytestmark = pytest.mark.slow


def smollm2_config(folder: Path) -> tuple[Path, str]:
    """The bundled herd (SmolLM2 on one local server) on a free port."""
    config = yaml.safe_load(BUNDLED.read_text())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config["local_servers"][0]["port"] = port
    for expert in config["experts"]:
        expert["url"] = url
    path = folder / "herd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, url


@pytest.fixture(scope="module")
def herd_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running SmolLM2 herd, shared by the examples (each reuses it instead of starting one)."""
    path, _ = smollm2_config(tmp_path_factory.mktemp("herd"))
    with LocalHerd(load_config(path)):
        yield path


def run_example(name: str, config: Path, timeout: float = 300) -> str:
    env = {**os.environ, "HERD_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, f"examples/{name}.py"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


def test_agent_toolkit(herd_config: Path) -> None:
    out = run_example("agent_toolkit", herd_config)
    assert "ai    -> add(" in out, out
    assert "tool  add: " in out
    # Only the OpenAI-route experts can call tools; the tool loop stays with the first one.
    assert "excluded ['humanities', 'other'], sticky None" in out
    assert "sticky 'tool loop: " in out
    assert re.search(r"tool  ask_\w+ \(pinned \w+\): ", out), out
    assert out.count("answered_by ") == 4, "two model calls per run, each with a decision"


def test_rag_app(herd_config: Path) -> None:
    out = run_example("rag_app", herd_config)
    assert "Q: Why do earthquakes happen?" in out
    assert "expert: stem (routed on the question)" in out
    assert "routing on the whole prompt would have chosen social_sciences" in out
    assert "sources: plate-tectonics, " in out
    assert "sources: sleep, " in out
    assert out.count("answer: ") == 3


def test_structured_output(herd_config: Path) -> None:
    out = run_example("structured_output", herd_config)
    json_schema, function_calling = out.split("method=function_calling")
    assert "method=json_schema" in json_schema
    # A JSON schema grammar works on both protocols; nobody is excluded.
    assert "(tgi route), excluded {}" in json_schema
    assert "(openai route), excluded {}" in json_schema
    # A forced tool call leaves out the generate-route experts.
    assert "tgi route" not in function_calling
    assert function_calling.count("'humanities': 'cannot call tools'") == 2
    assert function_calling.count("'other': 'cannot call tools'") == 2
    assert out.count("parsed: Sum(") == 2 and out.count("parsed: Quantity(") == 2, out
    assert "parsing error" not in out


def test_lcel_chain(herd_config: Path) -> None:
    out = run_example("lcel_chain", herd_config)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 2, out
    assert "herd is unavailable" not in out


def test_quickstart_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    config, url = smollm2_config(tmp_path)
    assert not is_healthy(url)
    out = run_example("quickstart", config)
    assert out.count("Q: ") == 4
    assert "route social_sciences (0.66) -> social_sciences" in out
    assert out.count(" -> ") == 4
    assert not is_healthy(url), "the example stops the server it started"
