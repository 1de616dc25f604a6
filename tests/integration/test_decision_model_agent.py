"""A ``create_agent`` agent routed by LangChain's ``ModelRouterMiddleware`` and the herd's router.

The subject is the routing: the real bundled TF-IDF router, wrapped as a
``HerdDecisionModel``, picks the route once per run, and every model call of that run,
through the tool loop, must go to the chosen route's model and never to the agent's
fallback model or the other route's.

The chat models are fakes that emit a tool call and then answer with the tool's result, so
each route's calls can be counted exactly; the fakes are not what the test is about. The
tool runs for real, and so does the classifier. The same middleware drives real OpenAI-route
experts on a local server in tests/integration/test_agents_e2e.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from langchain_herd.decision_models import HerdChoiceAnswer, HerdDecisionModel
from langchain_herd.errors import ConfigError

STEM_TEXT = "Solve the quadratic equation x^2 - 5x + 6 = 0 and compute the integral."
HUMANITIES_TEXT = "Who was the Roman emperor after Augustus?"
looked_up: list[str] = []
"""Topics the tool was called with, in order (cleared by the ``models`` fixture)."""

pytestmark = pytest.mark.filterwarnings("ignore:The middleware `ModelRouterMiddleware` is in beta")


@tool
def lookup(topic: str) -> str:
    """Look up reference notes on a topic."""
    looked_up.append(topic)
    return f"notes on {topic!r}"


class ToolLoopChat(BaseChatModel):
    """Calls the first bound tool with the user's text, then answers with the tool's result."""

    route: str
    """Which model this is, written into every answer."""
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    """The messages of every call this model received."""

    @property
    def _llm_type(self) -> str:
        return "tool-loop-fake"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        last = messages[-1]
        if isinstance(last, ToolMessage):
            message = AIMessage(content=f"[{self.route}] {last.text}")
        else:
            name = kwargs["tools"][0]["function"]["name"]
            call_id = f"call-{self.route}-{len(self.calls)}"
            message = AIMessage(
                content="",
                tool_calls=[{"name": name, "args": {"topic": last.text}, "id": call_id}],
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture(scope="module")
def classifier() -> HerdDecisionModel:
    return HerdDecisionModel.from_pretrained(
        "bundled:mmlu-group-tfidf",
        label_map={"general": ["humanities", "social_sciences", "other"]},
    )


@pytest.fixture
def models() -> dict[str, ToolLoopChat]:
    looked_up.clear()
    return {name: ToolLoopChat(route=name) for name in ("fallback", "stem", "general")}


def build_agent(
    classifier: HerdDecisionModel, models: dict[str, ToolLoopChat], **kwargs: Any
) -> Any:
    router = ModelRouterMiddleware(
        choices={
            "stem": ModelChoice(models["stem"], "Maths, science and engineering."),
            "general": ModelChoice(models["general"], "History, society and everything else."),
        },
        instructions="Pick the expert best suited to the user's task.",
        classifier=classifier,
    )
    return create_agent(models["fallback"], tools=[lookup], middleware=[router], **kwargs)


def assert_routed_run(
    result: dict[str, Any], models: dict[str, ToolLoopChat], route: str, text: str
) -> None:
    """The run made a full tool loop, and every model call went to ``route``'s model."""
    messages = result["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert messages[1].tool_calls[0]["name"] == "lookup"
    assert messages[2].text == f"notes on {text!r}"
    assert messages[3].text == f"[{route}] notes on {text!r}"
    assert looked_up == [text]
    assert len(models[route].calls) == 2  # the tool call, then the answer after the tool
    assert isinstance(models[route].calls[1][-1], ToolMessage)
    others = {name: len(m.calls) for name, m in models.items() if name != route}
    assert others == dict.fromkeys(others, 0)
    answer = result["model_route"]
    assert isinstance(answer, HerdChoiceAnswer)
    assert answer.choice == route
    assert answer.confidence == answer.probabilities[route] > 0.9
    assert set(answer.classifier_scores) == {"humanities", "other", "social_sciences", "stem"}


@pytest.mark.parametrize(("text", "route"), [(STEM_TEXT, "stem"), (HUMANITIES_TEXT, "general")])
def test_agent_runs_the_tool_loop_on_the_routed_model(
    classifier: HerdDecisionModel, models: dict[str, ToolLoopChat], text: str, route: str
) -> None:
    agent = build_agent(classifier, models)
    result = agent.invoke({"messages": [HumanMessage(text)]})
    assert_routed_run(result, models, route, text)


@pytest.mark.parametrize(("text", "route"), [(STEM_TEXT, "stem"), (HUMANITIES_TEXT, "general")])
async def test_agent_runs_the_tool_loop_on_the_routed_model_async(
    classifier: HerdDecisionModel, models: dict[str, ToolLoopChat], text: str, route: str
) -> None:
    agent = build_agent(classifier, models)
    result = await agent.ainvoke({"messages": [HumanMessage(text)]})
    assert_routed_run(result, models, route, text)


def test_each_run_of_a_thread_is_routed_again(
    classifier: HerdDecisionModel, models: dict[str, ToolLoopChat]
) -> None:
    """A checkpointed thread: the second run is classified on its own newest human turn.

    It also checks the ``HerdChoiceAnswer`` kept in agent state survives the checkpointer.
    """
    agent = build_agent(classifier, models, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1"}}
    first = agent.invoke({"messages": [HumanMessage(STEM_TEXT)]}, config)
    assert first["model_route"].choice == "stem"
    second = agent.invoke({"messages": [HumanMessage(HUMANITIES_TEXT)]}, config)
    assert second["model_route"].choice == "general"
    assert second["model_route"].classifier_scores["humanities"] > 0.9
    assert [len(models[name].calls) for name in ("fallback", "stem", "general")] == [0, 2, 2]
    assert len(second["messages"]) == 8  # both runs' tool loops, in one history
    assert second["messages"][-1].text == f"[general] notes on {HUMANITIES_TEXT!r}"


async def test_a_route_the_classifier_cannot_score_ends_the_run_before_any_model_call(
    models: dict[str, ToolLoopChat],
) -> None:
    """No label_map for ``general``: the classifier refuses, and no model is called."""
    unmapped = HerdDecisionModel.from_pretrained("bundled:mmlu-group-tfidf")
    agent = build_agent(unmapped, models)
    with pytest.raises(ConfigError, match="'general'"):
        agent.invoke({"messages": [HumanMessage(STEM_TEXT)]})
    with pytest.raises(ConfigError, match="'general'"):
        await agent.ainvoke({"messages": [HumanMessage(STEM_TEXT)]})
    assert [len(m.calls) for m in models.values()] == [0, 0, 0]
    assert looked_up == []
