"""``HerdRouter``: classify the query, rank experts, call the best, fall back on failure.

The classifier only scores, the policy only ranks, and the router only runs: it opens its
own traced run (so tracers see the routing), calls each expert as a child run tagged
``expert:<name>``, and records every attempt in a ``RouteDecision`` that the caller gets
back in ``response_metadata["herd"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, patch_config

from langchain_herd.breaker import CircuitBreaker
from langchain_herd.classifiers.base import Classifier
from langchain_herd.config import DEFAULT_FALLBACK_ON, FailureKind, HerdConfig, load_config
from langchain_herd.decision import Attempt, RouteDecision
from langchain_herd.errors import (
    AllExpertsFailedError,
    ConfigError,
    EmptyAnswerError,
    StreamInterruptedError,
)
from langchain_herd.experts import Expert, build_expert
from langchain_herd.failures import Failure, classify_failure
from langchain_herd.inputs import HerdInput, QueryMode, query_text, to_messages
from langchain_herd.policies import ArgmaxPolicy, Policy, policy_from_config

DECISION_KEY = "herd"
"""Key of the decision in an answer's ``response_metadata``."""
DECISION_EVENT = "herd_decision"
"""Name of the custom event that carries the final decision (``astream_events``, tracers)."""


@contextlib.contextmanager
def _announced(decision: RouteDecision, config: RunnableConfig) -> Iterator[None]:
    """Dispatch the final decision as a custom event of the router's run, however it ends."""
    try:
        yield
    finally:
        dispatch_custom_event(DECISION_EVENT, decision.metadata(), config=config)


def _has_answer(message: BaseMessage) -> bool:
    if message.text.strip():
        return True
    return bool(getattr(message, "tool_calls", None) or getattr(message, "tool_call_chunks", None))


class _Trial:
    """Bookkeeping for one expert call: timing, breaker and the decision trail."""

    def __init__(self, router: HerdRouter, decision: RouteDecision, name: str) -> None:
        self.router = router
        self.decision = decision
        self.name = name
        self.started = time.perf_counter()
        self.settled = False

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def succeeded(self) -> None:
        self.settled = True
        self.router.breakers[self.name].record_success()
        self.decision.attempts.append(
            Attempt(expert=self.name, ok=True, latency_ms=self._elapsed_ms())
        )
        self.decision.answered_by = self.name

    def failed(self, exc: BaseException, kind: FailureKind | None = None) -> Failure | None:
        """Record a failure; return it when the router may fall back, else None."""
        self.settled = True
        failure = classify_failure(exc)
        if failure is not None and kind is not None:
            failure = Failure(kind, failure.message, failure.status_code)
        recorded = failure or Failure("client_error", f"{type(exc).__name__}: {exc}")
        self.decision.attempts.append(
            Attempt(
                expert=self.name,
                ok=False,
                latency_ms=self._elapsed_ms(),
                failure=recorded.kind,
                error=recorded.message,
                status_code=recorded.status_code,
            )
        )
        if failure is None:
            # Not the expert's fault (a bug, bad arguments): surface it, keep the breaker.
            self.router.breakers[self.name].release_probe()
            return None
        self.router.breakers[self.name].record_failure()
        return failure if failure.kind in self.router.fallback_on else None

    def abandon(self) -> None:
        """The caller stopped (cancelled, closed the stream): free a half-open probe slot."""
        if not self.settled:
            self.router.breakers[self.name].release_probe()


