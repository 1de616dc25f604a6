"""``herd demo --replay`` as a user runs it: a real subprocess, the real replay server, the
herd's real HTTP path; every answer checked against the recorded one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.ensembles.features import letter_agreement
from langchain_herd.ensembles.scorers import CascadeModel, LearnedVote
from langchain_herd.replay import ReplayTable
from langchain_herd.replay_demo import REPLAY_HERD, STRONG_MODEL

ROOT = Path(__file__).resolve().parents[2]


def test_replay_demo_routes_votes_and_cascades_recorded_answers(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    workdir = tmp_path / "work"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "langchain_herd.cli", "demo", "--replay", "-n", "20"),
            *("--max-train-rows", "800", "--out", str(out), "--workdir", str(workdir)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLAY of recorded answers" in result.stdout
    assert "no model ran" in result.stdout

    data = json.loads(out.read_text())
    summary = {row["strategy"]: row for row in data["summary"]["strategies"]}
    assert {"best-small", "strong", "oracle", "routed", "routed-budget", "majority"} <= set(summary)
    assert {"learned-vote", "cascade"} <= set(summary), data["summary"]["notes"]
    assert all(row["errors"] == 0 for row in summary.values())
    assert summary["majority"]["calls_per_query"] == 5.0
    assert summary["strong"]["avg_cost"] == 70.6

    table = ReplayTable.load()
    row_of = {table.ids[r]: r for r in table.unique_rows}
    costs = {m: table.cost(m) for m in REPLAY_HERD}
    assert len(data["rows"]) == 20
    for question in data["rows"]:
        r = row_of[question["id"]]
        assert question["gold"] == table.answers[r]
        for strategy, answer in question["answers"].items():
            # What came back over HTTP is the recorded letter of the expert whose answer was
            # kept, and every expert called was paid for.
            by = answer["answered_by"]
            assert by in REPLAY_HERD, (strategy, answer)
            assert answer["letter"] == table.letter(r, by), (strategy, question["id"])
            assert answer["cost"] == sum(costs[e] for e in answer["called"])
        assert question["answers"]["routed"]["called"] == [
            question["answers"]["routed"]["answered_by"]
        ]
        assert len(question["answers"]["majority"]["called"]) == 5
        cascade = question["answers"]["cascade"]["called"]
        assert STRONG_MODEL not in cascade[:-1]  # the strong model only ever comes last

    # The trained router, scorers and herd configs stay in --workdir.
    assert {"routed.yaml", "cascade.yaml", "cascade.json", "learned-vote.json"} <= {
        p.name for p in workdir.iterdir()
    }
    # What the herd did over HTTP is what the trained scorers decide on the same inputs.
    router = load_classifier(workdir / "router")
    vote = LearnedVote.load(workdir / "learned-vote.json")
    cascade = CascadeModel.load(workdir / "cascade.json")
    threshold = cascade.threshold_for(budget=data["summary"]["budget"])
    for question in data["rows"]:
        r = row_of[question["id"]]
        text = dict(zip(REPLAY_HERD, router.predict_proba([table.prompts[r]])[0], strict=True))
        picked = vote.pick([table.letter(r, m) for m in vote.members], text).winner
        assert question["answers"]["learned-vote"]["letter"] == picked, question["id"]
        tier = np.asarray([[table.letter(r, m) or "" for m in cascade.tiers[0]]])
        agreement, missing = letter_agreement(tier)
        score = cascade.escalation_score(0, agreement[0], missing[0], text)
        escalated = STRONG_MODEL in question["answers"]["cascade"]["called"]
        assert escalated == (score > threshold), question["id"]
