"""The lines of ``raw.jsonl`` and what a run has finished, read back from them.

Every line is a JSON object with a ``type``:

- ``answer``: one expert's attempt at one question: ``id``, ``expert``, ``prompt``,
  ``answer`` (text, or null on error), ``answer_sha`` (links verdicts to this text),
  ``latency_ms``, ``usage`` (token counts or null), ``extracted`` (option letter or null),
  ``gold``, ``correct`` (exact match 0/1, null when not multiple choice or failed),
  ``error`` and ``error_kind`` (null when it answered), ``ts``.
- ``judge``: a judge's verdict on one answer: ``purpose`` (``reference`` for open-ended
  questions, ``mc_agreement`` for the judge report on multiple choice), ``id``, ``expert``,
  ``answer_sha``, ``status`` (``ok``/``unparseable``/``error``), ``verdict``, ``replies``,
  ``error``, ``latency_ms``, ``ts``.
- ``pairwise``: two answers judged in both orders: ``id``, ``a``, ``b``, ``a_sha``,
  ``b_sha``, ``outcome`` (winner, ``tie`` or null), ``status``, ``a_first`` and
  ``b_first`` (each order's call, as in ``judge`` lines), ``ts``.

Later lines for the same key replace earlier ones (a failed attempt redone on resume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunState", "answer_sha"]

Record = dict[str, Any]


def answer_sha(text: str) -> str:
    """A short hash of an answer's text, so a verdict stays tied to the answer it judged."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class RunState:
    """The latest record per key, as read from ``raw.jsonl``.

    Example:
        >>> state = RunState.from_records([{"type": "answer", "id": "q1", "expert": "x",
        ...                                 "error": None, "answer_sha": "ab"}])
        >>> state.answer_ok("q1", "x")
        True
    """

    answers: dict[tuple[str, str], Record] = field(default_factory=dict)
    """``(id, expert)`` -> latest ``answer`` line."""
    judged: dict[tuple[str, str, str, str], Record] = field(default_factory=dict)
    """``(purpose, id, expert, answer_sha)`` -> latest ``judge`` line."""
    pairs: dict[tuple[str, str, str, str, str], Record] = field(default_factory=dict)
    """``(id, a, a_sha, b, b_sha)`` -> latest ``pairwise`` line."""

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> RunState:
        """Fold records in file order (unknown types are ignored, for forward compatibility)."""
        state = cls()
        for record in records:
            state.add(record)
        return state

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one more record into account."""
        data = dict(record)
        kind = data.get("type")
        if kind == "answer":
            self.answers[(data["id"], data["expert"])] = data
        elif kind == "judge":
            key = (data["purpose"], data["id"], data["expert"], data["answer_sha"])
            self.judged[key] = data
        elif kind == "pairwise":
            self.pairs[(data["id"], data["a"], data["a_sha"], data["b"], data["b_sha"])] = data

    def answer(self, query_id: str, expert: str) -> Record | None:
        """The latest answer line of this expert on this question."""
        return self.answers.get((query_id, expert))

    def answer_ok(self, query_id: str, expert: str) -> bool:
        """Whether the latest attempt produced an answer."""
        record = self.answer(query_id, expert)
        return record is not None and record.get("error") is None

    def verdict(self, purpose: str, query_id: str, expert: str) -> Record | None:
        """The judge line for this expert's current answer, if any."""
        record = self.answer(query_id, expert)
        if record is None or record.get("answer_sha") is None:
            return None
        return self.judged.get((purpose, query_id, expert, record["answer_sha"]))

    def pair(self, query_id: str, a: str, b: str) -> Record | None:
        """The pairwise line for the current answers of ``a`` and ``b`` (in that order)."""
        first, second = self.answer(query_id, a), self.answer(query_id, b)
        if first is None or second is None:
            return None
        return self.pairs.get(
            (query_id, a, first.get("answer_sha") or "", b, second.get("answer_sha") or "")
        )
