"""The three ways a LangChain 1.x user brings the herd into an agent, each running a
tool-using agent end to end against real local TGI-protocol servers on loopback:

1. ``create_agent(model=herd, tools=...)``;
2. ``HerdMiddleware(herd)`` around an agent whose own model is never called;
3. ``ModelRouterMiddleware(choices=..., classifier=HerdDecisionModel(...))`` choosing among
   the herd's OpenAI-route experts.

The servers run the tiny test model; its tool calls are schema-valid because the server
enforces them with a grammar, whatever the model would write. A small middleware asks for
a tool on the first model call and for an answer once a tool has run, so every run is one
real tool loop (the same pattern examples/agent_toolkit.py uses with SmolLM2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import (
    ModelChoice,
    ModelRouterMiddleware,
)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_herd import HerdDecisionModel, HerdMiddleware, HerdRouter
from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.experts import build_chat_model
from langchain_herd.server import ServerThread, create_app, load_backend
from tests.integration.agent_loop import ToolThenAnswer, add, added

STEM_Q = "Compute the derivative of x^3 + 2x with respect to x, then add 3 and 4."


@pytest.fixture(scope="module")
def config() -> Iterator[HerdConfig]:
    backend = load_backend("tiny")
    server = ServerThread(
        create_app(backend, model_id="tiny", max_input_tokens=900, max_total_tokens=1024)
    ).start()
    gen = {"max_new_tokens": 48}

    def expert(name: str, protocol: str, routes: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "url": server.url,
            "protocol": protocol,
            "model_id": "tiny",
            "routes": routes,
            "generation": gen,
        }

    yield parse_config(
        {
            "name": "agents",
            "experts": [
                expert("stem", "openai", ["stem"]),
                expert("humanities", "tgi", ["humanities"]),
                expert("general", "openai", ["social_sciences", "other"]),
            ],
            "fallback": {"default_expert": "general"},
        }
    )
    server.stop()


@pytest.fixture(autouse=True)
def reset() -> None:
    added.clear()


def check_tool_loop(messages: list[Any]) -> list[dict[str, Any]]:
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"], kinds
    call = messages[1].tool_calls[0]
    assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
    assert added == [(call["args"]["a"], call["args"]["b"])]
    assert messages[2].text == str(sum(added[0]))
    assert not messages[3].tool_calls and messages[3].text.strip()
    return [m.response_metadata.get("herd", {}) for m in (messages[1], messages[3])]


async def test_create_agent_with_the_herd_as_model(config: HerdConfig) -> None:
    herd = HerdRouter.from_config(config)
    agent = create_agent(model=herd, tools=[add], middleware=[ToolThenAnswer()])
    for run in ("sync", "async"):
        added.clear()
        if run == "sync":
            out = agent.invoke({"messages": [("user", STEM_Q)]})
        else:
            out = await agent.ainvoke({"messages": [("user", STEM_Q)]})
        first, second = check_tool_loop(out["messages"])
        assert first["answered_by"] == "stem" and first["requirements"] == ["tools"]
        assert first["excluded"] == {"humanities": "cannot call tools"}
        assert second["answered_by"] == "stem"
        assert second["sticky"] == "tool loop: stem answered earlier in this turn"


def test_herd_middleware(config: HerdConfig) -> None:
    herd = HerdRouter.from_config(config)
    never = GenericFakeChatModel(messages=iter([AIMessage("the agent's own model")]))
    agent = create_agent(
        model=never, tools=[add], middleware=[HerdMiddleware(herd), ToolThenAnswer()]
    )
    out = agent.invoke(
        {"messages": [("user", STEM_Q)]}, {"configurable": {"thread_id": "agents-1"}}
    )
    check_tool_loop(out["messages"])
    trail = out["herd_decisions"]
    assert [d["answered_by"] for d in trail] == ["stem", "stem"]
    assert all(a["ok"] for d in trail for a in d["attempts"])


@pytest.mark.filterwarnings("ignore:The middleware `ModelRouterMiddleware` is in beta")
def test_model_router_middleware_with_herd_decision_model(config: HerdConfig) -> None:
    models = {e.name: build_chat_model(e) for e in config.experts if e.protocol == "openai"}
    router = ModelRouterMiddleware(
        choices={
            "stem": ModelChoice(model=models["stem"], criteria="maths and science"),
            "general": ModelChoice(model=models["general"], criteria="everything else"),
        },
        instructions="Pick the model for the user's question.",
        classifier=HerdDecisionModel.from_pretrained(
            "bundled:mmlu-group-tfidf",
            label_map={"stem": "stem", "general": ["humanities", "social_sciences", "other"]},
        ),
    )
    never = GenericFakeChatModel(messages=iter([AIMessage("the agent's own model")]))
    agent = create_agent(model=never, tools=[add], middleware=[router, ToolThenAnswer()])
    out = agent.invoke({"messages": [("user", STEM_Q)]})
    check_tool_loop(out["messages"])
    route = out["model_route"]
    assert route.choice == "stem" and route.confidence > 0.5
    assert route.classifier_scores["stem"] == max(route.classifier_scores.values())
