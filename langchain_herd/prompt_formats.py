"""Render chat messages into one prompt for TGI's generate route.

TGI's ``/generate`` takes raw text: the chat template is the client's job there (only the
``/v1/chat/completions`` route applies the model's template server-side). Each format here
ends with the assistant's turn opened, so the model answers rather than continues the user.

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> render_prompt([HumanMessage("Hi")], "plain")
    'User: Hi\\nAssistant:'
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage

from langchain_herd.config import PromptFormat


def message_role(message: BaseMessage) -> str:
    """The chat-template role of a message (``system``, ``assistant``, ``tool``, ``user``)."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    return "user"


def _text(message: BaseMessage) -> str:
    """A turn's text; tool calls are written as JSON, as TGI renders them in a history."""
    text = str(message.text)
    calls = getattr(message, "tool_calls", None)
    if calls:
        rendered = [{"name": call["name"], "arguments": call["args"]} for call in calls]
        text = f"{text}\n{json.dumps(rendered)}".strip()
    return text


def _chatml(messages: Sequence[BaseMessage]) -> str:
    turns = [f"<|im_start|>{message_role(m)}\n{_text(m)}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


def _llama3(messages: Sequence[BaseMessage]) -> str:
    turns = [
        f"<|start_header_id|>{message_role(m)}<|end_header_id|>\n\n{_text(m)}<|eot_id|>"
        for m in messages
    ]
    opening = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return "<|begin_of_text|>" + "".join(turns) + opening


def _mistral(messages: Sequence[BaseMessage]) -> str:
    # Mistral's template has no system role: the system text leads the first user turn.
    out = "<s>"
    pending_system = ""
    for message in messages:
        role = message_role(message)
        if role == "system":
            pending_system += message.text + "\n\n"
        elif role in ("user", "tool"):
            prefix = "Tool result: " if role == "tool" else ""
            out += f"[INST] {pending_system}{prefix}{message.text} [/INST]"
            pending_system = ""
        else:
            out += f"{_text(message)}</s>"
    return out


def _plain(messages: Sequence[BaseMessage]) -> str:
    names = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
    lines = [f"{names[message_role(m)]}: {_text(m)}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


_RENDERERS = {"chatml": _chatml, "llama3": _llama3, "mistral": _mistral, "plain": _plain}
_STOPS: dict[str, list[str]] = {
    "chatml": ["<|im_end|>"],
    "llama3": ["<|eot_id|>"],
    "mistral": ["</s>"],
    "plain": ["\nUser:"],
}


def render_prompt(messages: Sequence[BaseMessage], prompt_format: PromptFormat) -> str:
    """Render messages as one prompt in the given format."""
    return _RENDERERS[prompt_format](messages)


def stop_sequences_for(prompt_format: PromptFormat) -> list[str]:
    """Stop sequences that end the assistant's turn in this format."""
    return list(_STOPS[prompt_format])
