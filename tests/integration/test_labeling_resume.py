"""Resume after real kills: ``herd label`` in a process of its own, against a tiny-model
server subprocess, SIGKILLed at ten random points in a row (a seeded RNG picks them), once
with its last line torn, resumed each time, and compared with a run that was never
interrupted."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from langchain_herd.config import load_config
from langchain_herd.ensembles.scorers import CascadeModel, load_ensemble_artifact
from langchain_herd.labeling import label_dataset
from langchain_herd.labeling.store import read_raw
from langchain_herd.training.cli import train_main
from tests.integration.label_process import label_context, run_label
from tests.integration.word_choices import write_word_choices

ROOT = Path(__file__).resolve().parents[2]
N_QUESTIONS = 20
N_EXPERTS = 2
KILLS = 10
SEED = 11
#: What differs between two runs of the same answers: when and how fast they came.
VOLATILE = ("ts", "latency_ms")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    label_context()  # its forkserver imports while the server starts
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
            "20",
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


def stable(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Answer records by (question, expert), without what differs between runs."""
    keyed = {}
    for record in records:
        if record["type"] == "answer":
            key = (record["id"], record["expert"])
            assert key not in keyed, f"{key} answered twice"
            keyed[key] = {k: v for k, v in record.items() if k not in VOLATILE}
    return keyed


def test_ten_random_kills_resume_to_the_uninterrupted_tables(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = setup
    out, log = tmp_path / "killed", tmp_path / "label.log"
    # One call in flight per expert, so the run lasts long enough to be caught midway.
    argv = [str(config), str(data), "--out", str(out), "--quiet", "--concurrency", "1"]
    total = N_QUESTIONS * N_EXPERTS
    rng = random.Random(SEED)
    # Kill points: after a random number of answers (the last ones while the tables are
    # written), plus a random delay, so a kill lands anywhere in a call or a write.
    targets = sorted(rng.sample(range(1, total + 1), KILLS))
    torn_round = rng.randrange(KILLS - 1)
    context = label_context()
    kills = []
    for round_, target in enumerate(targets):
        command = argv if round_ == 0 else [*argv, "--resume"]
        process = context.Process(target=run_label, args=(command, str(log)))
        process.start()
        try:
            deadline = time.monotonic() + 60
            while answer_lines(out) < target and time.monotonic() < deadline:
                assert process.exitcode is None, log.read_text()
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            process.kill()
        finally:
            process.join(timeout=30)
        done = answer_lines(out)
        kills.append((target, done, process.exitcode))
        # A kill after the last answer may find the run finished; any other must kill it.
        assert process.exitcode == -signal.SIGKILL or (target == total and process.exitcode == 0)
        if round_ == 0:
            assert not (out / "correctness.parquet").exists()
            # A second run in the folder must say --resume.
            refused = context.Process(target=run_label, args=(argv, str(log)))
            refused.start()
            refused.join(timeout=60)
            assert refused.exitcode == 2 and "--resume" in log.read_text()
        if round_ == torn_round:
            # A torn write: the last line loses its end (and its newline).
            raw = (out / "raw.jsonl").read_bytes()
            assert raw.endswith(b"\n")
            (out / "raw.jsonl").write_bytes(raw[: len(raw) - 25])
    assert sum(code == -signal.SIGKILL for _, _, code in kills) >= KILLS - 1, kills
    assert len({done for _, done, _ in kills}) >= KILLS // 2, f"kills bunched up: {kills}"

    before = len(stable(read_raw(out / "raw.jsonl")))
    final_log = tmp_path / "final.log"
    final = context.Process(target=run_label, args=([*argv, "--resume"], str(final_log)))
    final.start()
    final.join(timeout=120)
    output = final_log.read_text()
    assert final.exitcode == 0, output
    assert f"labeled {N_QUESTIONS} questions x {N_EXPERTS} experts" in output
    assert f"reused: {before}" in output  # every complete line, none twice

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
    assert f"answers table: {out / 'answers.parquet'}" in output

    # Loss-free and without duplicates: every (question, expert) answered exactly once, and
    # each answer record is the uninterrupted run's.
    records = read_raw(out / "raw.jsonl")
    pairs = Counter((r["id"], r["expert"]) for r in records if r["type"] == "answer")
    assert len(pairs) == total and set(pairs.values()) == {1}
    assert all(r["error"] is None for r in records)
    assert stable(records) == stable(read_raw(tmp_path / "reference" / "raw.jsonl"))
    info = json.loads((out / "run.json").read_text())
    assert info["created"] <= info["updated"]

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
