"""Resume after a real kill: ``herd label`` as a subprocess against a tiny-model server
subprocess, SIGKILLed midway, its last line torn, resumed, and compared with a run that was
never interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from langchain_herd.config import load_config
from langchain_herd.ensembles.scorers import CascadeModel, load_ensemble_artifact
from langchain_herd.labeling import label_dataset
from langchain_herd.labeling.store import read_raw
from langchain_herd.training.cli import train_main
from tests.integration.word_choices import write_word_choices

ROOT = Path(__file__).resolve().parents[2]
LABEL = [sys.executable, "-m", "langchain_herd.labeling.cli"]
N_QUESTIONS = 20
N_EXPERTS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langchain_herd.server",
            "--model",
            "tiny",
            "--port",
            str(port),
            "--latency-ms",
            "100",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, f"server exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the tiny server did not come up")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def setup(server_url: str, tmp_path: Path) -> tuple[Path, Path]:
    config = {
        "name": "resume-herd",
        "experts": [
            {
                "name": "alpha",
                "url": server_url,
                "protocol": "tgi",
                "generation": {"max_new_tokens": 3},
            },
            {
                "name": "beta",
                "url": server_url,
                "protocol": "openai",
                "generation": {"max_new_tokens": 4},
            },
        ],
    }
    config_path = tmp_path / "herd.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # Options the tiny model names, so the answers table holds real letters (and nulls).
    return config_path, write_word_choices(tmp_path / "words.parquet", N_QUESTIONS)


def answer_lines(out: Path) -> int:
    path = out / "raw.jsonl"
    if not path.is_file():
        return 0
    return path.read_bytes().count(b'"type":"answer"')


def test_kill_tear_and_resume_gives_the_uninterrupted_table(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = setup
    out = tmp_path / "killed"
    command = [*LABEL, str(config), str(data), "--out", str(out), "--quiet"]
    # One call in flight per expert, so the run lasts long enough to be caught midway.
    process = subprocess.Popen(
        [*command, "--concurrency", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while answer_lines(out) < 8 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done = answer_lines(out)
    assert 8 <= done < N_QUESTIONS * N_EXPERTS, done
    assert not (out / "correctness.parquet").exists()
    assert not (out / "answers.parquet").exists()

    # A torn write: the last line loses its end (and its newline).
    raw = (out / "raw.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    (out / "raw.jsonl").write_bytes(raw[: len(raw) - 25])

    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run(
        [*command, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"labeled {N_QUESTIONS} questions x {N_EXPERTS} experts" in resumed.stdout
    assert f"reused: {done - 1}" in resumed.stdout  # all but the torn line

    reference = asyncio.run(
        label_dataset(load_config(config), data, tmp_path / "reference", progress=False)
    )
    table = pd.read_parquet(out / "correctness.parquet")
    pd.testing.assert_frame_equal(table, reference.table)
    pd.testing.assert_frame_equal(
        table, pd.read_parquet(tmp_path / "reference" / "correctness.parquet")
    )
    # the answers table too: the letters of the resumed run are those of the uninterrupted one
    answers = pd.read_parquet(out / "answers.parquet")
    assert reference.answers is not None
    pd.testing.assert_frame_equal(answers, reference.answers)
    pd.testing.assert_frame_equal(
        answers, pd.read_parquet(tmp_path / "reference" / "answers.parquet")
    )
    assert answers["id"].tolist() == table["id"].tolist()
    letters = answers[["alpha", "beta"]]
    assert letters.notna().any().all() and letters.isna().any().any()  # letters and nulls
    gold = table["answer"]
    for expert in ("alpha", "beta"):
        chose_gold = (answers[expert] == gold).fillna(False).astype(int).tolist()
        assert chose_gold == table[expert].astype(int).tolist()
    assert f"answers table: {out / 'answers.parquet'}" in resumed.stdout

    # the two tables are what `herd train --kind cascade` fits from
    artifact = tmp_path / "cascade.json"
    code = train_main(
        [
            str(out / "correctness.parquet"),
            *["--kind", "cascade", "--answers", str(out / "answers.parquet")],
            *["--weak", "alpha", "--strong", "beta", "--max-helpers", "0"],
            *["--out", str(artifact), "--quiet"],
        ]
    )
    assert code == 0
    model = load_ensemble_artifact(artifact)
    assert isinstance(model, CascadeModel) and model.tiers == [["alpha"], ["beta"]]

    # Loss-free and without duplicates: every (question, expert) answered exactly once.
    records = read_raw(out / "raw.jsonl")
    pairs = Counter((r["id"], r["expert"]) for r in records if r["type"] == "answer")
    assert len(pairs) == N_QUESTIONS * N_EXPERTS and set(pairs.values()) == {1}
    assert all(r["error"] is None for r in records)
    info = json.loads((out / "run.json").read_text())
    assert info["created"] <= info["updated"]
