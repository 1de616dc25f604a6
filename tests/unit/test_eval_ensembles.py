"""Cascades and votes in ``herd eval``, on a small synthetic table of the shared tables' shape
(arbitrary model names, a correctness table, a predictions table and a costs file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from langchain_herd.errors import ConfigError
from langchain_herd.evaluation.cli import eval_main
from langchain_herd.evaluation.data import EvalData, load_eval_data
from langchain_herd.evaluation.ensembles import ENSEMBLES, cascade_pgr, select_ensembles
from langchain_herd.evaluation.run import EvalOptions, evaluate

LETTERS = np.array(list("ABCDEFGHIJ"))
# Odd names on purpose: nothing may depend on the shared tables' model names.
ACCURACY = {"org/Big-70b": 0.85, "tiny v1": 0.45, "helper.A": 0.65, "helper_B": 0.4, "x": 0.3}
COSTS = {"org/Big-70b": 70.0, "tiny v1": 8.0, "helper.A": 4.0, "helper_B": 7.0, "x": 1.0}
STRONG, WEAK = "org/Big-70b", "tiny v1"


def tables(tmp_path: Path, n: int = 400) -> tuple[Path, Path, Path]:
    """Correctness, predictions and costs files. Questions about "algebra" are hard for
    every model, so the text says something about who is right."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 10, size=n)
    hard = rng.random(n) < 0.4
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "prompt": [
                f"{'algebra ring field' if h else 'history king war'} question {i} options A-J"
                for i, h in enumerate(hard)
            ],
            "group": np.where(hard, "stem", "humanities"),
            "answer": LETTERS[gold],
        }
    )
    predictions = frame[["id"]].copy()
    for name, accuracy in ACCURACY.items():
        p = np.where(hard, accuracy - 0.25, accuracy + 0.1)
        right = rng.random(n) < p
        letters = LETTERS[np.where(right, gold, (gold + rng.integers(1, 10, size=n)) % 10)]
        letters = letters.astype(object)
        letters[rng.random(n) < 0.03] = None  # unparseable answers
        predictions[name] = letters
        frame[name] = pd.array(
            [int(a == LETTERS[g]) for a, g in zip(letters, gold, strict=True)], dtype="Int8"
        )
    frame.loc[5, "x"] = pd.NA  # a model without a result on one row (not a herd model)
    correctness = tmp_path / "table.parquet"
    frame.to_parquet(correctness, index=False)
    answers = tmp_path / "predictions.parquet"
    predictions.to_parquet(answers, index=False)
    costs = tmp_path / "models.json"
    costs.write_text(json.dumps({m: {"active_params_b": c} for m, c in COSTS.items()}))
    return correctness, answers, costs


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tables(tmp_path)


def pair_data(files: tuple[Path, Path, Path]) -> EvalData:
    correctness, answers, costs = files
    return load_eval_data(
        correctness, models=[STRONG, WEAK], costs_path=costs, predictions_path=answers
    )


def test_pool_holds_every_model(files: tuple[Path, Path, Path]) -> None:
    data = pair_data(files)
    assert data.pool is not None
    assert data.pool.models[:2] == [STRONG, WEAK]
    assert set(data.pool.models) == set(ACCURACY)
    assert data.pool.correct.shape == (400, 5)
    assert np.isnan(data.pool.correct[5, data.pool.models.index("x")])
    assert data.pool.costs["helper.A"] == 4.0


def test_select_ensembles(files: tuple[Path, Path, Path]) -> None:
    data = pair_data(files)
    names, skipped = select_ensembles(data, None, (0, 1))
    assert names == ["cascade", "cascade-apgr", "cascade-agreement"]
    assert set(skipped) == {"vote-majority", "vote-weighted", "vote-dawid-skene", "vote-learned"}
    names, skipped = select_ensembles(data, ["cascade"], None)
    assert names == [] and "pair" in skipped["cascade"]


def test_cascade_pgr_ties_and_vote_start() -> None:
    # Two tied scores: escalating one of them is worth half of both gains.
    quality, pgr = cascade_pgr(
        np.array([0.5, 0.5, 0.1]), np.array([1.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]), 1 / 3
    )
    assert quality.tolist() == pytest.approx([2 / 3, 2 / 3 + 1 / 6, 1.0, 1.0])
    # The kept answer (a vote) already beats the weak model: PGR starts above 0.
    assert pgr[0] == pytest.approx(0.5)


