"""LLM-as-judge: the prompts, robust reading of verdicts, retries, and pairwise order swapping.

The judge is any LangChain chat model (any runnable from a list of messages to a message).
Two questions are asked of it:

- **with a reference**: is this answer correct? It replies ``{"correct": bool,
  "score": 0..1, "rationale": "..."}`` (:class:`JudgeVerdict`).
- **pairwise** (open-ended, no reference): which of two answers is better? It replies
  ``{"winner": "1" | "2" | "tie", "rationale": "..."}`` (:class:`PairwiseVerdict`). Every
  pair is asked in both orders and a win counts only when both orders name the same
  answer (:func:`pair_outcome`), because judges favour a position.

Verdicts are read from the reply's JSON wherever it sits (code fences, prose around it).
A reply without a valid verdict is asked again (the judge sees its reply and what was
wrong with it) up to ``retries`` times, then the call ends ``unparseable``: never a guess.

Example:
    >>> parse_verdict('Sure! ```json\\n{"correct": true, "score": 0.9, "rationale": "ok"}\\n```')
    JudgeVerdict(correct=True, score=0.9, rationale='ok')
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict

from langchain_herd.labeling.errors import JudgeParseError
from langchain_herd.labeling.replies import reply_text

__all__ = [
    "JudgeCall",
    "JudgeStatus",
    "JudgeVerdict",
    "PairJudgement",
    "PairwiseVerdict",
    "ask_judge",
    "judge_answer",
    "judge_pair",
    "pair_outcome",
    "pairwise_messages",
    "parse_pairwise_verdict",
    "parse_verdict",
    "reference_messages",
]

JudgeStatus = Literal["ok", "unparseable", "error"]
V = TypeVar("V")

_RATIONALE_MAX = 500
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)

REFERENCE_SYSTEM = (
    "You grade answers. You get a question, a reference answer that is correct, and a "
    "candidate answer. The candidate is correct when it agrees with the reference on what "
    "the question asks; wording may differ, and extra explanation is fine unless it "
    "contradicts the reference or hedges between several answers."
)
VERDICT_FORMAT = (
    'Reply with only a JSON object and no other text: {"correct": true or false, '
    '"score": a number from 0 to 1 (how correct), "rationale": "one short sentence"}'
)
PAIRWISE_SYSTEM = (
    "You compare two answers to the same question. Decide which one is more correct and "
    "more helpful. Ignore their length and the order in which they are shown. If they are "
    "equally good or equally bad, call it a tie."
)
PAIRWISE_FORMAT = (
    'Reply with only a JSON object and no other text: {"winner": "1", "2" or "tie", '
    '"rationale": "one short sentence"}'
)
RETRY_PROMPT = (
    "I could not read a verdict from your reply ({why}). Reply again with only the JSON "
    "object, in exactly the format asked for."
)


class JudgeVerdict(BaseModel):
    """A judge's verdict on one answer, given a reference.

    Example:
        >>> JudgeVerdict(correct=False, score=0.2, rationale="wrong year").correct
        False
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    correct: bool
    """Whether the answer is correct."""
    score: float
    """How correct, from 0 to 1 (partial credit; the table uses ``correct``)."""
    rationale: str = ""
    """The judge's short reason."""


class PairwiseVerdict(BaseModel):
    """A judge's verdict on two answers shown in one order.

    Example:
        >>> PairwiseVerdict(winner="tie").winner
        'tie'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    winner: Literal["first", "second", "tie"]
    """Which position the judge preferred."""
    rationale: str = ""
    """The judge's short reason."""


def reference_messages(question: str, reference: str, answer: str) -> list[BaseMessage]:
    """The messages asking the judge whether ``answer`` is correct given ``reference``."""
    return [
        SystemMessage(content=REFERENCE_SYSTEM),
        HumanMessage(
            content=(
                f"Question:\n{question}\n\nReference answer:\n{reference}\n\n"
                f"Candidate answer:\n{answer}\n\n{VERDICT_FORMAT}"
            )
        ),
    ]


