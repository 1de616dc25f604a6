"""The mixture-of-agents prompt (Wang et al. 2024, "Mixture-of-Agents Enhances Large Language
Model Capabilities", arXiv:2406.04692).

Proposers answer the conversation; the aggregator receives the same conversation with the
paper's *Aggregate-and-Synthesize* prompt as a system message that lists the proposals, and
writes the final answer. With several layers, each later layer's proposers get that prompt
with the previous layer's answers, as in the paper's reference implementation
(``togethercomputer/MoA``, ``inject_references_to_messages``).

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> sent = with_references([HumanMessage("2 + 2?")], ["4", "four"])
    >>> sent[0].type, sent[0].text.splitlines()[-2:]
    ('system', ['1. 4', '2. four'])
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, SystemMessage

__all__ = ["AGGREGATE_AND_SYNTHESIZE", "with_references"]

AGGREGATE_AND_SYNTHESIZE = (
    "You have been provided with a set of responses from various open-source models to the "
    "latest user query. Your task is to synthesize these responses into a single, "
    "high-quality response. It is crucial to critically evaluate the information provided "
    "in these responses, recognizing that some of it may be biased or incorrect. Your "
    "response should not simply replicate the given answers but should offer a refined, "
    "accurate, and comprehensive reply to the instruction. Ensure your response is "
    "well-structured, coherent, and adheres to the highest standards of accuracy and "
    "reliability.\n\nResponses from models:"
)
"""The paper's Aggregate-and-Synthesize prompt (its Table 1), word for word."""


def with_references(
    messages: Sequence[BaseMessage], references: Sequence[str]
) -> list[BaseMessage]:
    """The conversation with the aggregate prompt and the numbered ``references`` as its
    system message (appended to an existing one, as the reference implementation does)."""
    system = AGGREGATE_AND_SYNTHESIZE + "".join(
        f"\n{i}. {reference}" for i, reference in enumerate(references, start=1)
    )
    if messages and isinstance(messages[0], SystemMessage):
        return [SystemMessage(content=f"{messages[0].text}\n\n{system}"), *messages[1:]]
    return [SystemMessage(content=system), *messages]
