"""Cascades, votes and mixture-of-agents against real local expert servers on loopback.

Four TGI-protocol servers run the tiny model, one per expert, so a fault injected on one
(``/_herd/faults``) breaks exactly that expert. The tiny model writes word salad; to make
tier answers known in advance, three experts are held to a fixed answer by a regex grammar
(``response_format``, enforced by the server's constrained decoding): ``weak`` always says
"Answer: A", ``agree`` "A", ``differ`` "B". ``strong`` is left free, so its answer has no
readable letter (the unparseable voter) and streams token by token.

The cascade's escalation score is a hand-made ``LogisticScorer`` over the tier's agreement
features: it escalates exactly when the weak expert and its helper disagree (or one fails).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk, BaseMessage

from langchain_herd import HerdRouter
from langchain_herd.chat_models import STREAMING_KEY
from langchain_herd.config import parse_config
from langchain_herd.endpoint import create_router_app
from langchain_herd.ensembles.agreement import EmbeddingAgreement
from langchain_herd.ensembles.scorers import (
    CascadeModel,
    LearnedVote,
    LogisticScorer,
    cascade_feature_names,
    vote_feature_names,
)
from langchain_herd.server import ServerThread, create_app, load_backend

QUESTION = "Which number is prime?\nA. 15\nB. 17\nC. 21\nD. 27"
FORCED = {"weak": "Answer: A", "agree": "A", "differ": "B"}
COSTS = {"weak": 1.0, "agree": 0.5, "differ": 0.5, "strong": 10.0}
HTTP = httpx.Client(timeout=30, trust_env=False)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    started = {
        name: ServerThread(
            create_app(
                backend, model_id=f"tiny-{name}", max_input_tokens=900, max_total_tokens=1024
            )
        ).start()
        for name in ("weak", "agree", "differ", "strong")
    }
    yield {name: server.url for name, server in started.items()}
    for server in started.values():
        server.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: dict[str, str]) -> Iterator[None]:
    yield
    for url in servers.values():
        HTTP.delete(f"{url}/_herd/faults")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ensembles")
    # Columns: agree_0_1, missing_0, missing_1. Agreement pulls the score far down.
    escalate = LogisticScorer(
        cascade_feature_names(2, []), [-6.0, 0.0, 0.0], 3.0, [0.0] * 3, [1.0] * 3
    )
    cascade = CascadeModel(
        tiers=[["small", "helper"], ["large"]],
        keep="first",
        text_experts=[],
        scorers=[escalate],
        costs={"small": 1.0, "helper": 0.5, "large": 10.0},
        calibration=[],
        default_threshold=0.5,
    )
    members = ["weak", "differ", "strong"]
    # The learned vote trusts `differ` over the others, whatever the count.
    learned = LearnedVote(
        members,
        LogisticScorer(
            vote_feature_names(members, []), [0.5, 3.0, 0.0, 0.0, 0.0], -1.0, [0.0] * 5, [1.0] * 5
        ),
    )
    return {
        "cascade": cascade.save(folder / "cascade.json"),
        "learned": learned.save(folder / "learned.json"),
    }


def herd(servers: dict[str, str], ensemble: dict[str, Any], **fallback: Any) -> HerdRouter:
    routes = {"weak": ["stem"], "agree": ["humanities"], "differ": ["social_sciences"]}
    config = parse_config(
        {
            "name": "ensemble-e2e",
            "experts": [
                {
                    "name": name,
                    "url": url,
                    "protocol": "tgi" if name == "weak" else "openai",
                    "model_id": f"tiny-{name}",
                    "routes": routes.get(name, ["other"]),
                    "cost": COSTS[name],
                    "generation": {"max_new_tokens": 12},
                }
                for name, url in servers.items()
            ],
            "router": {"ensemble": ensemble},
            "fallback": {"default_expert": "weak", **fallback},
        }
    )
    router = HerdRouter.from_config(config)
    for name, answer in FORCED.items():
        expert = router.experts[name]
        expert.model = expert.model.bind(response_format={"type": "regex", "value": answer})
    return router


def cascade(artifacts: dict[str, Path], helper: str) -> dict[str, Any]:
    return {
        "kind": "cascade",
        "scorer": str(artifacts["cascade"]),
        "tiers": [["weak", helper], ["strong"]],
    }


def merged(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    assert chunks and chunks[-1].chunk_position == "last"  # type: ignore[attr-defined]
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out + chunk  # type: ignore[operator]
    return out  # type: ignore[return-value]


async def every_path(router: HerdRouter, question: str = QUESTION) -> dict[str, Any]:
    """The same question through invoke, ainvoke, stream and astream (answers, chunk lists)."""
    streamed = list(router.stream(question))
    astreamed = [chunk async for chunk in router.astream(question)]
    return {
        "invoke": (router.invoke(question), None),
        "ainvoke": (await router.ainvoke(question), None),
        "stream": (merged(streamed), streamed),
        "astream": (merged(astreamed), astreamed),
    }


def check_books(answer: BaseMessage, decision: dict[str, Any]) -> None:
    """Usage sums every call's tokens; the total cost sums every paid call."""
    calls = [c for c in decision["calls"] if c["ok"]]
    usage = answer.usage_metadata  # type: ignore[attr-defined]
    assert usage["input_tokens"] == sum(c["input_tokens"] for c in calls), (usage, calls)
    assert usage["output_tokens"] == sum(c["output_tokens"] for c in calls), (usage, calls)
    assert decision["total_cost"] == pytest.approx(sum(COSTS[c["expert"]] for c in calls))


