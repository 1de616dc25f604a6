"""Cost and threshold policies, and calibrating a margin or threshold on hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from langchain_herd.calibration import calibrate_scores, sweep, write_calibration
from langchain_herd.config import PolicyConfig, parse_config
from langchain_herd.errors import ConfigError
from langchain_herd.policies import CostPolicy, MarginPolicy, ThresholdPolicy, policy_from_config


def test_cost_policy_trades_quality_for_price() -> None:
    scores = {"small": 0.6, "big": 0.8}
    costs = {"small": 1.0, "big": 10.0}
    assert CostPolicy(costs, 0.0).rank(scores, "small") == ["big", "small"]
    assert CostPolicy(costs, 0.05).rank(scores, "small") == ["small", "big"]


def test_threshold_policy_keeps_strong_as_last_resort() -> None:
    policy = ThresholdPolicy("big", 0.7)
    assert policy.rank({"a": 0.2, "b": 0.4, "big": 0.69}, "a") == ["b", "a", "big"]
    assert policy.rank({"a": 0.2, "b": 0.4, "big": 0.71}, "a") == ["big", "b", "a"]


def test_policy_config_uses_calibration_only_when_unset() -> None:
    calibration = {"policy": "threshold", "value": 0.33}
    unset = PolicyConfig(name="threshold", strong_expert="big")
    policy = policy_from_config(unset, calibration=calibration)
    assert isinstance(policy, ThresholdPolicy) and policy.threshold == 0.33
    explicit = PolicyConfig(name="threshold", strong_expert="big", threshold=0.9)
    assert policy_from_config(explicit, calibration=calibration).threshold == 0.9  # type: ignore[attr-defined]
    margin = policy_from_config(PolicyConfig(name="margin"), calibration=calibration)
    assert isinstance(margin, MarginPolicy) and margin.margin == 0.1, "other policy's value"
    cost = policy_from_config(PolicyConfig(name="cost", cost_weight=0.5), costs={"a": 2.0})
    assert isinstance(cost, CostPolicy) and cost.costs == {"a": 2.0}


def test_threshold_policy_needs_known_strong_expert() -> None:
    experts = [
        {"name": "a", "url": "http://127.0.0.1:1"},
        {"name": "b", "url": "http://127.0.0.1:2"},
    ]
    with pytest.raises(ConfigError, match="needs strong_expert"):
        parse_config({"experts": experts, "router": {"policy": {"name": "threshold"}}})
    with pytest.raises(ConfigError, match="strong_expert 'zz' is not an expert"):
        parse_config(
            {"experts": experts, "router": {"policy": {"name": "threshold", "strong_expert": "zz"}}}
        )


# Four questions, experts [weak, strong]. The strong expert's score ranks the questions
# 0.9 > 0.7 > 0.4 > 0.1; it is right on all four, the weak one only on the last two.
SCORES = np.array([[0.5, 0.9], [0.5, 0.7], [0.5, 0.4], [0.5, 0.1]])
CORRECT = np.array([[0, 1], [0, 1], [1, 1], [1, 1]], dtype=float)


def test_threshold_sweep_by_hand() -> None:
    values = np.array([0.95, 0.8, 0.5, 0.0])
    accuracy, share = sweep("threshold", SCORES, CORRECT, 1, values)
    assert share.tolist() == [0.0, 0.25, 0.5, 1.0]
    assert accuracy.tolist() == [0.5, 0.75, 1.0, 1.0]


def test_calibrate_for_accuracy_prefers_fewer_strong_calls() -> None:
    result = calibrate_scores("threshold", SCORES, CORRECT, ["weak", "strong"], "strong")
    assert result.accuracy == 1.0
    assert result.share == 0.5, "full accuracy already at half the strong calls"
    assert 0.4 <= result.value < 0.7


def test_calibrate_for_target_share() -> None:
    result = calibrate_scores(
        "threshold",
        SCORES,
        CORRECT,
        ["weak", "strong"],
        "strong",
        objective="share",
        target_share=0.25,
    )
    assert result.share == 0.25 and result.accuracy == 0.75
    assert 0.7 <= result.value < 0.9
    with pytest.raises(ConfigError, match="target_share"):
        calibrate_scores(
            "threshold", SCORES, CORRECT, ["weak", "strong"], "strong", objective="share"
        )


def test_margin_sweep_and_unknown_cells() -> None:
    scores = np.array([[0.5, 0.9], [0.5, 0.55]])
    correct = np.array([[0, 1], [np.nan, 0]])  # unknown counts as wrong
    accuracy, share = sweep("margin", scores, correct, 0, np.array([0.0, 0.1, 0.5]))
    assert share.tolist() == [1.0, 0.5, 0.0]
    assert accuracy.tolist() == [0.5, 0.5, 0.0]


def test_calibration_is_written_into_the_artifact(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "x", "labels": ["a"]}))
    result = calibrate_scores("threshold", SCORES, CORRECT, ["weak", "strong"], "strong")
    write_calibration(tmp_path, result)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["kind"] == "x"
    assert stored["calibration"]["policy"] == "threshold"
    assert stored["calibration"]["value"] == result.value
