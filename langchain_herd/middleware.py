"""``HerdMiddleware``: route every model call of a LangChain 1.x agent through the herd.

``create_agent(model=..., middleware=[HerdMiddleware(herd)])`` keeps the agent's own model
as its declared default while each model call goes to the herd: classified, ranked among
the experts that can call the agent's tools, with the herd's fallbacks and breakers
(what ``ModelFallbackMiddleware`` lacks: no cooldown, no breaker, no record of attempts).
Within one run the expert that answered the user's turn keeps the tool loop; with a
``thread_id`` a follow-up turn stays with it unless clearly beaten. Every decision is kept in
the agent state under ``herd_decisions``.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from langchain_core.messages import AIMessage
from typing_extensions import NotRequired

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
    )
    from langchain.agents.middleware.types import ExtendedModelResponse
    from langgraph.types import Command
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "HerdMiddleware needs LangChain's agents (langchain>=1.5): "
        "pip install 'langchain-herd[agents]'"
    ) from exc

from langchain_herd.chat_models import HerdRouter
from langchain_herd.engine import DECISION_KEY


class HerdState(AgentState):  # type: ignore[type-arg]
    """Agent state with the herd's decision trail."""

    herd_decisions: NotRequired[Annotated[list[dict[str, Any]], operator.add]]
    """One routing decision per model call, in order (scores, ranking, attempts)."""


class HerdMiddleware(AgentMiddleware[Any, Any]):
    """Send each model call of an agent to the herd.

    Example:
        .. code-block:: python

            from langchain.agents import create_agent
            from langchain_herd import HerdRouter
            from langchain_herd.middleware import HerdMiddleware

            herd = HerdRouter.from_config("bundled:local")
            agent = create_agent(model=herd, tools=[add], middleware=[HerdMiddleware(herd)])
            agent.invoke({"messages": [("user", "What is 3 + 4?")]})
    """

    state_schema = HerdState

    def __init__(self, herd: HerdRouter) -> None:
        """Args:
        herd: the herd that answers every model call.
        """
        super().__init__()
        self.herd = herd

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ExtendedModelResponse[Any]:
        return _with_trail(handler(request.override(model=self.herd)))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ExtendedModelResponse[Any]:
        return _with_trail(await handler(request.override(model=self.herd)))


def _with_trail(response: ModelResponse[Any]) -> ExtendedModelResponse[Any]:
    """The response plus its decision, recorded with the model call itself (an ``after_model``
    hook would be skipped when a later middleware ends the run)."""
    decisions = [
        message.response_metadata[DECISION_KEY]
        for message in response.result
        if isinstance(message, AIMessage) and DECISION_KEY in message.response_metadata
    ]
    command: Command[Any] | None = (
        Command(update={"herd_decisions": decisions}) if decisions else None
    )
    return ExtendedModelResponse(model_response=response, command=command)
