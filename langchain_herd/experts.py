"""Experts: LangChain chat models built from config, one per endpoint.

``tgi`` experts speak TGI's native generate API through langchain-huggingface's
``HuggingFaceEndpoint``, wrapped so they take and return chat messages like every other
expert; ``openai`` experts use ``ChatHuggingFace`` over the same endpoint class, which
speaks ``/v1/chat/completions`` as TGI, vLLM and SGLang serve it. Either way the herd
returns an ``AIMessage``.

Auth: langchain-huggingface drops explicit tokens for non-hub URLs, but huggingface_hub
still falls back to ``HF_TOKEN`` (or the token ``hf auth login`` saved) for every request,
and the openai client to ``OPENAI_API_KEY``, so a local or third-party endpoint would
receive the user's own tokens. The clients built here send the configured token to the
endpoints it belongs to and no ``Authorization`` header at all to the others.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessageChunk,
    BaseMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import ConfigDict, SecretStr

from langchain_herd.capabilities import ALL_STRUCTURED, Capabilities, StructuredMethod
from langchain_herd.client_scopes import (
    PerCallAsyncInferenceClient,
    PerCallInferenceClient,
    PerLoop,
)
from langchain_herd.config import ExpertConfig, PromptFormat
from langchain_herd.context_limits import ContextSpec
from langchain_herd.deadlines import Deadline
from langchain_herd.prompt_formats import render_prompt, stop_sequences_for


@dataclass
class Expert:
    """One member of the herd: a chat runnable plus what the router needs to know about it.

    Example:
        .. code-block:: python

            from langchain_core.language_models import FakeListChatModel

            expert = Expert("stem", FakeListChatModel(responses=["42"]), routes=["stem"])
    """

    name: str
    """Unique name (decisions, traces tagged ``expert:<name>``)."""
    model: Runnable[Any, BaseMessage]
    """The chat model (or any runnable from messages to a message)."""
    routes: list[str] = field(default_factory=list)
    """Route labels this expert serves."""
    system_prompt: str | None = None
    """Prepended as a system message to every request it gets."""
    timeout_s: float | None = None
    """Whole-request deadline: async calls are cancelled at it, sync streams (and the TGI
    route's sync ``invoke``, which reads a stream) check it as each chunk arrives."""
    cost: float = 1.0
    """Relative cost of a call."""
    capabilities: Capabilities | None = None
    """What it can honour (tools, structured output); default: inferred from the model
    (tools and function-calling structured output when it implements ``bind_tools``)."""
    model_id: str | None = None
    """The model the expert serves, for reports."""
    url: str | None = None
    """The server's base URL, when built from config (health probes of an HTTP endpoint)."""
    context: ContextSpec | None = None
    """How the router checks that a query fits its input limit; None: never checked."""

    def __post_init__(self) -> None:
        if self.capabilities is None:
            tools = _binds_tools(self.model)
            methods: frozenset[StructuredMethod] = (
                frozenset({"function_calling"}) if tools else frozenset()
            )
            self.capabilities = Capabilities(tools=tools, structured_output=methods)

    @property
    def can(self) -> Capabilities:
        """The expert's capabilities (never None after construction)."""
        assert self.capabilities is not None
        return self.capabilities

    def bind_request(self, bound: Mapping[str, Any]) -> tuple[Runnable[Any, BaseMessage], dict]:
        """The model to call for a request with these bound arguments, and the call kwargs.

        Tools are bound with the model's own ``bind_tools`` (each client formats them for
        its protocol); the rest (``response_format``, standard parameters) go as kwargs.
        """
        kwargs = dict(bound)
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        model: Runnable[Any, BaseMessage] = self.model
        if tools and tool_choice != "none":
            extra = {} if tool_choice is None else {"tool_choice": tool_choice}
            model = self.model.bind_tools(tools, **extra)  # type: ignore[attr-defined]
        if not isinstance(self.model, BaseChatModel):
            kwargs.pop("ls_structured_output_format", None)
        return model, kwargs

    def prepare(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """The messages this expert receives: its system prompt merged in front."""
        if not self.system_prompt:
            return list(messages)
        if messages and isinstance(messages[0], SystemMessage):
            # One system message: several confuse many chat templates.
            merged = f"{self.system_prompt}\n\n{messages[0].text}"
            return [SystemMessage(content=merged), *messages[1:]]
        return [SystemMessage(content=self.system_prompt), *messages]


class TGIGenerateChat(BaseChatModel):
    """A chat model over TGI's native generate API.

    Messages are rendered to one prompt with ``prompt_format`` (TGI's generate route takes
    raw text; only its chat route applies the model's template) and sent with the client of
    the wrapped ``HuggingFaceEndpoint``, asking for TGI's ``details`` so every answer carries
    token usage and its finish reason (read from the stream's last event, for ``invoke``
    too). ``response_format`` becomes TGI's ``grammar``; standard
    parameters are mapped to the generate route's names (``max_tokens`` is
    ``max_new_tokens``).

    Example:
        .. code-block:: python

            from langchain_huggingface import HuggingFaceEndpoint

            llm = HuggingFaceEndpoint(endpoint_url="http://127.0.0.1:8080", max_new_tokens=64,
                                      temperature=None, top_p=None, typical_p=None)
            chat = TGIGenerateChat(llm=llm, prompt_format="chatml")
            chat.invoke("Hello")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any
    """The ``HuggingFaceEndpoint`` that holds the clients and default parameters."""
    prompt_format: PromptFormat = "chatml"
    """How messages become the prompt."""
    model_id: str = "tgi"
    """The model the endpoint serves, reported as ``response_metadata["model_name"]``."""
    timeout_s: float | None = None
    """Whole-request deadline of sync calls, checked as each event arrives: the client's
    timeout is per read, so a trickle of tokens would never reach it (async callers cancel)."""

    @property
    def _llm_type(self) -> str:
        return "herd-tgi-generate"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"endpoint_url": self.llm.endpoint_url, "prompt_format": self.prompt_format}

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in self.llm._default_params.items() if v is not None}
        params["return_full_text"] = False
        for key, value in kwargs.items():
            if key in _IGNORED_ON_GENERATE or value is None:
                continue
            name = _GENERATE_NAMES.get(key, key)
            if name not in _GENERATE_PARAMS:
                raise TypeError(
                    f"parameter {key!r} is not supported on TGI's generate route (supported: "
                    f"{sorted({*_GENERATE_PARAMS, *_GENERATE_NAMES})})"
                )
            params[name] = value
        if "grammar" in params and isinstance(params["grammar"], dict):
            params["grammar"] = _grammar_of(params["grammar"])
        if params.get("temperature") == 0:
            # OpenAI's spelling of greedy; TGI rejects temperature 0.
            params.pop("temperature")
            params["do_sample"] = False
        params["stop"] = self._stops(stop)
        return params

    def _stops(self, stop: list[str] | None) -> list[str]:
        """The call's stop sequences, the endpoint's, and the end of the format's turn."""
        configured = self.llm.stop_sequences or []
        return [*(stop or []), *configured, *stop_sequences_for(self.prompt_format)]

    def _metadata(self, finish_reason: Any) -> dict[str, Any]:
        return {"model_name": self.model_id, "finish_reason": str(finish_reason or "")}

    # Invoke reads the same stream as `stream`: only a stream's last event reports the input
    # length, and asking TGI for `decoder_input_details` instead would compute logprobs over
    # the whole prompt (measured: ~15% slower answers from the local SmolLM2 server).

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = generate_from_stream(self._stream(messages, stop, None, **kwargs))
        # A stop sequence of several tokens streams out in pieces; the whole answer loses it.
        return _without_stop(result, self._stops(stop))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await agenerate_from_stream(self._astream(messages, stop, None, **kwargs))
        return _without_stop(result, self._stops(stop))

    def _chunk(self, piece: Any, stops: list[str]) -> ChatGenerationChunk | None:
        token = piece.token
        text = "" if token.special else token.text
        for stop in stops:
            if stop and stop in text:
                text = text[: text.index(stop)]
        details = piece.details
        if details is None:
            return ChatGenerationChunk(message=AIMessageChunk(content=text)) if text else None
        # The last event: TGI reports the input length and the tokens generated.
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=text,
                usage_metadata=_usage(details.input_length, details.generated_tokens),
                response_metadata=self._metadata(details.finish_reason),
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        prompt = render_prompt(messages, self.prompt_format)
        deadline = Deadline(self.timeout_s)
        pieces = self.llm.client.text_generation(prompt, stream=True, details=True, **params)
        try:
            for piece in pieces:
                deadline.check()
                chunk = self._chunk(piece, params["stop"])
                if chunk is None:
                    continue
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        except BaseException as exc:
            # An error event raised inside huggingface_hub's generator: its finished frame,
            # held by the traceback, still holds the open response's line iterator. Left to
            # the cyclic GC, that iterator closes whenever a collection runs, possibly inside
            # this thread's next request while it holds httpcore's pool lock: a deadlock
            # (seen in the suite). Clearing the frames closes the response now.
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:  # the caller stopped early: close the response now too
                close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        prompt = render_prompt(messages, self.prompt_format)
        pieces = await self.llm.async_client.text_generation(
            prompt, stream=True, details=True, **params
        )
        try:
            async for piece in pieces:
                chunk = self._chunk(piece, params["stop"])
                if chunk is None:
                    continue
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:  # close the response now, not when the GC finds it
                await aclose()


#: Generate-route parameters the client's ``text_generation`` takes.
_GENERATE_PARAMS = frozenset(
    {
        "adapter_id",
        "do_sample",
        "frequency_penalty",
        "grammar",
        "max_new_tokens",
        "repetition_penalty",
        "seed",
        "stop",
        "temperature",
        "top_k",
        "top_n_tokens",
        "top_p",
        "truncate",
        "typical_p",
        "watermark",
    }
)
#: OpenAI / LangChain standard names and their generate-route spelling.
_GENERATE_NAMES = {"max_tokens": "max_new_tokens", "response_format": "grammar"}
#: Arguments that have no meaning on the generate route (the client's timeout is fixed).
_IGNORED_ON_GENERATE = frozenset({"timeout", "stream_options", "ls_structured_output_format"})


def _grammar_of(response_format: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` as TGI's ``grammar`` (TGI's own shape passes through)."""
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return {"type": "json", "value": spec.get("schema", spec)}
    if kind == "json_object":
        return {"type": "json", "value": {"type": "object"}}
    return response_format


def _strip_stop(text: str, stops: Sequence[str]) -> str:
    # TGI keeps the stop sequence at the end of the text; the answer should not.
    for stop in stops:
        if stop and text.endswith(stop):
            return text[: -len(stop)]
    return text


def _usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return cast(UsageMetadata, usage)


def _binds_tools(model: Any) -> bool:
    bind_tools = getattr(type(model), "bind_tools", None)
    return bind_tools is not None and bind_tools is not BaseChatModel.bind_tools


def _auth_headers(token: SecretStr | None) -> dict[str, str]:
    # An explicit header overrides huggingface_hub's implicit token (HF_TOKEN, or the one
    # saved by `hf auth login`); a None value makes the client leave the header out.
    value = f"Bearer {token.get_secret_value()}" if token else None
    return cast(dict[str, str], {"authorization": value})


def _endpoint(config: ExpertConfig, token: SecretStr | None, **params: Any) -> Any:
    from huggingface_hub import AsyncInferenceClient, InferenceClient, get_async_session
    from langchain_huggingface import HuggingFaceEndpoint

    llm = HuggingFaceEndpoint(
        endpoint_url=config.url,
        timeout=max(1, round(config.timeout_s)),
        # Unset, it would keep HUGGINGFACEHUB_API_TOKEN from the environment as a plain
        # string (in `model_dump()`, serialised runs); its clients are replaced below anyway.
        huggingfacehub_api_token=None,
        **params,
    )
    headers = _auth_headers(token)
    llm.client = PerCallInferenceClient(
        lambda: InferenceClient(model=config.url, timeout=config.timeout_s, headers=headers)
    )
    llm.async_client = PerCallAsyncInferenceClient(
        lambda: AsyncInferenceClient(model=config.url, timeout=config.timeout_s, headers=headers),
        PerLoop(get_async_session),
    )
    return llm


class OpenAIProtocolChat(ChatOpenAI):
    """``ChatOpenAI`` as TGI, vLLM and SGLang serve the protocol.

    langchain-openai sends ``max_tokens`` as ``max_completion_tokens``, which TGI does not
    read (it would generate up to its own limit); every one of these servers reads
    ``max_tokens``, so that is the name sent.
    """

    send_token: bool = True
    """Send the API key; False leaves the ``Authorization`` header out (no token here)."""

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        if not self.send_token:
            # Per request: the client honours an omitted header only there.
            payload["extra_headers"] = {"Authorization": openai.Omit()}
        return payload

    # TGI keeps a matched stop sequence at the end of the reply (vLLM and OpenAI do not):
    # strip it, so an answer reads the same whichever server gave it.

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        return _without_stop(result, self._stops(stop, kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await super()._agenerate(messages, stop, run_manager, **kwargs)
        return _without_stop(result, self._stops(stop, kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stops = self._stops(stop, kwargs)
        for chunk in super()._stream(messages, stop, run_manager, **kwargs):
            yield _chunk_without_stop(chunk, stops)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stops = self._stops(stop, kwargs)
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield _chunk_without_stop(chunk, stops)

    def _stops(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> list[str]:
        configured = self.stop if isinstance(self.stop, list) else [self.stop] if self.stop else []
        return [*(stop or kwargs.get("stop") or []), *configured]


def _without_stop(result: ChatResult, stops: Sequence[str]) -> ChatResult:
    for generation in result.generations:
        message = generation.message
        info = generation.generation_info or {}
        finish = info.get("finish_reason", message.response_metadata.get("finish_reason"))
        if stops and isinstance(message.content, str) and finish in _STOP_FINISHES:
            message.content = _strip_stop(message.content, stops)
    return result


def _chunk_without_stop(chunk: ChatGenerationChunk, stops: Sequence[str]) -> ChatGenerationChunk:
    # The chunk that ends on a stop sequence is the last one with text (best effort: a stop
    # sequence split over several chunks has already been sent in part).
    finish = (chunk.generation_info or {}).get("finish_reason")
    if stops and finish in _STOP_FINISHES and isinstance(chunk.message.content, str):
        chunk.message.content = _strip_stop(chunk.message.content, stops)
        chunk.text = chunk.message.content
    return chunk


#: Finish reasons of a reply ended by a stop sequence (TGI says ``stop_sequence``).
_STOP_FINISHES = frozenset({"stop", "stop_sequence"})


def build_chat_model(
    config: ExpertConfig, token: SecretStr | None = None, *, max_retries: int = 0
) -> BaseChatModel:
    """Build the LangChain chat model that calls one configured endpoint.

    Args:
        config: the expert's config.
        token: bearer token for this endpoint only, or None to send none.
        max_retries: client retries of one call before the herd falls back (0: the herd's
            own fallback and breakers handle failures).
    """
    gen = config.generation
    if config.protocol == "tgi":
        llm = _endpoint(
            config,
            token,
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_p=gen.top_p,
            typical_p=None,
            top_k=gen.top_k,
            repetition_penalty=gen.repetition_penalty,
            seed=gen.seed,
            do_sample=gen.temperature is not None,
            stop_sequences=list(gen.stop),
            model_kwargs={"adapter_id": config.adapter_id} if config.adapter_id else {},
        )
        return TGIGenerateChat(
            llm=llm,
            prompt_format=config.prompt_format,
            model_id=config.model_id,
            timeout_s=config.timeout_s,
        )

    # An explicit key: unset, the client would send OPENAI_API_KEY from the environment to
    # every endpoint. Without a token the Authorization header is left out altogether.
    api_key = token or SecretStr(NO_TOKEN)
    chat = OpenAIProtocolChat(
        base_url=f"{config.url}/v1",
        api_key=api_key,
        send_token=token is not None,
        # The payload's `model`: TGI reads it as the LoRA adapter, vLLM/SGLang as the name.
        model=config.chat_model_name,
        max_completion_tokens=gen.max_new_tokens,  # sent as max_tokens (see the class)
        # On the chat route TGI samples unless temperature is exactly 0 (vLLM: 0 is greedy).
        temperature=gen.temperature if gen.temperature is not None else 0.0,
        top_p=gen.top_p,
        seed=gen.seed,
        stop_sequences=list(gen.stop) or None,
        timeout=config.timeout_s,
        max_retries=max_retries,
        stream_usage=True,
    )

    def async_client() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=api_key.get_secret_value(),
            base_url=f"{config.url}/v1",
            timeout=config.timeout_s,
            max_retries=max_retries,
        )

    # langchain-openai shares one async connection pool per process, bound to the first event
    # loop that used it: a herd used from a second loop would fail.
    chat.root_async_client = PerLoop(async_client)
    chat.async_client = PerLoop(lambda: async_client().chat.completions)
    return chat


NO_TOKEN = "no-token"
"""The bearer value sent to OpenAI-protocol endpoints that have no token configured."""


def default_capabilities(config: ExpertConfig) -> Capabilities:
    """What an endpoint of this protocol honours unless the config says otherwise.

    The OpenAI route of TGI, vLLM and SGLang serves tools and both ``response_format``
    kinds; TGI's generate route has ``grammar`` (JSON schema) but no tool calls.
    """
    declared = config.capabilities
    if config.protocol == "openai":
        tools, methods = True, set(ALL_STRUCTURED)
    else:
        tools, methods = False, {"json_schema", "json_mode"}
    if declared is not None:
        tools = declared.tools if declared.tools is not None else tools
        if declared.structured_output is not None:
            methods = set(declared.structured_output)
    if not tools:
        methods.discard("function_calling")
    return Capabilities(tools=tools, structured_output=frozenset(methods))  # type: ignore[arg-type]


def build_expert(
    config: ExpertConfig, token: SecretStr | None = None, *, max_retries: int = 0
) -> Expert:
    """Build an ``Expert`` (chat model plus routing facts) from its config."""
    return Expert(
        name=config.name,
        model=build_chat_model(config, token, max_retries=max_retries),
        routes=list(config.routes),
        system_prompt=config.system_prompt,
        timeout_s=config.timeout_s,
        cost=config.cost,
        capabilities=default_capabilities(config),
        model_id=config.model_id,
        url=config.url,
        context=ContextSpec.from_config(config, token),
    )