def pairwise_messages(question: str, first: str, second: str) -> list[BaseMessage]:
    """The messages asking the judge which of two answers, in this order, is better."""
    return [
        SystemMessage(content=PAIRWISE_SYSTEM),
        HumanMessage(
            content=(
                f"Question:\n{question}\n\n[Answer 1]\n{first}\n[End of answer 1]\n\n"
                f"[Answer 2]\n{second}\n[End of answer 2]\n\n{PAIRWISE_FORMAT}"
            )
        ),
    ]


def _json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``text``: fenced blocks first, then any ``{...}`` in the prose."""
    body = _THINK_END.split(text)[-1]
    decoder = json.JSONDecoder()
    sources = [m.group(1) for m in _FENCE.finditer(body)] + [body]
    for source in sources:
        for start in (i for i, char in enumerate(source) if char == "{"):
            try:
                value, _ = decoder.raw_decode(source, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value
                # Nested verdicts ({"verdict": {...}}) are tried after their wrapper.
                yield from (v for v in value.values() if isinstance(v, dict))


def _lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).strip().lower(): value for key, value in obj.items()}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in {"true", "yes", "correct", "1"}:
            return True
        if word in {"false", "no", "incorrect", "0"}:
            return False
    raise ValueError(f"'correct' must be true or false, got {value!r}")


def _as_score(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"'score' must be a number from 0 to 1, got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'score' must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"'score' must be from 0 to 1, got {score}")
    return score


def _rationale(obj: Mapping[str, Any]) -> str:
    value = obj.get("rationale", obj.get("reason", obj.get("explanation", "")))
    return str(value)[:_RATIONALE_MAX]


def _first_valid(text: str, build: Callable[[dict[str, Any]], V], what: str) -> V:
    problems: list[str] = []
    for obj in _json_objects(text):
        try:
            return build(_lower_keys(obj))
        except (KeyError, ValueError) as exc:
            # KeyError's str() quotes its message; its first argument is the message itself.
            problems.append(str(exc.args[0]) if exc.args else type(exc).__name__)
    if not problems:
        raise JudgeParseError(f"no JSON object in the reply {text[:80]!r}")
    raise JudgeParseError(f"no valid {what} in the reply: {problems[0]}")


def _verdict(obj: dict[str, Any]) -> JudgeVerdict:
    if "correct" not in obj:
        raise KeyError("the JSON object has no 'correct' key")
    correct = _as_bool(obj["correct"])
    # A judge that leaves the score out still said correct or not: full or no credit.
    score = _as_score(obj["score"]) if obj.get("score") is not None else float(correct)
    return JudgeVerdict(correct=correct, score=score, rationale=_rationale(obj))


def parse_verdict(text: str) -> JudgeVerdict:
    """Read a :class:`JudgeVerdict` from a judge's reply.

    The first JSON object in the reply (fenced blocks first) with a readable ``correct``
    wins. ``correct`` may be a boolean, 0/1 or "true"/"yes"/"false"/"no"; ``score`` must lie
    in [0, 1] (missing: 1.0 when correct, else 0.0); keys are case-insensitive.

    Raises:
        JudgeParseError: no JSON object holds a valid verdict.

    Example:
        >>> parse_verdict('Verdict: {"Correct": "no", "score": 0, "rationale": "x"} Done.')
        JudgeVerdict(correct=False, score=0.0, rationale='x')
    """
    return _first_valid(text, _verdict, "verdict")


_FIRST = {"1", "first", "answer 1", "a", "[[1]]", "position 1"}
_SECOND = {"2", "second", "answer 2", "b", "[[2]]", "position 2"}
_TIE = {"tie", "draw", "equal", "both", "neither", "none", "0", "[[tie]]", "same"}


def _pairwise(obj: dict[str, Any]) -> PairwiseVerdict:
    key = next((k for k in ("winner", "better", "preferred", "choice") if k in obj), None)
    if key is None:
        raise KeyError("the JSON object has no 'winner' key")
    value = obj[key]
    word = "" if value is None or isinstance(value, bool) else str(value).strip().lower()
    if word in _FIRST:
        winner: Literal["first", "second", "tie"] = "first"
    elif word in _SECOND:
        winner = "second"
    elif word in _TIE:
        winner = "tie"
    else:
        raise ValueError(f'\'winner\' must be "1", "2" or "tie", got {value!r}')
    return PairwiseVerdict(winner=winner, rationale=_rationale(obj))


def parse_pairwise_verdict(text: str) -> PairwiseVerdict:
    """Read a :class:`PairwiseVerdict` (``{"winner": "1" | "2" | "tie"}``) from a reply.

    Raises:
        JudgeParseError: no JSON object holds a valid ``winner``.

    Example:
        >>> parse_pairwise_verdict('```\\n{"winner": 2, "rationale": "cites the law"}\\n```')
        PairwiseVerdict(winner='second', rationale='cites the law')
    """
    return _first_valid(text, _pairwise, "pairwise verdict")


@dataclass
class JudgeCall(Generic[V]):
    """The outcome of asking the judge one question (with its retries).

    Example:
        >>> JudgeCall(status="unparseable", replies=["hmm", "still hmm"]).verdict is None
        True
    """

    status: JudgeStatus
    """``ok``; ``unparseable`` (no verdict after every retry); ``error`` (the call failed)."""
    verdict: V | None = None
    """The verdict when ``ok``."""
    replies: list[str] = field(default_factory=list)
    """Every raw reply, in order."""
    error: str | None = None
    """Why it is not ``ok``."""
    latency_ms: float = 0.0
    """Time spent in judge calls."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for ``raw.jsonl``."""
        verdict = self.verdict.model_dump() if isinstance(self.verdict, BaseModel) else None
        return {
            "status": self.status,
            "verdict": verdict,
            "replies": self.replies,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 1),
        }


