"""Running an ensemble strategy over the engine: sync, async and streaming from one plan.

A strategy (``strategies.py``) writes its logic once, as a *plan*: a generator that yields
steps and receives their results. :class:`Calls` asks for several expert slots at once
(threads in sync code, ``asyncio.gather`` in async code), :class:`Compute` for CPU work
(a worker thread in async code), and :class:`Final` ends the plan with either a kept
answer or one last slot whose answer is the final one. :class:`EnsembleRunner` drives the
plan and implements the engine's ``Ensemble`` protocol, so the engine hands it every
decision whose ``strategy`` is set.

Every call goes through the engine (``admit`` for breakers, ``attempt`` / ``stream_from``
for trials, fallbacks and the attempts trail) and is recorded as an ``EnsembleCall`` in
``decision.calls``, with its answer, tokens, cost and latency; an expert passed over
(open breaker, excluded) is recorded too, as not called. A slot with ``pool`` set falls
back to the next expert of the router's ranking that no other slot of the step uses.

Streaming: the plan runs with plain calls until it is decided; a kept answer is then sent
as chunks (word by word), while a final slot (an escalation's last tier, the MoA
aggregator) is streamed live from its expert, falling back only before its first token.
The answer's ``usage_metadata`` sums every call's tokens: in a stream, the calls other
than the live one come as one extra chunk that carries only usage.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata, add_usage

from langchain_herd.decision import ANSWER_CHARS, EnsembleCall, RouteDecision
from langchain_herd.errors import AllExpertsFailedError, StreamInterruptedError

if TYPE_CHECKING:
    from langchain_herd.engine import (
        AsyncExpertCall,
        AsyncExpertStream,
        ExpertCall,
        ExpertStream,
        HerdEngine,
        Outcome,
    )

__all__ = [
    "Answered",
    "Calls",
    "Compute",
    "EnsembleRunner",
    "Final",
    "Plan",
    "Run",
    "Slot",
    "Strategy",
]


@dataclass
class Slot:
    """One answer wanted from one of ``names`` (tried in order)."""

    role: str
    """Its part in the trail: ``tier 1``, ``voter``, ``proposer (layer 2)``, ``aggregator``."""
    names: list[str]
    """Experts to try, in order."""
    messages: list[BaseMessage]
    """What they are sent (before their own system prompts)."""
    pool: bool = False
    """After ``names``, fall back to the ranking's experts that no slot of the step uses."""


@dataclass
class Answered:
    """A slot's result: the expert that answered and its message, or nothing."""

    slot: Slot
    expert: str | None = None
    answer: BaseMessage | None = None
    record: EnsembleCall | None = None
    """The answering call's entry in ``decision.calls`` (the plan fills ``extracted``)."""

    @property
    def text(self) -> str | None:
        """The answer's text, None without an answer."""
        return None if self.answer is None else self.answer.text


@dataclass
class Calls:
    """Step: answer these slots concurrently; the plan receives ``list[Answered]``."""

    slots: list[Slot]


@dataclass
class Compute:
    """Step: run this CPU-bound function (off the event loop in async code)."""

    fn: Callable[[], Any]


@dataclass
class Final:
    """The plan's end: keep ``kept``, or answer with ``slot`` (streamed live in a stream),
    falling back to ``fallback`` if every expert of the slot fails."""

    kept: Answered | None = None
    slot: Slot | None = None
    fallback: Answered | None = None
    fallback_why: str = ""
    """Appended to the verdict when the fallback answer is returned."""


Step = Calls | Compute | Final
Plan = Generator[Step, Any, None]


