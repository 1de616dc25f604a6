"""Votes over several experts' extracted answers: majority and weighted.

An answer of ``None`` or ``""`` means the expert failed or nothing could be read from its
output: it never wins and is never counted. Ties are broken by a precedence order of the
members (e.g. the most accurate on training rows first), never by chance, so the same
answers always give the same winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["VoteResult", "decide", "majority_vote", "precedence", "weighted_vote"]


@dataclass(frozen=True)
class VoteResult:
    """The outcome of one vote.

    Example:
        >>> result = majority_vote(["B", "C", "B", None])
        >>> result.winner, result.tally, result.tie
        ('B', {'B': 2.0, 'C': 1.0}, False)
    """

    winner: str | None
    """The winning extracted answer; None when no voter gave a readable answer."""
    tally: dict[str, float]
    """Answer -> votes (or summed weight, or learned probability)."""
    tie: bool
    """Whether the top was tied and broken by the precedence order."""
    why: str
    """One sentence for the decision's verdict."""


def majority_vote(
    answers: Sequence[str | None], tie_order: Sequence[int] | None = None
) -> VoteResult:
    """One vote per readable answer; the most votes win.

    Args:
        answers: one extracted answer per member (None or "" = no answer).
        tie_order: member indices in precedence order; among tied answers, the one of the
            earliest member in this order wins. Default: member order (unlisted members
            follow the listed ones).

    Example:
        >>> majority_vote(["A", "B"], tie_order=[1, 0]).winner
        'B'
    """
    return weighted_vote(answers, [1.0] * len(answers), tie_order, _kind="votes")


def weighted_vote(
    answers: Sequence[str | None],
    weights: Sequence[float],
    tie_order: Sequence[int] | None = None,
    *,
    _kind: str = "weight",
) -> VoteResult:
    """Each readable answer adds its member's weight; the largest total wins.

    Args:
        answers: one extracted answer per member (None or "" = no answer).
        weights: one weight per member (e.g. its training accuracy, or its log-odds).
        tie_order: as in :func:`majority_vote`.

    Raises:
        ValueError: ``weights`` or ``tie_order`` do not fit ``answers``.

    Example:
        >>> weighted_vote(["A", "B", "B"], [0.9, 0.4, 0.4]).winner
        'A'
    """
    if len(weights) != len(answers):
        raise ValueError(f"{len(weights)} weights for {len(answers)} answers")
    order = precedence(len(answers), tie_order)
    tally: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer:
            tally[answer] = tally.get(answer, 0.0) + float(weight)
    return decide(answers, tally, order, kind=_kind)


def decide(
    answers: Sequence[str | None],
    tally: dict[str, float],
    order: Sequence[int],
    *,
    kind: str,
) -> VoteResult:
    """The winner of a tally, ties broken by the first member in ``order`` holding one of
    the tied answers (shared by the majority, weighted and learned votes)."""
    if not tally:
        return VoteResult(None, {}, False, f"no readable answer among {len(answers)} member(s)")
    top = max(tally.values())
    # Exact float ties are what a tie is; weights that merely come close decide.
    tied = {answer for answer, value in tally.items() if value == top}
    winner = next(str(answers[j]) for j in order if answers[j] in tied)
    readable = sum(1 for a in answers if a)
    if len(tied) > 1:
        why = (
            f"tie between {sorted(tied)} at {top:g} {kind}; {winner!r} wins as the answer of "
            f"member {next(j for j in order if answers[j] == winner)} (first in precedence)"
        )
    else:
        why = f"{winner!r} wins with {top:g} {kind} of {sum(tally.values()):g}"
    if readable < len(answers):
        why += f" ({len(answers) - readable} member(s) gave no readable answer)"
    return VoteResult(winner, dict(tally), len(tied) > 1, why)


def precedence(n: int, tie_order: Sequence[int] | None) -> list[int]:
    """Every member index once, ``tie_order``'s first.

    Example:
        >>> precedence(3, [2])
        [2, 0, 1]
    """
    if tie_order is None:
        return list(range(n))
    order = list(dict.fromkeys(int(j) for j in tie_order))
    if any(j < 0 or j >= n for j in order):
        raise ValueError(f"tie_order holds member indices 0..{n - 1}, got {list(tie_order)}")
    # Members left out of the order come after the listed ones, in member order.
    return order + [j for j in range(n) if j not in order]