async def ask_judge(
    judge: Runnable[Any, Any],
    messages: Sequence[BaseMessage],
    parse: Callable[[str], V],
    *,
    retries: int = 2,
    timeout_s: float | None = None,
    semaphore: asyncio.Semaphore | None = None,
) -> JudgeCall[V]:
    """Ask the judge, read the verdict with ``parse``, and ask again while it is unreadable.

    A failing call (connection, timeout, server error) ends the question with status
    ``error`` at once; only unreadable replies are retried.

    Args:
        judge: the judge chat model.
        messages: the question.
        parse: reads the verdict from the reply text, raising :class:`JudgeParseError`.
        retries: extra attempts after an unreadable reply.
        timeout_s: deadline of each call.
        semaphore: bounds concurrent judge calls.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    call: JudgeCall[V] = JudgeCall(status="unparseable")
    conversation = list(messages)
    started = time.perf_counter()
    for _ in range(retries + 1):
        try:
            if semaphore is None:
                reply = await asyncio.wait_for(judge.ainvoke(conversation), timeout_s)
            else:
                async with semaphore:
                    reply = await asyncio.wait_for(judge.ainvoke(conversation), timeout_s)
        except Exception as exc:  # recorded, never raised: one bad call must not end the run
            call.status, call.error = "error", f"{type(exc).__name__}: {exc}"
            break
        text = reply_text(reply)
        call.replies.append(text)
        try:
            call.verdict = parse(text)
        except JudgeParseError as exc:
            call.error = f"judge_unparseable: {exc}"
            # Show the judge its reply and what was wrong: a re-ask alone often repeats it.
            conversation = [
                *messages,
                AIMessage(content=text),
                HumanMessage(content=RETRY_PROMPT.format(why=exc)),
            ]
            continue
        call.status, call.error = "ok", None
        break
    call.latency_ms = (time.perf_counter() - started) * 1000
    return call


async def judge_answer(
    judge: Runnable[Any, Any],
    question: str,
    reference: str,
    answer: str,
    *,
    retries: int = 2,
    timeout_s: float | None = None,
    semaphore: asyncio.Semaphore | None = None,
) -> JudgeCall[JudgeVerdict]:
    """Ask the judge whether ``answer`` to ``question`` is correct, given ``reference``.

    Example:
        .. code-block:: python

            call = await judge_answer(judge, "Capital of France?", "Paris", "It is Paris.")
            call.verdict.correct if call.status == "ok" else None
    """
    return await ask_judge(
        judge,
        reference_messages(question, reference, answer),
        parse_verdict,
        retries=retries,
        timeout_s=timeout_s,
        semaphore=semaphore,
    )


def pair_outcome(
    a: str,
    b: str,
    a_first: PairwiseVerdict | None,
    b_first: PairwiseVerdict | None,
) -> str | None:
    """The winner of a pair asked in both orders: an expert name, ``"tie"`` or ``None``.

    ``a_first`` is the verdict with ``a``'s answer in position 1, ``b_first`` with ``b``'s.
    A win needs both orders to name the same expert; a judge that always picks one
    position, or calls one order a tie, yields ``"tie"``. A missing verdict gives ``None``.

    Example:
        >>> first = PairwiseVerdict(winner="first")
        >>> pair_outcome("x", "y", first, first)  # always position 1: position bias
        'tie'
        >>> pair_outcome("x", "y", first, PairwiseVerdict(winner="second"))
        'x'
    """
    if a_first is None or b_first is None:
        return None
    order_1 = {"first": a, "second": b, "tie": "tie"}[a_first.winner]
    order_2 = {"first": b, "second": a, "tie": "tie"}[b_first.winner]
    return order_1 if order_1 == order_2 else "tie"


@dataclass
class PairJudgement:
    """Two experts' answers to one question, judged in both orders."""

    a: str
    """The first expert (in herd order)."""
    b: str
    """The second expert."""
    a_first: JudgeCall[PairwiseVerdict]
    """The judge's call with ``a``'s answer shown first."""
    b_first: JudgeCall[PairwiseVerdict]
    """The judge's call with ``b``'s answer shown first."""

    @property
    def status(self) -> JudgeStatus:
        """``error`` if either call failed, else ``unparseable`` if either was, else ``ok``."""
        statuses = {self.a_first.status, self.b_first.status}
        for status in ("error", "unparseable"):
            if status in statuses:
                return status  # type: ignore[return-value]
        return "ok"

    @property
    def outcome(self) -> str | None:
        """The winning expert, ``"tie"``, or ``None`` when a verdict is missing."""
        return pair_outcome(self.a, self.b, self.a_first.verdict, self.b_first.verdict)