@dataclass
class Run:
    """One query's run: what plans read, and the bookkeeping the runner keeps."""

    engine: HerdEngine
    decision: RouteDecision
    messages: list[BaseMessage]
    usage: list[UsageMetadata] = field(default_factory=list)
    """Token usage of every call, the final one included."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def question(self) -> str:
        """The last user turn (multiple-choice options are read from it)."""
        for message in reversed(self.messages):
            if isinstance(message, HumanMessage):
                return message.text
        return self.decision.query

    def record(self, role: str, outcome: Outcome) -> EnsembleCall:
        """The ``EnsembleCall`` of one attempt (not yet in the decision)."""
        answer = outcome.answer
        usage = getattr(answer, "usage_metadata", None) if answer is not None else None
        return EnsembleCall(
            expert=outcome.expert,
            role=role,
            ok=answer is not None,
            answer=None if answer is None else answer.text[:ANSWER_CHARS],
            cost=self.engine.experts[outcome.expert].cost if answer is not None else 0.0,
            input_tokens=usage["input_tokens"] if usage else None,
            output_tokens=usage["output_tokens"] if usage else None,
            latency_ms=outcome.latency_ms,
            error=None if outcome.failure is None else outcome.failure.message,
        )

    def passed_over(self, role: str, name: str) -> EnsembleCall | None:
        """A record for an expert the slot cannot call now (excluded, open breaker), or None
        when it may be called (a half-open breaker's probe is then claimed)."""
        why = self.decision.excluded.get(name)
        if why is None and not self.engine.admit(self.decision, name):
            why = self.decision.skipped[name]
        if why is None:
            return None
        return EnsembleCall(expert=name, role=role, ok=False, error=f"not called: {why}")


class Strategy(Protocol):
    """A cascade, vote or mixture-of-agents: its logic as a plan over one ``Run``."""

    @property
    def kind(self) -> str:
        """``cascade``, ``vote`` or ``moa``."""
        ...

    def plan(self, run: Run) -> Plan: ...


_PIECE = re.compile(r"\s*\S+|\s+")


class _Slots:
    """The slots of one ``Calls`` step, sharing the ranking's spare experts."""

    def __init__(self, run: Run, slots: Sequence[Slot]) -> None:
        self.run = run
        self.used = {name for slot in slots for name in slot.names}

    def names(self, slot: Slot) -> Iterator[str]:
        yield from slot.names
        if not slot.pool:
            return
        while True:
            with self.run.lock:
                spare = next((n for n in self.run.decision.ranking if n not in self.used), None)
                if spare is None:
                    return
                self.used.add(spare)
            yield spare


class EnsembleRunner:
    """Drives a strategy's plan over the engine; the engine's ``Ensemble``.

    Example:
        .. code-block:: python

            from langchain_herd.ensembles.strategies import build_ensemble

            engine = HerdEngine(experts, classifier, ensemble=build_ensemble(config, experts))
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.kind = strategy.kind

    def __repr__(self) -> str:
        return f"EnsembleRunner({self.strategy!r})"

    # -- sync ------------------------------------------------------------------------------

    def invoke(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: ExpertCall,
    ) -> BaseMessage:
        run = Run(engine, decision, messages)
        final = self._drive(run, call)
        if final.kept is not None:
            return self._finish(run, final.kept)
        assert final.slot is not None
        answered = self._slots(run, [final.slot], call)[0]
        return self._finish(run, self._or_fallback(run, final, answered))

    def stream(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: ExpertCall,
        stream: ExpertStream,
    ) -> Iterator[AIMessageChunk]:
        run = Run(engine, decision, messages)
        final = self._drive(run, call)
        if final.kept is not None:
            yield from self._chunks(run, final.kept)
            return
        assert final.slot is not None
        slot = final.slot
        start, merged = len(decision.attempts), None
        names = [n for n in slot.names if n not in decision.excluded]
        decision.answered_by = None  # until the live stream has answered
        try:
            for chunk in engine.stream_from(decision, names, slot.messages, stream):
                merged = chunk if merged is None else merged + chunk
                yield chunk
        except AllExpertsFailedError:
            self._record_stream(run, slot, start, None)
            yield from self._chunks(run, self._or_fallback(run, final, Answered(slot)))
            return
        except StreamInterruptedError:
            self._record_stream(run, slot, start, None)
            raise
        self._record_stream(run, slot, start, merged)
        yield from self._usage_chunk(run, merged)

    def _drive(self, run: Run, call: ExpertCall) -> Final:
        plan = self.strategy.plan(run)
        step = next(plan)
        while not isinstance(step, Final):
            if isinstance(step, Calls):
                result: Any = self._slots(run, step.slots, call)
            else:
                result = step.fn()
            step = plan.send(result)
        plan.close()
        return step

    def _slots(self, run: Run, slots: Sequence[Slot], call: ExpertCall) -> list[Answered]:
        shared = _Slots(run, slots)
        if len(slots) == 1:
            results = [self._slot(run, shared, slots[0], call)]
        else:
            with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                # Each thread runs in a copy of this context: tracing context variables.
                futures = [
                    pool.submit(contextvars.copy_context().run, self._slot, run, shared, s, call)
                    for s in slots
                ]
                results = [future.result() for future in futures]
        return self._collect(run, results)

    def _slot(
        self, run: Run, shared: _Slots, slot: Slot, call: ExpertCall
    ) -> tuple[Answered, list[EnsembleCall]]:
        records: list[EnsembleCall] = []
        names, tried = shared.names(slot), 0
        while tried < run.engine.max_attempts:
            name = next(names, None)
            if name is None:
                break
            skipped = run.passed_over(slot.role, name)
            if skipped is not None:
                records.append(skipped)
                continue
            tried += 1
            outcome = run.engine.attempt(run.decision, name, slot.messages, call)
            records.append(run.record(slot.role, outcome))
            if outcome.answer is not None:
                return Answered(slot, name, outcome.answer, records[-1]), records
        return Answered(slot), records

    # -- async -----------------------------------------------------------------------------

    async def ainvoke(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: AsyncExpertCall,
    ) -> BaseMessage:
        run = Run(engine, decision, messages)
        final = await self._adrive(run, call)
        if final.kept is not None:
            return self._finish(run, final.kept)
        assert final.slot is not None
        answered = (await self._aslots(run, [final.slot], call))[0]
        return self._finish(run, self._or_fallback(run, final, answered))

    async def astream(
        self,
        engine: HerdEngine,
        decision: RouteDecision,
        messages: list[BaseMessage],
        call: AsyncExpertCall,
        stream: AsyncExpertStream,
    ) -> AsyncIterator[AIMessageChunk]:
        run = Run(engine, decision, messages)
        final = await self._adrive(run, call)
        if final.kept is not None:
            for piece in self._chunks(run, final.kept):
                yield piece
            return
        assert final.slot is not None
        slot = final.slot
        start, merged = len(decision.attempts), None
        names = [n for n in slot.names if n not in decision.excluded]
        decision.answered_by = None  # until the live stream has answered
        chunks = engine.astream_from(decision, names, slot.messages, stream)
        try:
            async for chunk in chunks:
                merged = chunk if merged is None else merged + chunk
                yield chunk
        except AllExpertsFailedError:
            self._record_stream(run, slot, start, None)
            for piece in self._chunks(run, self._or_fallback(run, final, Answered(slot))):
                yield piece
            return
        except StreamInterruptedError:
            self._record_stream(run, slot, start, None)
            raise
        finally:
            await _aclose(chunks)
        self._record_stream(run, slot, start, merged)
        for piece in self._usage_chunk(run, merged):
            yield piece

    async def _adrive(self, run: Run, call: AsyncExpertCall) -> Final:
        plan = self.strategy.plan(run)
        step = next(plan)
        while not isinstance(step, Final):
            if isinstance(step, Calls):
                result: Any = await self._aslots(run, step.slots, call)
            else:
                result = await asyncio.to_thread(step.fn)
            step = plan.send(result)
        plan.close()
        return step

    async def _aslots(
        self, run: Run, slots: Sequence[Slot], call: AsyncExpertCall
    ) -> list[Answered]:
        shared = _Slots(run, slots)
        gathered = await asyncio.gather(
            *(self._aslot(run, shared, slot, call) for slot in slots), return_exceptions=True
        )
        # Every slot has settled before an error is raised: none is left running unrecorded.
        for item in gathered:
            if isinstance(item, BaseException):
                raise item
        return self._collect(run, gathered)  # type: ignore[arg-type]

    async def _aslot(
        self, run: Run, shared: _Slots, slot: Slot, call: AsyncExpertCall
    ) -> tuple[Answered, list[EnsembleCall]]:
        records: list[EnsembleCall] = []
        names, tried = shared.names(slot), 0
        while tried < run.engine.max_attempts:
            name = next(names, None)
            if name is None:
                break
            skipped = run.passed_over(slot.role, name)
            if skipped is not None:
                records.append(skipped)
                continue
            tried += 1
            outcome = await run.engine.aattempt(run.decision, name, slot.messages, call)
            records.append(run.record(slot.role, outcome))
            if outcome.answer is not None:
                return Answered(slot, name, outcome.answer, records[-1]), records
        return Answered(slot), records

    # -- shared ----------------------------------------------------------------------------

    @staticmethod
    def _collect(
        run: Run, results: Sequence[tuple[Answered, list[EnsembleCall]]]
    ) -> list[Answered]:
        # Recorded in slot order, not completion order, so the trail reads the same each time.
        for answered, records in results:
            run.decision.calls.extend(records)
            usage = getattr(answered.answer, "usage_metadata", None)
            if usage:
                run.usage.append(usage)
        return [answered for answered, _ in results]

    @staticmethod
    def _or_fallback(run: Run, final: Final, answered: Answered) -> Answered:
        if answered.answer is not None:
            return answered
        if final.fallback is None or final.fallback.answer is None:
            raise AllExpertsFailedError(run.decision)
        run.decision.verdict = " ".join(v for v in (run.decision.verdict, final.fallback_why) if v)
        return final.fallback

    def _record_stream(
        self, run: Run, slot: Slot, start: int, merged: AIMessageChunk | None
    ) -> None:
        """Turn the live stream's attempts into ensemble calls, in the slot's order with the
        experts it passed over (the last attempt answered when ``merged`` holds its chunks)."""
        decision = run.decision
        attempts = decision.attempts[start:]
        tried = [slot.names.index(a.expert) for a in attempts if a.expert in slot.names]
        considered = slot.names[: max(tried) + 1] if tried else slot.names
        for name in considered:
            why = decision.excluded.get(name) or decision.skipped.get(name)
            if why is not None and all(a.expert != name for a in attempts):
                decision.calls.append(
                    EnsembleCall(expert=name, role=slot.role, ok=False, error=f"not called: {why}")
                )
        for index, attempt in enumerate(attempts):
            answered = merged is not None and attempt.ok and index == len(attempts) - 1
            usage = merged.usage_metadata if answered and merged is not None else None
            decision.calls.append(
                EnsembleCall(
                    expert=attempt.expert,
                    role=slot.role,
                    ok=answered,
                    answer=merged.text[:ANSWER_CHARS] if answered and merged is not None else None,
                    cost=run.engine.experts[attempt.expert].cost if answered else 0.0,
                    input_tokens=usage["input_tokens"] if usage else None,
                    output_tokens=usage["output_tokens"] if usage else None,
                    latency_ms=attempt.latency_ms,
                    error=attempt.error,
                )
            )
        if merged is not None:
            decision.answered_by = decision.streaming
            self._settle(run)

    @staticmethod
    def _settle(run: Run) -> None:
        run.decision.total_cost = sum(c.cost for c in run.decision.calls)

    def _finish(self, run: Run, kept: Answered) -> BaseMessage:
        """The kept answer with every call's tokens summed, and the decision settled."""
        assert kept.answer is not None
        run.decision.answered_by = kept.expert
        self._settle(run)
        usage = _total(run.usage)
        if isinstance(kept.answer, AIMessage):
            return kept.answer.model_copy(update={"usage_metadata": usage})
        return AIMessage(content=kept.answer.content, usage_metadata=usage)

    def _chunks(self, run: Run, kept: Answered) -> Iterator[AIMessageChunk]:
        """A decided answer sent as chunks; the last carries its metadata and all usage."""
        message = self._finish(run, kept)
        run.decision.streaming = kept.expert
        pieces = _PIECE.findall(message.text) or [""]
        for piece in pieces[:-1]:
            yield AIMessageChunk(content=piece)
        yield AIMessageChunk(
            content=pieces[-1],
            response_metadata=dict(message.response_metadata),
            usage_metadata=getattr(message, "usage_metadata", None),
        )

    def _usage_chunk(self, run: Run, merged: AIMessageChunk | None) -> Iterator[AIMessageChunk]:
        """Usage of every call but the live one (whose chunks carried their own)."""
        others = _total(run.usage)
        if others is not None:
            yield AIMessageChunk(content="", usage_metadata=others)
        if merged is not None and merged.usage_metadata:
            run.usage.append(merged.usage_metadata)


def _total(usages: Sequence[UsageMetadata]) -> UsageMetadata | None:
    total: UsageMetadata | None = None
    for usage in usages:
        total = add_usage(total, usage)
    return total


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