# -- cascade ------------------------------------------------------------------------------------


async def test_cascade_keeps_the_weak_answer_when_its_tier_agrees(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "agree"))
    for path, (answer, chunks) in (await every_path(router)).items():
        decision = answer.response_metadata["herd"]
        assert answer.text == "Answer: A", path
        assert decision["strategy"] == "cascade" and decision["answered_by"] == "weak"
        assert [(c["expert"], c["role"], c["extracted"]) for c in decision["calls"]] == [
            ("weak", "tier 1", "A"),
            ("agree", "tier 1", "A"),
        ]
        assert decision["verdict"].startswith("tier 1 kept weak's answer: escalation score")
        assert (
            decision["ensemble_scores"]["tier 1 score"] <= decision["ensemble_scores"]["threshold"]
        )
        check_books(answer, decision)
        if chunks is not None:
            # Decided before it streams: the kept answer comes as chunks, marked as weak's.
            assert len(chunks) >= 3, path
            assert chunks[0].response_metadata[STREAMING_KEY]["streaming"] == "weak"


async def test_cascade_escalates_when_its_tier_disagrees(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "differ"))
    texts = set()
    for path, (answer, chunks) in (await every_path(router)).items():
        decision = answer.response_metadata["herd"]
        texts.add(answer.text)
        assert decision["answered_by"] == "strong", path
        assert answer.response_metadata["model_name"] == "tiny-strong"
        trail = [(c["expert"], c["role"], c["extracted"]) for c in decision["calls"]]
        assert trail == [
            ("weak", "tier 1", "A"),
            ("differ", "tier 1", "B"),
            ("strong", "tier 2", None),
        ]
        assert "tier 1 escalated: escalation score" in decision["verdict"]
        assert "weak='A', differ='B'" in decision["verdict"]
        check_books(answer, decision)
        if chunks is not None:
            # The last tier streams live from its expert: many chunks, strong named first.
            assert len(chunks) > 5, path
            assert chunks[0].response_metadata[STREAMING_KEY]["streaming"] == "strong"
    assert len(texts) == 1  # greedy: every path gives the strong expert's same answer


def test_failing_tier_member_is_a_missing_answer_then_its_breaker_opens(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "agree"), breaker={"failure_threshold": 2})
    # The request's own faults (422: invalid for this expert) never count against a breaker.
    HTTP.post(f"{servers['agree']}/_herd/faults", json={"fail_next": 2, "fail_status": 422})
    for _ in range(2):
        decision = router.invoke(QUESTION).response_metadata["herd"]
        # Attempts are in completion order (the tier runs concurrently); calls in slot order.
        refused = next(a for a in decision["attempts"] if a["expert"] == "agree")
        assert refused["failure"] == "invalid_input" and not decision["calls"][1]["ok"]
    assert router.breakers["agree"].allow()
    HTTP.post(f"{servers['agree']}/_herd/faults", json={"fail_next": 2, "fail_status": 503})
    for _ in range(2):
        decision = router.invoke(QUESTION).response_metadata["herd"]
        failed = decision["calls"][1]
        assert (failed["expert"], failed["ok"], failed["extracted"]) == ("agree", False, None)
        assert "503" in failed["error"]
        assert decision["answered_by"] == "strong"  # a missing helper: no agreement to trust
        assert "agree=failed" in decision["verdict"]
    assert not router.breakers["agree"].allow()
    decision = router.invoke(QUESTION).response_metadata["herd"]
    skipped = decision["calls"][1]
    assert skipped["expert"] == "agree" and skipped["error"].startswith("not called: circuit open")
    assert "circuit open" in decision["skipped"]["agree"]
    assert [a["expert"] for a in decision["attempts"]] == ["weak", "strong"]