async def judge_pair(
    judge: Runnable[Any, Any],
    question: str,
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    retries: int = 2,
    timeout_s: float | None = None,
    semaphore: asyncio.Semaphore | None = None,
) -> PairJudgement:
    """Judge two experts' answers in both orders (``a`` first, then ``b`` first).

    Args:
        judge: the judge chat model.
        question: the question both answered.
        a: ``(expert name, answer text)``.
        b: ``(expert name, answer text)``.
        retries: extra attempts per order after an unreadable reply.
        timeout_s: deadline of each call.
        semaphore: bounds concurrent judge calls.

    Example:
        .. code-block:: python

            pair = await judge_pair(judge, "Explain tides.", ("small", t1), ("large", t2))
            pair.outcome  # "large", "small", "tie", or None
    """
    kwargs: dict[str, Any] = {"retries": retries, "timeout_s": timeout_s, "semaphore": semaphore}
    # One order after the other: a stateful judge then sees a fixed sequence, and a run's
    # other pairs keep the judge busy meanwhile.
    a_first = await ask_judge(
        judge, pairwise_messages(question, a[1], b[1]), parse_pairwise_verdict, **kwargs
    )
    b_first = await ask_judge(
        judge, pairwise_messages(question, b[1], a[1]), parse_pairwise_verdict, **kwargs
    )
    return PairJudgement(a=a[0], b=b[0], a_first=a_first, b_first=b_first)
