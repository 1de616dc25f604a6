"""``herd compare-experts``: every contender scored on the same held-out questions.

Real PEFT adapters (random LoRA weights) on the tiny model, a real linear merge of them, the
bundled MMLU-group router over the four subject experts, and the cloze scorer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from langchain_herd.choice_questions import GROUPS, load_questions
from langchain_herd.choice_scoring import score_questions
from langchain_herd.cli import main
from langchain_herd.merging import MergeRequest
from langchain_herd.merging.adapters import merge_adapters
from langchain_herd.server import load_backend
from langchain_herd.swarm import SwarmSettings, run_swarm
from tests.integration.test_lora_adapters import make_adapter

PER_GROUP = 3
SET = f"skills@{PER_GROUP}"  # the test split, at most 3 questions per group


@pytest.fixture(scope="module")
def herd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A herd config: the tiny model serving four subject adapters, routed by subject."""
    root = tmp_path_factory.mktemp("lora-herd")
    for seed, group in enumerate(GROUPS):
        make_adapter(root / "adapters" / group, seed + 1)
    adapters = ", ".join(f"{g}: adapters/{g}" for g in GROUPS)
    experts = "\n".join(
        f'  - {{name: {g}-expert, url: "http://127.0.0.1:8399", protocol: tgi, adapter_id: {g}, '
        f"routes: [{g}]}}"
        for g in GROUPS
    )
    (root / "herd.yaml").write_text(
        f"""name: lora
local_servers:
  - {{name: base, model: tiny, port: 8399, lora_adapters: {{{adapters}}}}}
experts:
{experts}
router:
  classifier: {{path: "bundled:mmlu-group-tfidf"}}
"""
    )
    merge_adapters(
        MergeRequest(
            "linear",
            tuple(root / "adapters" / g for g in GROUPS[:2]),
            root / "merged",
            base="tiny",
        )
    )
    questions = load_questions("skills", "dev", per_group=2)
    settings = SwarmSettings(swarm_size=4, max_steps=1, allow_small=True)
    run_swarm(root / "herd.yaml", questions, root / "swarm", settings, progress=False)
    return root


def test_every_contender_is_scored_and_derived_rows_follow_their_picks(
    herd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    argv = ["compare-experts", str(herd / "herd.yaml"), "--out", str(out)]
    argv += ["--questions", f"skills@{PER_GROUP}", "--bootstrap", "200"]
    argv += ["--merge", f"linear={herd / 'merged'}", "--swarm", str(herd / "swarm")]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["question_sets"][SET]["contenders"]
    assert list(rows) == [
        "base", *GROUPS, "merge:linear", "swarm", "router", "oracle:group", "oracle:best-adapter"
    ]  # fmt: skip
    assert report["question_sets"][SET]["questions"] == 4 * PER_GROUP
    for row in rows.values():
        low, high = row["accuracy_ci95"]
        assert low <= row["accuracy"] <= high
        low, high = row["gold_loglik_ci95"]
        assert low <= row["gold_loglik"] <= high
    # The base row is the tiny model scored with no adapter, question by question.
    questions = load_questions("skills", "test", per_group=PER_GROUP)
    backend = load_backend("tiny")
    plain = score_questions(backend.model, backend.tokenizer, questions)
    assert rows["base"]["accuracy"] == pytest.approx(plain.accuracy)
    assert rows["base"]["gold_loglik"] == pytest.approx(plain.mean_gold_loglik, rel=1e-4)
    # Random adapters really change the scores.
    assert len({round(rows[g]["gold_loglik"], 3) for g in ("base", *GROUPS)}) == 5
    # The router's and oracles' rows take, per question, the chosen adapter's result.
    cache = out / "scores" / f"skills_{PER_GROUP}"
    per_adapter = {g: json.loads((cache / f"{g}.json").read_text()) for g in GROUPS}
    oracle = np.mean([per_adapter[q.group]["correct"][i] for i, q in enumerate(questions)])
    assert rows["oracle:group"]["accuracy"] == pytest.approx(oracle)
    best = np.mean([max(per_adapter[g]["correct"][i] for g in GROUPS) for i in range(12)])
    assert rows["oracle:best-adapter"]["accuracy"] == pytest.approx(best)
    assert rows["oracle:best-adapter"]["accuracy"] >= max(rows[g]["accuracy"] for g in GROUPS)
    shares = report["question_sets"][SET]["router_share_per_adapter"]
    assert sum(shares.values()) == pytest.approx(1.0) and set(shares) <= set(GROUPS)
    markdown = (out / "report.md").read_text()
    assert "| router | router |" in markdown and "herd compare-experts" in markdown
    for plot in ("accuracy.png", "swarm_utility.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"

    # A rerun scores nothing again: every contender's results come from the cache.
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("cached") == 3 + len(GROUPS)


def test_a_config_without_adapters_is_refused_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "herd.yaml").write_text(
        """name: plain
local_servers: [{name: base, model: tiny, port: 8398}]
experts: [{name: a, url: "http://127.0.0.1:8398", protocol: tgi}]
"""
    )
    assert main(["compare-experts", str(tmp_path / "herd.yaml"), "--out", str(tmp_path)]) == 2
    assert "lora_adapters" in capsys.readouterr().err
    assert main(["compare-experts", "x.yaml", "--out", str(tmp_path), "--merge", "nope"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
