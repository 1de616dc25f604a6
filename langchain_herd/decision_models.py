"""The herd's trained router classifier as a LangChain decision model.

``HerdDecisionModel`` answers ``Choice`` questions from
:mod:`langchain_core.decisions` (beta since langchain-core 1.8) with a classifier from
:mod:`langchain_herd.classifiers`, so that LangChain's own
``langchain.agents.middleware.ModelRouterMiddleware`` can route a ``create_agent`` agent
with a herd-trained router. The classifier only scores; this module turns its scores into
the distribution a ``Choice`` asks for; the middleware (or any caller) decides what to do
with the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

try:
    from langchain_core.decisions import (
        BaseDecisionModel,
        Choice,
        ChoiceAnswer,
        ClassifierResponse,
        Question,
        State,
    )
except ImportError as exc:  # langchain_core.decisions appeared (in beta) in langchain-core 1.8
    raise ImportError(
        "langchain_herd.decision_models needs langchain-core>=1.8 (langchain_core.decisions); "
        "upgrade it with: pip install -U 'langchain-core>=1.8'"
    ) from exc
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from pydantic import ConfigDict, Field
from typing_extensions import Self, override

from langchain_herd.classifiers.base import Classifier
from langchain_herd.errors import ArtifactError, ConfigError, InputError
from langchain_herd.inputs import QueryMode, query_text

__all__ = ["HerdChoiceAnswer", "HerdDecisionModel"]

Aggregate = Literal["sum", "max"]
"""How the scores of the classifier labels gathered under one choice label combine."""


class HerdChoiceAnswer(ChoiceAnswer):
    """A ``ChoiceAnswer`` that also carries the classifier's raw scores.

    ``probabilities`` is the distribution over the question's labels (renormalised over
    the classifier labels they gather); the two extra fields say where it came from.
    ``ClassifierResponse`` declares its answers as ``ChoiceAnswer``, so
    ``response.model_dump()`` leaves these fields out unless called with
    ``serialize_as_any=True``; the answer object itself (``response.choices[...]``, or the
    ``model_route`` that ``ModelRouterMiddleware`` keeps in agent state) has them.
    """

    classifier_scores: dict[str, float]
    """The classifier's raw score for each of its labels, before grouping and renormalising."""

    label_groups: dict[str, list[str]]
    """For each choice label, the classifier labels whose scores it gathered."""


