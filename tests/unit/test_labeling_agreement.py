"""Cohen's kappa on hand-computed cases, and the judge agreement report."""

from __future__ import annotations

import pytest

from langchain_herd.labeling.agreement import agreement, agreement_report, cohen_kappa


def test_kappa_textbook_example() -> None:
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B 30/50; p_e = 0.5*0.6 + 0.5*0.4 = 0.5;
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_small_hand_cases() -> None:
    # p_o = 3/4; A: two 1s, two 0s; B: one 1, three 0s; p_e = (2*1 + 2*3)/16 = 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == 0.5
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0  # perfect agreement
    assert cohen_kappa([1, 0], [0, 1]) == -1.0  # perfect disagreement
    # agreement no better than chance: p_o = 0.5, p_e = 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == 0.0
    # p_o = 8/10; A: six 1s; B: four 1s; p_e = (6*4 + 4*6)/100 = 0.48; (0.8-0.48)/0.52
    a = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert cohen_kappa(a, b) == pytest.approx(0.32 / 0.52)


def test_kappa_three_categories() -> None:
    # p_o = 4/6; A: x3 y2 z1; B: x2 y2 z2; p_e = (3*2 + 2*2 + 1*2)/36 = 12/36
    a = ["x", "x", "x", "y", "y", "z"]
    b = ["x", "x", "y", "y", "z", "z"]
    assert cohen_kappa(a, b) == pytest.approx((4 / 6 - 12 / 36) / (1 - 12 / 36))


def test_kappa_undefined_cases() -> None:
    assert cohen_kappa([], []) is None
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None  # p_e = 1
    assert cohen_kappa([0, 0], [1, 1]) == 0.0  # p_e = 0, p_o = 0
    with pytest.raises(ValueError, match="different numbers"):
        cohen_kappa([1], [1, 0])


def test_kappa_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    a = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]
    b = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1]
    assert cohen_kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b))


def test_agreement_counts() -> None:
    result = agreement([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    assert (result.both_correct, result.exact_only, result.judge_only, result.both_wrong) == (
        1,
        1,
        1,
        2,
    )
    assert result.accuracy == pytest.approx(3 / 5)
    # p_o = 3/5; exact 2/5 ones, judge 2/5 ones: p_e = (2*2 + 3*3)/25 = 13/25
    assert result.kappa == pytest.approx((3 / 5 - 13 / 25) / (1 - 13 / 25))
    assert agreement([], []).accuracy is None
    with pytest.raises(ValueError, match="0 or 1"):
        agreement([2], [1])


def test_agreement_report_per_expert() -> None:
    rows = [("x", 1, 1), ("x", 0, 0), ("y", 1, 0), ("y", 0, 0)]
    report = agreement_report(rows, judge="expert:big", unparseable=2, errors=1)
    assert report["judge"] == "expert:big"
    assert report["overall"]["n"] == 4 and report["overall"]["accuracy"] == 0.75
    assert report["per_expert"]["x"]["kappa"] == 1.0
    assert report["per_expert"]["y"]["accuracy"] == 0.5
    assert report["judge_unparseable"] == 2 and report["judge_errors"] == 1
