"""A deterministic agent tool loop for models that write nonsense (the tiny test model,
SmolLM2-135M): a tool that records its calls, and middleware that forces one tool call
before the answer. Shared by the agent tests over the chat model and over the endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

added: list[tuple[int, int]] = []
"""Every call of ``add``, in order (clear it at the start of a test)."""


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    added.append((a, b))
    return a + b


class ToolThenAnswer(AgentMiddleware):
    """Force a tool call first, then an answer: a deterministic loop for a random model."""

    def _decide(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        tool_ran = any(isinstance(m, ToolMessage) for m in request.messages)
        return request.override(tool_choice="none" if tool_ran else "any")

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse]
    ) -> ModelResponse:
        return handler(self._decide(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._decide(request))
