"""The herd's answers in OpenAI's wire shapes: completions, stream chunks, usage, headers.

The decision travels twice, both ignorable by an OpenAI client: in ``x-herd-*`` response
headers (the answering expert, the classifier's scores, the policy) and in a top-level ``herd``
field of the body (the whole ``RouteDecision``; in a stream, on its last chunk).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.ai import UsageMetadata, add_usage

from langchain_herd.decision import RouteDecision
from langchain_herd.endpoint.to_langchain import EXPERT_PREFIX, HERD_MODEL

EXPERT_HEADER = "x-herd-expert"
"""Response header: the expert that answered (in a stream, the one being relayed)."""
SCORES_HEADER = "x-herd-scores"
"""Response header: the classifier's scores, best first, as ``label=0.123,...``."""
POLICY_HEADER = "x-herd-policy"
"""Response header: the policy that ranked the experts."""
MAX_HEADER_SCORES = 16
"""Most labels listed in ``x-herd-scores`` (headers should stay small)."""

#: Finish reasons OpenAI clients know; TGI's own (``eos_token``, ``stop_sequence``) are "stop".
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


def decision_headers(decision: RouteDecision | None, expert: str | None) -> dict[str, str]:
    """The ``x-herd-*`` headers for a decision (empty without one)."""
    if decision is None:
        return {}
    headers = {POLICY_HEADER: _ascii(decision.policy)}
    if expert:
        headers[EXPERT_HEADER] = _ascii(expert)
    best = sorted(decision.scores.items(), key=lambda item: -item[1])[:MAX_HEADER_SCORES]
    if best:
        headers[SCORES_HEADER] = ",".join(f"{_ascii(label)}={p:.3f}" for label, p in best)
    return headers


def _ascii(text: str) -> str:
    # Header values are latin-1 on the wire; names and labels are usually ASCII already.
    return text.encode("ascii", "backslashreplace").decode().replace(",", "_")


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def reply_model(expert: str | None) -> str:
    """The ``model`` of a reply: ``herd/<expert>``, the id that pins the same expert again."""
    return f"{EXPERT_PREFIX}{expert}" if expert else HERD_MODEL


def usage_dict(usage: UsageMetadata | None) -> dict[str, int]:
    """OpenAI's ``usage`` (zeros when the expert reported none)."""
    prompt = int(usage["input_tokens"]) if usage else 0
    completion = int(usage["output_tokens"]) if usage else 0
    total = int(usage.get("total_tokens", prompt + completion)) if usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def finish_reason(raw: Any, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return raw if raw in _FINISH_REASONS else "stop"


def tool_calls_of(message: AIMessage) -> list[dict[str, Any]]:
    """The message's tool calls in OpenAI's shape (arguments as JSON text)."""
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in message.tool_calls
    ]


def completion(message: AIMessage, decision: RouteDecision) -> dict[str, Any]:
    """A ``chat.completion`` object for one answer, with ``herd`` holding the decision."""
    calls = tool_calls_of(message)
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": message.text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply_model(decision.answered_by),
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(
                    message.response_metadata.get("finish_reason"), bool(calls)
                ),
            }
        ],
        "usage": usage_dict(message.usage_metadata),
        "herd": decision.metadata(),
    }


class ChunkWriter:
    """Turns one stream's message chunks into ``chat.completion.chunk`` objects.

    Args:
        expert: the expert being relayed (the chunks' ``model`` is ``herd/<expert>``).
        include_usage: end with OpenAI's usage chunk (``choices: []``).
    """

    def __init__(self, expert: str | None, *, include_usage: bool) -> None:
        self.id = new_completion_id()
        self.created = int(time.time())
        self.model = reply_model(expert)
        self.include_usage = include_usage
        self._started = False
        self._tool_calls = False
        self._finish: Any = None
        self._usage: UsageMetadata | None = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        if self.include_usage:
            chunk.setdefault("usage", None)  # OpenAI sends null on every chunk but the last
        return chunk

    def delta(self, message: AIMessageChunk) -> dict[str, Any] | None:
        """The chunk to send for ``message``, or None when it carries nothing to show."""
        if message.usage_metadata:
            self._usage = add_usage(self._usage, message.usage_metadata)
        if message.response_metadata.get("finish_reason"):
            self._finish = message.response_metadata["finish_reason"]
        delta: dict[str, Any] = {}
        if not self._started:
            delta["role"] = "assistant"
        text = message.text
        if text or not self._started:
            delta["content"] = text
        calls = [self._tool_call_delta(i, c) for i, c in enumerate(message.tool_call_chunks)]
        if calls:
            self._tool_calls = True
            delta["tool_calls"] = calls
        if not delta:
            return None
        self._started = True
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return self._chunk([choice])

    @staticmethod
    def _tool_call_delta(position: int, call: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": call.get("index") if call.get("index") is not None else position
        }
        if call.get("id"):
            out["id"] = call["id"]
            out["type"] = "function"
        function: dict[str, Any] = {}
        if call.get("name"):
            function["name"] = call["name"]
        function["arguments"] = call.get("args") or ""
        out["function"] = function
        return out

    def finish(self, decision: RouteDecision | None) -> list[dict[str, Any]]:
        """The closing chunks: the finish reason, then usage if asked; ``herd`` on the last."""
        choice = {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": finish_reason(self._finish, self._tool_calls),
        }
        chunks = [self._chunk([choice])]
        if self.include_usage:
            chunks.append(self._chunk([], usage=usage_dict(self._usage)))
        if decision is not None:
            chunks[-1]["herd"] = decision.metadata()
        return chunks