def test_cascades_on_a_pair(files: tuple[Path, Path, Path]) -> None:
    data = pair_data(files)
    report = evaluate(
        data,
        EvalOptions(
            seeds=[0, 1],
            routers=["best-single", "cascade", "cascade-agreement"],
            pair=(STRONG, WEAK),
        ),
    )
    routers = report["routers"]
    assert list(routers) == ["best-single", "cascade", "cascade-agreement"]
    assert routers["cascade"]["family"] == "cascade"
    for name in ("cascade", "cascade-agreement"):
        for run in routers[name]["per_seed"]:
            helpers = run["details"]["helpers"]
            assert set(helpers) <= {"helper.A", "helper_B", "x"}
            tier_cost = COSTS[WEAK] + sum(COSTS[h] for h in helpers)
            # Every call is paid: the tier always, the strong model when escalated.
            assert run["cost"] == pytest.approx(tier_cost + run["strong_share"] * 70.0)
            assert run["shares"] == {STRONG: run["strong_share"], WEAK: 1.0}
            assert 0.0 <= run["accuracy"] <= 1.0
            assert run["frontier"][0]["cost"] == pytest.approx(tier_cost)
            assert run["frontier"][-1]["strong_share"] == 1.0
            assert all(p["cost_weight"] is None for p in run["frontier"])
            assert set(run["by_label"]) == {"stem", "humanities"}
            assert len(run["pgr_curve"]["pgr"]) == 101
        summary = routers[name]["summary"]
        for key in ("accuracy", "cost", "aiq", "apgr", "cpt50", "apgr_router", "strong_share"):
            assert summary[key]["n"] == 2, key
    # The informative helper is found on training rows.
    assert "helper.A" in routers["cascade"]["per_seed"][0]["details"]["helpers"]
    assert routers["cascade"]["summary"]["apgr"]["mean"] > 0.55


def test_fixed_helpers_and_unknown_helper(files: tuple[Path, Path, Path]) -> None:
    from langchain_herd.evaluation.ensembles import EnsembleOptions

    data = pair_data(files)
    options = EvalOptions(
        seeds=[0],
        routers=["cascade-agreement"],
        pair=(STRONG, WEAK),
        ensembles=EnsembleOptions(helpers=["helper_B"], keep="first"),
    )
    run = evaluate(data, options)["routers"]["cascade-agreement"]["per_seed"][0]
    assert run["details"]["helpers"] == ["helper_B"] and run["details"]["keep"] == "first"
    options.ensembles = EnsembleOptions(helpers=["nope"])
    with pytest.raises(ConfigError, match="--helpers"):
        evaluate(data, options)


def test_votes_on_a_herd(files: tuple[Path, Path, Path]) -> None:
    correctness, answers, costs = files
    data = load_eval_data(correctness, costs_path=costs, max_cost=10.0, predictions_path=answers)
    assert STRONG not in data.models
    votes = ["vote-majority", "vote-weighted", "vote-dawid-skene", "vote-learned"]
    report = evaluate(data, EvalOptions(seeds=[0, 1], routers=votes))
    herd_cost = sum(COSTS[m] for m in data.models)
    for name in votes:
        entry = report["routers"][name]
        assert entry["family"] == "vote"
        for run in entry["per_seed"]:
            assert run["cost"] == pytest.approx(herd_cost)  # every member paid
            assert run["frontier"] == [
                {"cost_weight": None, "cost": run["cost"], "accuracy": run["accuracy"]}
            ]
            assert set(run["shares"].values()) == {1.0}
    # Dawid-Skene learns without gold answers, yet does far better than chance (0.1).
    accuracy = {n: report["routers"][n]["summary"]["accuracy"]["mean"] for n in votes}
    assert accuracy["vote-dawid-skene"] > 0.4
    # Our majority vote and the harness's baseline are one and the same vote.
    assert report["routers"]["vote-majority"]["summary"]["accuracy"]["mean"] == pytest.approx(
        report["majority_vote"]["accuracy"]["mean"]
    )


def test_default_set_and_cli(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    correctness, answers, costs = files
    out = tmp_path / "out"
    code = eval_main(
        [
            str(correctness),
            "--out",
            str(out),
            "--seeds",
            "2",
            "--costs",
            str(costs),
            "--pair",
            STRONG,
            WEAK,
            "--predictions",
            str(answers),
            "--routers",
            "random,cascade-agreement",
            "--max-helpers",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["routers"]) == ["random", "cascade-agreement"]
    assert len(report["routers"]["cascade-agreement"]["per_seed"][0]["details"]["helpers"]) <= 1
    assert "cascade-agreement" in (out / "report.md").read_text()
    assert set(ENSEMBLES) >= {"cascade", "vote-learned"}
