"""Reading text and token counts out of whatever a chat model (or runnable) returned."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage


def reply_text(reply: Any) -> str:
    """The text of a chat model's reply (a message, or a plain string from a runnable).

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> reply_text(AIMessage(content=[{"type": "text", "text": "C"}]))
        'C'
    """
    if isinstance(reply, BaseMessage):
        return reply.text
    if isinstance(reply, str):
        return reply
    return str(reply)


def reply_usage(reply: Any) -> dict[str, int] | None:
    """Token counts of a reply (``input_tokens``, ``output_tokens``, ``total_tokens``), when
    the model reported them in ``usage_metadata``."""
    usage = getattr(reply, "usage_metadata", None)
    if not usage:
        return None
    return {
        key: int(usage[key])
        for key in ("input_tokens", "output_tokens", "total_tokens")
        if usage.get(key) is not None
    }
