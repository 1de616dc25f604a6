"""Stand-ins for the parts a routing-logic test is not about.

The classifier and the chat models here are fakes on purpose: these tests check the
router's bookkeeping (ranking, fallback, breakers, tracing). Real servers and the real
classifier are exercised in tests/integration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field


class KeywordClassifier:
    """Scores 0.9 for the label whose keyword is in the text, the rest share 0.1."""

    def __init__(self, keywords: dict[str, str]) -> None:
        self.keywords = keywords
        self.labels = list(keywords)

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.full((len(texts), len(self.labels)), 0.1 / max(len(self.labels) - 1, 1))
        for row, text in enumerate(texts):
            for col, label in enumerate(self.labels):
                if self.keywords[label] in text.lower():
                    out[row] = 0.1 / max(len(self.labels) - 1, 1)
                    out[row, col] = 0.9
                    break
        return out


class ScriptedChat(BaseChatModel):
    """Answers with ``reply`` (word by word when streaming), or raises ``error``.

    ``fail_after`` raises ``error`` mid-stream after that many chunks.
    """

    reply: str = "ok"
    error: Any = None
    fail_after: int | None = None
    calls: int = 0
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _chunks(self) -> list[str]:
        words = self.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)] if self.reply else [""]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        self.seen.append(list(messages))
        if self.error is not None and self.fail_after is None:
            raise self.error
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        self.seen.append(list(messages))
        if self.error is not None and self.fail_after is None:
            raise self.error
        for index, piece in enumerate(self._chunks()):
            if self.fail_after is not None and index >= self.fail_after:
                raise self.error
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop):
            yield chunk


class ToolChat(ScriptedChat):
    """A ``ScriptedChat`` that can call tools: with tools bound it calls the first one.

    It records what each call was bound with, so tests can check what the herd passed on.
    """

    bound: list[dict[str, Any]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=list(tools), **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.bound.append({**kwargs, **({"stop": stop} if stop else {})})
        if not kwargs.get("tools"):
            return super()._generate(messages, stop, run_manager, **kwargs)
        self.calls += 1
        self.seen.append(list(messages))
        name = kwargs["tools"][0]["function"]["name"]
        call = {"name": name, "args": {"a": 1, "b": 2}, "id": f"call_{self.calls}"}
        message = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])
