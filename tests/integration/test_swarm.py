"""``herd swarm``: Model Swarms over real PEFT adapters on the tiny model.

The update rule against a hand-computed case; a real ``herd swarm`` process killed with
SIGKILL mid-search and resumed, against a run never stopped; the global best never getting
worse and the best particle served by a real server; refused inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import peft
import pytest
import torch
from safetensors.torch import load_file

from langchain_herd.choice_questions import load_questions
from langchain_herd.cli import main as herd
from langchain_herd.config import load_config
from langchain_herd.errors import ConfigError
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.adapters import parse_adapter_specs
from langchain_herd.swarm import SwarmSettings, SwarmWeights, run_swarm, step_particle
from tests.integration.test_lora_adapters import make_adapter

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 5
# Small enough to run in seconds, large enough that a step takes long enough to kill mid-run.
ARGS = [
    "--utility", "skills", "--per-group", "6", "--allow-small", "--swarm-size", "4",
    "--max-steps", str(MAX_STEPS), "--patience", str(MAX_STEPS), "--seed", "7",
]  # fmt: skip


def write_herd(folder: Path, adapters: dict[str, Path]) -> Path:
    entries = ", ".join(f"{name}: {path}" for name, path in adapters.items())
    experts = "\n".join(
        f'  - {{name: {name}, url: "http://127.0.0.1:8398", protocol: tgi, adapter_id: {name}, '
        f"routes: [{group}]}}"
        for name, group in zip(adapters, ("stem", "humanities", "other"), strict=False)
    )
    config = folder / "herd.yaml"
    config.write_text(
        f"name: swarm-test\nlocal_servers:\n  - {{name: base, model: tiny, port: 8398, "
        f"lora_adapters: {{{entries}}}}}\nexperts:\n{experts}\n"
    )
    return config


@pytest.fixture(scope="module")
def herd_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("herd")
    adapters = {
        name: make_adapter(root / name, seed)
        for name, seed in (("stem", 1), ("law", 2), ("med", 3))
    }
    return write_herd(root, adapters)


@pytest.fixture(scope="module")
def uninterrupted(herd_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("swarm") / "whole"
    assert herd(["swarm", str(herd_config), "--out", str(out), *ARGS]) == 0
    return out


def test_update_rule_matches_a_hand_computed_case() -> None:
    # weights x factors: a_v = 0.4*0.5 = 0.2, a_p = 0.2*1 = 0.2, a_g = 0.6*0.5 = 0.3,
    # a_w = 0.2*1 = 0.2; C = 0.9.
    # first entry:  (0.2*0.5 + 0.2*(2-1) + 0.3*(3-1) - 0.2*(0-1)) / 0.9 = 1.1/0.9 = 11/9
    # second entry: (0.2*-1 + 0.2*(2-2) + 0.3*(0-2) - 0.2*(4-2)) / 0.9 = -1.2/0.9 = -4/3
    # x + 0.5 v = [1 + 11/18, 2 - 2/3]
    def t(*values: float) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor(values, dtype=torch.float64)}

    x, v = step_particle(
        x=t(1.0, 2.0),
        v=t(0.5, -1.0),
        personal=t(2.0, 2.0),
        best=t(3.0, 0.0),
        worst=t(0.0, 4.0),
        factors=(0.5, 1.0, 0.5, 1.0),
        weights=SwarmWeights(inertia=0.4, personal=0.2, social=0.6, repel=0.2),
        step_size=0.5,
    )
    torch.testing.assert_close(v["w"], torch.tensor([11 / 9, -4 / 3], dtype=torch.float64))
    torch.testing.assert_close(x["w"], torch.tensor([1 + 11 / 18, 4 / 3], dtype=torch.float64))


def _state_step(out: Path) -> int:
    try:
        return int(json.loads((out / "state" / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def test_resume_after_sigkill_equals_an_uninterrupted_run(
    herd_config: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "langchain_herd.cli", "swarm", str(herd_config)]
    command += ["--out", str(out), *ARGS]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _state_step(out) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = _state_step(out)
    assert 2 <= killed_at < MAX_STEPS, f"killed after step {killed_at}"
    assert not (out / "best").exists()

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {out} after step {killed_at}" in rerun.stderr
    assert f"step {killed_at + 1}/{MAX_STEPS}" in rerun.stderr

    def report(folder: Path) -> dict[str, object]:
        data = json.loads((folder / "swarm.json").read_text())
        return {key: data[key] for key in ("history", "best", "start", "particles", "stopped")}

    assert report(out) == report(uninterrupted)
    resumed = load_file(out / "best" / "adapter_model.safetensors")
    whole = load_file(uninterrupted / "best" / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)
    # A finished run is only reported again.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "holds a finished run" in again.stderr


def test_best_never_worsens_and_is_served(uninterrupted: Path) -> None:
    report = json.loads((uninterrupted / "swarm.json").read_text())
    bests = [step["best_utility"] for step in report["history"]]
    assert len(bests) == MAX_STEPS + 1 and bests == sorted(bests)
    for step in report["history"]:  # both metrics, every particle, every step
        assert all({"accuracy", "loglik"} <= set(p) for p in step["particles"])
    assert report["best"]["utility"] >= max(m["loglik"] for m in report["start"].values())
    assert report["best"]["loglik"] == bests[-1]

    config = load_config(uninterrupted / "herd-swarm.yaml")
    assert config.expert("swarm").adapter_id == "swarm"
    assert config.local_servers[0].lora_adapters["swarm"] == str(uninterrupted / "best")

    backend = load_backend("tiny")
    backend.load_adapters(parse_adapter_specs(f"swarm={uninterrupted / 'best'}"))
    server = ServerThread(create_app(backend)).start()
    try:
        assert httpx.get(f"{server.url}/info").json()["herd_lora_adapters"] == ["swarm"]
        body = {"inputs": "the question of the day is", "parameters": {"max_new_tokens": 4}}
        reply = httpx.post(
            f"{server.url}/generate",
            json={**body, "parameters": {**body["parameters"], "adapter_id": "swarm"}},
        )
        assert reply.status_code == 200 and reply.json()["generated_text"]
    finally:
        server.stop()


def test_refuses_few_questions_and_mismatched_adapters(
    herd_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["swarm", str(herd_config), "--out", str(tmp_path / "x"), "--utility", "skills"]
    assert herd([*args, "--per-group", "5"]) == 2
    assert "the utility has 20 questions" in capsys.readouterr().err

    from langchain_herd.server.tiny_model import build_tiny_parts

    model, _ = build_tiny_parts()
    wide = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    wide.save_pretrained(tmp_path / "wide")
    stem = herd_config.parent / "stem"
    odd = write_herd(tmp_path, {"stem": stem, "wide": tmp_path / "wide"})
    questions = load_questions("skills", "dev", per_group=2)
    with pytest.raises(ConfigError, match=r"'stem' and 'wide' differ in r 4 vs 8"):
        run_swarm(odd, questions, tmp_path / "y", SwarmSettings(allow_small=True))
    assert not (tmp_path / "y").exists()
