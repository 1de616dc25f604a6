"""How far an LLM judge agrees with exact-match scoring: raw agreement and Cohen's kappa.

Where gold letters exist, exact match is the ground truth the judge can be checked
against before it is trusted on open-ended questions. Raw agreement flatters a judge
when most answers are wrong (a judge that says "wrong" to everything agrees often);
Cohen's kappa discounts the agreement two raters would reach by chance.

Example:
    >>> cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0])
    0.5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Agreement", "agreement", "agreement_report", "cohen_kappa"]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels over the same items (any categories).

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e``
    the agreement expected from each rater's label frequencies. Computed on integer counts,
    so exact values (0.4, -1.0) come out exact.

    Args:
        a: the first rater's labels.
        b: the second rater's labels, same length and order.

    Returns:
        Kappa in [-1, 1], or ``None`` when it is undefined: no items, or both raters gave
        every item the same single label (``p_e = 1``).

    Raises:
        ValueError: the sequences differ in length.

    Example:
        >>> cohen_kappa([1, 0], [0, 1])
        -1.0
    """
    if len(a) != len(b):
        raise ValueError(f"raters labeled different numbers of items: {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    agree = sum(1 for x, y in zip(a, b, strict=True) if x == y)
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[label] * count_b[label] for label in count_a)
    # p_o = agree / n, p_e = chance / n**2; multiplied through by n**2.
    denominator = n * n - chance
    if denominator == 0:
        return None
    return (agree * n - chance) / denominator


@dataclass(frozen=True)
class Agreement:
    """A judge's agreement with exact match on 0/1 labels.

    Example:
        >>> agreement([1, 0, 0], [1, 0, 1]).accuracy
        0.6666666666666666
    """

    n: int
    """Items both labeled."""
    accuracy: float | None
    """Share of items where they agree (None with no items)."""
    kappa: float | None
    """Cohen's kappa (None where undefined)."""
    both_correct: int
    """Exact match 1, judge 1."""
    exact_only: int
    """Exact match 1, judge 0 (the judge is stricter)."""
    judge_only: int
    """Exact match 0, judge 1 (the judge is more lenient)."""
    both_wrong: int
    """Exact match 0, judge 0."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def agreement(exact: Sequence[int], judge: Sequence[int]) -> Agreement:
    """Agreement of judge labels with exact-match labels (both 0/1, same order).

    Raises:
        ValueError: the sequences differ in length or hold values other than 0 and 1.
    """
    if len(exact) != len(judge):
        raise ValueError(f"{len(exact)} exact-match labels but {len(judge)} judge labels")
    if any(v not in (0, 1) for v in (*exact, *judge)):
        raise ValueError("labels must be 0 or 1")
    pairs = Counter(zip(exact, judge, strict=True))
    n = len(exact)
    return Agreement(
        n=n,
        accuracy=(pairs[(1, 1)] + pairs[(0, 0)]) / n if n else None,
        kappa=cohen_kappa(list(exact), list(judge)),
        both_correct=pairs[(1, 1)],
        exact_only=pairs[(1, 0)],
        judge_only=pairs[(0, 1)],
        both_wrong=pairs[(0, 0)],
    )


def agreement_report(
    labels: Iterable[tuple[str, int, int]],
    *,
    judge: str | None = None,
    unparseable: int = 0,
    errors: int = 0,
) -> dict[str, Any]:
    """The ``judge_report.json`` content: agreement overall and per expert.

    Args:
        labels: ``(expert, exact-match label, judge label)`` for every answer both scored.
        judge: the judge's identity, as recorded in ``run.json``.
        unparseable: judge questions that ended without a readable verdict (left out).
        errors: judge questions whose call failed (left out).
    """
    rows = list(labels)
    experts = list(dict.fromkeys(expert for expert, _, _ in rows))
    per_expert = {
        name: agreement(
            [e for x, e, _ in rows if x == name], [j for x, _, j in rows if x == name]
        ).to_json()
        for name in experts
    }
    overall = agreement([e for _, e, _ in rows], [j for _, _, j in rows])
    return {
        "judge": judge,
        "reference": "exact match of the extracted option letter with the gold letter",
        "overall": overall.to_json(),
        "per_expert": per_expert,
        "judge_unparseable": unparseable,
        "judge_errors": errors,
    }
