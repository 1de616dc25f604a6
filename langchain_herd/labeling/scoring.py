"""From answers and verdicts to 0/1 correctness cells (``None``: no label).

Three rules, one per kind of question:

- **multiple choice with a gold letter**: exact match of the extracted letter. A reply
  with no readable letter is wrong (0), as in the published correctness tables.
- **open-ended with a reference**: the judge's ``correct``; no readable verdict: ``None``.
- **open-ended without a reference**: pairwise. Among the experts that answered, every pair
  is judged in both orders and a pair's outcome is a win only when both orders agree
  (else a tie). An expert's cell is

  - ``0`` if it lost at least one pair (another expert's answer beat it in both orders);
  - else ``None`` if some pair involving it has no outcome (unreadable or missing verdict),
    or if it had no other answer to be compared with (the only expert that answered);
  - else ``1``: it won or tied against every other expert that answered.

  So "correct" means "no other answer was clearly better", a relative label: on a question
  every expert answers equally well (or badly) they all get 1.

An expert whose call failed gets ``None`` under every rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["exact_match_cell", "judge_cell", "pairwise_cells"]


def exact_match_cell(extracted: str | None, gold: str | None) -> int | None:
    """1 if the extracted letter is the gold one, 0 if not (or none was found), None
    without a gold letter.

    Example:
        >>> exact_match_cell("C", "C"), exact_match_cell(None, "C"), exact_match_cell("C", None)
        (1, 0, None)
    """
    if gold is None:
        return None
    return int(extracted is not None and extracted.upper() == gold.upper())


def judge_cell(status: str | None, correct: bool | None) -> int | None:
    """The judge's ``correct`` as 0/1 when its verdict was read (``status == "ok"``)."""
    if status != "ok" or correct is None:
        return None
    return int(correct)


def pairwise_cells(
    answered: Sequence[str], outcomes: Mapping[frozenset[str], str | None]
) -> dict[str, int | None]:
    """Per-expert cells from pairwise outcomes (see the module docstring for the rule).

    Args:
        answered: the experts with an answer to compare, in herd order.
        outcomes: for each pair (as a frozenset of two names), the winner's name,
            ``"tie"``, or ``None`` (no readable verdict); a missing pair counts as ``None``.

    Example:
        >>> pairwise_cells(["x", "y", "z"], {
        ...     frozenset({"x", "y"}): "x", frozenset({"x", "z"}): "tie",
        ...     frozenset({"y", "z"}): None})
        {'x': 1, 'y': 0, 'z': None}
    """
    cells: dict[str, int | None] = {}
    for expert in answered:
        others = [other for other in answered if other != expert]
        if not others:
            cells[expert] = None
            continue
        results = [outcomes.get(frozenset({expert, other})) for other in others]
        if any(result not in (None, "tie", expert) for result in results):
            cells[expert] = 0
        elif any(result is None for result in results):
            cells[expert] = None
        else:
            cells[expert] = 1
    return cells
