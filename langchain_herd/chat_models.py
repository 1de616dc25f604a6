"""``HerdRouter``: the herd as a LangChain chat model.

A thin surface over ``HerdEngine``: it turns LangChain's calling conventions (bound tools,
structured output, standard parameters, ``configurable`` pins, thread ids) into a
``RouteRequest``, lets the engine decide and run the attempts, and hands back the answering
expert's message with the decision in ``response_metadata["herd"]``. Each expert call is a
child run tagged ``expert:<name>``; the final decision is also dispatched as the custom
event ``herd_decision``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from langchain_core.runnables import (
    ConfigurableFieldSpec,
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from langchain_herd.backpressure import DEFAULT_BACKOFF_S, DEFAULT_MAX_BACKOFF_S
from langchain_herd.batch_grouping import grouped_order, shares_servers
from langchain_herd.capabilities import Requirements
from langchain_herd.classifiers.base import Classifier
from langchain_herd.config import DEFAULT_FALLBACK_ON, FailureKind, HerdConfig, load_config
from langchain_herd.decision import RouteDecision
from langchain_herd.engine import DECISION_KEY, Ensemble, HerdEngine, RouteRequest, tool_call_ids
from langchain_herd.errors import ConfigError, InputError
from langchain_herd.expert_runs import (
    STREAMS,
    UNTRACED,
    achild_manager,
    aexpert_run,
    atraced_stream,
    child_manager,
    expert_run,
    stream_child_manager,
    traced_stream,
)
from langchain_herd.experts import Expert, build_expert
from langchain_herd.inputs import HerdInput, QueryMode, check_params, to_messages
from langchain_herd.policies import POLICIES, Policy, policy_from_config
from langchain_herd.sessions import SessionStore

DECISION_EVENT = "herd_decision"
"""Name of the custom event that carries the final decision (``astream_events``, tracers)."""

EXPERT_KEY = "herd_expert"
"""``configurable`` key that pins one expert for a call."""
POLICY_KEY = "herd_policy"
"""``configurable`` key that ranks one call with another policy (a name or a ``Policy``)."""
QUERY_KEY = "herd_query"
"""``configurable`` key with the text to classify instead of the messages (``route_on``)."""
THREAD_KEY = "thread_id"
"""``configurable`` key of the conversation thread (LangGraph's), for sticky routes."""
STREAMING_KEY = "herd_streaming"
"""``response_metadata`` key of a stream's first chunk: the decision as it stood at the first
token (``streaming`` names the expert being relayed), so a surface can report the route before
the last chunk brings the final decision (e.g. in HTTP response headers)."""

CONFIG_ENV = "HERD_CONFIG"
"""Environment variable with the herd config used when none is given (a path or
``bundled:<name>``)."""
API_KEY_ENV = "HERD_API_KEY"
"""Environment variable with the default ``api_key``."""

_CALL_KWARG = "herd_call"
"""The per-call routing options, carried from ``invoke`` to ``_generate`` as a kwarg."""
_RUN_KEY = "run"
"""Key of a stream's run id in the per-call options."""

StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]


BATCH_CONCURRENCY = 32
"""Most calls ``abatch`` runs at once when the config sets no ``max_concurrency`` (as many as
sync ``batch``'s thread pool runs at most)."""


def _bounded(
    config: RunnableConfig | list[RunnableConfig] | None,
) -> RunnableConfig | list[RunnableConfig]:
    """The batch config with ``BATCH_CONCURRENCY`` where it sets no ``max_concurrency``."""
    if isinstance(config, list):
        return [_bounded(c) for c in config]  # type: ignore[misc]
    config = config or {}
    if config.get("max_concurrency") is not None:
        return config
    return {**config, "max_concurrency": BATCH_CONCURRENCY}


def _in_order(
    config: RunnableConfig | list[RunnableConfig] | None, order: list[int]
) -> RunnableConfig | list[RunnableConfig] | None:
    """Per-input configs follow their inputs into the sending order."""
    return [config[i] for i in order] if isinstance(config, list) else config


