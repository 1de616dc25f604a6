"""The ensemble runtime's logic: agreement measures, the MoA prompt, building strategies from
config, and the plans' bookkeeping (kept, escalated, fallbacks, plain routing) over the
engine. Experts are scripted fakes here (the subject is the herd's logic, not the experts);
tests/integration/test_ensembles_e2e.py runs the same paths against real local servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_herd import HerdRouter
from langchain_herd.config import EnsembleConfig
from langchain_herd.ensembles.agreement import (
    ExactAgreement,
    JudgeAgreement,
    LetterAgreement,
    answer_labels,
    equal_matrix,
    normalise_answer,
)
from langchain_herd.ensembles.moa import AGGREGATE_AND_SYNTHESIZE, with_references
from langchain_herd.ensembles.runner import EnsembleRunner
from langchain_herd.ensembles.scorers import (
    CascadeModel,
    LearnedVote,
    LogisticScorer,
    cascade_feature_names,
    vote_feature_names,
)
from langchain_herd.ensembles.strategies import (
    CascadeStrategy,
    MixtureOfAgentsStrategy,
    VoteStrategy,
    build_ensemble,
)
from langchain_herd.errors import AllExpertsFailedError, ArtifactError, ConfigError
from langchain_herd.experts import Expert
from tests.unit.fakes import KeywordClassifier, ScriptedChat, ToolChat

QUESTION = "Which is prime?\nA. 15\nB. 17\nC. 21"


def escalating(k: int = 2) -> CascadeModel:
    """Escalates unless the main expert agrees with every helper (score 0.05 vs 0.95)."""
    names = cascade_feature_names(k, [])
    coef = [-6.0 / (k - 1) if n.startswith("agree_0_") else 0.0 for n in names]
    scorer = LogisticScorer(names, coef, 3.0, [0.0] * len(names), [1.0] * len(names))
    tier = ["small", *(f"helper{i}" for i in range(1, k))]
    costs = {n: 1.0 for n in [*tier, "large"]}
    return CascadeModel([tier, ["large"]], "first", [], [scorer], costs, [], 0.5)


def router(replies: dict[str, Any], strategy: Any, **engine: Any) -> HerdRouter:
    """A herd of scripted experts (a str: the reply; an exception: the failure)."""
    experts = []
    for name, reply in replies.items():
        chat = (
            ScriptedChat(error=reply) if isinstance(reply, Exception) else ScriptedChat(reply=reply)
        )
        experts.append(Expert(name, chat, routes=[name], cost=2.0 if name == "strong" else 1.0))
    classifier = KeywordClassifier({name: name for name in replies})
    return HerdRouter(experts, classifier, ensemble=EnsembleRunner(strategy), **engine)


def cascade(tiers: list[list[str]], keep: str = "first", measure: Any = None) -> CascadeStrategy:
    return CascadeStrategy(
        escalating(len(tiers[0])),
        tiers,
        keep,
        0.5,
        measure or LetterAgreement(),  # type: ignore[arg-type]
    )


def unavailable() -> Exception:
    import httpx

    request = httpx.Request("POST", "http://expert.invalid")
    return httpx.ConnectError("refused", request=request)


# -- agreement ------------------------------------------------------------------------------------


def test_letters_read_with_the_questions_options() -> None:
    measure = LetterAgreement()
    assert [
        measure.extract(a, QUESTION) for a in ("(b)", "It is 17.", "The answer is C", "hm")
    ] == [
        "B",
        "B",
        "C",
        None,
    ]
    assert measure.extract("E", "no options listed") == "E"  # up to ten letters, as MMLU-Pro


def test_exact_match_normalises_and_groups() -> None:
    measure = ExactAgreement()
    said = [measure.extract(a, "?") for a in ("**Paris**!", "paris", "Lyon", "  ")]
    assert said == ["paris", "paris", "lyon", None]
    assert equal_matrix(said)[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert answer_labels(said, equal_matrix(said), 0.5) == ["paris", "paris", "lyon", None]
    assert normalise_answer("<think>A?</think> The *answer*: B.") == "the answer b"


def test_judge_reads_yes_no_and_unreadable() -> None:
    assert JudgeAgreement.read("Yes.") == 1.0
    assert JudgeAgreement.read("no, they differ") == 0.0
    assert JudgeAgreement.read("I cannot tell") is None
    prompt = JudgeAgreement("j").messages("Q?", "one", "two")
    assert isinstance(prompt[0], SystemMessage) and "Answer 2:\ntwo" in prompt[1].text


# -- the MoA prompt -------------------------------------------------------------------------------


def test_moa_prompt_joins_an_existing_system_message() -> None:
    plain = with_references([HumanMessage("q")], ["x", "y"])
    assert plain[0].text == AGGREGATE_AND_SYNTHESIZE + "\n1. x\n2. y"
    joined = with_references([SystemMessage("Be brief."), HumanMessage("q")], ["x"])
    assert len(joined) == 2 and joined[0].text.startswith("Be brief.\n\nYou have been provided")


# -- building from config -------------------------------------------------------------------------


def test_build_from_config_maps_the_scorers_names_onto_the_herd(tmp_path: Path) -> None:
    path = escalating().save(tmp_path / "c.json")
    experts = [Expert(n, ScriptedChat()) for n in ("w", "h", "s")]
    config = EnsembleConfig(
        kind="cascade", scorer=str(path), tiers=[["w", "h"], ["s"]], threshold=0.2
    )
    runner = build_ensemble(config, experts)
    strategy = runner.strategy
    assert isinstance(strategy, CascadeStrategy) and runner.kind == "cascade"
    assert strategy.tiers == [["w", "h"], ["s"]] and strategy.threshold == 0.2
    assert strategy.keep == "first"
    relative = EnsembleConfig(
        kind="cascade", scorer="c.json", tiers=[["w", "h"], ["s"]], keep="vote"
    )
    assert build_ensemble(relative, experts, base_dir=tmp_path).strategy.keep == "vote"  # type: ignore[attr-defined]

    with pytest.raises(ConfigError, match="do not fit the scorer's tiers"):
        build_ensemble(
            EnsembleConfig(kind="cascade", scorer=str(path), tiers=[["w"], ["s"]]), experts
        )
    with pytest.raises(ConfigError, match=r"names experts \['helper1', 'large', 'small'\]"):
        build_ensemble(EnsembleConfig(kind="cascade", scorer=str(path), tiers=[]), experts)
    with pytest.raises(ArtifactError, match="no such ensemble artifact"):
        build_ensemble(EnsembleConfig(kind="cascade", scorer=str(tmp_path / "none.json")), experts)
    vote = EnsembleConfig(kind="vote", method="learned", scorer=str(path))
    with pytest.raises(ConfigError, match="learned-vote scorer"):
        build_ensemble(vote, experts)


def test_threshold_from_escalate_share_and_budget(tmp_path: Path) -> None:
    model = escalating()
    model.calibration = [
        {"threshold": 0.9, "escalate_share": 0.1, "accuracy": 0.6, "cost": 2.2},
        {"threshold": 0.5, "escalate_share": 0.3, "accuracy": 0.7, "cost": 5.0},
        {"threshold": 0.1, "escalate_share": 0.8, "accuracy": 0.75, "cost": 9.0},
    ]
    path = model.save(tmp_path / "c.json")
    experts = [Expert(n, ScriptedChat()) for n in ("small", "helper1", "large")]

    def threshold(**how: Any) -> float:
        strategy = build_ensemble(EnsembleConfig(kind="cascade", scorer=str(path), **how), experts)
        return strategy.strategy.threshold  # type: ignore[attr-defined,no-any-return]

    assert threshold() == 0.5  # default_threshold
    assert threshold(escalate_share=0.3) == 0.5
    assert threshold(budget=3.0) == 0.9
    with pytest.raises(ConfigError, match="below the cascade's cheapest"):
        threshold(budget=1.0)


# -- cascade plans ------------------------------------------------------------------------------


def test_cascade_with_a_tier_vote_keeps_the_majority_answer() -> None:
    herd = router(
        {"weak": "C", "h1": "B", "h2": "B", "strong": "B!"},
        cascade([["weak", "h1", "h2"], ["strong"]], keep="vote"),
    )
    # The main expert disagrees with both helpers: this scorer escalates.
    decision = herd.invoke(QUESTION).response_metadata["herd"]
    assert decision["answered_by"] == "strong" and "escalated" in decision["verdict"]
    herd = router(
        {"weak": "B", "h1": "B", "h2": "C", "strong": "x"},
        CascadeStrategy(
            escalating(3), [["weak", "h1", "h2"], ["strong"]], "vote", 0.99, LetterAgreement()
        ),
    )
    answer = herd.invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert answer.text == "B" and decision["answered_by"] == "weak"
    assert "tier vote: 'B' wins with 2 votes of 3" in decision["verdict"]


def test_cascade_keeps_a_helpers_answer_when_the_main_expert_failed() -> None:
    herd = router(
        {"weak": unavailable(), "h1": "B", "strong": "x"}, cascade([["weak", "h1"], ["strong"]])
    )
    strategy = herd.engine.ensemble.strategy  # type: ignore[union-attr]
    strategy.threshold = 1.0  # keep whatever the score
    answer = herd.invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert answer.text == "B" and decision["answered_by"] == "h1"
    assert "the main expert failed; tier vote" in decision["verdict"]
    assert decision["calls"][0]["ok"] is False and decision["calls"][0]["error"]


def test_cascade_with_every_expert_failing_raises_with_the_trail() -> None:
    herd = router(
        {"weak": unavailable(), "h1": unavailable(), "strong": unavailable()},
        cascade([["weak", "h1"], ["strong"]]),
    )
    with pytest.raises(AllExpertsFailedError) as caught:
        herd.invoke(QUESTION)
    decision = caught.value.decision
    assert [c.expert for c in decision.calls] == ["weak", "h1", "strong"]
    assert "tier 1 escalated: no member answered" in (decision.verdict or "")


def test_cascade_judge_agreement_calls_the_judge_through_the_engine() -> None:
    herd = router(
        {"weak": "Paris.", "h1": "It is Paris", "strong": "x", "judge": "yes"},
        cascade([["weak", "h1"], ["strong"]], measure=JudgeAgreement("judge")),
    )
    decision = herd.invoke("Capital of France?").response_metadata["herd"]
    assert [(c["expert"], c["role"], c["extracted"]) for c in decision["calls"]] == [
        ("weak", "tier 1", "paris"),
        ("h1", "tier 1", "it is paris"),
        ("judge", "judge (1, 2)", "yes"),
    ]
    assert decision["answered_by"] == "weak" and decision["total_cost"] == 3.0
    judge = herd.experts["judge"].model
    assert "Answer 2:\nIt is Paris" in judge.seen[-1][-1].text  # type: ignore[attr-defined]


# -- votes ----------------------------------------------------------------------------------------


def test_vote_over_the_rankings_top_k() -> None:
    replies = {"ann": "B", "bob": "B", "cid": "A", "dan": "A"}
    herd = router(replies, VoteStrategy("majority", LetterAgreement(), k=3))
    decision = herd.invoke(f"{QUESTION} dan?").response_metadata["herd"]  # keyword: dan first
    assert decision["ranking"][0] == "dan"
    assert [c["expert"] for c in decision["calls"]] == decision["ranking"][:3]


def test_learned_vote_members_are_not_replaced() -> None:
    members = ["a", "b"]
    scorer = LogisticScorer(
        vote_feature_names(members, []), [0.0, 2.0, 0.0, 0.0], 0.0, [0.0] * 4, [1.0] * 4
    )
    strategy = VoteStrategy(
        "learned", LetterAgreement(), members, learned=LearnedVote(members, scorer)
    )
    decision = (
        router({"a": "A", "b": unavailable(), "c": "C"}, strategy)
        .invoke(QUESTION)
        .response_metadata["herd"]
    )
    assert [(c["expert"], c["ok"]) for c in decision["calls"]] == [("a", True), ("b", False)]
    assert decision["answered_by"] == "a"


def test_vote_without_a_readable_answer_returns_the_first_answer_unvoted() -> None:
    strategy = VoteStrategy("majority", LetterAgreement(), ["a", "b"])
    answer = router({"a": "no idea", "b": "hmm"}, strategy).invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert answer.text == "no idea" and decision["answered_by"] == "a"
    assert "no readable answer among 2 member(s)" in decision["verdict"]
    assert "returned unvoted" in decision["verdict"]


# -- mixture-of-agents ---------------------------------------------------------------------------


def test_moa_aggregator_falls_back_along_the_ranking_then_to_a_proposal() -> None:
    strategy = MixtureOfAgentsStrategy(["pat", "sam"], aggregator="agg")
    replies = {"pat": "one", "sam": "two", "agg": unavailable()}
    answer = router(replies, strategy, max_attempts=1).invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert answer.text == "one" and decision["answered_by"] == "pat"
    assert "every aggregator failed: returned pat's proposal unaggregated" in decision["verdict"]
    # With more attempts the aggregator's slot falls back to the ranking's next expert.
    answer = router(replies, strategy, max_attempts=2).invoke(f"{QUESTION} sam?")
    decision = answer.response_metadata["herd"]
    assert decision["answered_by"] == "sam"
    assert [(c["expert"], c["role"], c["ok"]) for c in decision["calls"]][-2:] == [
        ("agg", "aggregator", False),
        ("sam", "aggregator", True),
    ]


def test_moa_without_proposals_lets_the_aggregator_answer_alone() -> None:
    strategy = MixtureOfAgentsStrategy(["pat", "sam"], aggregator="agg")
    replies = {"pat": unavailable(), "sam": unavailable(), "agg": "alone"}
    herd = router(replies, strategy, max_attempts=1)
    answer = herd.invoke(QUESTION)
    assert answer.text == "alone"
    assert answer.response_metadata["herd"]["verdict"].startswith(
        "no proposer answered; agg answers alone"
    )
    assert herd.experts["agg"].model.seen[-1] == [HumanMessage(QUESTION)]  # type: ignore[attr-defined]


# -- plain routing and streaming -----------------------------------------------------------------


def test_tool_requests_are_routed_to_one_expert_with_a_note() -> None:
    experts = [Expert(n, ToolChat(reply="B")) for n in ("a", "b")]
    herd = HerdRouter(
        experts,
        KeywordClassifier({"a": "a", "b": "b"}),
        ensemble=EnsembleRunner(VoteStrategy("majority", LetterAgreement(), ["a", "b"])),
    )

    def add(x: int, y: int) -> int:
        """Add."""
        return x + y

    answer = herd.bind_tools([add]).invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert decision["strategy"] is None and answer.tool_calls  # type: ignore[attr-defined]
    assert (
        decision["notes"]["ensemble"] == "vote not used: the request needs tools; one expert routed"
    )
    # A tool loop's next call stays with its expert, also without an ensemble.
    follow = herd.invoke([HumanMessage(QUESTION), answer, *_tool_results(answer)])
    assert "continues a tool loop" in follow.response_metadata["herd"]["notes"]["ensemble"]


def _tool_results(answer: Any) -> list[Any]:
    from langchain_core.messages import ToolMessage

    return [ToolMessage("3", tool_call_id=call["id"]) for call in answer.tool_calls]


def test_a_kept_answer_streams_as_chunks_that_merge_to_the_invoke_answer() -> None:
    herd = router(
        {"weak": "The answer is B", "h1": "B", "strong": "x"}, cascade([["weak", "h1"], ["strong"]])
    )
    chunks = list(herd.stream(QUESTION))
    assert [c.text for c in chunks] == ["The", " answer", " is", " B", ""]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(herd.invoke(QUESTION), AIMessage)
    assert merged.text == herd.invoke(QUESTION).text
    assert merged.response_metadata["herd"]["answered_by"] == "weak"


def test_doctests() -> None:
    import doctest

    from langchain_herd.ensembles import agreement, moa, strategies

    for module in (agreement, moa, strategies):
        assert doctest.testmod(module).failed == 0, module.__name__


async def test_a_streamed_aggregator_passes_over_an_open_breaker_in_the_trail() -> None:
    strategy = MixtureOfAgentsStrategy(["pat", "sam"], aggregator="agg")
    herd = router({"pat": "one", "sam": "two", "agg": "never"}, strategy)
    for _ in range(3):
        herd.breakers["agg"].record_failure()
    for chunks in (list(herd.stream(QUESTION)), [c async for c in herd.astream(QUESTION)]):
        decision = chunks[-1].response_metadata["herd"]
        aggregation = [c for c in decision["calls"] if c["role"] == "aggregator"]
        assert [(c["expert"], c["ok"]) for c in aggregation] == [("agg", False), ("pat", True)]
        assert aggregation[0]["error"].startswith("not called: circuit open")
        assert decision["answered_by"] == "pat" and decision["streaming"] == "pat"
        assert "".join(c.text for c in chunks) == "one"


def test_trained_names_in_another_order_mean_those_models_not_positions(tmp_path: Path) -> None:
    # Listing the scorer's own models in another order once silently swapped their weights.
    path = escalating().save(tmp_path / "c.json")
    experts = [Expert(n, ScriptedChat()) for n in ("small", "helper1", "large", "other")]
    swapped = [["helper1", "small"], ["large"]]
    runner = build_ensemble(
        EnsembleConfig(kind="cascade", scorer=str(path), tiers=swapped), experts
    )
    assert runner.strategy.tiers == [["small", "helper1"], ["large"]]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"small \(trained position 1, listed 2\)"):
        build_ensemble(
            EnsembleConfig(kind="cascade", scorer=str(path), tiers=[["other", "small"], ["large"]]),
            experts,
        )
    names = vote_feature_names(["a", "b"], [])
    scorer = LogisticScorer(names, [1.0] * len(names), 0.0, [0.0] * len(names), [1.0] * len(names))
    vote_path = LearnedVote(["a", "b"], scorer).save(tmp_path / "v.json")
    voters = [Expert(n, ScriptedChat()) for n in ("a", "b")]
    config = EnsembleConfig(
        kind="vote", method="learned", scorer=str(vote_path), members=["b", "a"]
    )
    assert build_ensemble(config, voters).strategy.members == ["a", "b"]  # type: ignore[attr-defined]
