"""Agreement features of a tier, checked against hand-computed values."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from langchain_herd.ensembles import features
from langchain_herd.ensembles.features import letter_agreement, tier_feature_names, tier_features


def test_letter_agreement_by_hand() -> None:
    agreement, missing = letter_agreement([["A", "B", "A"], ["", "C", "C"], [None, None, "D"]])
    assert agreement.shape == (3, 3, 3) and missing.shape == (3, 3)
    assert agreement[0].tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    # A missing answer agrees with nothing, not even another missing one.
    assert agreement[1].tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert agreement[2].tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert missing.tolist() == [[False] * 3, [True, False, False], [True, True, False]]


def test_letter_agreement_rejects_one_dimension() -> None:
    with pytest.raises(ValueError, match="rows, experts"):
        letter_agreement(["A", "B"])


def test_names_by_tier_size() -> None:
    assert tier_feature_names(1) == ["missing_0"]
    assert tier_feature_names(2) == ["agree_0_1", "missing_0", "missing_1"]
    assert tier_feature_names(3) == [
        "agree_0_1",
        "agree_0_2",
        "agree_1_2",
        "missing_0",
        "missing_1",
        "missing_2",
        "main_support",
        "top_support",
        "main_is_top",
        "all_agree",
    ]
    with pytest.raises(ValueError):
        tier_feature_names(0)


def test_three_expert_patterns_by_hand() -> None:
    rows = [
        ["A", "A", "A"],  # all agree
        ["A", "B", "B"],  # helpers agree against the main expert
        ["A", "B", "C"],  # nobody agrees
        ["", "B", "B"],  # main expert missing, helpers agree
    ]
    x = tier_features(*letter_agreement(rows))
    names = tier_feature_names(3)
    assert x.shape == (4, len(names))
    got = [dict(zip(names, row, strict=True)) for row in x.tolist()]
    assert got[0] == {
        **dict.fromkeys(["agree_0_1", "agree_0_2", "agree_1_2"], 1.0),
        **dict.fromkeys(["missing_0", "missing_1", "missing_2"], 0.0),
        "main_support": 1.0,
        "top_support": 1.0,
        "main_is_top": 1.0,
        "all_agree": 1.0,
    }
    assert got[1]["agree_1_2"] == 1.0 and got[1]["agree_0_1"] == 0.0
    assert (got[1]["main_support"], got[1]["top_support"], got[1]["main_is_top"]) == (0, 0.5, 0)
    # Nobody agrees: every answer has support 0, so the main one is (tied) top.
    assert (got[2]["main_support"], got[2]["top_support"], got[2]["main_is_top"]) == (0, 0, 1)
    assert got[3]["missing_0"] == 1.0 and got[3]["main_is_top"] == 0.0
    assert got[3]["top_support"] == 0.5 and got[3]["all_agree"] == 0.0


def test_soft_agreement_and_masking() -> None:
    # An embedding measure: cosine in [0, 1]; entries of a missing expert are ignored.
    agreement = np.array([[[1.0, 0.8], [0.8, 1.0]], [[1.0, 0.9], [0.9, 1.0]]])
    missing = np.array([[False, False], [False, True]])
    x = tier_features(agreement, missing)
    assert x.tolist() == [[0.8, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(n, k, k\)"):
        tier_features(np.zeros((2, 3, 3)), np.zeros((2, 2), dtype=bool))


def test_doctests() -> None:
    assert doctest.testmod(features).failed == 0
