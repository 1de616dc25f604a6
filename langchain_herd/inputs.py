"""Turn whatever a LangChain user passes into chat messages and the text to classify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from langchain_herd.errors import InputError

#: What ``HerdRouter`` accepts: a string, messages (or message-likes such as
#: ``("user", "hi")``), a ``PromptValue``, or a dict holding one of those under the
#: router's ``input_key``.
HerdInput: TypeAlias = str | Sequence[Any] | PromptValue | Mapping[str, Any]

QueryMode = Literal["last_user", "all_user"]


def to_messages(value: Any, input_key: str) -> list[BaseMessage]:
    """Normalise router input to a list of messages."""
    if isinstance(value, Mapping):
        if input_key not in value:
            raise InputError(
                f"dict input has no key {input_key!r} (keys: {sorted(value)}); pass the query "
                f"under {input_key!r} or build the router with input_key=<your key>"
            )
        value = value[input_key]
        if isinstance(value, Mapping):
            raise InputError(f"input[{input_key!r}] is a dict; expected text or messages")
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Sequence):
        try:
            messages = convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise InputError(f"could not read the input as chat messages: {exc}") from exc
        if not messages:
            raise InputError("empty message list: give at least one message to route")
        return messages
    raise InputError(
        f"cannot route input of type {type(value).__name__}; pass a string, a list of "
        f"messages, a PromptValue, or a dict with key {input_key!r}"
    )


def query_text(messages: Sequence[BaseMessage], mode: QueryMode) -> str:
    """The text the classifier scores.

    ``all_user`` joins every user turn so a terse follow-up ("and why?") is classified with
    the conversation's topic; ``last_user`` looks only at the newest turn.
    """
    user_turns = [m.text for m in messages if isinstance(m, HumanMessage)]
    if not user_turns:
        return messages[-1].text if messages else ""
    if mode == "last_user":
        return user_turns[-1]
    return "\n".join(user_turns)