class HerdDecisionModel(BaseDecisionModel):
    """A herd-trained router classifier answering LangChain ``Choice`` questions.

    Each ``Choice`` label is scored by one or more of the classifier's labels: by default
    the classifier label of the same name, or the ones ``label_map`` gathers under it.
    The answer's ``probabilities`` are the gathered scores renormalised over the
    question's labels, ``choice`` is the most probable label (ties go to the label listed
    first) and ``confidence`` is that label's probability. The classifier's raw scores are
    kept on the answer (:class:`HerdChoiceAnswer`). Only ``Choice`` questions are
    supported; a trained classifier has no way to read a ``Noul``, ``Score`` or ``Box``
    question's instructions, and for the same reason ``Choice.instructions`` and the
    criteria's descriptions are not read: the classifier was trained on its labels.

    ``langchain_core.decisions`` is in beta (langchain-core 1.8), and so is this class: it
    follows that API where it moves.

    The text classified is the newest human turn of the state (``text_from``), which is
    what ``ModelRouterMiddleware`` passes: it sends only the latest ``HumanMessage``.
    ``invoke`` runs the classifier in the caller's thread; ``ainvoke`` runs it in a worker
    thread, so the event loop is never blocked by the classifier's CPU work.

    Example:
        .. code-block:: python

            from langchain_core.decisions import Choice
            from langchain_herd.decision_models import HerdDecisionModel

            classifier = HerdDecisionModel.from_pretrained(
                "bundled:mmlu-group-tfidf",
                label_map={"general": ["humanities", "social_sciences", "other"]},
            )
            route = Choice(
                instructions="Pick the expert for the task.",
                criteria={"stem": "Maths, science and code.", "general": "Everything else."},
            )
            response = classifier.invoke(
                {"state": "Solve the equation x^2 - 5x + 6 = 0.", "questions": {"route": route}}
            )
            print(response.choices["route"].choice)  # stem

        Routing an agent: pass it to LangChain's router middleware, whose choices are the
        question's labels (``math_model`` and ``general_model`` are any chat models).

        .. code-block:: python

            from langchain.agents import create_agent
            from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware

            router = ModelRouterMiddleware(
                choices={
                    "stem": ModelChoice(math_model, "Maths, science and code."),
                    "general": ModelChoice(general_model, "Everything else."),
                },
                instructions="Pick the expert for the task.",
                classifier=classifier,
            )
            agent = create_agent(general_model, tools=[search], middleware=[router])
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str
    """Name reported as ``ls_model_name``; defaults to the classifier's kind or class name."""

    classifier: Classifier = Field(exclude=True)
    """The classifier that scores the text (``labels`` plus ``predict_proba``)."""

    label_map: dict[str, list[str]] = Field(default_factory=dict)
    """Choice label -> the classifier labels it gathers (a single label may be a string)."""

    aggregate: Aggregate | None = None
    """Combine gathered scores by ``sum`` or ``max``; default by the classifier's mode."""

    text_from: QueryMode = "last_user"
    """``last_user`` classifies the newest human turn; ``all_user`` joins every human turn."""

    state_key: str = "messages"
    """Where a dict state keeps its messages (or text)."""

    # Callable[[Any], ...]: pydantic cannot resolve core's recursive ``State`` alias here.
    select_text: Callable[[Any], str] | None = Field(default=None, exclude=True)
    """Custom ``state -> text`` function; when set, ``text_from`` and ``state_key`` are unused."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        label_map: Mapping[str, str | Sequence[str]] | None = None,
        aggregate: Aggregate | None = None,
        text_from: QueryMode = "last_user",
        state_key: str = "messages",
        select_text: Callable[[Any], str] | None = None,
        model: str | None = None,
        **fields: Any,
    ) -> None:
        """Wrap ``classifier``; the arguments are the fields of the same names.

        Raises:
            ConfigError: if ``classifier`` is not a classifier, or ``label_map`` names
                labels the classifier does not score or gives one label to two choices.
        """
        if not isinstance(classifier, Classifier):
            raise ConfigError(
                f"classifier must be a Classifier (labels + predict_proba), got "
                f"{type(classifier).__name__}; load one with HerdDecisionModel.from_pretrained"
            )
        values: dict[str, Any] = {
            "classifier": classifier,
            "label_map": _check_label_map(label_map or {}, list(classifier.labels)),
            "aggregate": aggregate,
            "text_from": text_from,
            "state_key": state_key,
            "select_text": select_text,
            "model": model or str(getattr(classifier, "kind", "") or type(classifier).__name__),
        }
        # One dict: the base class's __init__ is typed with its own fields only.
        super().__init__(**values, **fields)

    @classmethod
    def from_pretrained(cls, reference: str | Path, **kwargs: Any) -> Self:
        """Load a saved classifier and wrap it.

        Args:
            reference: a classifier folder (``config.json`` + safetensors) or
                ``bundled:<name>`` for one shipped with the package.
            **kwargs: the other fields (``label_map``, ``text_from``, ...); ``model``
                defaults to ``reference``.

        Returns:
            The decision model over the loaded classifier.
        """
        from langchain_herd.classifiers.registry import resolve_classifier

        kwargs.setdefault("model", str(reference))
        return cls(resolve_classifier(str(reference)), **kwargs)

    @property
    @override
    def _provider(self) -> str:
        return "herd"

    @override
    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        groups = self._plan(questions)
        text = self.text_of(state)
        return self._answer(groups, self._score(text))

    @override
    async def _aclassify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        groups = self._plan(questions)
        text = self.text_of(state)
        # predict_proba is CPU work (tens of ms for encoder classifiers): keep it off the loop.
        scores = await asyncio.to_thread(self._score, text)
        return self._answer(groups, scores)

    def text_of(self, state: State) -> str:
        """The text the classifier scores for ``state``.

        Args:
            state: what the decision model was asked about: a string, a message, a list
                of messages, or a dict holding one of those under ``state_key``.

        Returns:
            The text to classify (by default the newest human turn).

        Raises:
            InputError: if the state holds no text to classify.
        """
        if self.select_text is not None:
            text = self.select_text(state)
        else:
            text = query_text(self._messages(state), self.text_from)
        if not text.strip():
            raise InputError(
                "the decision state has no text to classify (no human turn with text); "
                "pass text or messages, or give HerdDecisionModel a select_text function"
            )
        return text

    def _messages(self, state: State) -> list[BaseMessage]:
        value: Any = state
        if isinstance(value, Mapping):
            if self.state_key not in value:
                raise InputError(
                    f"dict state has no key {self.state_key!r} (keys: {sorted(value)}); "
                    "set HerdDecisionModel(state_key=...) or select_text=..."
                )
            value = value[self.state_key]
        if isinstance(value, str):
            return [HumanMessage(content=value)]
        if isinstance(value, BaseMessage):
            return [value]
        if isinstance(value, Sequence):
            try:
                return convert_to_messages(value)
            except (ValueError, TypeError, NotImplementedError) as exc:
                raise InputError(
                    f"could not read the decision state as chat messages ({exc}); "
                    "give HerdDecisionModel a select_text function for this state"
                ) from exc
        raise InputError(
            f"cannot classify a state of type {type(value).__name__}; pass text, messages, "
            "or give HerdDecisionModel a select_text function"
        )

    def _plan(self, questions: Mapping[str, Question]) -> dict[str, dict[str, list[str]]]:
        """For each question, the classifier labels that feed each of its choice labels."""
        if not questions:
            raise InputError("no questions to answer: pass at least one Choice")
        known = list(self.classifier.labels)
        plan: dict[str, dict[str, list[str]]] = {}
        for question_id, question in questions.items():
            if not isinstance(question, Choice):
                raise InputError(
                    f"question {question_id!r} is a {type(question).__name__}; "
                    "HerdDecisionModel answers Choice questions only (a trained classifier "
                    "scores fixed labels and cannot read other questions' instructions)"
                )
            groups: dict[str, list[str]] = {}
            missing: list[str] = []
            for choice_label in question.criteria:
                if choice_label in self.label_map:
                    groups[choice_label] = list(self.label_map[choice_label])
                elif choice_label in known:
                    groups[choice_label] = [choice_label]
                else:
                    missing.append(choice_label)
            if missing:
                raise ConfigError(
                    f"Choice {question_id!r} asks for labels {missing} that the classifier "
                    f"cannot score: its labels are {known}, and label_map covers "
                    f"{sorted(self.label_map)}; map each choice label to classifier labels "
                    "with HerdDecisionModel(label_map={choice_label: [classifier labels]})"
                )
            seen: dict[str, str] = {}
            for choice_label, group in groups.items():
                for label in group:
                    if label in seen:
                        raise ConfigError(
                            f"Choice {question_id!r}: classifier label {label!r} would feed "
                            f"both {seen[label]!r} and {choice_label!r}; give each classifier "
                            "label to one choice label only (check label_map)"
                        )
                    seen[label] = choice_label
            plan[question_id] = groups
        return plan

    def _score(self, text: str) -> dict[str, float]:
        labels = list(self.classifier.labels)
        matrix: npt.NDArray[np.float64] = np.asarray(
            self.classifier.predict_proba([text]), dtype=np.float64
        )
        if matrix.shape != (1, len(labels)):
            raise ArtifactError(
                f"classifier returned scores of shape {matrix.shape} for one text; expected "
                f"(1, {len(labels)}), one score per label {labels}"
            )
        row = matrix[0]
        if not np.all(np.isfinite(row)) or np.any(row < 0):
            raise ArtifactError(
                f"classifier returned scores outside [0, inf) or not finite: "
                f"{dict(zip(labels, row.tolist(), strict=True))}"
            )
        return dict(zip(labels, row.tolist(), strict=True))

    def _answer(
        self, plan: Mapping[str, Mapping[str, list[str]]], scores: Mapping[str, float]
    ) -> ClassifierResponse:
        aggregate = self.aggregate or (
            "max" if getattr(self.classifier, "mode", "category") == "correctness" else "sum"
        )
        combine: Callable[[list[float]], float] = sum if aggregate == "sum" else max
        answers: dict[str, Any] = {}
        for question_id, groups in plan.items():
            gathered = {
                choice_label: combine([scores[label] for label in group])
                for choice_label, group in groups.items()
            }
            total = sum(gathered.values())
            if total > 0:
                probabilities = {label: value / total for label, value in gathered.items()}
            else:
                # No evidence for any label the question asks about: say so with a flat
                # distribution rather than inventing a preference.
                probabilities = {label: 1.0 / len(gathered) for label in gathered}
            choice = max(probabilities, key=lambda label: probabilities[label])
            answers[question_id] = HerdChoiceAnswer(
                type="choice",
                choice=choice,
                probabilities=probabilities,
                confidence=min(max(probabilities[choice], 0.0), 1.0),
                classifier_scores=dict(scores),
                label_groups={label: list(group) for label, group in groups.items()},
            )
        return ClassifierResponse(model=self.model, answers=answers)


def _check_label_map(
    label_map: Mapping[str, str | Sequence[str]], known: list[str]
) -> dict[str, list[str]]:
    """``label_map`` with single labels as lists, checked against the classifier's labels."""
    checked: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for choice_label, value in label_map.items():
        group = [value] if isinstance(value, str) else list(value)
        if not group:
            raise ConfigError(
                f"label_map[{choice_label!r}] is empty; map it to one or more of the "
                f"classifier's labels {known}"
            )
        unknown = [label for label in group if label not in known]
        if unknown:
            raise ConfigError(
                f"label_map[{choice_label!r}] names {unknown}, which the classifier does not "
                f"score; its labels are {known}"
            )
        for label in group:
            if owner.get(label, choice_label) != choice_label:
                raise ConfigError(
                    f"label_map gives classifier label {label!r} to both {owner[label]!r} "
                    f"and {choice_label!r}; each classifier label may feed one choice label only"
                )
            owner[label] = choice_label
        checked[choice_label] = group
    return checked
