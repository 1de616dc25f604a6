"""``HerdMiddleware`` and ``create_agent(model=herd)``: the herd answers every model call of
an agent, holds the expert through the tool loop and keeps the decisions in the state.

The experts are fakes that call a tool and then answer (the routing is under test); the
same agents run against real local servers in tests/integration/test_agents_e2e.py.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool

from langchain_herd import Expert, HerdMiddleware, HerdRouter
from tests.unit.fakes import KeywordClassifier, ScriptedChat, ToolChat

CLASSIFIER = KeywordClassifier({"stem": "integral", "humanities": "poem", "other": "tax"})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class CallsThenAnswers(ToolChat):
    """Calls the first bound tool, then answers with the tool's result."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if isinstance(messages[-1], ToolMessage):
            kw.pop("tools", None)
            self.reply = f"the sum is {messages[-1].text}"
        return super()._generate(messages, stop, run_manager, **kw)


def herd() -> tuple[HerdRouter, CallsThenAnswers, ScriptedChat]:
    tools, plain = CallsThenAnswers(), ScriptedChat(reply="no tools here")
    experts = [
        Expert("stem", tools, routes=["stem", "other"]),
        Expert("humanities", plain, routes=["humanities"]),
    ]
    return HerdRouter(experts, CLASSIFIER), tools, plain


def test_create_agent_with_the_herd_as_model() -> None:
    router, tools, plain = herd()
    agent = create_agent(model=router, tools=[add])
    out = agent.invoke({"messages": [("user", "a poem: add 1 and 2")]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][2].text == "3" and out["messages"][-1].text == "the sum is 3"
    first, last = out["messages"][1], out["messages"][-1]
    # A poem scores humanities, whose expert cannot call tools: excluded, and recorded.
    assert first.response_metadata["herd"]["excluded"] == {"humanities": "cannot call tools"}
    assert last.response_metadata["herd"]["sticky"].startswith("tool loop")
    assert plain.calls == 0 and tools.calls == 2


async def test_herd_middleware_routes_every_model_call_and_keeps_the_trail() -> None:
    router, tools, _ = herd()
    unused = GenericFakeChatModel(messages=iter([AIMessage("the agent's own model")]))
    agent = create_agent(model=unused, tools=[add], middleware=[HerdMiddleware(router)])
    out = await agent.ainvoke(
        {"messages": [("user", "an integral: add 1 and 2")]},
        {"configurable": {"thread_id": "t"}},
    )
    assert out["messages"][-1].text == "the sum is 3"
    trail = out["herd_decisions"]
    assert [d["answered_by"] for d in trail] == ["stem", "stem"]
    assert trail[0]["requirements"] == ["tools"]
    assert tools.calls == 2