class HerdRouter(Runnable[HerdInput, BaseMessage]):
    """Route each query to the expert most likely to answer it well, with fallbacks.

    Use it anywhere LangChain takes a runnable or a chat model: ``invoke``, ``batch``,
    ``stream`` and their async twins, ``astream_events``, LCEL pipes, ``with_fallbacks``,
    ``with_retry``. Output is always the answering expert's message; its
    ``response_metadata["herd"]`` holds the ``RouteDecision``.

    Example:
        .. code-block:: python

            from langchain_herd import HerdRouter

            router = HerdRouter.from_config("tgi_configs/local.yaml")
            answer = router.invoke("What is the integral of 2x?")
            print(answer.content, answer.response_metadata["herd"]["answered_by"])
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
        input_key: str = "input",
        query_mode: QueryMode = "all_user",
        name: str = "herd",
    ) -> None:
        """Build a router from expert objects and a classifier.

        Args:
            experts: the herd, in preference order for ties.
            classifier: scores queries against route labels (or expert names).
            policy: ranks experts from scores; default ``ArgmaxPolicy``.
            default_expert: fallback anchor and the ``margin`` policy's home; default the
                first expert.
            max_attempts: most experts called for one request.
            fallback_on: failure kinds that move on to the next expert.
            breaker_threshold: consecutive failures that open an expert's breaker.
            breaker_cooldown_s: seconds an open breaker skips its expert before a probe.
            input_key: key of the query in dict input.
            query_mode: classify every user turn (``all_user``) or only the last.
            name: the router's run name in traces.
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
        self.breakers = {
            name: CircuitBreaker(breaker_threshold, breaker_cooldown_s) for name in self.experts
        }
        self.input_key = input_key
        self.query_mode: QueryMode = query_mode
        self.name = name
        self.label_experts = self._map_labels()

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

    @classmethod
    def from_config(
        cls,
        config: HerdConfig | str | Path,
        *,
        classifier: Classifier | None = None,
        policy: Policy | None = None,
    ) -> HerdRouter:
        """Build a router from a herd config (a ``HerdConfig`` or a YAML path).

        Args:
            config: the herd.
            classifier: use this classifier instead of the one the config names.
            policy: use this policy instead of the one the config names.
        """
        from langchain_herd.classifiers.registry import resolve_classifier

        herd = config if isinstance(config, HerdConfig) else load_config(config)
        experts = [build_expert(e, herd.token_for(e.name)) for e in herd.experts]
        classifier = classifier or resolve_classifier(herd.router.classifier.path, herd.base_dir)
        costs = {e.name: e.cost for e in herd.experts}
        calibration = getattr(classifier, "calibration", None)
        return cls(
            experts,
            classifier,
            policy=policy
            or policy_from_config(herd.router.policy, costs=costs, calibration=calibration),
            default_expert=herd.default_expert,
            max_attempts=herd.fallback.max_attempts,
            fallback_on=herd.fallback.on_failures,
            breaker_threshold=herd.fallback.breaker.failure_threshold,
            breaker_cooldown_s=herd.fallback.breaker.cooldown_s,
            query_mode=herd.router.query,
            name=herd.name,
        )

    # -- deciding ---------------------------------------------------------------------

    @property
    def InputType(self) -> Any:
        return HerdInput

    @property
    def OutputType(self) -> type[BaseMessage]:
        return BaseMessage

    def _decide(self, messages: Sequence[BaseMessage]) -> RouteDecision:
        text = query_text(messages, self.query_mode)
        started = time.perf_counter()
        proba = self.classifier.predict_proba([text])
        classify_ms = (time.perf_counter() - started) * 1000
        labels = self.classifier.labels
        scores = {label: float(p) for label, p in zip(labels, proba[0], strict=True)}
        expert_scores = dict.fromkeys(self.experts, 0.0)
        for label, score in scores.items():
            for name in self.label_experts.get(label, []):
                expert_scores[name] = max(expert_scores[name], score)
        ranking = self.policy.rank(expert_scores, self.default_expert)
        return RouteDecision(
            query=text,
            scores=scores,
            expert_scores=expert_scores,
            ranking=ranking,
            policy=getattr(self.policy, "name", "custom"),
            classify_ms=classify_ms,
        )

    def route(self, query: HerdInput) -> RouteDecision:
        """Classify and rank without calling any expert.

        Example:
            >>> router.route("Solve 2x + 3 = 7").chosen  # doctest: +SKIP
            'stem'
        """
        return self._decide(to_messages(query, self.input_key))

    def _candidates(self, decision: RouteDecision) -> Iterator[str]:
        """Experts to try, in order, skipping open breakers (recorded in the decision)."""
        tried = 0
        for name in decision.ranking:
            if tried >= self.max_attempts:
                return
            breaker = self.breakers[name]
            if not breaker.allow():
                status = breaker.status()
                decision.skipped[name] = (
                    f"circuit open after {status.consecutive_failures} consecutive failures; "
                    f"next probe in {status.retry_in_s:.1f}s"
                )
                continue
            tried += 1
            yield name

    def _traced_config(
        self, config: RunnableConfig | None, decision: RouteDecision
    ) -> RunnableConfig:
        config = ensure_config(config)
        metadata = {
            **config.get("metadata", {}),
            "herd_router": self.name,
            "herd_chosen": decision.chosen,
            "herd_ranking": list(decision.ranking),
            "herd_scores": dict(decision.scores),
        }
        run_name = config.get("run_name") or self.name or "herd"
        return {**config, "metadata": metadata, "run_name": run_name}

    def _child(self, config: RunnableConfig, run_manager: Any, name: str) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child(tag=f"expert:{name}"))

    @staticmethod
    def _finish(message: BaseMessage, decision: RouteDecision) -> BaseMessage:
        metadata = {**message.response_metadata, DECISION_KEY: decision.metadata()}
        return message.model_copy(update={"response_metadata": metadata})

    # -- invoke -------------------------------------------------------------------------

    def invoke(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        messages = to_messages(input, self.input_key)
        decision = self._decide(messages)

        def run(
            _: HerdInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
        ) -> BaseMessage:
            with _announced(decision, config):
                return attempts(run_manager, config)

        def attempts(
            run_manager: CallbackManagerForChainRun, config: RunnableConfig
        ) -> BaseMessage:
            for name in self._candidates(decision):
                expert = self.experts[name]
                trial = _Trial(self, decision, name)
                try:
                    answer = expert.model.invoke(
                        expert.prepare(messages), self._child(config, run_manager, name), **kwargs
                    )
                    if not _has_answer(answer):
                        raise EmptyAnswerError(f"expert {name!r} returned an empty answer")
                except Exception as exc:
                    if trial.failed(exc) is None:
                        raise
                    continue
                else:
                    trial.succeeded()
                    return self._finish(answer, decision)
                finally:
                    trial.abandon()
            raise AllExpertsFailedError(decision)

        return self._call_with_config(run, input, self._traced_config(config, decision))

    async def ainvoke(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        messages = to_messages(input, self.input_key)
        # Off the event loop: an encoder classifier takes tens of ms per query on a CPU.
        decision = await asyncio.to_thread(self._decide, messages)

        async def run(
            _: HerdInput, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
        ) -> BaseMessage:
            try:
                return await attempts(run_manager, config)
            finally:
                await adispatch_custom_event(DECISION_EVENT, decision.metadata(), config=config)

        async def attempts(
            run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
        ) -> BaseMessage:
            for name in self._candidates(decision):
                expert = self.experts[name]
                trial = _Trial(self, decision, name)
                try:
                    call = expert.model.ainvoke(
                        expert.prepare(messages), self._child(config, run_manager, name), **kwargs
                    )
                    answer = await _Deadline(expert.timeout_s).wait(call)
                    if not _has_answer(answer):
                        raise EmptyAnswerError(f"expert {name!r} returned an empty answer")
                except Exception as exc:
                    if trial.failed(exc) is None:
                        raise
                    continue
                else:
                    trial.succeeded()
                    return self._finish(answer, decision)
                finally:
                    trial.abandon()
            raise AllExpertsFailedError(decision)

        return await self._acall_with_config(run, input, self._traced_config(config, decision))

    def invoke_with_decision(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[BaseMessage, RouteDecision]:
        """Like ``invoke``, also returning the decision as a ``RouteDecision``."""
        answer = self.invoke(input, config, **kwargs)
        return answer, RouteDecision.model_validate(answer.response_metadata[DECISION_KEY])

    async def ainvoke_with_decision(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[BaseMessage, RouteDecision]:
        """Like ``ainvoke``, also returning the decision as a ``RouteDecision``."""
        answer = await self.ainvoke(input, config, **kwargs)
        return answer, RouteDecision.model_validate(answer.response_metadata[DECISION_KEY])

    # -- streaming ----------------------------------------------------------------------

    def _open_stream(
        self,
        name: str,
        messages: list[BaseMessage],
        decision: RouteDecision,
        config: RunnableConfig,
        run_manager: CallbackManagerForChainRun,
        kwargs: Mapping[str, Any],
    ) -> Iterator[BaseMessage] | None:
        """Start one expert's stream and wait for its first token; None means fall back."""
        expert = self.experts[name]
        trial = _Trial(self, decision, name)
        held: list[BaseMessage] = []
        stream: Iterator[BaseMessage] = iter(())
        try:
            stream = iter(
                expert.model.stream(
                    expert.prepare(messages), self._child(config, run_manager, name), **kwargs
                )
            )
            for chunk in stream:
                held.append(chunk)
                if _has_answer(chunk):
                    break
            else:
                raise EmptyAnswerError(f"expert {name!r} streamed no answer")
        except Exception as exc:
            _close(stream)
            if trial.failed(exc) is None:
                raise
            return None
        except BaseException:
            trial.abandon()
            raise
        return self._rest_of_stream(trial, stream, held)

    def _rest_of_stream(
        self, trial: _Trial, stream: Iterator[BaseMessage], held: list[BaseMessage]
    ) -> Iterator[BaseMessage]:
        sent: list[str] = []
        try:
            for chunk in held:
                sent.append(chunk.text)
                yield chunk
            for chunk in stream:
                sent.append(chunk.text)
                yield chunk
        except Exception as exc:
            trial.failed(exc, kind="stream_broken")
            raise StreamInterruptedError(trial.name, "".join(sent), exc) from exc
        finally:
            trial.abandon()
        trial.succeeded()
        yield AIMessageChunk(
            content="", response_metadata={DECISION_KEY: trial.decision.metadata()}
        )

    def stream(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[BaseMessage]:
        """Stream the chosen expert's answer, falling back only before the first token.

        The last chunk carries the decision in ``response_metadata["herd"]``. A stream that
        breaks after tokens were sent raises ``StreamInterruptedError`` stating what was sent.
        """
        messages = to_messages(input, self.input_key)
        decision = self._decide(messages)

        def run(
            _: Iterator[HerdInput], run_manager: CallbackManagerForChainRun, config: RunnableConfig
        ) -> Iterator[BaseMessage]:
            with _announced(decision, config):
                for name in self._candidates(decision):
                    stream = self._open_stream(
                        name, messages, decision, config, run_manager, kwargs
                    )
                    if stream is not None:
                        yield from stream
                        return
                raise AllExpertsFailedError(decision)

        yield from self._transform_stream_with_config(
            iter([input]), run, self._traced_config(config, decision)
        )

    async def _aopen_stream(
        self,
        name: str,
        messages: list[BaseMessage],
        decision: RouteDecision,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForChainRun,
        kwargs: Mapping[str, Any],
    ) -> AsyncIterator[BaseMessage] | None:
        expert = self.experts[name]
        trial = _Trial(self, decision, name)
        held: list[BaseMessage] = []
        deadline = _Deadline(expert.timeout_s)
        stream: AsyncIterator[BaseMessage] = _no_chunks()
        try:
            stream = expert.model.astream(
                expert.prepare(messages), self._child(config, run_manager, name), **kwargs
            )
            while True:
                try:
                    chunk = await deadline.wait(stream.__anext__())
                except StopAsyncIteration:
                    raise EmptyAnswerError(f"expert {name!r} streamed no answer") from None
                held.append(chunk)
                if _has_answer(chunk):
                    break
        except Exception as exc:
            await _aclose(stream)
            if trial.failed(exc) is None:
                raise
            return None
        except BaseException:
            await _aclose(stream)
            trial.abandon()
            raise
        return self._arest_of_stream(trial, stream, held, deadline)

    async def _arest_of_stream(
        self,
        trial: _Trial,
        stream: AsyncIterator[BaseMessage],
        held: list[BaseMessage],
        deadline: _Deadline,
    ) -> AsyncIterator[BaseMessage]:
        sent: list[str] = []
        try:
            for chunk in held:
                sent.append(chunk.text)
                yield chunk
            while True:
                try:
                    chunk = await deadline.wait(stream.__anext__())
                except StopAsyncIteration:
                    break
                sent.append(chunk.text)
                yield chunk
        except Exception as exc:
            trial.failed(exc, kind="stream_broken")
            raise StreamInterruptedError(trial.name, "".join(sent), exc) from exc
        finally:
            trial.abandon()
            await _aclose(stream)
        trial.succeeded()
        yield AIMessageChunk(
            content="", response_metadata={DECISION_KEY: trial.decision.metadata()}
        )

    async def astream(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[BaseMessage]:
        """Async ``stream``: same fallback rules, with each expert's deadline enforced."""
        messages = to_messages(input, self.input_key)
        # Off the event loop: an encoder classifier takes tens of ms per query on a CPU.
        decision = await asyncio.to_thread(self._decide, messages)

        async def run(
            _: AsyncIterator[HerdInput],
            run_manager: AsyncCallbackManagerForChainRun,
            config: RunnableConfig,
        ) -> AsyncIterator[BaseMessage]:
            try:
                for name in self._candidates(decision):
                    stream = await self._aopen_stream(
                        name, messages, decision, config, run_manager, kwargs
                    )
                    if stream is not None:
                        async for chunk in stream:
                            yield chunk
                        return
                raise AllExpertsFailedError(decision)
            finally:
                await adispatch_custom_event(DECISION_EVENT, decision.metadata(), config=config)

        async def single() -> AsyncIterator[HerdInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            single(), run, self._traced_config(config, decision)
        ):
            yield chunk


class _Deadline:
    """A whole-request deadline: httpx times out per read, so a slow trickle never would."""

    def __init__(self, seconds: float | None) -> None:
        self.expires = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    async def wait(self, awaitable: Any) -> Any:
        if self.expires is None:
            return await awaitable
        remaining = max(self.expires - time.monotonic(), 0.0)
        try:
            return await asyncio.wait_for(awaitable, remaining)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"no complete answer within the {self.seconds:g}s deadline"
            ) from None


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
