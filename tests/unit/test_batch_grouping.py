"""``HerdRouter.batch``/``abatch`` send queries for adapters of one server grouped together."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from langchain_herd import HerdRouter
from langchain_herd.batch_grouping import grouped_order, shares_servers
from langchain_herd.experts import Expert
from tests.unit.fakes import KeywordClassifier

CLASSIFIER = KeywordClassifier({"math": "sum", "law": "court", "art": "paint"})
QUERIES = ["sum 1", "court 1", "sum 2", "paint 1", "court 2", "sum 3"]


def _herd(calls: list[str], urls: dict[str, str | None], **options: object) -> HerdRouter:
    def model(name: str) -> RunnableLambda[list[BaseMessage], AIMessage]:
        def answer(messages: list[BaseMessage]) -> AIMessage:
            text = str(messages[-1].content)
            calls.append(text)
            return AIMessage(content=f"{name}: {text}")

        return RunnableLambda(answer)

    experts = [
        Expert(name=name, model=model(name), routes=[name], url=url) for name, url in urls.items()
    ]
    return HerdRouter(experts, CLASSIFIER, **options)  # type: ignore[arg-type]


ADAPTERS = {"math": "http://gpu:8080", "law": "http://gpu:8080/", "art": "http://other:8080"}


def test_batch_sends_one_servers_adapters_together_and_answers_in_order() -> None:
    calls: list[str] = []
    router = _herd(calls, ADAPTERS)
    answers = router.batch(QUERIES, {"max_concurrency": 1})
    assert [a.content.split(": ")[1] for a in answers] == QUERIES  # the caller's order
    assert [a.content.split(": ")[0] for a in answers] == [
        "math", "law", "math", "art", "law", "math"
    ]  # fmt: skip
    # Sent grouped: gpu:8080's law adapter, then its math adapter, then the other server.
    assert calls == ["court 1", "court 2", "sum 1", "sum 2", "sum 3", "paint 1"]


def test_abatch_groups_too_and_per_input_configs_follow_their_inputs() -> None:
    calls: list[str] = []
    router = _herd(calls, ADAPTERS)
    configs = [{"max_concurrency": 1} for _ in QUERIES]
    configs[0] = {"max_concurrency": 1, "configurable": {"herd_expert": "art"}}  # pinned
    answers = asyncio.run(router.abatch(QUERIES, configs))
    assert answers[0].content == "art: sum 1"
    assert answers[1].content == "law: court 1"
    assert calls == ["court 1", "court 2", "sum 2", "sum 3", "sum 1", "paint 1"]


def test_nothing_is_reordered_without_shared_servers_or_when_turned_off() -> None:
    calls: list[str] = []
    _herd(calls, {"math": "http://a", "law": "http://b", "art": None}).batch(
        QUERIES, {"max_concurrency": 1}
    )
    assert calls == QUERIES
    calls.clear()
    _herd(calls, ADAPTERS, group_batches=False).batch(QUERIES, {"max_concurrency": 1})
    assert calls == QUERIES


def test_a_query_that_cannot_be_decided_is_sent_last_and_fails_in_its_place() -> None:
    calls: list[str] = []
    router = _herd(calls, ADAPTERS)
    answers = router.batch(["sum 1", "", "court 1"], {"max_concurrency": 1}, return_exceptions=True)
    assert isinstance(answers[1], Exception)
    assert "empty" in str(answers[1]).lower() or "user" in str(answers[1]).lower()
    assert calls == ["court 1", "sum 1"]


def test_grouped_order_and_shared_servers() -> None:
    experts = {
        name: Expert(name=name, model=RunnableLambda(lambda m: AIMessage("")), url=url)
        for name, url in ADAPTERS.items()
    }
    assert shares_servers(experts)
    assert not shares_servers({k: v for k, v in experts.items() if k != "law"})
    assert grouped_order(["art", "math", None, "law", "math"], experts) == [3, 1, 4, 0, 2]
