"""Experts: LangChain chat models built from config, one per endpoint.

``tgi`` experts speak TGI's native generate API through langchain-huggingface's
``HuggingFaceEndpoint``, wrapped so they take and return chat messages like every other
expert; ``openai`` experts use ``ChatHuggingFace`` over the same endpoint class, which
speaks ``/v1/chat/completions`` as TGI, vLLM and SGLang serve it. Either way the herd
returns an ``AIMessage``.

Auth: langchain-huggingface drops explicit tokens for non-hub URLs, but huggingface_hub
still falls back to ``HF_TOKEN`` from the environment for every request, so a local or
third-party endpoint would receive the user's hub token. The clients built here set the
``authorization`` header explicitly: the configured token for endpoints it belongs to,
an empty value for all others.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, SecretStr

from langchain_herd.config import ExpertConfig, PromptFormat
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
    """Whole-request deadline for async calls (sync calls rely on the client's timeout)."""
    cost: float = 1.0
    """Relative cost of a call."""

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
    """A chat model over TGI's native generate API (``HuggingFaceEndpoint``).

    Messages are rendered to one prompt with ``prompt_format`` (TGI's generate route takes
    raw text; only its chat route applies the model's template), then sent through the
    wrapped ``HuggingFaceEndpoint`` so its parameter handling and clients are used as is.

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
    """The ``HuggingFaceEndpoint`` that sends requests."""
    prompt_format: PromptFormat = "chatml"
    """How messages become the prompt."""

    @property
    def _llm_type(self) -> str:
        return "herd-tgi-generate"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"endpoint_url": self.llm.endpoint_url, "prompt_format": self.prompt_format}

    def _stops(self, stop: list[str] | None) -> list[str]:
        return [*(stop or []), *stop_sequences_for(self.prompt_format)]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = render_prompt(messages, self.prompt_format)
        text = self.llm._call(prompt, stop=self._stops(stop), **kwargs)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = render_prompt(messages, self.prompt_format)
        text = await self.llm._acall(prompt, stop=self._stops(stop), **kwargs)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt = render_prompt(messages, self.prompt_format)
        for piece in self.llm._stream(prompt, stop=self._stops(stop), **kwargs):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
            if run_manager:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt = render_prompt(messages, self.prompt_format)
        async for piece in self.llm._astream(prompt, stop=self._stops(stop), **kwargs):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
            if run_manager:
                await run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk


def _auth_headers(token: SecretStr | None) -> dict[str, str]:
    # An explicit (possibly empty) header overrides huggingface_hub's implicit HF_TOKEN.
    return {"authorization": f"Bearer {token.get_secret_value()}" if token else ""}


def _endpoint(config: ExpertConfig, token: SecretStr | None, **params: Any) -> Any:
    from huggingface_hub import AsyncInferenceClient, InferenceClient
    from langchain_huggingface import HuggingFaceEndpoint

    llm = HuggingFaceEndpoint(
        endpoint_url=config.url, timeout=max(1, round(config.timeout_s)), **params
    )
    headers = _auth_headers(token)
    llm.client = InferenceClient(model=config.url, timeout=config.timeout_s, headers=headers)
    llm.async_client = _PerLoopAsyncClient(
        lambda: AsyncInferenceClient(model=config.url, timeout=config.timeout_s, headers=headers)
    )
    return llm


class _PerLoopAsyncClient:
    """An ``AsyncInferenceClient`` per event loop, behind one object.

    A client's connection pool belongs to the loop that first used it; shared, it fails
    with "Event loop is closed" once a router is used from a second loop (``asyncio.run``
    twice, notebooks, worker threads). Clients of loops that have closed are dropped.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop | None, Any]] = {}
        self._lock = threading.Lock()

    def _client(self) -> Any:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            entry = self._clients.get(id(loop))
            if entry is None or entry[0] is not loop:
                for key, (old, _) in list(self._clients.items()):
                    if old is not None and old.is_closed():
                        del self._clients[key]
                entry = (loop, self._factory())
                self._clients[id(loop)] = entry
            return entry[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)


def build_chat_model(config: ExpertConfig, token: SecretStr | None = None) -> BaseChatModel:
    """Build the LangChain chat model that calls one configured endpoint.

    Args:
        config: the expert's config.
        token: bearer token for this endpoint only, or None to send none.
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
        return TGIGenerateChat(llm=llm, prompt_format=config.prompt_format)

    from langchain_huggingface import ChatHuggingFace

    llm = _endpoint(config, token, temperature=None, top_p=None, typical_p=None)
    return ChatHuggingFace(
        llm=llm,
        max_tokens=gen.max_new_tokens,
        # On the chat route TGI samples unless temperature is exactly 0 (vLLM: 0 is greedy).
        temperature=gen.temperature if gen.temperature is not None else 0.0,
        top_p=gen.top_p,
        seed=gen.seed,
        stop=list(gen.stop) or None,
        # The payload's `model`: TGI reads it as the LoRA adapter, vLLM/SGLang as the name.
        model_kwargs={"model": config.chat_model_name},
    )


def build_expert(config: ExpertConfig, token: SecretStr | None = None) -> Expert:
    """Build an ``Expert`` (chat model plus routing facts) from its config."""
    return Expert(
        name=config.name,
        model=build_chat_model(config, token),
        routes=list(config.routes),
        system_prompt=config.system_prompt,
        timeout_s=config.timeout_s,
        cost=config.cost,
    )
