"""The routing engine: classify, rank, call experts in order with fallbacks and breakers.

It knows nothing of how it is called. The surfaces over it (the ``HerdRouter`` chat model,
the agent middleware, an HTTP endpoint) hand it the messages and a way to call one expert;
the engine decides who is called, in what order, and records every step in a
``RouteDecision``. There is no other copy of the fallback loop.

With an ``Ensemble`` (a cascade, vote or mixture-of-agents from ``langchain_herd.ensembles``),
``decide`` sets ``decision.strategy`` and the engine hands such decisions to it; the ensemble
makes each of its calls through ``admit``, ``attempt`` and ``stream_from`` here, so breakers,
fallbacks and the attempts trail apply to every one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from langchain_herd.backpressure import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_BACKOFF_S,
    Backoff,
    BackPressure,
)
from langchain_herd.breaker import Breaker, CircuitBreaker
from langchain_herd.capabilities import Requirements
from langchain_herd.classifiers.base import Classifier
from langchain_herd.config import DEFAULT_FALLBACK_ON, FailureKind
from langchain_herd.context_limits import ContextGuard
from langchain_herd.deadlines import Deadline
from langchain_herd.decision import Attempt, RouteDecision
from langchain_herd.errors import (
    AllExpertsFailedError,
    CapabilityError,
    ConfigError,
    EmptyAnswerError,
    ExpertsOverloadedError,
    InputError,
    StreamInterruptedError,
)
from langchain_herd.experts import Expert
from langchain_herd.failures import Failure, classify_failure
from langchain_herd.inputs import (
    QueryMode,
    check_messages,
    check_text,
    classifier_text,
    query_text,
)
from langchain_herd.policies import ArgmaxPolicy, Policy
from langchain_herd.sessions import InMemorySessions, SessionStore

DECISION_KEY = "herd"
"""Key of the decision in an answer's ``response_metadata``."""

ExpertCall = Callable[[Expert, list[BaseMessage]], BaseMessage]
"""Calls one expert with the messages to send (before its system prompt) for its answer."""
AsyncExpertCall = Callable[[Expert, list[BaseMessage]], Awaitable[BaseMessage]]
"""``ExpertCall`` for async paths."""
ExpertStream = Callable[[Expert, list[BaseMessage]], Iterator[BaseMessage]]
"""Streams one expert's answer to the messages."""
AsyncExpertStream = Callable[[Expert, list[BaseMessage]], AsyncIterator[BaseMessage]]
"""``ExpertStream`` for async paths."""

#: Failure kinds caused by the request itself (too long, a feature this expert lacks, a
#: bad parameter): another expert may take it, but they say nothing of the expert's health.
REQUEST_FAULTS: frozenset[FailureKind] = frozenset({"invalid_input", "client_error"})
#: Failure kinds that say the expert is busy, not broken: back-pressure (``backpressure.py``),
#: never a breaker failure.
BUSY_FAULTS: frozenset[FailureKind] = frozenset({"rate_limited"})

BACKOFF_SKIP = "backing off after HTTP 429 (overloaded)"
"""Start of ``decision.skipped``'s reason for an expert skipped while it is backed off."""
NO_CHUNKS = frozenset({"No generation chunks were returned", "No generations found in stream."})
"""LangChain's ``ValueError`` messages for a chat model whose stream ended without a single
chunk (``stream`` / ``astream``, and ``generate_from_stream`` under an ``invoke``)."""


@dataclass
class RouteRequest:
    """Everything the engine needs to decide one call."""

    messages: list[BaseMessage]
    """The conversation as the experts will receive it (before their system prompts)."""
    query: str | None = None
    """Text to classify instead of the messages' user turns (``route_on``)."""
    needs: Requirements = field(default_factory=Requirements)
    """What the answering expert must honour (tools, structured output)."""
    pin: str | None = None
    """Call only this expert (per-call ``configurable``)."""
    policy: Policy | None = None
    """Rank with this policy instead of the engine's (per-call ``configurable``)."""
    thread_id: str | None = None
    """Conversation thread, for sticky routes across turns."""
    model: str | None = None
    """Only experts serving this model id may answer (a per-call ``model``)."""
    max_new_tokens: int | None = None
    """The call's answer length (``max_tokens``), which a total token limit must leave room
    for; None: each expert's configured ``max_new_tokens``."""


