"""HerdDecisionModel: Choice answers from a herd classifier, sync and async as pairs.

The bundled TF-IDF router (real files, pure numpy) is used wherever the classifier's
own scores matter; a fixed-score classifier is used where the test checks the grouping
and renormalising arithmetic, so the expected numbers can be written down.

langchain-tests (1.1.9) ships no standard suite for decision models (only chat models,
embeddings, tools, stores, retrievers, caches, indexers, sandboxes), so there is none to
subclass here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.decisions import (
    BaseDecisionModel,
    Choice,
    ChoiceAnswer,
    ClassifierRequest,
    ClassifierResponse,
    Noul,
    Question,
    Score,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_herd.classifiers.registry import BUNDLED_DIR, resolve_classifier
from langchain_herd.decision_models import HerdChoiceAnswer, HerdDecisionModel
from langchain_herd.errors import ArtifactError, ConfigError, HerdError, InputError

BUNDLED = "bundled:mmlu-group-tfidf"
GENERAL = ["humanities", "social_sciences", "other"]
STEM_TEXT = "Solve the quadratic equation x^2 - 5x + 6 = 0 and compute the integral."
HUMANITIES_TEXT = "Who was the Roman emperor after Augustus?"


class FixedClassifier:
    """Returns the same scores for every text and records what it was asked, and where."""

    def __init__(self, scores: dict[str, float], mode: str = "category") -> None:
        self.labels = list(scores)
        self.scores = scores
        self.mode = mode
        self.texts: list[str] = []
        self.threads: list[threading.Thread] = []
        self.calls = 0

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        self.calls += 1
        self.texts.extend(texts)
        self.threads.append(threading.current_thread())
        return np.array([[self.scores[label] for label in self.labels] for _ in texts])


def route_question(*labels: str) -> dict[str, Question]:
    return {"route": Choice(instructions="Pick a route.", criteria={k: k for k in labels})}


def ask(state: Any, *labels: str) -> ClassifierRequest:
    return {"state": state, "questions": route_question(*labels)}


def choice(response: ClassifierResponse, question_id: str = "route") -> HerdChoiceAnswer:
    answer = response.choices[question_id]
    assert isinstance(answer, HerdChoiceAnswer)
    return answer


@pytest.fixture(scope="module")
def bundled() -> HerdDecisionModel:
    return HerdDecisionModel.from_pretrained(BUNDLED, label_map={"general": GENERAL})


def test_is_a_langchain_decision_model(bundled: HerdDecisionModel) -> None:
    assert isinstance(bundled, BaseDecisionModel)
    assert bundled.model == BUNDLED
    assert bundled._provider == "herd"


def test_model_name_defaults_to_classifier_kind_or_class() -> None:
    assert HerdDecisionModel(classifier=resolve_classifier(BUNDLED)).model == "tfidf-logreg"
    assert HerdDecisionModel(classifier=FixedClassifier({"a": 1.0})).model == "FixedClassifier"
    named = HerdDecisionModel(classifier=FixedClassifier({"a": 1.0}), model="my-router")
    assert named.model == "my-router"


def test_from_pretrained_reads_a_folder() -> None:
    model = HerdDecisionModel.from_pretrained(BUNDLED_DIR / "mmlu-group-tfidf")
    assert model.classifier.labels == ["humanities", "other", "social_sciences", "stem"]
    answer = choice(model.invoke(ask(STEM_TEXT, "stem")))
    assert answer.choice == "stem"


def test_from_pretrained_unknown_bundle() -> None:
    with pytest.raises(ArtifactError, match="no bundled classifier"):
        HerdDecisionModel.from_pretrained("bundled:no-such-router")


@pytest.mark.parametrize(("text", "expected"), [(STEM_TEXT, "stem"), (HUMANITIES_TEXT, "general")])
def test_bundled_classifier_routes(bundled: HerdDecisionModel, text: str, expected: str) -> None:
    request = ask(HumanMessage(text), "stem", "general")
    answer = choice(bundled.invoke(request))
    raw = bundled.classifier.predict_proba([text])[0]
    scores = dict(zip(bundled.classifier.labels, raw.tolist(), strict=True))
    assert answer.choice == expected
    assert answer.classifier_scores == pytest.approx(scores)
    assert answer.label_groups == {"stem": ["stem"], "general": GENERAL}
    assert answer.probabilities["stem"] == pytest.approx(scores["stem"] / sum(scores.values()))
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    assert answer.confidence == pytest.approx(answer.probabilities[expected])
    assert answer.confidence > 0.9


async def test_sync_and_async_agree(bundled: HerdDecisionModel) -> None:
    for text in (STEM_TEXT, HUMANITIES_TEXT):
        request = ask(text, "stem", "general")
        sync = bundled.invoke(request)
        async_ = await bundled.ainvoke(request)
        assert async_ == sync
        assert choice(async_).classifier_scores == choice(sync).classifier_scores


def test_identity_labels_renormalised_over_the_question() -> None:
    clf = FixedClassifier({"stem": 0.5, "humanities": 0.3, "other": 0.2})
    model = HerdDecisionModel(classifier=clf)
    answer = choice(model.invoke(ask("q", "humanities", "stem")))
    assert answer.probabilities == pytest.approx({"humanities": 0.375, "stem": 0.625})
    assert list(answer.probabilities) == ["humanities", "stem"]  # the question's order
    assert answer.choice == "stem"
    assert answer.confidence == pytest.approx(0.625)
    assert answer.classifier_scores == {"stem": 0.5, "humanities": 0.3, "other": 0.2}


def test_label_map_gathers_labels_and_accepts_a_single_string() -> None:
    clf = FixedClassifier({"stem": 0.4, "humanities": 0.25, "social_sciences": 0.2, "other": 0.15})
    model = HerdDecisionModel(
        classifier=clf,
        label_map={"general": ["humanities", "social_sciences"], "math": "stem"},
    )
    assert model.label_map == {"general": ["humanities", "social_sciences"], "math": ["stem"]}
    answer = choice(model.invoke(ask("q", "math", "general")))
    assert answer.probabilities == pytest.approx({"math": 0.4 / 0.85, "general": 0.45 / 0.85})
    assert answer.choice == "general"
    assert answer.label_groups == {"math": ["stem"], "general": ["humanities", "social_sciences"]}


def test_mapped_and_identity_labels_mix() -> None:
    clf = FixedClassifier({"stem": 0.6, "humanities": 0.3, "other": 0.1})
    model = HerdDecisionModel(classifier=clf, label_map={"rest": ["humanities", "other"]})
    answer = choice(model.invoke(ask("q", "stem", "rest")))
    assert answer.probabilities == pytest.approx({"stem": 0.6, "rest": 0.4})


def test_correctness_classifier_gathers_by_max_unless_told() -> None:
    clf = FixedClassifier({"big": 0.9, "small-a": 0.6, "small-b": 0.5}, mode="correctness")
    label_map = {"small": ["small-a", "small-b"]}
    by_max = HerdDecisionModel(classifier=clf, label_map=label_map)
    request = ask("q", "big", "small")
    assert choice(by_max.invoke(request)).probabilities == pytest.approx(
        {"big": 0.9 / 1.5, "small": 0.6 / 1.5}
    )
    by_sum = HerdDecisionModel(classifier=clf, label_map=label_map, aggregate="sum")
    assert choice(by_sum.invoke(request)).choice == "small"


def test_ties_go_to_the_first_label_and_no_evidence_is_flat() -> None:
    tie = HerdDecisionModel(classifier=FixedClassifier({"a": 0.5, "b": 0.5}))
    assert choice(tie.invoke(ask("q", "b", "a"))).choice == "b"
    zero = HerdDecisionModel(classifier=FixedClassifier({"a": 0.0, "b": 0.0, "c": 1.0}))
    answer = choice(zero.invoke(ask("q", "a", "b")))
    assert answer.probabilities == {"a": 0.5, "b": 0.5}
    assert answer.choice == "a"
    assert answer.confidence == 0.5


def test_several_questions_share_one_classifier_call() -> None:
    clf = FixedClassifier({"stem": 0.7, "humanities": 0.2, "other": 0.1})
    model = HerdDecisionModel(classifier=clf, label_map={"rest": ["humanities", "other"]})
    questions: dict[str, Question] = {
        "coarse": Choice(instructions="?", criteria={"stem": None, "rest": None}),
        "fine": Choice(instructions="?", criteria={"humanities": None, "other": None}),
    }
    response = model.invoke({"state": "q", "questions": questions})
    assert clf.calls == 1
    assert response.choices["coarse"].choice == "stem"
    assert response.choices["fine"].probabilities == pytest.approx(
        {"humanities": 2 / 3, "other": 1 / 3}
    )
    assert response.model == model.model


def test_labels_the_classifier_cannot_score_name_both_sets() -> None:
    model = HerdDecisionModel(classifier=resolve_classifier(BUNDLED))
    request = ask("q", "fast", "stem")
    with pytest.raises(ConfigError) as caught:
        model.invoke(request)
    message = str(caught.value)
    assert "['fast']" in message
    assert "['humanities', 'other', 'social_sciences', 'stem']" in message
    assert "label_map" in message
    assert isinstance(caught.value, ValueError)


async def test_labels_the_classifier_cannot_score_async() -> None:
    clf = FixedClassifier({"stem": 1.0})
    model = HerdDecisionModel(classifier=clf)
    with pytest.raises(ConfigError, match="'fast'"):
        await model.ainvoke(ask("q", "fast"))
    assert clf.calls == 0  # refused before scoring


def test_label_map_is_checked_against_the_classifier() -> None:
    clf = FixedClassifier({"stem": 0.5, "other": 0.5})
    with pytest.raises(ConfigError, match=r"'science'.*\['stem', 'other'\]"):
        HerdDecisionModel(classifier=clf, label_map={"s": ["science"]})
    with pytest.raises(ConfigError, match="is empty"):
        HerdDecisionModel(classifier=clf, label_map={"s": []})
    with pytest.raises(ConfigError, match="both"):
        HerdDecisionModel(classifier=clf, label_map={"a": ["stem"], "b": ["stem", "other"]})


def test_a_classifier_label_feeds_one_choice_label_per_question() -> None:
    clf = FixedClassifier({"stem": 0.5, "other": 0.5})
    model = HerdDecisionModel(classifier=clf, label_map={"all": ["stem", "other"]})
    with pytest.raises(ConfigError, match="'stem' would feed both"):
        model.invoke(ask("q", "all", "stem"))


@pytest.mark.parametrize(
    "question",
    [
        Noul(instructions="Is this about maths?"),
        Score(instructions="How hard?", criteria=["easy", "hard"]),
    ],
)
def test_only_choice_questions(question: Question) -> None:
    model = HerdDecisionModel(classifier=FixedClassifier({"a": 1.0}))
    with pytest.raises(InputError, match="Choice questions only") as caught:
        model.invoke({"state": "q", "questions": {"q": question}})
    assert isinstance(caught.value, TypeError)


def test_no_questions() -> None:
    model = HerdDecisionModel(classifier=FixedClassifier({"a": 1.0}))
    with pytest.raises(InputError, match="no questions"):
        model.invoke({"state": "q", "questions": {}})


HISTORY = [
    SystemMessage("You are terse."),
    HumanMessage("first question"),
    AIMessage("first answer"),
    HumanMessage("second question"),
    AIMessage("second answer"),
]


@pytest.mark.parametrize(
    ("state", "text"),
    [
        ("plain text", "plain text"),
        (HumanMessage("a message"), "a message"),
        (HumanMessage([{"type": "text", "text": "block text"}]), "block text"),
        (HISTORY, "second question"),
        ({"messages": HISTORY, "other": 1}, "second question"),
        ({"messages": "text under the key"}, "text under the key"),
        ([("system", "be brief"), ("user", "tuple turn")], "tuple turn"),
    ],
)
def test_classifies_the_latest_human_turn(state: Any, text: str) -> None:
    clf = FixedClassifier({"a": 1.0})
    model = HerdDecisionModel(classifier=clf)
    model.invoke(ask(state, "a"))
    assert clf.texts == [text]
    assert model.text_of(state) == text


def test_text_options() -> None:
    clf = FixedClassifier({"a": 1.0})
    joined = HerdDecisionModel(classifier=clf, text_from="all_user")
    assert joined.text_of(HISTORY) == "first question\nsecond question"
    keyed = HerdDecisionModel(classifier=clf, state_key="history")
    assert keyed.text_of({"history": HISTORY}) == "second question"
    custom = HerdDecisionModel(classifier=clf, select_text=lambda state: state["ticket"]["body"])
    custom.invoke(ask({"ticket": {"body": "printer on fire"}}, "a"))
    assert clf.texts == ["printer on fire"]


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"input": "x"}, "no key 'messages'"),
        (HumanMessage(""), "no text to classify"),
        (HumanMessage([{"type": "image", "url": "https://example.com/a.png"}]), "no text"),
        (42, "type int"),
        ([{"not": "a message"}], "could not read"),
    ],
)
def test_unreadable_state(state: Any, match: str) -> None:
    model = HerdDecisionModel(classifier=FixedClassifier({"a": 1.0}))
    with pytest.raises(InputError, match=match):
        model.invoke(ask(state, "a"))


class BrokenClassifier:
    def __init__(self, row: list[float]) -> None:
        self.labels = ["a", "b"]
        self.row = row

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        return np.array([self.row])


@pytest.mark.parametrize(
    ("row", "match"),
    [([0.5], "shape"), ([0.5, float("nan")], "not finite"), ([1.5, -0.5], "outside")],
)
def test_bad_classifier_output(row: list[float], match: str) -> None:
    model = HerdDecisionModel(classifier=BrokenClassifier(row))
    with pytest.raises(ArtifactError, match=match) as caught:
        model.invoke(ask("q", "a", "b"))
    assert isinstance(caught.value, HerdError)


def test_rejects_objects_that_are_not_classifiers() -> None:
    with pytest.raises(ConfigError, match="must be a Classifier"):
        HerdDecisionModel(object())  # type: ignore[arg-type]


def test_classifier_may_be_positional() -> None:
    clf = FixedClassifier({"a": 0.25, "b": 0.75})
    model = HerdDecisionModel(clf, label_map={"x": "b"})
    assert model.classifier is clf
    assert model.label_map == {"x": ["b"]}


async def test_ainvoke_scores_off_the_event_loop() -> None:
    clf = FixedClassifier({"a": 0.75, "b": 0.25})
    model = HerdDecisionModel(classifier=clf)
    loop_thread = threading.current_thread()
    answer = choice(await model.ainvoke(ask("q", "a", "b")))
    assert answer.choice == "a"
    assert clf.threads and all(t is not loop_thread for t in clf.threads)


async def test_ainvoke_does_not_block_concurrent_work() -> None:
    class SlowClassifier(FixedClassifier):
        def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
            threading.Event().wait(0.2)  # CPU-bound stand-in: blocks its thread
            return super().predict_proba(texts)

    model = HerdDecisionModel(classifier=SlowClassifier({"a": 1.0}))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1

    await asyncio.gather(model.ainvoke(ask("q", "a")), ticker())
    assert ticks == 10


async def test_abatch_matches_batch(bundled: HerdDecisionModel) -> None:
    requests: list[ClassifierRequest] = [
        ask(text, "stem", "general") for text in (STEM_TEXT, HUMANITIES_TEXT)
    ]
    sync = bundled.batch(requests)
    async_ = await bundled.abatch(requests)
    assert [r.choices["route"].choice for r in sync] == ["stem", "general"]
    assert async_ == sync


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.outputs: list[Any] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append(dict(metadata or {}))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.outputs.append(outputs)


@pytest.mark.parametrize("use_async", [False, True])
async def test_traced_run_names_provider_and_model(
    bundled: HerdDecisionModel, use_async: bool
) -> None:
    recorder = RunRecorder()
    request = ask(STEM_TEXT, "stem", "general")
    config: Any = {"callbacks": [recorder]}
    if use_async:
        await bundled.ainvoke(request, config)
    else:
        bundled.invoke(request, config)
    assert recorder.starts[0]["ls_provider"] == "herd"
    assert recorder.starts[0]["ls_model_name"] == BUNDLED
    traced = recorder.outputs[0]
    assert isinstance(traced, ClassifierResponse)
    assert isinstance(traced.choices["route"], ChoiceAnswer)
    assert choice(traced).classifier_scores["stem"] > 0.9


def test_raw_scores_survive_serialize_as_any(bundled: HerdDecisionModel) -> None:
    response = bundled.invoke(ask(STEM_TEXT, "stem"))
    dumped = response.model_dump(serialize_as_any=True)
    assert set(dumped["answers"]["route"]["classifier_scores"]) == set(bundled.classifier.labels)
    assert "classifier_scores" not in response.model_dump()["answers"]["route"]
