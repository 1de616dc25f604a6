"""The herd as the model of a LangChain agent: a tool loop, then experts offered as tools.

1. `create_agent(model=herd, tools=[add, multiply, word_count])`: only experts that can call
   tools (the two on the OpenAI chat route) are ranked, the others are listed as `excluded`,
   and the expert that made the tool call keeps the loop (`sticky`). `HerdMiddleware` keeps
   every decision in the agent state under `herd_decisions`.
2. Each expert offered as a tool (`ask_stem`, `ask_humanities`, ...): the agent's model picks
   an expert by tool call, and the tool pins that expert with `herd_expert` (any expert, also
   one that cannot call tools itself); the pinned call's decision is the tool's artifact.

Starts the local SmolLM2 herd (`bundled:local`, or the config in `$HERD_CONFIG`) unless it is
already up, and stops what it started. SmolLM2-135M is a weak tool caller: the prompts spell out
the call, a middleware asks for a text answer once a tool has answered (else it calls the same
tool again), and among the expert tools it mostly picks the first one listed.

    .venv/bin/python examples/agent_toolkit.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool

from langchain_herd import HerdConfig, HerdRouter, load_config
from langchain_herd.local_servers import LocalHerd
from langchain_herd.middleware import HerdMiddleware

CONFIG = os.environ.get("HERD_CONFIG", "bundled:local")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@wrap_model_call
def answer_after_tool(
    request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
) -> ModelResponse[Any]:
    """Once a tool has answered, ask for text: SmolLM2 would call the same tool again."""
    if isinstance(request.messages[-1], ToolMessage):
        request = request.override(tool_choice="none")
    return handler(request)


def expert_tools(herd: HerdRouter, config: HerdConfig) -> list[BaseTool]:
    """One tool per expert: `ask_<name>(question)` answers with that expert alone."""

    def make(name: str, description: str) -> BaseTool:
        def ask(question: str) -> tuple[str, dict[str, Any]]:
            pinned: RunnableConfig = {"configurable": {"herd_expert": name}}
            answer = herd.invoke(question, config=pinned)
            return answer.text, answer.response_metadata["herd"]

        return tool(
            f"ask_{name}",
            description=f"Ask the {name} expert: {description}",
            response_format="content_and_artifact",  # the artifact: the pinned call's decision
        )(ask)

    return [make(expert.name, expert.description) for expert in config.experts]


def show(message: BaseMessage) -> str:
    """One line per message of the tool loop."""
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
        return f"  ai    -> {calls}"
    if isinstance(message, ToolMessage):
        pinned = f" (pinned {message.artifact['pinned']})" if message.artifact else ""
        return f"  tool  {message.name}{pinned}: {message.text.strip()[:70]!r}"
    return f"  {message.type:<5} {message.text.strip()[:70]!r}"


def run(agent: Any, question: str) -> dict[str, Any]:
    """Run the agent on one question; print the messages and the decision trail."""
    print(f"\nQ: {question}")
    result = agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 8})
    for message in result["messages"]:
        print(show(message))
    print("  decisions (state['herd_decisions']):")
    for decision in result.get("herd_decisions", []):
        print(
            f"    chosen {decision['ranking'][0]}, excluded {sorted(decision['excluded'])}, "
            f"sticky {decision['sticky']!r}, answered_by {decision['answered_by']}"
        )
    return result


def main() -> None:
    config = load_config(CONFIG)
    with LocalHerd(config):
        herd = HerdRouter.from_config(config, max_tokens=32)

        agent = create_agent(
            model=herd,
            tools=[add, multiply, word_count],
            middleware=[HerdMiddleware(herd), answer_after_tool],
        )
        run(agent, "What is 3 + 4? Use the add tool.")

        panel = create_agent(
            model=herd,
            tools=expert_tools(herd, config),
            middleware=[HerdMiddleware(herd), answer_after_tool],
        )
        run(panel, "Call an expert tool with the question 'Who painted the Mona Lisa?'")


if __name__ == "__main__":
    main()