class Ensemble(Protocol):
    """Answers one query with several experts (``langchain_herd.ensembles``).

    The engine hands it a decision for which ``decide`` chose it (``decision.strategy``); it
    makes every call through the engine's ``admit``, ``attempt`` and ``stream_from``, so
    breakers, fallbacks and the decision trail apply to each one.
    """

    kind: str
    """``cascade``, ``vote`` or ``moa``: what ``decision.strategy`` says."""

    def invoke(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: ExpertCall,
    ) -> BaseMessage: ...

    async def ainvoke(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: AsyncExpertCall,
    ) -> BaseMessage: ...

    def stream(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: ExpertCall,
        stream: ExpertStream,
    ) -> Iterator[AIMessageChunk]: ...

    def astream(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: AsyncExpertCall,
        stream: AsyncExpertStream,
    ) -> AsyncIterator[AIMessageChunk]: ...


@dataclass
class Outcome:
    """One expert call's result: its answer, or the failure the engine may fall back on."""

    expert: str
    answer: BaseMessage | None
    failure: Failure | None
    latency_ms: float


def has_answer(message: BaseMessage) -> bool:
    """Text, or a tool call: an empty reply counts as a failure so the herd falls back."""
    if message.text.strip():
        return True
    return bool(getattr(message, "tool_calls", None) or getattr(message, "tool_call_chunks", None))


TOOL_CALL_KEY = "tool_call:"
"""Session-store key prefix of a tool call's id, mapped to the expert that made the call."""


def answered_this_turn(
    messages: Sequence[BaseMessage], sessions: SessionStore | None = None
) -> str | None:
    """The expert that answered earlier in the current turn (the agent's tool loop), if any.

    A turn starts at the last human message; an AI message after it was written by this herd
    when it carries a decision, so the loop's next model call stays with the same expert.
    Clients that drop ``response_metadata`` (an OpenAI client of the HTTP endpoint, messages
    stored as plain dicts) still send the tool calls' ids back: ``remember`` kept each id's
    expert in ``sessions``.
    """
    if not messages or isinstance(messages[-1], HumanMessage):
        return None
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return None
        if isinstance(message, AIMessage):
            decision = message.response_metadata.get(DECISION_KEY)
            if isinstance(decision, dict) and isinstance(decision.get("answered_by"), str):
                return decision["answered_by"]
            if sessions is not None:
                for call_id in tool_call_ids(message):
                    held = sessions.get(TOOL_CALL_KEY + call_id)
                    if held is not None:
                        return held
    return None


def tool_call_ids(message: BaseMessage) -> list[str]:
    """Ids of the tool calls in an answer or a stream chunk (each id is in its first chunk)."""
    calls = [*getattr(message, "tool_calls", []), *getattr(message, "tool_call_chunks", [])]
    return [str(call["id"]) for call in calls if call.get("id")]


class _Trial:
    """Bookkeeping for one expert call: timing, breaker and the decision trail."""

    def __init__(self, engine: HerdEngine, decision: RouteDecision, name: str) -> None:
        self.engine = engine
        self.decision = decision
        self.name = name
        self.started = time.perf_counter()
        self.settled = False

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def succeeded(self) -> None:
        self.settled = True
        self.engine.breakers[self.name].record_success()
        self.engine.pressure.answered(self.name)
        self.decision.attempts.append(
            Attempt(expert=self.name, ok=True, latency_ms=self.elapsed_ms())
        )
        self.decision.answered_by = self.name

    def failed(self, exc: BaseException, kind: FailureKind | None = None) -> Failure | None:
        """Record a failure; return it when the engine may fall back, else None."""
        self.settled = True
        failure = classify_failure(exc)
        if failure is not None and kind is not None:
            failure = Failure(kind, failure.message, failure.status_code)
        recorded = failure or Failure("client_error", f"{type(exc).__name__}: {exc}")
        self.decision.attempts.append(
            Attempt(
                expert=self.name,
                ok=False,
                latency_ms=self.elapsed_ms(),
                failure=recorded.kind,
                error=recorded.message,
                status_code=recorded.status_code,
            )
        )
        breaker = self.engine.breakers[self.name]
        if failure is not None and failure.kind in BUSY_FAULTS:
            # Busy, not broken: back off instead of counting towards an outage.
            self.engine.pressure.overloaded(self.name, failure)
            breaker.release_probe()
        elif failure is None or failure.kind in REQUEST_FAULTS:
            # The request's own fault (or a bug): the breaker measures expert health only.
            breaker.release_probe()
        else:
            breaker.record_failure()
        if failure is None:
            return None
        return failure if failure.kind in self.engine.fallback_on else None

    def abandon(self) -> None:
        """The caller stopped (cancelled, closed the stream): free a half-open probe slot."""
        if not self.settled:
            self.engine.breakers[self.name].release_probe()