def _restored(sent: list[Any], order: list[int]) -> list[Any]:
    """Results in the inputs' order from results in the sending order."""
    out: list[Any] = [None] * len(sent)
    for position, index in enumerate(order):
        out[index] = sent[position]
    return out


def _call_options(config: RunnableConfig | None) -> dict[str, Any]:
    configurable = ensure_config(config).get("configurable") or {}
    keys = (EXPERT_KEY, POLICY_KEY, QUERY_KEY, THREAD_KEY)
    return {key: configurable[key] for key in keys if configurable.get(key) is not None}


class HerdRouter(BaseChatModel):
    """A herd of experts behind one LangChain chat model: routed, with fallbacks.

    Use it wherever LangChain takes a chat model: LCEL chains, ``create_agent(model=herd)``,
    ``bind_tools``, ``with_structured_output``, ``invoke``/``batch``/``stream`` and their
    async twins. Each answer is the answering expert's message; its
    ``response_metadata["herd"]`` holds the ``RouteDecision`` (scores, ranking, excluded
    and skipped experts, every attempt), ``response_metadata["model_name"]`` the expert's
    model and ``usage_metadata`` its tokens.

    With ``router.ensemble`` in the config (or ``ensemble=``), an answer may come from several
    experts (an escalation cascade, a vote, a mixture-of-agents): ``calls`` in the decision
    holds every call, ``verdict`` why this answer, and ``usage_metadata`` sums their tokens.

    Per call, ``configurable`` may pin an expert (``herd_expert``), rank with another policy
    (``herd_policy``), give the text to classify (``herd_query``, see ``route_on``) or name
    the conversation (``thread_id``) so follow-ups stay with their expert.

    Example:
        .. code-block:: python

            from langchain_herd import HerdRouter

            herd = HerdRouter.from_config("bundled:local")
            answer = herd.invoke("What is the integral of 2x?")
            print(answer.content, answer.response_metadata["herd"]["answered_by"])
            herd.invoke("Hi", config={"configurable": {"herd_expert": "other"}})
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: HerdEngine
    """The routing engine (experts, classifier, policy, breakers, sessions)."""
    input_key: str = "input"
    """Key of the query in dict input."""
    query: Callable[[Sequence[BaseMessage]], str] | None = Field(default=None, exclude=True)
    """What the classifier reads from the messages, when not the user turns (e.g. one part
    of a RAG prompt); a per-call ``herd_query`` wins over it."""
    temperature: float | None = None
    """Sampling temperature sent to the chosen expert (its own setting when None)."""
    max_tokens: int | None = None
    """Most tokens generated (``max_new_tokens`` on TGI's generate route)."""
    stop: list[str] | None = None
    """Stop sequences sent to the chosen expert."""
    timeout: float | None = None
    """Per-call timeout in seconds sent to the chosen expert's client, where it takes one."""
    max_retries: int = 0
    """Client retries of one expert call before the herd falls back (used by
    ``from_config`` when it builds the experts' clients; the herd's fallback is the retry)."""
    api_key: SecretStr | None = None
    """Bearer token for the experts that have no ``auth`` entry of their own (used by
    ``from_config``); leave unset for endpoints without auth. Never printed or traced."""
    streaming: bool = False
    """Whether ``invoke`` streams from the expert internally (LangChain's standard flag)."""
    group_batches: bool = True
    """In ``batch``/``abatch``, send queries grouped by server and adapter where experts share
    a server (each query is then classified twice: once to order, once when sent)."""

    def __init__(
        self,
        experts: Sequence[Expert] | None = None,
        classifier: Classifier | None = None,
        *,
        engine: HerdEngine | None = None,
        policy: Policy | None = None,
        default_expert: str | None = None,
        max_attempts: int = 3,
        fallback_on: Sequence[FailureKind] = DEFAULT_FALLBACK_ON,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 30.0,
        query_mode: QueryMode = "all_user",
        sticky_margin: float | None = 0.1,
        sessions: SessionStore | None = None,
        name: str = "herd",
        ensemble: Ensemble | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        **fields: Any,
    ) -> None:
        """Build a herd from expert objects and a classifier (or a ready ``engine``).

        The routing arguments (``policy`` to ``max_backoff_s``) are ``HerdEngine``'s, described
        there; they are ignored when a ready ``engine`` (shared state) is given.

        Args:
            experts: the herd, in preference order for ties.
            classifier: scores queries against route labels (or expert names).
            engine: a ready engine.
            **fields: the chat model's fields (``temperature``, ``max_tokens``, ``stop``,
                ``timeout``, ``max_retries``, ``api_key``, ``input_key``, ``query``, ...), or
                ``config`` (a herd config) to build the herd with ``from_config``.
        """
        if engine is None:
            if experts is None and "config" not in fields and os.environ.get(CONFIG_ENV):
                fields["config"] = os.environ[CONFIG_ENV]
            if fields.get("api_key") is None and os.environ.get(API_KEY_ENV):
                fields["api_key"] = SecretStr(os.environ[API_KEY_ENV])
            if "config" in fields:
                # langchain-tests and serialisation build models from keyword arguments.
                config = fields.pop("config")
                built = type(self).from_config(config, **fields)
                engine = built.engine
                fields["api_key"] = built.api_key
            elif experts is None or classifier is None:
                raise ConfigError(
                    f"HerdRouter needs experts and a classifier, an engine, config=<herd "
                    f"config> or the {CONFIG_ENV} environment variable; e.g. "
                    f"HerdRouter.from_config('bundled:local')"
                )
            else:
                engine = HerdEngine(
                    experts,
                    classifier,
                    policy=policy,
                    default_expert=default_expert,
                    max_attempts=max_attempts,
                    fallback_on=fallback_on,
                    breaker_threshold=breaker_threshold,
                    breaker_cooldown_s=breaker_cooldown_s,
                    query_mode=query_mode,
                    sticky_margin=sticky_margin,
                    sessions=sessions,
                    name=name,
                    ensemble=ensemble,
                    backoff_s=backoff_s,
                    max_backoff_s=max_backoff_s,
                )
        fields.setdefault("name", engine.name)
        super().__init__(engine=engine, **fields)  # type: ignore[call-arg]

    @classmethod
    def from_config(
        cls,
        config: HerdConfig | str | Path,
        *,
        classifier: Classifier | None = None,
        policy: Policy | None = None,
        **fields: Any,
    ) -> HerdRouter:
        """Build a herd from a config: a ``HerdConfig``, a YAML path, or ``bundled:<name>``.

        Args:
            config: the herd.
            classifier: use this classifier instead of the one the config names.
            policy: use this policy instead of the one the config names.
            **fields: chat model fields (``temperature``, ``max_tokens``, ``max_retries``...).
        """
        from langchain_herd.classifiers.registry import resolve_classifier
        from langchain_herd.shared_state import state_from_config

        herd = config if isinstance(config, HerdConfig) else load_config(config)
        max_retries = int(fields.get("max_retries", 0))
        api_key = fields.get("api_key")
        if isinstance(api_key, str):
            api_key = fields["api_key"] = SecretStr(api_key)
        experts = [
            build_expert(e, herd.token_for(e.name) or api_key, max_retries=max_retries)
            for e in herd.experts
        ]
        classifier = classifier or resolve_classifier(herd.router.classifier.path, herd.base_dir)
        costs = {e.name: e.cost for e in herd.experts}
        calibration = getattr(classifier, "calibration", None)
        sticky = herd.router.sticky
        # Breakers and sessions: in this process, or shared by replicas through Redis.
        shared = state_from_config(herd)
        ensemble = None
        if herd.router.ensemble is not None:
            from langchain_herd.ensembles.strategies import build_ensemble

            ensemble = build_ensemble(herd.router.ensemble, experts, base_dir=herd.base_dir)
        engine = HerdEngine(
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
            sticky_margin=sticky.margin if sticky.enabled else None,
            sessions=shared.sessions,
            breaker_factory=shared.breakers,
            name=herd.name,
            ensemble=ensemble,
            backoff_s=herd.fallback.backpressure.backoff_s,
            max_backoff_s=herd.fallback.backpressure.max_backoff_s,
            backoff_factory=shared.backoffs,
        )
        return cls(engine=engine, **fields)

    # -- the engine's parts, for callers and tests ---------------------------------------

    @property
    def experts(self) -> dict[str, Expert]:
        """The experts by name."""
        return self.engine.experts

    @property
    def breakers(self) -> dict[str, Any]:
        """Each expert's circuit breaker."""
        return self.engine.breakers

    @property
    def classifier(self) -> Classifier:
        """The classifier that scores queries."""
        return self.engine.classifier

    @property
    def policy(self) -> Policy:
        """The policy that ranks experts."""
        return self.engine.policy

    @property
    def default_expert(self) -> str:
        """The fallback anchor."""
        return self.engine.default_expert

    @property
    def _llm_type(self) -> str:
        return "herd"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"herd": self.engine.name, "experts": list(self.engine.experts)}

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The per-call ``configurable`` keys the herd reads, so LangChain lists them."""
        described = {
            EXPERT_KEY: ("Pinned expert", f"Call only this expert ({', '.join(self.experts)})."),
            POLICY_KEY: ("Routing policy", f"Rank with another policy ({', '.join(POLICIES)})."),
            QUERY_KEY: ("Routing query", "Text the classifier reads instead of the messages."),
            THREAD_KEY: ("Thread id", "Conversation thread: follow-ups stay with its expert."),
        }
        own = [
            ConfigurableFieldSpec(
                id=key, annotation=str | None, name=name, description=text, default=None
            )
            for key, (name, text) in described.items()
        ]
        return [*super().config_specs, *own]

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="herd",
            ls_model_name=model if isinstance(model, str) else self.engine.name,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = stops
        return params

    # -- input --------------------------------------------------------------------------

    def _convert_input(self, model_input: LanguageModelInput) -> PromptValue:
        if isinstance(model_input, (str, PromptValue)):
            return super()._convert_input(model_input)
        # A dict, as chains often pass, holds the query under `input_key`; bytes, other types
        # and unreadable message lists get an InputError that says what to pass instead.
        return ChatPromptValue(messages=to_messages(model_input, self.input_key))

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """``invoke`` over many inputs; where experts share a server (LoRA adapters of one
        base), they are sent grouped by server and adapter (:mod:`.batch_grouping`), and the
        results come back in the inputs' order."""
        order = self._send_order(inputs, config, kwargs)
        if order is None:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        sent = super().batch(
            [inputs[i] for i in order],
            _in_order(config, order),
            return_exceptions=return_exceptions,
            **kwargs,
        )
        return _restored(sent, order)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """``ainvoke`` over many inputs, at most ``BATCH_CONCURRENCY`` at a time unless the
        config's ``max_concurrency`` says otherwise (LangChain's default is unbounded: a
        batch of 10,000 would open 10,000 expert calls at once; sync ``batch`` is bounded by
        its thread pool). Grouped by server and adapter as :meth:`batch` is."""
        order = self._send_order(inputs, config, kwargs)
        if order is None:
            return await super().abatch(
                inputs, _bounded(config), return_exceptions=return_exceptions, **kwargs
            )
        sent = await super().abatch(
            [inputs[i] for i in order],
            _bounded(_in_order(config, order)),
            return_exceptions=return_exceptions,
            **kwargs,
        )
        return _restored(sent, order)

    def _send_order(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None,
        kwargs: dict[str, Any],
    ) -> list[int] | None:
        """The grouped sending order, or None where nothing would change."""
        if not self.group_batches or len(inputs) < 2 or not shares_servers(self.experts):
            return None
        configs = config if isinstance(config, list) else [config or {}] * len(inputs)
        chosen: list[str | None] = []
        for query, one in zip(inputs, configs, strict=True):
            try:
                bound = {**kwargs, _CALL_KWARG: _call_options(one)}
                chosen.append(self.route(query, **bound).chosen)  # type: ignore[arg-type]
            except Exception:  # its own call reports the problem, in its place
                chosen.append(None)
        order = grouped_order(chosen, self.experts)
        return None if order == sorted(order) else order

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        kwargs.setdefault(_CALL_KWARG, _call_options(config))
        return super().invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        kwargs.setdefault(_CALL_KWARG, _call_options(config))
        return await super().ainvoke(input, config, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        config, run = self._stream_config(config, kwargs)
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            STREAMS.pop(run, None)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        config, run = self._stream_config(config, kwargs)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            STREAMS.pop(run, None)

    @staticmethod
    def _stream_config(
        config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig, str]:
        # BaseChatModel does not hand `_stream` its run manager, so expert runs could not be
        # nested under the herd's run: fix the run's id here and keep the config by it.
        config = ensure_config(config)
        run = str(config.get("run_id") or uuid.uuid4())
        config = {**config, "run_id": uuid.UUID(run)}
        STREAMS[run] = dict(config)  # type: ignore[assignment]
        kwargs.setdefault(_CALL_KWARG, {**_call_options(config), _RUN_KEY: run})
        return config, run

    # -- deciding ---------------------------------------------------------------------

    def route(self, query: HerdInput, **bound: Any) -> RouteDecision:
        """Classify and rank without calling any expert.

        Example:
            >>> herd.route("Solve 2x + 3 = 7").chosen  # doctest: +SKIP
            'stem'
        """
        messages = self._convert_input(query).to_messages()  # type: ignore[arg-type]
        request, _ = self._request(messages, None, dict(bound))
        return self.engine.decide(request)

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[RouteRequest, dict[str, Any]]:
        """Split a call's kwargs into the routing request and what the expert receives."""
        options: dict[str, Any] = kwargs.pop(_CALL_KWARG, None) or {}
        model = kwargs.pop("model", None)
        served_model = None
        if isinstance(model, str) and model not in ("herd", self.engine.name):
            served_model = self._resolve_model(model, options)
        bound = self._standard_params(stop, kwargs)
        check_params(bound)
        policy = options.get(POLICY_KEY)
        query = options.get(QUERY_KEY)
        if query is None and self.query is not None:
            query = self.query(messages)
        request = RouteRequest(
            messages=messages,
            query=None if query is None else str(query),
            needs=Requirements.of(bound),
            pin=options.get(EXPERT_KEY),
            policy=self._policy(policy) if policy is not None else None,
            thread_id=None if options.get(THREAD_KEY) is None else str(options[THREAD_KEY]),
            model=served_model,
            max_new_tokens=bound.get("max_tokens"),
        )
        return request, bound

    def _resolve_model(self, model: str, options: dict[str, Any]) -> str | None:
        """A per-call ``model``: an expert (``herd/<expert>`` as an endpoint lists it, or its
        name) pins it; a model id restricts the call to the experts serving that model."""
        name = model.removeprefix("herd/")
        if name in self.engine.experts:
            options.setdefault(EXPERT_KEY, name)
            return None
        if any(expert.model_id == model for expert in self.engine.experts.values()):
            return model
        models = sorted({str(e.model_id) for e in self.engine.experts.values() if e.model_id})
        raise InputError(
            f"model {model!r} is neither an expert of this herd ({list(self.engine.experts)}, "
            f"also as herd/<expert>) nor a model one of them serves ({models})"
        )

    def _standard_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = dict(kwargs)
        if "max_new_tokens" in bound:  # TGI's name; every expert gets the standard one
            bound.setdefault("max_tokens", bound.pop("max_new_tokens"))
        defaults = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
        }
        for key, value in defaults.items():
            if value is not None:
                bound.setdefault(key, value)
        stops = stop if stop is not None else self.stop
        if isinstance(stops, str):  # OpenAI's API takes one stop sequence as a string
            stops = [stops]
        if stops:
            bound["stop"] = list(stops)
        return bound

    def _policy(self, value: Any) -> Policy:
        if not isinstance(value, str):
            return value  # a Policy object
        if value not in POLICIES or value == "threshold":
            usable = [name for name in POLICIES if name != "threshold"]
            raise InputError(
                f"unknown per-call policy {value!r}; use one of {usable}, or pass a Policy "
                f"object as configurable[{POLICY_KEY!r}]"
            )
        from langchain_herd.config import PolicyConfig

        costs = {name: expert.cost for name, expert in self.engine.experts.items()}
        return policy_from_config(PolicyConfig(name=value), costs=costs)  # type: ignore[arg-type]

    @staticmethod
    def _finish(message: BaseMessage, decision: RouteDecision) -> AIMessage:
        metadata = {**message.response_metadata, DECISION_KEY: decision.metadata()}
        if not isinstance(message, AIMessage):
            return AIMessage(content=message.content, response_metadata=metadata)
        return message.model_copy(update={"response_metadata": metadata})

    # -- calls -------------------------------------------------------------------------

    @staticmethod
    def _caller(
        bound: dict[str, Any], manager_for: Callable[[str], CallbackManager | None]
    ) -> Callable[[Expert, list[BaseMessage]], BaseMessage]:
        """One expert call with the request's bindings, traced as ``expert:<name>``."""

        def call(expert: Expert, messages: list[BaseMessage]) -> BaseMessage:
            model, call_kwargs = expert.bind_request(bound)
            prepared = expert.prepare(messages)
            run = expert_run(manager_for(f"expert:{expert.name}"), expert, prepared)
            try:
                answer = model.invoke(prepared, UNTRACED, **call_kwargs)
            except BaseException as exc:
                if run is not None:
                    run.on_chain_error(exc)
                raise
            if run is not None:
                run.on_chain_end({"output": answer})
            return answer

        return call

    @staticmethod
    def _acaller(
        bound: dict[str, Any], manager_for: Callable[[str], AsyncCallbackManager | None]
    ) -> Callable[[Expert, list[BaseMessage]], Awaitable[BaseMessage]]:
        """Async ``_caller``."""

        async def call(expert: Expert, messages: list[BaseMessage]) -> BaseMessage:
            model, call_kwargs = expert.bind_request(bound)
            prepared = expert.prepare(messages)
            run = await aexpert_run(manager_for(f"expert:{expert.name}"), expert, prepared)
            try:
                answer = await model.ainvoke(prepared, UNTRACED, **call_kwargs)
            except BaseException as exc:
                if run is not None:
                    await run.on_chain_error(exc)
                raise
            if run is not None:
                await run.on_chain_end({"output": answer})
            return answer

        return call

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, bound = self._request(messages, stop, kwargs)
        decision = self.engine.decide(request)
        call = self._caller(bound, lambda tag: child_manager(run_manager, tag))
        try:
            answer = self.engine.invoke(decision, messages, call)
        finally:
            self._announce(decision, child_manager(run_manager, "herd"))
        self.engine.remember(decision, request.thread_id, tool_call_ids(answer))
        return ChatResult(generations=[ChatGeneration(message=self._finish(answer, decision))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, bound = self._request(messages, stop, kwargs)
        # Off the event loop: an encoder classifier takes tens of ms per query on a CPU.
        decision = await asyncio.to_thread(self.engine.decide, request)
        call = self._acaller(bound, lambda tag: achild_manager(run_manager, tag))
        try:
            answer = await self.engine.ainvoke(decision, messages, call)
        finally:
            await self._aannounce(decision, achild_manager(run_manager, "herd"))
        self.engine.remember(decision, request.thread_id, tool_call_ids(answer))
        return ChatResult(generations=[ChatGeneration(message=self._finish(answer, decision))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream the chosen expert, falling back only before its first token.

        The last chunk carries the decision in ``response_metadata["herd"]``; a stream that
        breaks after tokens were sent raises ``StreamInterruptedError`` saying what was sent.
        """
        run = (kwargs.get(_CALL_KWARG) or {}).get(_RUN_KEY)
        request, bound = self._request(messages, stop, kwargs)
        decision = self.engine.decide(request)

        def manager_for(tag: str) -> CallbackManager | None:
            manager: CallbackManager | None = child_manager(run_manager, tag)
            return manager or stream_child_manager(run, tag, CallbackManager)

        def stream(expert: Expert, sent: list[BaseMessage]) -> Iterator[BaseMessage]:
            model, call_kwargs = expert.bind_request(bound)
            prepared = expert.prepare(sent)
            chunks = model.stream(prepared, UNTRACED, **call_kwargs)
            manager = manager_for(f"expert:{expert.name}")
            return traced_stream(expert_run(manager, expert, prepared), chunks)

        call = self._caller(bound, manager_for)
        calls: list[str] = []
        try:
            chunks = self.engine.stream(decision, messages, stream, call)
            for index, message in enumerate(chunks):
                if index == 0:
                    message = self._mark_streaming(message, decision)
                calls.extend(tool_call_ids(message))
                chunk = ChatGenerationChunk(message=message)
                if run_manager:
                    run_manager.on_llm_new_token(message.text, chunk=chunk)
                yield chunk
        finally:
            manager = child_manager(run_manager, "herd") or stream_child_manager(
                run, "herd", CallbackManager
            )
            self._announce(decision, manager)
        self.engine.remember(decision, request.thread_id, calls)
        yield self._last_chunk(decision)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run = (kwargs.get(_CALL_KWARG) or {}).get(_RUN_KEY)
        request, bound = self._request(messages, stop, kwargs)
        decision = await asyncio.to_thread(self.engine.decide, request)

        def manager_for(tag: str) -> AsyncCallbackManager | None:
            manager: AsyncCallbackManager | None = achild_manager(run_manager, tag)
            return manager or stream_child_manager(run, tag, AsyncCallbackManager)

        def stream(expert: Expert, sent: list[BaseMessage]) -> AsyncIterator[BaseMessage]:
            model, call_kwargs = expert.bind_request(bound)
            prepared = expert.prepare(sent)
            chunks = model.astream(prepared, UNTRACED, **call_kwargs)
            return atraced_stream(manager_for(f"expert:{expert.name}"), expert, prepared, chunks)

        call = self._acaller(bound, manager_for)
        calls: list[str] = []
        try:
            first = True
            async for message in self.engine.astream(decision, messages, stream, call):
                if first:
                    message, first = self._mark_streaming(message, decision), False
                calls.extend(tool_call_ids(message))
                chunk = ChatGenerationChunk(message=message)
                if run_manager:
                    await run_manager.on_llm_new_token(message.text, chunk=chunk)
                yield chunk
        finally:
            manager = achild_manager(run_manager, "herd") or stream_child_manager(
                run, "herd", AsyncCallbackManager
            )
            await self._aannounce(decision, manager)
        self.engine.remember(decision, request.thread_id, calls)
        yield self._last_chunk(decision)

    @staticmethod
    def _mark_streaming(message: AIMessageChunk, decision: RouteDecision) -> AIMessageChunk:
        metadata = {**message.response_metadata, STREAMING_KEY: decision.metadata()}
        return message.model_copy(update={"response_metadata": metadata})

    @staticmethod
    def _last_chunk(decision: RouteDecision) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={DECISION_KEY: decision.metadata()},
                chunk_position="last",
            )
        )

    def _announce(self, decision: RouteDecision, manager: CallbackManager | None) -> None:
        if manager is not None:
            dispatch_custom_event(
                DECISION_EVENT, decision.metadata(), config={"callbacks": manager}
            )

    async def _aannounce(
        self, decision: RouteDecision, manager: AsyncCallbackManager | None
    ) -> None:
        if manager is not None:
            await adispatch_custom_event(
                DECISION_EVENT, decision.metadata(), config={"callbacks": manager}
            )

    def invoke_with_decision(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[AIMessage, RouteDecision]:
        """Like ``invoke``, also returning the decision as a ``RouteDecision``."""
        answer = self.invoke(input, config, **kwargs)  # type: ignore[arg-type]
        return answer, RouteDecision.model_validate(answer.response_metadata[DECISION_KEY])

    async def ainvoke_with_decision(
        self, input: HerdInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[AIMessage, RouteDecision]:
        """Like ``ainvoke``, also returning the decision as a ``RouteDecision``."""
        answer = await self.ainvoke(input, config, **kwargs)  # type: ignore[arg-type]
        return answer, RouteDecision.model_validate(answer.response_metadata[DECISION_KEY])

    # -- tools and structured output ------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: only experts that can call tools are ranked, and the chosen one gets them.

        Args:
            tools: LangChain tools, functions, pydantic classes or OpenAI tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"any"``/``"required"``, a tool name, or
                ``True`` for the only tool; passed to the expert's own ``bind_tools``.
            **kwargs: further call arguments (e.g. ``parallel_tool_calls``).
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is True:
            if len(formatted) != 1:
                raise InputError(
                    f"tool_choice=True forces the only tool, but {len(formatted)} are bound; "
                    f"name the tool to force instead"
                )
            tool_choice = formatted[0]["function"]["name"]
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "any", "required"):
            names = [t["function"]["name"] for t in formatted]
            if tool_choice not in names:
                raise InputError(f"tool_choice {tool_choice!r} is not a bound tool ({names})")
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers that follow ``schema`` (pydantic class, TypedDict, JSON schema).

        Only experts that support ``method`` are ranked: ``function_calling`` (a forced tool
        call; OpenAI-protocol experts), ``json_schema`` (``response_format`` with the schema,
        enforced by the server's grammar; TGI's generate route too) or ``json_mode`` (any
        JSON object; say the fields in the prompt).

        Args:
            schema: the output schema.
            include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of raising.
            method: how the experts are asked for structure.
            strict: ask the server for strict schema adherence (``json_schema``).
            **kwargs: not accepted; named so a typo fails loudly.
        """
        if kwargs:
            raise InputError(f"unsupported arguments {sorted(kwargs)} for with_structured_output")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method}, "schema": schema}
        llm: Runnable[LanguageModelInput, Any]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, ls_structured_output_format=trace)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method == "json_schema":
            json_schema = convert_to_json_schema(schema)
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {
                    "name": json_schema.get("title", "output"),
                    "schema": json_schema,
                    **({"strict": strict} if strict is not None else {}),
                },
            }
            llm = self.bind(response_format=response_format, ls_structured_output_format=trace)
            parser = _json_parser(schema, is_pydantic)
        elif method == "json_mode":
            llm = self.bind(
                response_format={"type": "json_object"}, ls_structured_output_format=trace
            )
            parser = _json_parser(schema, is_pydantic)
        else:
            raise InputError(
                f"unknown structured output method {method!r}; use function_calling, "
                f"json_schema or json_mode"
            )
        if include_raw:
            parsed = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
            )
            no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
            return RunnableMap(raw=llm) | parsed.with_fallbacks(
                [no_parse], exception_key="parsing_error"
            )
        return llm | parser