async def test_last_tier_failing_falls_back_to_the_answer_in_hand(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "differ"))
    HTTP.post(f"{servers['strong']}/_herd/faults", json={"fail_next": 4, "fail_status": 503})
    for path, (answer, _) in (await every_path(router)).items():
        decision = answer.response_metadata["herd"]
        assert answer.text == "Answer: A" and decision["answered_by"] == "weak", path
        assert (
            "the last tier failed entirely: returned tier 1's answer from weak"
            in decision["verdict"]
        )
        assert decision["calls"][-1]["expert"] == "strong" and not decision["calls"][-1]["ok"]
        check_books(answer, decision)


async def test_cascade_with_embedding_agreement_on_open_answers(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    """The local MiniLM compares the answers; its cosine is the agreement the scorer reads."""
    measure = EmbeddingAgreement()
    paraphrases = [
        "The capital of France is Paris.",
        "Paris is France's capital.",
        "Bananas.",
        None,
    ]
    matrix = measure.matrix(paraphrases)
    assert matrix[0, 1] > 0.8 > 0.3 > matrix[0, 2] and matrix[3].tolist() == [0.0] * 4

    router = herd(servers, {**cascade(artifacts, "differ"), "agreement": "embedding"})
    for answer in (router.invoke(QUESTION), await router.ainvoke(QUESTION)):
        decision = answer.response_metadata["herd"]
        assert [c["extracted"] for c in decision["calls"][:2]] == ["answer a", "b"]
        cosine = decision["ensemble_scores"]["tier 1 agreement weak~differ"]
        assert 0.0 <= cosine < 0.8
        score = decision["ensemble_scores"]["tier 1 score"]
        assert score == pytest.approx(1 / (1 + math.exp(6 * cosine - 3)))  # the scorer's formula
        assert decision["answered_by"] == ("strong" if score > 0.5 else "weak")


# -- votes --------------------------------------------------------------------------------------


def test_votes_with_a_tie_and_an_unreadable_answer(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    members = ["weak", "differ", "strong"]
    answer = herd(servers, {"kind": "vote", "members": members}).invoke(QUESTION)
    decision = answer.response_metadata["herd"]
    assert decision["strategy"] == "vote" and decision["answered_by"] == "weak"
    assert [c["extracted"] for c in decision["calls"]] == ["A", "B", None]
    assert "tie between ['A', 'B']" in decision["verdict"]
    assert "1 member(s) gave no readable answer" in decision["verdict"]
    assert "strong=unreadable" in decision["verdict"]
    assert decision["ensemble_scores"] == {"vote A": 1.0, "vote B": 1.0}
    check_books(answer, decision)

    weighted = {"kind": "vote", "members": members, "method": "weighted", "weights": {"differ": 2}}
    answer = herd(servers, weighted).invoke(QUESTION)
    assert answer.text == "B" and answer.response_metadata["herd"]["answered_by"] == "differ"

    learned = {"kind": "vote", "method": "learned", "scorer": str(artifacts["learned"])}
    decision = herd(servers, learned).invoke(QUESTION).response_metadata["herd"]
    assert decision["answered_by"] == "differ"
    assert decision["ensemble_scores"]["vote B"] > decision["ensemble_scores"]["vote A"]


async def test_a_failed_voter_falls_back_to_the_next_expert_of_the_ranking(
    servers: dict[str, str],
) -> None:
    router = herd(servers, {"kind": "vote", "members": ["weak", "differ"]})
    HTTP.post(f"{servers['differ']}/_herd/faults", json={"fail_next": 1, "fail_status": 503})
    answer = await router.ainvoke(QUESTION)
    decision = answer.response_metadata["herd"]
    ranking = decision["ranking"]
    spare = next(n for n in ranking if n not in ("weak", "differ"))
    trail = [(c["expert"], c["ok"]) for c in decision["calls"]]
    assert trail == [("weak", True), ("differ", False), (spare, True)]
    assert all(c["role"] == "voter" for c in decision["calls"])


# -- mixture-of-agents ----------------------------------------------------------------------------


class Prompts(BaseCallbackHandler):
    """The messages each expert run was sent, by expert (the herd's child runs)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[BaseMessage]]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        name = kwargs.get("name") or ""
        if name.startswith("expert:"):
            self.sent.append((name.removeprefix("expert:"), inputs["messages"]))


async def test_mixture_of_agents_two_proposers_two_layers(servers: dict[str, str]) -> None:
    ensemble = {"kind": "moa", "proposers": ["weak", "differ"], "aggregator": "strong", "layers": 2}
    router = herd(servers, ensemble)
    prompts = Prompts()
    answer = router.invoke(QUESTION, {"callbacks": [prompts]})
    decision = answer.response_metadata["herd"]
    assert decision["strategy"] == "moa" and decision["answered_by"] == "strong"
    assert [(c["expert"], c["role"]) for c in decision["calls"]] == [
        ("weak", "proposer (layer 1)"),
        ("differ", "proposer (layer 1)"),
        ("weak", "proposer (layer 2)"),
        ("differ", "proposer (layer 2)"),
        ("strong", "aggregator"),
    ]
    assert decision["verdict"] == "strong aggregates 2 proposals (weak, differ) after 2 layer(s)"
    check_books(answer, decision)
    sent = dict(prompts.sent[2:])  # layer 2 and the aggregator
    for name in ("weak", "differ", "strong"):
        system = sent[name][0].text
        assert "synthesize these responses into a single, high-quality response" in system
        assert system.endswith("Responses from models:\n1. Answer: A\n2. B"), system
    assert prompts.sent[0][1][-1].text == QUESTION and len(prompts.sent[0][1]) == 1

    # The aggregator streams live, sync and async, and usage still sums every call.
    for chunks in (
        list(router.stream(QUESTION)),
        [chunk async for chunk in router.astream(QUESTION)],
    ):
        streamed = merged(chunks)
        assert streamed.text == answer.text and len(chunks) > 5
        assert chunks[0].response_metadata[STREAMING_KEY]["streaming"] == "strong"
        check_books(streamed, streamed.response_metadata["herd"])


def test_requests_an_ensemble_cannot_serve_are_routed_to_one_expert(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "differ"))
    decision = router.invoke(
        QUESTION, {"configurable": {"herd_expert": "agree"}}
    ).response_metadata["herd"]
    assert decision["strategy"] is None and decision["calls"] == []
    assert (
        decision["notes"]["ensemble"]
        == "cascade not used: expert 'agree' is pinned; one expert routed"
    )
    assert decision["answered_by"] == "agree"
    # batch goes through the same path as invoke, one ensemble per input.
    for answer in router.batch([QUESTION, QUESTION]):
        assert answer.response_metadata["herd"]["strategy"] == "cascade"


# -- serve-router -------------------------------------------------------------------------------


def test_cascade_through_serve_router_with_the_openai_client(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    router = herd(servers, cascade(artifacts, "differ"))
    app = create_router_app(router, api_keys=["k"], health_interval_s=60)
    endpoint = ServerThread(app).start()
    try:
        client = openai.OpenAI(base_url=f"{endpoint.url}/v1", api_key="k", max_retries=0)
        ask = {"model": "herd", "messages": [{"role": "user", "content": QUESTION}]}
        raw = client.chat.completions.with_raw_response.create(**ask)
        reply = raw.parse()
        decision = reply.model_extra["herd"]  # type: ignore[index]
        assert raw.headers["x-herd-expert"] == "strong" and reply.model == "herd/strong"
        assert decision["strategy"] == "cascade"
        assert [c["expert"] for c in decision["calls"]] == ["weak", "differ", "strong"]
        calls = decision["calls"]
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == sum(c["input_tokens"] for c in calls)
        assert reply.usage.completion_tokens == sum(c["output_tokens"] for c in calls)

        stream = client.chat.completions.create(
            **ask, stream=True, stream_options={"include_usage": True}
        )
        assert stream.response.headers["x-herd-expert"] == "strong"
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
        # Every ensemble call is counted; calling three experts is not a failover.
        metrics = HTTP.get(f"{endpoint.url}/metrics", headers={"Authorization": "Bearer k"}).text
        assert 'herd_router_expert_calls_total{expert="differ"} 2.0' in metrics
        assert "herd_router_failovers_total 0.0" in metrics
    finally:
        endpoint.stop()


def test_ensemble_calls_run_concurrently(
    servers: dict[str, str], artifacts: dict[str, Path]
) -> None:
    """A tier's experts are called at once: two slow experts (1 s each) take about as long
    as the slower one, not the sum (measured against the calls' own latencies, so a busy
    machine slows both sides alike)."""
    router = herd(servers, cascade(artifacts, "agree"))
    for name in ("weak", "agree"):
        HTTP.post(f"{servers[name]}/_herd/faults", json={"latency_ms": 1000})

    def timed(run: Any) -> tuple[float, float]:
        started = time.perf_counter()
        answer = run()
        wall_ms = (time.perf_counter() - started) * 1000
        calls = answer.response_metadata["herd"]["calls"]
        return wall_ms, sum(c["latency_ms"] for c in calls)

    for wall_ms, summed_ms in (
        timed(lambda: router.invoke(QUESTION)),
        timed(lambda: asyncio.run(router.ainvoke(QUESTION))),
    ):
        assert summed_ms >= 2000 and wall_ms < 0.8 * summed_ms, (wall_ms, summed_ms)