class HerdEngine:
    """Decide who answers and run the attempts; shared by every surface of the herd.

    Example:
        .. code-block:: python

            engine = HerdEngine([Expert("a", chat_a), Expert("b", chat_b)], classifier)
            request = RouteRequest([HumanMessage("2 + 2?")])
            decision = engine.decide(request)
            answer = engine.invoke(
                decision, request.messages, lambda expert, messages: expert.model.invoke(messages)
            )
    """

    def __init__(
        self,
        experts: Sequence[Expert],
        classifier: Classifier,
        *,
        policy: Policy | None = None,
        default_expert: str | None = None,
        max_attempts: int = 3,
        fallback_on: Sequence[FailureKind] = DEFAULT_FALLBACK_ON,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 30.0,
        query_mode: QueryMode = "all_user",
        sticky_margin: float | None = 0.1,
        sessions: SessionStore | None = None,
        breaker_factory: Callable[[str], Breaker] | None = None,
        name: str = "herd",
        ensemble: Ensemble | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        backoff_factory: Callable[[str], Backoff] | None = None,
    ) -> None:
        """Build the engine.

        Args:
            experts: the herd, in preference order for ties.
            classifier: scores queries against route labels (or expert names).
            policy: ranks experts from scores; default ``ArgmaxPolicy``.
            default_expert: fallback anchor and the ``margin`` policy's home.
            max_attempts: most experts called for one request.
            fallback_on: failure kinds that move on to the next expert.
            breaker_threshold: consecutive failures that open an expert's breaker.
            breaker_cooldown_s: seconds an open breaker skips its expert before a probe.
            query_mode: classify every user turn (``all_user``) or only the last.
            sticky_margin: a thread's follow-up stays with the previous expert unless the
                best expert's score beats it by more than this; None turns threads off.
            sessions: where threads' experts are kept; default in-process, bounded.
            breaker_factory: makes each expert's breaker from its name (shared state across
                replicas); default an in-process ``CircuitBreaker`` with the threshold and
                cooldown above.
            name: the herd's name in traces.
            ensemble: answer with several experts (a cascade, vote or mixture-of-agents from
                ``langchain_herd.ensembles``); None routes each query to one expert.
            backoff_s: how long an expert that answered 429 without ``Retry-After`` is
                skipped (``langchain_herd.backpressure``); never a breaker failure.
            max_backoff_s: the longest back-off, ``Retry-After`` included.
            backoff_factory: makes each expert's back-off from its name (shared state across
                replicas); default in-process.
        """
        if not experts:
            raise ConfigError("a herd needs at least one expert")
        self.experts: dict[str, Expert] = {}
        for expert in experts:
            if expert.name in self.experts:
                raise ConfigError(f"two experts are named {expert.name!r}; names must be unique")
            self.experts[expert.name] = expert
        self.classifier = classifier
        self.policy: Policy = policy or ArgmaxPolicy()
        self.default_expert = default_expert or experts[0].name
        if self.default_expert not in self.experts:
            raise ConfigError(
                f"default expert {self.default_expert!r} is not in the herd ({list(self.experts)})"
            )
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.fallback_on = frozenset(fallback_on)
        make_breaker = breaker_factory or (
            lambda _name: CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        )
        self.breakers: dict[str, Breaker] = {name: make_breaker(name) for name in self.experts}
        self.pressure = BackPressure(
            list(self.experts),
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            backoff_factory=backoff_factory,
        )
        self.query_mode: QueryMode = query_mode
        self.sticky_margin = sticky_margin
        self.sessions: SessionStore = sessions if sessions is not None else InMemorySessions()
        self.name = name
        self.label_experts = self._map_labels()
        self.context = ContextGuard(self.experts)
        self.ensemble = ensemble

    def _map_labels(self) -> dict[str, list[str]]:
        if getattr(self.classifier, "mode", None) == "correctness":
            # A correctness router predicts, per expert, whether it answers right: its labels
            # are the experts it was trained on, and must all be in this herd.
            missing = [label for label in self.classifier.labels if label not in self.experts]
            if missing:
                raise ConfigError(
                    f"this correctness classifier was trained for experts {missing} that are not "
                    f"in the herd (herd: {list(self.experts)}); name the herd's experts like the "
                    f"correctness table's model columns, or train a router for this herd"
                )
            return {label: [label] for label in self.classifier.labels}
        mapping: dict[str, list[str]] = {}
        for expert in self.experts.values():
            for label in expert.routes:
                mapping.setdefault(label, []).append(expert.name)
        for label in self.classifier.labels:
            # Correctness routers score experts directly: a label named like an expert is it.
            if label not in mapping and label in self.experts:
                mapping[label] = [label]
        unserved = [label for label in self.classifier.labels if label not in mapping]
        if unserved:
            raise ConfigError(
                f"the classifier's labels {unserved} are served by no expert (classifier labels: "
                f"{list(self.classifier.labels)}; expert routes: "
                f"{ {e.name: e.routes for e in self.experts.values()} }); add each label to "
                f"some expert's `routes`, or use a classifier trained for this herd"
            )
        return mapping

    # -- deciding ---------------------------------------------------------------------

    def decide(self, request: RouteRequest) -> RouteDecision:
        """Score, rank, apply capabilities, pins and sticky routes; call nobody.

        Raises:
            InputError: the pinned expert is not in the herd, or the input cannot be answered
                (no user turn, an empty latest turn, text that is not valid Unicode).
            CapabilityError: no expert (or not the pinned one) can honour the request.
            ContextLengthError: (a ``CapabilityError``) the input is too long for every expert
                that could take it, or for the pinned one.
        """
        check_messages(request.messages)
        if request.query is not None:
            check_text(request.query, "the routing query (herd_query)")
        full = request.query if request.query is not None else self.query_of(request.messages)
        text, cut = classifier_text(full)
        started = time.perf_counter()
        proba = self.classifier.predict_proba([text])
        classify_ms = (time.perf_counter() - started) * 1000
        scores = {
            label: float(p) for label, p in zip(self.classifier.labels, proba[0], strict=True)
        }
        expert_scores = dict.fromkeys(self.experts, 0.0)
        for label, score in scores.items():
            for name in self.label_experts.get(label, []):
                expert_scores[name] = max(expert_scores[name], score)
        policy = request.policy or self.policy
        ranking = policy.rank(expert_scores, self.default_expert)
        decision = RouteDecision(
            query=text,
            scores=scores,
            expert_scores=expert_scores,
            ranking=ranking,
            policy=getattr(policy, "name", "custom"),
            classify_ms=classify_ms,
            requirements=request.needs.describe(),
        )
        if cut is not None:
            decision.notes["query"] = cut
        self._apply_capabilities(decision, request)
        if request.pin is not None:
            decision.pinned = request.pin
            decision.ranking = [request.pin]
        else:
            self._apply_sticky(decision, request)
        self._apply_ensemble(decision, request)
        return decision

    def _apply_ensemble(self, decision: RouteDecision, request: RouteRequest) -> None:
        if self.ensemble is None:
            return
        why = None
        if request.needs.tools or request.needs.structured:
            why = f"the request needs {', '.join(decision.requirements)}"
        elif request.pin is not None:
            why = f"expert {request.pin!r} is pinned"
        elif decision.sticky is not None and decision.sticky.startswith("tool loop"):
            why = "the request continues a tool loop"
        elif request.model is not None:
            why = f"the request asks for model {request.model!r}"
        if why is None:
            decision.strategy = self.ensemble.kind
        else:
            # One expert must own a tool loop or a schema: several answers cannot be merged.
            decision.notes["ensemble"] = f"{self.ensemble.kind} not used: {why}; one expert routed"

    def query_of(self, messages: Sequence[BaseMessage]) -> str:
        """The text the classifier reads from these messages."""
        return query_text(messages, self.query_mode)

    def _apply_capabilities(self, decision: RouteDecision, request: RouteRequest) -> None:
        if request.pin is not None and request.pin not in self.experts:
            raise InputError(
                f"expert {request.pin!r} is pinned for this call but is not in the herd; "
                f"pin one of {list(self.experts)}"
            )
        for name in list(decision.ranking):
            expert = self.experts[name]
            why = expert.can.missing(request.needs)
            if why is None and request.model is not None and expert.model_id != request.model:
                why = f"serves {expert.model_id}, not {request.model}"
            if why is not None:
                decision.excluded[name] = why
        candidates = [n for n in decision.ranking if n not in decision.excluded]
        if request.pin is not None:
            candidates = [n for n in candidates if n == request.pin]
        self.context.apply(
            decision,
            request.messages,
            candidates,
            answer_tokens=request.max_new_tokens,
            pinned=request.pin is not None,
        )
        decision.ranking = [n for n in decision.ranking if n not in decision.excluded]
        if request.pin is not None and request.pin in decision.excluded:
            raise CapabilityError(
                f"the pinned expert {request.pin!r} {decision.excluded[request.pin]}, which this "
                f"request needs ({', '.join(decision.requirements)}); pin an expert that can, or "
                f"declare its capabilities in the herd config"
            )
        if not decision.ranking:
            reasons = "; ".join(f"{n}: {why}" for n, why in decision.excluded.items())
            raise CapabilityError(
                f"no expert in the herd can honour this request "
                f"({', '.join(decision.requirements)}): {reasons}. Declare `capabilities` on an "
                f"expert whose server supports it, or remove the binding"
            )

    def _apply_sticky(self, decision: RouteDecision, request: RouteRequest) -> None:
        held = answered_this_turn(request.messages, self.sessions)
        if held is not None and held in decision.ranking:
            decision.ranking.remove(held)
            decision.ranking.insert(0, held)
            decision.sticky = f"tool loop: {held} answered earlier in this turn"
            return
        if request.thread_id is None or self.sticky_margin is None:
            return
        previous = self.sessions.get(request.thread_id)
        if previous is None or previous not in decision.ranking:
            return
        best = decision.ranking[0]
        lead = decision.expert_scores[best] - decision.expert_scores[previous]
        if best != previous and lead <= self.sticky_margin:
            decision.ranking.remove(previous)
            decision.ranking.insert(0, previous)
            decision.sticky = (
                f"thread {request.thread_id!r}: stays with {previous} ({best} leads by "
                f"{lead:.3f}, within the sticky margin {self.sticky_margin:g})"
            )
        elif best != previous:
            decision.sticky = (
                f"thread {request.thread_id!r}: moves from {previous} to {best} (lead "
                f"{lead:.3f} beats the sticky margin {self.sticky_margin:g})"
            )

    def remember(
        self, decision: RouteDecision, thread_id: str | None, tool_calls: Sequence[str] = ()
    ) -> None:
        """Keep the thread's expert for its next turn, and the expert of each tool call the
        answer made, so the tool loop's next call finds it from the call ids alone."""
        expert = decision.answered_by
        if expert is None:
            return
        for call_id in tool_calls:
            self.sessions.set(TOOL_CALL_KEY + call_id, expert)
        if thread_id is not None and not decision.pinned:
            self.sessions.set(thread_id, expert)

    def candidates(
        self, decision: RouteDecision, names: Iterable[str] | None = None
    ) -> Iterator[str]:
        """Experts to try, in order (default: the ranking), at most ``max_attempts`` of them,
        skipping open breakers (recorded in the decision)."""
        tried = 0
        for name in decision.ranking if names is None else names:
            if tried >= self.max_attempts:
                return
            if not self.admit(decision, name):
                continue
            tried += 1
            yield name

    def admit(self, decision: RouteDecision, name: str) -> bool:
        """Whether ``name`` may be called now (not backed off after a 429, its breaker lets
        the call through); if not, the skip is recorded."""
        backing_off = self.pressure.remaining_s(name)
        if backing_off > 0:
            decision.skipped[name] = f"{BACKOFF_SKIP}; next call in {backing_off:.1f}s"
            return False
        breaker = self.breakers[name]
        if breaker.allow():
            return True
        status = breaker.status()
        decision.skipped[name] = (
            f"circuit open after {status.consecutive_failures} consecutive failures; "
            f"next probe in {status.retry_in_s:.1f}s"
        )
        return False

    def failed(self, decision: RouteDecision) -> AllExpertsFailedError:
        """The error for a request no expert answered: ``ExpertsOverloadedError`` when each
        expert that could take it was overloaded (429) or backing off, so the caller knows to
        retry later rather than that the herd is broken."""
        busy = [a for a in decision.attempts if a.failure in BUSY_FAULTS]
        backed_off = [n for n, why in decision.skipped.items() if why.startswith(BACKOFF_SKIP)]
        others = [a for a in decision.attempts if a.failure not in BUSY_FAULTS]
        if others or not (busy or backed_off):
            return AllExpertsFailedError(decision)
        waits = [
            self.pressure.remaining_s(name) for name in {*backed_off, *(a.expert for a in busy)}
        ]
        waits = [wait for wait in waits if wait > 0]
        return ExpertsOverloadedError(decision, min(waits) if waits else self.pressure.backoff_s)

    # -- attempts -----------------------------------------------------------------------

    def invoke(
        self, decision: RouteDecision, messages: list[BaseMessage], call: ExpertCall
    ) -> BaseMessage:
        """Call experts in ranked order until one answers (or run the decision's ensemble).

        Args:
            decision: from ``decide``; every attempt is recorded in it.
            messages: the conversation to answer.
            call: calls one expert with the messages to send and returns its message.

        Raises:
            AllExpertsFailedError: every candidate failed with a failure that falls back.
        """
        if decision.strategy is not None and self.ensemble is not None:
            return self.ensemble.invoke(self, decision, messages, call)
        for name in self.candidates(decision):
            outcome = self.attempt(decision, name, messages, call)
            if outcome.answer is not None:
                return outcome.answer
        raise self.failed(decision)

    async def ainvoke(
        self, decision: RouteDecision, messages: list[BaseMessage], call: AsyncExpertCall
    ) -> BaseMessage:
        """Async ``invoke``, with each expert's whole-request deadline enforced."""
        if decision.strategy is not None and self.ensemble is not None:
            return await self.ensemble.ainvoke(self, decision, messages, call)
        for name in self.candidates(decision):
            outcome = await self.aattempt(decision, name, messages, call)
            if outcome.answer is not None:
                return outcome.answer
        raise self.failed(decision)

    def attempt(
        self, decision: RouteDecision, name: str, messages: list[BaseMessage], call: ExpertCall
    ) -> Outcome:
        """One call of one admitted expert, with its breaker and decision bookkeeping.

        Returns:
            The answer, or the failure when it is one the engine falls back on.

        Raises:
            Exception: the expert's own exception when it is not one to fall back on.
        """
        trial = _Trial(self, decision, name)
        try:
            answer = call(self.experts[name], messages)
            if not has_answer(answer):
                raise EmptyAnswerError(f"expert {name!r} returned an empty answer")
        except Exception as exc:
            error = _as_empty_answer(exc, name)
            failure = trial.failed(error)
            if failure is None:
                if error is exc:
                    raise
                raise error from exc
            return Outcome(name, None, failure, trial.elapsed_ms())
        finally:
            trial.abandon()
        trial.succeeded()
        return Outcome(name, answer, None, trial.elapsed_ms())

    async def aattempt(
        self,
        decision: RouteDecision,
        name: str,
        messages: list[BaseMessage],
        call: AsyncExpertCall,
    ) -> Outcome:
        """Async ``attempt``, within the expert's whole-request deadline."""
        expert = self.experts[name]
        trial = _Trial(self, decision, name)
        try:
            answer = await Deadline(expert.timeout_s).wait(call(expert, messages))
            if not has_answer(answer):
                raise EmptyAnswerError(f"expert {name!r} returned an empty answer")
        except Exception as exc:
            error = _as_empty_answer(exc, name)
            failure = trial.failed(error)
            if failure is None:
                if error is exc:
                    raise
                raise error from exc
            return Outcome(name, None, failure, trial.elapsed_ms())
        finally:
            trial.abandon()
        trial.succeeded()
        return Outcome(name, answer, None, trial.elapsed_ms())

    def stream(
        self,
        decision: RouteDecision,
        messages: list[BaseMessage],
        stream: ExpertStream,
        call: ExpertCall,
    ) -> Iterator[AIMessageChunk]:
        """Stream the first expert that starts answering; fall back only before its first token.

        A stream that breaks after tokens were sent raises ``StreamInterruptedError`` stating
        what was sent. Chunks pass through unchanged except their ``chunk_position``: the
        surface marks its own last chunk. An ensemble makes its earlier calls with ``call``
        and streams its final answer once it is decided.
        """
        if decision.strategy is not None and self.ensemble is not None:
            yield from self.ensemble.stream(self, decision, messages, call, stream)
            return
        yield from self.stream_from(decision, None, messages, stream)

    def stream_from(
        self,
        decision: RouteDecision,
        names: Iterable[str] | None,
        messages: list[BaseMessage],
        stream: ExpertStream,
    ) -> Iterator[AIMessageChunk]:
        """``stream`` over these experts in order (default: the ranking), without ensembles."""
        for name in self.candidates(decision, names):
            opened = self._open_stream(name, decision, messages, stream)
            if opened is not None:
                trial, chunks, held, deadline = opened
                yield from self._rest_of_stream(trial, chunks, held, deadline)
                return
        raise self.failed(decision)

    def _open_stream(
        self,
        name: str,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: ExpertStream,
    ) -> tuple[_Trial, Iterator[BaseMessage], list[BaseMessage], Deadline] | None:
        expert = self.experts[name]
        trial = _Trial(self, decision, name)
        held: list[BaseMessage] = []
        # A sync read cannot be interrupted: the deadline is checked as each chunk arrives, so
        # a trickle ends at most one read timeout (the client's, also ``timeout_s``) past it.
        deadline = Deadline(expert.timeout_s)
        stream: Iterator[BaseMessage] = iter(())
        try:
            stream = iter(call(expert, messages))
            for chunk in stream:
                deadline.check()
                held.append(chunk)
                if has_answer(chunk):
                    break
            else:
                raise EmptyAnswerError(f"expert {name!r} streamed no answer")
        except Exception as exc:
            _close(stream)
            failure = _as_empty_answer(exc, name)
            if trial.failed(failure) is None:
                if failure is exc:
                    raise
                raise failure from exc
            return None
        except BaseException:
            _close(stream)
            trial.abandon()
            raise
        decision.streaming = name
        return trial, stream, held, deadline

    def _rest_of_stream(
        self,
        trial: _Trial,
        stream: Iterator[BaseMessage],
        held: list[BaseMessage],
        deadline: Deadline,
    ) -> Iterator[AIMessageChunk]:
        sent: list[str] = []
        try:
            for chunk in held:
                sent.append(chunk.text)
                yield _unpositioned(chunk)
            for chunk in stream:
                deadline.check()
                sent.append(chunk.text)
                yield _unpositioned(chunk)
        except Exception as exc:
            trial.failed(exc, kind="stream_broken")
            raise StreamInterruptedError(trial.name, "".join(sent), exc) from exc
        finally:
            trial.abandon()
            # Also on a deadline or a caller that stopped: free the expert's connection now.
            _close(stream)
        trial.succeeded()

    async def astream(
        self,
        decision: RouteDecision,
        messages: list[BaseMessage],
        stream: AsyncExpertStream,
        call: AsyncExpertCall,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async ``stream``: same fallback rules, with each expert's deadline enforced."""
        chunks = (
            self.ensemble.astream(self, decision, messages, call, stream)
            if decision.strategy is not None and self.ensemble is not None
            else self.astream_from(decision, None, messages, stream)
        )
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await _aclose(chunks)

    async def astream_from(
        self,
        decision: RouteDecision,
        names: Iterable[str] | None,
        messages: list[BaseMessage],
        stream: AsyncExpertStream,
    ) -> AsyncIterator[AIMessageChunk]:
        """``astream`` over these experts in order (default: the ranking), without ensembles."""
        for name in self.candidates(decision, names):
            opened = await self._aopen_stream(name, decision, messages, stream)
            if opened is not None:
                trial, chunks, held, deadline = opened
                async for chunk in self._arest_of_stream(trial, chunks, held, deadline):
                    yield chunk
                return
        raise self.failed(decision)

    async def _aopen_stream(
        self,
        name: str,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: AsyncExpertStream,
    ) -> tuple[_Trial, AsyncIterator[BaseMessage], list[BaseMessage], Deadline] | None:
        expert = self.experts[name]
        trial = _Trial(self, decision, name)
        held: list[BaseMessage] = []
        deadline = Deadline(expert.timeout_s)
        stream: AsyncIterator[BaseMessage] = _no_chunks()
        try:
            stream = call(expert, messages)
            while True:
                try:
                    chunk = await deadline.wait(stream.__anext__())
                except StopAsyncIteration:
                    raise EmptyAnswerError(f"expert {name!r} streamed no answer") from None
                held.append(chunk)
                if has_answer(chunk):
                    break
        except Exception as exc:
            await _aclose(stream)
            failure = _as_empty_answer(exc, name)
            if trial.failed(failure) is None:
                if failure is exc:
                    raise
                raise failure from exc
            return None
        except BaseException:
            await _aclose(stream)
            trial.abandon()
            raise
        decision.streaming = name
        return trial, stream, held, deadline

    async def _arest_of_stream(
        self,
        trial: _Trial,
        stream: AsyncIterator[BaseMessage],
        held: list[BaseMessage],
        deadline: Deadline,
    ) -> AsyncIterator[AIMessageChunk]:
        sent: list[str] = []
        try:
            for chunk in held:
                sent.append(chunk.text)
                yield _unpositioned(chunk)
            while True:
                try:
                    chunk = await deadline.wait(stream.__anext__())
                except StopAsyncIteration:
                    break
                sent.append(chunk.text)
                yield _unpositioned(chunk)
        except Exception as exc:
            trial.failed(exc, kind="stream_broken")
            raise StreamInterruptedError(trial.name, "".join(sent), exc) from exc
        finally:
            trial.abandon()
            await _aclose(stream)
        trial.succeeded()


def _as_empty_answer(exc: Exception, name: str) -> Exception:
    """LangChain's bare ``ValueError`` for a stream without a single chunk is an empty answer,
    which falls back like any other empty answer."""
    if type(exc) is ValueError and str(exc) in NO_CHUNKS:
        empty = EmptyAnswerError(f"expert {name!r} streamed no answer (not a single chunk)")
        empty.__cause__ = exc
        return empty
    return exc


def _unpositioned(chunk: BaseMessage) -> AIMessageChunk:
    """The expert's chunk without its own end marker: the surface marks the herd's last one."""
    if not isinstance(chunk, AIMessageChunk):
        return AIMessageChunk(content=chunk.content)
    if chunk.chunk_position is None:
        return chunk
    return chunk.model_copy(update={"chunk_position": None})


async def _no_chunks() -> AsyncIterator[BaseMessage]:
    return
    yield


def _close(stream: Iterator[Any]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        # Closing a broken stream may fail again; the failure itself is already recorded.
        with contextlib.suppress(Exception):
            await aclose()
