"""Judge verdict parsing, retries, and pairwise order swapping.

The judge is a fake chat model on purpose: what is tested is how its replies are read and
how both orders are combined, not the model.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from langchain_herd.labeling.errors import JudgeParseError
from langchain_herd.labeling.judge import (
    JudgeVerdict,
    PairwiseVerdict,
    judge_answer,
    judge_pair,
    pair_outcome,
    parse_pairwise_verdict,
    parse_verdict,
)
from langchain_herd.labeling.scoring import exact_match_cell, judge_cell, pairwise_cells


@pytest.mark.parametrize(
    ("reply", "correct", "score"),
    [
        ('{"correct": true, "score": 0.9, "rationale": "matches"}', True, 0.9),
        ('```json\n{"correct": false, "score": 0.1, "rationale": "wrong"}\n```', False, 0.1),
        ('```\n{"correct": true, "score": 1, "rationale": "ok"}\n```', True, 1.0),
        (
            'Here is my verdict:\n{"correct": false, "score": 0, "rationale": "no"}\nHope it helps',
            False,
            0.0,
        ),
        ('{"Correct": "yes", "Score": "0.75", "Rationale": "mostly"}', True, 0.75),
        ('{"correct": 1, "score": 1.0}', True, 1.0),
        ('{"correct": true}', True, 1.0),  # score left out: full credit
        ('{"correct": "false"}', False, 0.0),
        ('<think>{"correct": true}</think>{"correct": false, "score": 0.2}', False, 0.2),
        ('{"verdict": {"correct": true, "score": 0.8, "rationale": "nested"}}', True, 0.8),
        # an example object without a verdict, then the real one
        ('Format: {"x": 1}. Verdict: {"correct": true, "score": 0.6}', True, 0.6),
        ('{"correct": true, "score": 0.5, "rationale": "uses {braces} in text"}', True, 0.5),
    ],
)
def test_parse_verdict(reply: str, correct: bool, score: float) -> None:
    verdict = parse_verdict(reply)
    assert verdict.correct is correct
    assert verdict.score == pytest.approx(score)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("The answer is correct.", "no JSON object"),
        ("", "no JSON object"),
        ('{"correct": maybe}', "no JSON object"),
        ('{"score": 0.9, "rationale": "no correct key"}', "no 'correct' key"),
        ('{"correct": "perhaps", "score": 0.5}', "'correct' must be true or false"),
        ('{"correct": true, "score": 7}', "from 0 to 1"),
        ('{"correct": true, "score": "high"}', "number from 0 to 1"),
        ('{"correct": true, "score": true}', "number from 0 to 1"),
        ("[1, 2, 3]", "no JSON object"),
    ],
)
def test_parse_verdict_rejects_garbage(reply: str, why: str) -> None:
    with pytest.raises(JudgeParseError, match=re.escape(why)):
        parse_verdict(reply)


def test_parse_verdict_truncates_long_rationales() -> None:
    verdict = parse_verdict('{"correct": true, "score": 1, "rationale": "' + "x" * 2000 + '"}')
    assert len(verdict.rationale) == 500


@pytest.mark.parametrize(
    ("reply", "winner"),
    [
        ('{"winner": "1", "rationale": "clearer"}', "first"),
        ('{"winner": 2}', "second"),
        ('```json\n{"winner": "tie"}\n```', "tie"),
        ('Verdict follows. {"Winner": "Answer 2", "rationale": "x"}', "second"),
        ('{"winner": "first"}', "first"),
        ('{"better": "B"}', "second"),
        ('{"winner": "draw"}', "tie"),
    ],
)
def test_parse_pairwise_verdict(reply: str, winner: str) -> None:
    assert parse_pairwise_verdict(reply).winner == winner


@pytest.mark.parametrize("reply", ['{"winner": "3"}', '{"winner": null}', "Answer 1 wins", "{}"])
def test_parse_pairwise_verdict_rejects_garbage(reply: str) -> None:
    with pytest.raises(JudgeParseError):
        parse_pairwise_verdict(reply)


async def test_unparseable_replies_are_retried_then_recorded() -> None:
    judge = FakeListChatModel(responses=["I think it is right.", "Yes!", "Correct."])
    call = await judge_answer(judge, "2+2?", "4", "four", retries=2)
    assert call.status == "unparseable"
    assert call.verdict is None
    assert call.replies == ["I think it is right.", "Yes!", "Correct."]
    assert call.error is not None and call.error.startswith("judge_unparseable")
    assert call.to_json()["verdict"] is None


async def test_a_retry_that_parses_is_used_and_sees_its_bad_reply() -> None:
    seen: list[list[BaseMessage]] = []
    replies = iter(["It's correct.", '```json\n{"correct": true, "score": 1, "rationale": "4"}```'])

    def judge_fn(messages: list[BaseMessage]) -> AIMessage:
        seen.append(messages)
        return AIMessage(content=next(replies))

    call = await judge_answer(RunnableLambda(judge_fn), "2+2?", "4", "four", retries=2)
    assert call.status == "ok"
    assert call.verdict == JudgeVerdict(correct=True, score=1.0, rationale="4")
    assert len(call.replies) == 2
    retry = seen[1]
    assert retry[-2].text == "It's correct."  # the judge sees what it said
    assert "could not read a verdict" in retry[-1].text


async def test_no_retries_means_one_attempt() -> None:
    judge = FakeListChatModel(responses=["nope", '{"correct": true}'])
    call = await judge_answer(judge, "q", "r", "a", retries=0)
    assert call.status == "unparseable" and len(call.replies) == 1


async def test_a_failing_judge_call_is_recorded_not_raised() -> None:
    def broken(messages: Any) -> AIMessage:
        raise ConnectionError("judge endpoint refused the connection")

    call = await judge_answer(RunnableLambda(broken), "q", "r", "a")
    assert call.status == "error"
    assert "refused" in (call.error or "")


async def test_judge_prompt_holds_question_reference_and_answer() -> None:
    seen: list[str] = []

    def judge_fn(messages: list[BaseMessage]) -> AIMessage:
        seen.append(messages[-1].text)
        return AIMessage(content='{"correct": false, "score": 0}')

    await judge_answer(RunnableLambda(judge_fn), "Capital of France?", "Paris", "Rome")
    assert "Capital of France?" in seen[0] and "Paris" in seen[0] and "Rome" in seen[0]


def _answers_in(messages: list[BaseMessage]) -> tuple[str, str]:
    text = messages[-1].text
    first = re.search(r"\[Answer 1\]\n(.*?)\n\[End of answer 1\]", text, re.DOTALL)
    second = re.search(r"\[Answer 2\]\n(.*?)\n\[End of answer 2\]", text, re.DOTALL)
    assert first and second
    return first.group(1), second.group(1)


async def test_a_judge_that_always_prefers_position_1_yields_only_ties() -> None:
    judge = FakeListChatModel(responses=['{"winner": "1", "rationale": "first is better"}'])
    pair = await judge_pair(judge, "Explain tides.", ("small", "The moon."), ("big", "Gravity."))
    assert pair.status == "ok"
    assert pair.a_first.verdict == pair.b_first.verdict
    assert pair.outcome == "tie"
    assert pairwise_cells(["small", "big"], {frozenset({"small", "big"}): pair.outcome}) == {
        "small": 1,
        "big": 1,
    }


async def test_a_consistent_judge_yields_a_win_in_both_orders() -> None:
    def prefers_gravity(messages: list[BaseMessage]) -> AIMessage:
        first, _ = _answers_in(messages)
        winner = "1" if "Gravity" in first else "2"
        return AIMessage(content=f'{{"winner": "{winner}", "rationale": "mentions gravity"}}')

    pair = await judge_pair(
        RunnableLambda(prefers_gravity),
        "Explain tides.",
        ("small", "The moon."),
        ("big", "Gravity."),
    )
    assert pair.a_first.verdict == PairwiseVerdict(winner="second", rationale="mentions gravity")
    assert pair.b_first.verdict == PairwiseVerdict(winner="first", rationale="mentions gravity")
    assert pair.outcome == "big"
    assert pairwise_cells(["small", "big"], {frozenset({"small", "big"}): "big"}) == {
        "small": 0,
        "big": 1,
    }


async def test_an_unparseable_order_leaves_the_pair_undecided() -> None:
    judge = FakeListChatModel(responses=['{"winner": "1"}', "no idea", "still no idea"])
    pair = await judge_pair(judge, "q", ("x", "a"), ("y", "b"), retries=1)
    assert pair.a_first.status == "ok" and pair.b_first.status == "unparseable"
    assert pair.status == "unparseable"
    assert pair.outcome is None


def test_pair_outcome_table() -> None:
    first, second, tie = (PairwiseVerdict(winner=w) for w in ("first", "second", "tie"))
    assert pair_outcome("x", "y", first, second) == "x"
    assert pair_outcome("x", "y", second, first) == "y"
    assert pair_outcome("x", "y", first, first) == "tie"
    assert pair_outcome("x", "y", second, second) == "tie"
    assert pair_outcome("x", "y", first, tie) == "tie"  # one order undecided: no win
    assert pair_outcome("x", "y", tie, tie) == "tie"
    assert pair_outcome("x", "y", None, first) is None


def test_pairwise_cells_rule() -> None:
    pair = frozenset
    outcomes = {
        pair({"x", "y"}): "x",
        pair({"x", "z"}): "tie",
        pair({"y", "z"}): "z",
        pair({"x", "w"}): "x",
        pair({"y", "w"}): None,
        pair({"z", "w"}): "tie",
    }
    cells = pairwise_cells(["x", "y", "z", "w"], outcomes)
    # x beat y and w, tied z: 1. y lost to x: 0 (even with an undecided pair).
    # z beat y, tied x and w: 1. w lost to x: 0.
    assert cells == {"x": 1, "y": 0, "z": 1, "w": 0}
    # an undecided pair and no loss: unknown
    assert pairwise_cells(["x", "y", "z"], {pair({"x", "y"}): "tie", pair({"x", "z"}): None}) == {
        "x": None,
        "y": None,  # its pair with z is missing
        "z": None,
    }
    assert pairwise_cells(["x"], {}) == {"x": None}  # nothing to compare with
    assert pairwise_cells([], {}) == {}


def test_exact_match_and_judge_cells() -> None:
    assert exact_match_cell("B", "B") == 1
    assert exact_match_cell("b", "B") == 1
    assert exact_match_cell("C", "B") == 0
    assert exact_match_cell(None, "B") == 0  # no readable letter counts as wrong
    assert exact_match_cell("B", None) is None
    assert judge_cell("ok", True) == 1
    assert judge_cell("ok", False) == 0
    assert judge_cell("unparseable", None) is None
    assert judge_cell("error", None) is None
