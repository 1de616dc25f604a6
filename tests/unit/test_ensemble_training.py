"""Fitting cascades and learned votes on small synthetic tables where the answer is known."""

from __future__ import annotations

import doctest

import numpy as np
import numpy.typing as npt
import pytest

from langchain_herd.ensembles import training
from langchain_herd.ensembles.features import letter_agreement
from langchain_herd.ensembles.scorers import CascadeModel, LearnedVote
from langchain_herd.ensembles.training import (
    cascade_curve,
    fit_cascade,
    fit_learned_vote,
    folds,
    kept_correct,
)

LETTERS = np.array(list("ABCDEFGHIJ"))


def synthetic(
    n: int, accuracy: dict[str, float], copies: dict[str, str] | None = None, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.str_], list[str]]:
    """Independent models right with the given probability (else a random wrong letter);
    a model in ``copies`` answers exactly as the model it copies."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 10, size=n)
    models = list(accuracy) + list(copies or {})
    answers = np.empty((n, len(models)), dtype="<U1")
    for j, m in enumerate(accuracy):
        right = rng.random(n) < accuracy[m]
        wrong = (gold + rng.integers(1, 10, size=n)) % 10
        answers[:, j] = LETTERS[np.where(right, gold, wrong)]
    for m, source in (copies or {}).items():
        answers[:, models.index(m)] = answers[:, models.index(source)]
    correct = (answers == LETTERS[gold][:, None]).astype(np.float64)
    return correct, answers, models


def test_folds_cover_every_row_once() -> None:
    parts = folds(23, seed=4)
    assert len(parts) == 5
    assert sorted(np.concatenate(parts).tolist()) == list(range(23))
    assert [p.tolist() for p in folds(23, seed=4)] == [p.tolist() for p in parts]
    assert len(folds(3, seed=0)) == 3


def test_kept_correct_by_hand() -> None:
    answers = np.array([["A", "B", "B"], ["A", "B", "C"], ["", "C", "C"], ["", "", ""]])
    correct = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=float)
    assert kept_correct(answers, correct, "first").tolist() == [1, 0, 0, 0]
    # Vote: B wins row 0 (wrong); a 3-way tie goes to the first column (wrong); C right.
    assert kept_correct(answers, correct, "vote").tolist() == [0, 0, 1, 0]


def test_cascade_curve_by_hand() -> None:
    scores = np.array([0.9, 0.1, 0.6, 0.3])
    kept = np.array([0.0, 1.0, 1.0, 0.0])
    strong = np.array([1.0, 1.0, 0.0, 1.0])
    points = cascade_curve(scores, kept, strong, tier_cost=2.0, strong_cost=10.0, n_points=5)
    by_threshold = {round(p["threshold"], 6): p for p in points}
    # Threshold 0.6: only 0.9 escalates -> rows right: 0 (strong), 1, 2 -> 0.75.
    assert by_threshold[0.6]["escalate_share"] == 0.25
    assert by_threshold[0.6]["accuracy"] == 0.75
    assert by_threshold[0.6]["cost"] == pytest.approx(2.0 + 0.25 * 10.0)
    assert by_threshold[1.0]["escalate_share"] == 0.0
    assert points[0]["threshold"] == 0.0 and points[0]["escalate_share"] == 1.0


def test_cascade_chooses_the_informative_helper() -> None:
    # "twin" errs independently of the weak model: its agreement says the weak one is right.
    # "echo" copies the weak model and "noise" is nearly always wrong: they say nothing.
    correct, answers, models = synthetic(
        1500,
        {"weak": 0.5, "strong": 0.9, "twin": 0.7, "noise": 0.05},
        copies={"echo": "weak"},
    )
    costs = {"weak": 1.0, "strong": 10.0, "twin": 1.0, "noise": 0.5, "echo": 0.5}
    model = fit_cascade(
        correct, answers, models, costs, weak="weak", strong="strong", max_helpers=1, seed=1
    )
    assert isinstance(model, CascadeModel)
    assert model.tiers == [["weak", "twin"], ["strong"]]
    assert model.keep in ("first", "vote")
    assert model.costs == {"weak": 1.0, "twin": 1.0, "strong": 10.0}
    # Disagreement with the twin must raise the need to escalate.
    agree, missing = letter_agreement([["A", "A"], ["A", "B"]])
    low, high = model.escalation_scores(0, agree, missing)
    assert high > low
    # The calibration is measured: the default threshold is its most accurate point.
    best = max(p["accuracy"] for p in model.calibration)
    default = [p for p in model.calibration if p["threshold"] == model.default_threshold]
    assert default and default[0]["accuracy"] == best
    assert model.metadata["selection"][1]["helpers"] == ["twin"]


def test_cascade_with_fixed_helpers_text_and_tier_cap() -> None:
    correct, answers, models = synthetic(600, {"w": 0.4, "s": 0.8, "h1": 0.6, "h2": 0.6})
    costs = {"w": 1.0, "s": 10.0, "h1": 2.0, "h2": 2.0}
    text = np.column_stack([correct[:, 0] * 0.3 + 0.35, np.full(600, 0.8)])
    model = fit_cascade(
        correct,
        answers,
        models,
        costs,
        weak="w",
        strong="s",
        helpers=["h2"],
        text_scores=text,
        text_experts=["w", "s"],
        keep="first",
    )
    assert model.tiers == [["w", "h2"], ["s"]] and model.keep == "first"
    assert model.text_experts == ["w", "s"]
    # A cap of 3.5 leaves room for one helper of cost 2.
    capped = fit_cascade(
        correct, answers, models, costs, weak="w", strong="s", max_tier_cost=3.5, keep="vote"
    )
    assert len(capped.tiers[0]) <= 2 and capped.keep == "vote"


def test_cascade_bad_inputs() -> None:
    correct, answers, models = synthetic(50, {"w": 0.5, "s": 0.8})
    costs = {"w": 1.0, "s": 2.0}
    with pytest.raises(ValueError, match="unknown model"):
        fit_cascade(correct, answers, models, costs, weak="w", strong="x")
    with pytest.raises(ValueError, match="must differ"):
        fit_cascade(correct, answers, models, costs, weak="w", strong="w")
    with pytest.raises(ValueError, match="without text_scores"):
        fit_cascade(correct, answers, models, costs, weak="w", strong="s", text_experts=["w"])
    with pytest.raises(ValueError, match="no cost"):
        fit_cascade(correct, answers, models, {"w": 1.0}, weak="w", strong="s")


def test_learned_vote_beats_a_majority_that_errs_together() -> None:
    # Three copies of one mediocre model outvote the expert; a learned vote trusts the expert.
    correct, answers, models = synthetic(
        2000, {"expert": 0.8, "crowd": 0.45}, copies={"crowd2": "crowd", "crowd3": "crowd"}
    )
    train, test = np.arange(1500), np.arange(1500, 2000)
    vote = fit_learned_vote(correct[train], answers[train], models, members=models, seed=0)
    assert isinstance(vote, LearnedVote)
    assert vote.members[0] == "expert"  # best on train first: the precedence order
    cols = [models.index(m) for m in vote.members]
    hits = []
    for i in test:
        winner = vote.pick([a or None for a in answers[i, cols]], {}).winner
        hits.append(correct[i, cols][list(answers[i, cols]).index(winner)] if winner else 0.0)
    learned = float(np.mean(hits))
    majority = float(
        kept_correct(answers[test][:, [1, 2, 3, 0]], correct[test][:, [1, 2, 3, 0]], "vote").mean()
    )
    assert learned >= correct[test, 0].mean() - 0.01
    assert learned > majority + 0.1
    assert set(vote.metadata["oof_accuracy"]) == set(training.C_GRID)


def test_learned_vote_bad_member() -> None:
    correct, answers, models = synthetic(20, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="unknown member"):
        fit_learned_vote(correct, answers, models, members=["a", "zz"])


def test_doctests() -> None:
    assert doctest.testmod(training).failed == 0


def test_missing_results_count_as_no_answer() -> None:
    correct, answers, models = synthetic(300, {"w": 0.5, "s": 0.9, "h": 0.7})
    correct[:10, 2] = np.nan
    raw = answers.astype(object)
    raw[10:20, 0] = None
    model = fit_cascade(
        correct, raw, models, {"w": 1.0, "s": 5.0, "h": 1.0}, weak="w", strong="s", helpers=["h"]
    )
    assert model.tiers == [["w", "h"], ["s"]]
    vote = fit_learned_vote(correct, raw, models, members=["w", "h"])
    assert vote.pick([None, "C"], {}).winner == "C"


def test_fixed_helpers_are_checked() -> None:
    correct, answers, models = synthetic(60, {"w": 0.5, "s": 0.8, "h": 0.6})
    costs = {"w": 1.0, "s": 2.0}
    with pytest.raises(ValueError, match="no cost for 'h'"):
        fit_cascade(correct, answers, models, costs, weak="w", strong="s", helpers=["h"])
    with pytest.raises(ValueError, match="repeat a model"):
        fit_cascade(
            correct, answers, models, {**costs, "h": 1.0}, weak="w", strong="s", helpers=["h", "h"]
        )
