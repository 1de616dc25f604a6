"""Majority and weighted votes: counting, ties and unreadable answers."""

from __future__ import annotations

import doctest

import pytest

from langchain_herd.ensembles import votes
from langchain_herd.ensembles.votes import majority_vote, precedence, weighted_vote


def test_majority_counts_readable_answers_only() -> None:
    result = majority_vote(["B", None, "B", "", "C"])
    assert result.winner == "B"
    assert result.tally == {"B": 2.0, "C": 1.0}
    assert not result.tie
    assert "2 member(s) gave no readable answer" in result.why


def test_majority_tie_goes_to_member_order_by_default() -> None:
    result = majority_vote(["C", "A", "A", "C"])
    assert result.winner == "C" and result.tie
    assert "tie between ['A', 'C']" in result.why


def test_majority_tie_follows_tie_order() -> None:
    # Member 2 is first in precedence and holds "A".
    result = majority_vote(["C", "A", "A", "C"], tie_order=[2, 0, 1, 3])
    assert result.winner == "A" and result.tie


def test_tie_order_skips_members_without_a_tied_answer() -> None:
    # Member 0 gave no answer, so the first tied answer in precedence is member 1's.
    result = majority_vote([None, "D", "B", "C"], tie_order=[0, 1, 2, 3])
    assert result.tally == {"D": 1.0, "B": 1.0, "C": 1.0}
    assert result.winner == "D"
    result = majority_vote([None, "D", "B", "C"], tie_order=[0, 2])
    assert result.winner == "B"


def test_all_missing_gives_no_winner() -> None:
    result = majority_vote([None, "", None])
    assert result.winner is None and result.tally == {} and not result.tie
    assert "no readable answer among 3" in result.why
    assert majority_vote([]).winner is None


def test_weighted_vote_sums_weights() -> None:
    result = weighted_vote(["A", "B", "B", None], [0.9, 0.4, 0.4, 5.0])
    assert result.winner == "A"
    assert result.tally == pytest.approx({"A": 0.9, "B": 0.8})
    assert not result.tie


def test_weighted_exact_tie_uses_order() -> None:
    result = weighted_vote(["A", "B"], [0.5, 0.5], tie_order=[1, 0])
    assert result.winner == "B" and result.tie


def test_negative_weight_counts_against() -> None:
    # Log-odds weights: a worse-than-chance member's answer loses support.
    result = weighted_vote(["A", "B", "A"], [1.0, 0.2, -1.5])
    assert result.winner == "B"


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="2 weights for 3 answers"):
        weighted_vote(["A", "B", "C"], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"member indices 0\.\.1"):
        majority_vote(["A", "B"], tie_order=[2])


def test_precedence() -> None:
    assert precedence(3, None) == [0, 1, 2]
    assert precedence(3, [2, 2, 1]) == [2, 1, 0]


def test_doctests() -> None:
    assert doctest.testmod(votes).failed == 0
