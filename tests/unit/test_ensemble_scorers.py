"""Logistic scorer, cascade model and learned vote: fit, predict, JSON round trips, bad files."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

from langchain_herd.ensembles import scorers
from langchain_herd.ensembles.features import letter_agreement
from langchain_herd.ensembles.scorers import (
    CascadeModel,
    LearnedVote,
    LogisticScorer,
    cascade_feature_names,
    load_ensemble_artifact,
    vote_feature_names,
    vote_features,
)
from langchain_herd.errors import ArtifactError, ConfigError


def test_predict_by_hand() -> None:
    scorer = LogisticScorer(["a", "b"], [1.0, -2.0], 0.5, [1.0, 0.0], [2.0, 1.0])
    x = np.array([[3.0, 0.5], [1.0, 0.0]])
    z = np.array([1.0 * 1.0 - 2.0 * 0.5 + 0.5, 0.5])
    assert scorer.predict(x) == pytest.approx(1 / (1 + np.exp(-z)))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        scorer.predict(np.zeros((1, 3)))


def test_fit_matches_sklearn_and_round_trips() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, 1.0]
    y = (x[:, 0] + 0.2 * x[:, 1] + rng.normal(size=300) > 0.4).astype(float)
    scorer = LogisticScorer.fit(x, y, ["a", "b", "c"], c=0.5)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    model = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(z, y)
    reference = model.predict_proba(z)[:, 1]
    assert scorer.predict(x) == pytest.approx(reference, abs=1e-6)
    again = LogisticScorer.from_dict(json.loads(json.dumps(scorer.to_dict())))
    assert again == scorer


def test_fit_with_one_class_and_constant_feature() -> None:
    x = np.column_stack([np.ones(10), np.arange(10.0)])
    scorer = LogisticScorer.fit(x, np.zeros(10), ["const", "i"])
    assert scorer.scale[0] == 1.0
    assert np.all(scorer.predict(x) < 0.1)


def test_soft_labels_equal_weighted_duplicates() -> None:
    # A soft label p is the row twice: as 1 with weight p, as 0 with weight 1 - p.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2))
    soft = rng.uniform(size=50)
    direct = LogisticScorer.fit(x, soft, ["a", "b"], c=2.0)
    doubled = LogisticScorer.fit(
        np.vstack([x, x]),
        np.concatenate([np.ones(50), np.zeros(50)]),
        ["a", "b"],
        c=2.0,
        sample_weight=np.concatenate([soft, 1 - soft]),
    )
    assert direct.predict(x) == pytest.approx(doubled.predict(x), abs=1e-8)
    # Weakly regularised, the fit tracks the soft labels of two groups.
    groups = np.repeat(np.array([[0.0], [1.0]]), 10, axis=0)
    target = np.repeat([0.2, 0.9], 10)
    scorer = LogisticScorer.fit(groups, target, ["g"], c=1e6)
    assert scorer.predict(np.array([[0.0], [1.0]])) == pytest.approx([0.2, 0.9], abs=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LogisticScorer.fit(groups, target + 1, ["g"])


def test_bad_scorer_dicts_raise() -> None:
    with pytest.raises(ArtifactError, match="missing or malformed"):
        LogisticScorer.from_dict({"names": ["a"], "coef": [1.0]})
    with pytest.raises(ArtifactError, match="1 names but 2 weights"):
        LogisticScorer.from_dict(
            {"names": ["a"], "coef": [1, 2], "intercept": 0, "mean": [0], "scale": [1]}
        )
    with pytest.raises(ArtifactError, match="finite"):
        LogisticScorer(["a"], [float("nan")], 0.0, [0.0], [1.0])
    with pytest.raises(ArtifactError, match="scale"):
        LogisticScorer(["a"], [1.0], 0.0, [0.0], [0.0])


def _cascade(text: list[str] | None = None) -> CascadeModel:
    text = text or []
    names = cascade_feature_names(3, text)
    coef = [0.0] * len(names)
    coef[names.index("main_support")] = -3.0
    if text:
        coef[names.index("text:weak")] = -1.0
    scorer = LogisticScorer(names, coef, 0.0, [0.5] * len(names), [1.0] * len(names))
    points = [
        {"threshold": 0.2, "escalate_share": 0.6, "accuracy": 0.62, "cost": 50.0},
        {"threshold": 0.5, "escalate_share": 0.3, "accuracy": 0.60, "cost": 30.0},
        {"threshold": 0.8, "escalate_share": 0.1, "accuracy": 0.50, "cost": 15.0},
    ]
    return CascadeModel(
        [["weak", "h1", "h2"], ["strong"]],
        "vote",
        text,
        [scorer],
        {"weak": 8.0, "h1": 3.0, "h2": 1.0, "strong": 70.0},
        points,
        0.5,
        {"note": "test"},
    )


def test_cascade_scores_agreement() -> None:
    model = _cascade()
    agree, missing = letter_agreement([["A", "A", "A"], ["A", "B", "C"]])
    batch = model.escalation_scores(0, agree, missing)
    one = [model.escalation_score(0, agree[i], missing[i], {}) for i in range(2)]
    assert batch == pytest.approx(one)
    # main_support 1 -> z = -3 * (1 - 0.5); 0 -> +1.5.
    assert batch == pytest.approx(1 / (1 + np.exp([1.5, -1.5])))
    with pytest.raises(ValueError, match="tier 1 has no escalation score"):
        model.escalation_scores(1, agree, missing)


def test_cascade_text_scores_missing_read_as_mean() -> None:
    model = _cascade(["weak", "strong"])
    agree, missing = letter_agreement([["A", "B", "C"]])
    neutral = model.escalation_score(0, agree[0], missing[0], {})
    at_mean = model.escalation_score(0, agree[0], missing[0], {"weak": 0.5, "strong": 0.5})
    confident = model.escalation_score(0, agree[0], missing[0], {"weak": 0.9})
    assert neutral == pytest.approx(at_mean)
    assert confident < neutral


def test_cascade_kept_answer() -> None:
    model = _cascade()
    assert model.kept_answer(["A", "B", "B"]).winner == "B"
    assert model.kept_answer(["A", "B", "C"]).winner == "A"
    model.keep = "first"
    assert model.kept_answer(["A", "B", "B"]).winner == "A"
    assert model.kept_answer([None, "B", "B"]).winner is None


def test_threshold_for() -> None:
    model = _cascade()
    assert model.threshold_for() == 0.5
    assert model.threshold_for(threshold=0.3) == 0.3
    assert model.threshold_for(escalate_share=0.35) == 0.5
    assert model.threshold_for(escalate_share=0.05) == 0.8  # nothing within: least escalation
    assert model.threshold_for(budget=40.0) == 0.5
    assert model.threshold_for(budget=100.0) == 0.2
    with pytest.raises(ConfigError, match="below the cascade's cheapest"):
        model.threshold_for(budget=10.0)
    with pytest.raises(ConfigError, match="at most one"):
        model.threshold_for(threshold=0.1, budget=20.0)


def test_cascade_save_load(tmp_path: Path) -> None:
    model = _cascade(["weak"])
    path = model.save(tmp_path / "sub" / "cascade.json")
    loaded = CascadeModel.load(path)
    assert loaded == model
    assert isinstance(load_ensemble_artifact(path), CascadeModel)
    assert json.loads(path.read_text())["kind"] == "cascade"


def test_cascade_bad_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such ensemble artifact"):
        CascadeModel.load(tmp_path / "absent.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_ensemble_artifact(tmp_path / "junk.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON object"):
        load_ensemble_artifact(tmp_path / "list.json")
    with pytest.raises(ArtifactError, match="is a folder"):
        load_ensemble_artifact(tmp_path)
    data = _cascade().to_dict()
    (tmp_path / "other.json").write_text(json.dumps({**data, "kind": "tfidf"}))
    with pytest.raises(ArtifactError, match="not an ensemble artifact"):
        load_ensemble_artifact(tmp_path / "other.json")
    (tmp_path / "future.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ArtifactError, match="upgrade"):
        load_ensemble_artifact(tmp_path / "future.json")
    broken = {k: v for k, v in data.items() if k != "tiers"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ArtifactError, match="missing or malformed field"):
        CascadeModel.load(tmp_path / "broken.json")
    two_helpers_scorer = {**data, "tiers": [["weak", "h1"], ["strong"]]}
    (tmp_path / "mismatch.json").write_text(json.dumps(two_helpers_scorer))
    with pytest.raises(ArtifactError, match="the scorer reads"):
        CascadeModel.load(tmp_path / "mismatch.json")
    (tmp_path / "vote.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="expected a learned-vote artifact"):
        LearnedVote.load(tmp_path / "vote.json")


def test_vote_features_by_hand() -> None:
    candidates, x = vote_features(
        ["A", "B", "A", None], ["m1", "m2", "m3", "m4"], ["m1", "m2"], {"m1": 0.7, "m2": 0.4}
    )
    assert candidates == ["A", "B"]
    assert vote_feature_names(["m1", "m2", "m3", "m4"], ["m1", "m2"]) == [
        "gave:m1",
        "gave:m2",
        "gave:m3",
        "gave:m4",
        "vote_share",
        "is_plurality",
        "text:m1",
        "text:m2",
    ]
    assert x.tolist() == [
        [1, 0, 1, 0, 2 / 3, 1, 0.7, 0.0],
        [0, 1, 0, 0, 1 / 3, 0, 0.0, 0.4],
    ]
    assert vote_features([None, ""], ["a", "b"])[0] == []


def test_learned_vote_pick_and_round_trip(tmp_path: Path) -> None:
    members = ["big", "small1", "small2"]
    names = vote_feature_names(members, [])
    # "big" counts for 3, each small model for 1: big beats two small ones that agree.
    scorer = LogisticScorer(names, [3.0, 1.0, 1.0, 0.0, 0.0], -2.0, [0.0] * 5, [1.0] * 5)
    vote = LearnedVote(members, scorer, [], {"note": "x"})
    result = vote.pick(["A", "B", "B"], {})
    assert result.winner == "A" and not result.tie
    assert result.tally["A"] > result.tally["B"]
    tied = vote.pick([None, "B", "C"], {}, tie_order=[0, 2, 1])
    assert tied.tie and tied.winner == "C"
    assert vote.pick([None, None, ""], {}).winner is None
    path = vote.save(tmp_path / "vote.json")
    loaded = load_ensemble_artifact(path)
    assert isinstance(loaded, LearnedVote) and loaded == vote
    with pytest.raises(ArtifactError, match="learned vote: the scorer reads"):
        LearnedVote(["big"], scorer)


def test_doctests() -> None:
    assert doctest.testmod(scorers).failed == 0


def test_package_exports() -> None:
    import langchain_herd.ensembles as package

    assert sorted(package.__all__) == [
        "CascadeModel",
        "LearnedVote",
        "LogisticScorer",
        "VoteResult",
        "letter_agreement",
        "load_ensemble_artifact",
        "majority_vote",
        "tier_feature_names",
        "tier_features",
        "weighted_vote",
    ]
    assert all(hasattr(package, name) for name in package.__all__)