def _json_parser(schema: dict[str, Any] | type, is_pydantic: bool) -> Runnable[Any, Any]:
    if is_pydantic:
        return PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
    return JsonOutputParser()


def route_on(
    selector: str | Callable[[Any], str], runnable: Runnable[Any, Any]
) -> Runnable[Any, Any]:
    """Run ``runnable`` with the herd classifying ``selector(input)`` instead of the prompt.

    In a RAG chain the prompt holds the retrieved documents and the question; the herd
    should route on the question. ``selector`` is a key of the dict input or a callable
    over it; the text travels to the herd as ``configurable["herd_query"]``.

    Example:
        .. code-block:: python

            chain = {"context": retriever, "question": RunnablePassthrough()} | route_on(
                "question", prompt | herd
            )
    """
    pick: Callable[[Any], Any] = itemgetter(selector) if isinstance(selector, str) else selector

    def routed(value: Any, config: RunnableConfig) -> RunnableConfig:
        try:
            query = pick(value)
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"route_on could not read {selector!r} from the input ({exc}); give a key of "
                f"the dict input or a callable over it"
            ) from exc
        configurable = {**(config.get("configurable") or {}), QUERY_KEY: str(query)}
        return patch_config(config, configurable=configurable)

    def run(value: Any, config: RunnableConfig) -> Any:
        return runnable.invoke(value, routed(value, config))

    async def arun(value: Any, config: RunnableConfig) -> Any:
        return await runnable.ainvoke(value, routed(value, config))

    return RunnableLambda(run, afunc=arun, name="route_on")
