"""Turn whatever a LangChain user passes into chat messages and the text to classify."""

from __future__ import annotations

import re
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

CLASSIFY_MAX_CHARS = 20_000
"""Most characters of a query the classifier reads: the first and last halves of a longer one
(its opening states the task, its end holds the newest turn). The experts get the whole text;
the decision's ``notes["query"]`` records the cut. 20,000 characters are ~5,000 tokens, more
than any bundled classifier uses (an encoder reads 512 tokens)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_TEXT = (bytes, bytearray, memoryview)


def _bytes_error(where: str) -> InputError:
    return InputError(
        f"{where} is bytes, not text; decode it first, e.g. data.decode('utf-8'), and pass "
        f"the string"
    )


def to_messages(value: Any, input_key: str) -> list[BaseMessage]:
    """Normalise router input to a list of messages."""
    if isinstance(value, _NOT_TEXT):
        raise _bytes_error("the input")
    if isinstance(value, Mapping):
        if input_key not in value:
            raise InputError(
                f"dict input has no key {input_key!r} (keys: {sorted(value)}); pass the query "
                f"under {input_key!r} or build the router with input_key=<your key>"
            )
        value = value[input_key]
        if isinstance(value, Mapping):
            raise InputError(f"input[{input_key!r}] is a dict; expected text or messages")
        if isinstance(value, _NOT_TEXT):
            raise _bytes_error(f"input[{input_key!r}]")
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Sequence):
        for index, item in enumerate(value):
            if isinstance(item, _NOT_TEXT):
                raise _bytes_error(f"message {index}")
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


def check_messages(messages: Sequence[BaseMessage]) -> None:
    """Refuse a conversation no expert can answer, before any is called.

    Raises:
        InputError: no messages, no user turn, a latest user turn with no content, or text
            that is not valid Unicode (a lone surrogate, which no client can encode).
    """
    if not messages:
        raise InputError("empty message list: give at least one message to route")
    for index, message in enumerate(messages):
        check_text(message.content, f"message {index} ({message.type})")
    users = [m for m in messages if isinstance(m, HumanMessage)]
    if not users:
        roles = ", ".join(m.type for m in messages)
        raise InputError(
            f"the messages have no user turn (roles: {roles}); add the user's message, e.g. "
            f"('user', 'your question'), after any system message"
        )
    latest = users[-1]
    if isinstance(latest.content, str) and not latest.content.strip():
        what = "empty" if not latest.content else "only whitespace"
        raise InputError(
            f"the latest user turn is {what}: there is nothing to answer; send the question's text"
        )
    if isinstance(latest.content, list) and not latest.content:
        raise InputError("the latest user turn has no content parts; send the question's text")


def check_text(content: Any, where: str) -> None:
    """Refuse text with a lone surrogate: it cannot be encoded as UTF-8 to send to an expert.

    Raises:
        InputError: naming where the surrogate is and how to repair the text.
    """
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    for text in texts:
        found = _SURROGATE.search(text)
        if found is not None:
            raise InputError(
                f"{where} is not valid Unicode: a lone surrogate {found.group()!r} at character "
                f"{found.start()}, which cannot be sent as UTF-8 (it usually comes from bytes "
                f"decoded with errors='surrogateescape' or a broken JSON \\u escape); repair "
                f"it, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
            )


def classifier_text(text: str, limit: int = CLASSIFY_MAX_CHARS) -> tuple[str, str | None]:
    """The part of ``text`` the classifier reads, and a note when it was cut.

    Example:
        >>> cut, note = classifier_text("x" * 50, limit=10)
        >>> len(cut), note
        (11, 'classified the first and last 5 of 50 characters (limit 10)')
    """
    if len(text) <= limit:
        return text, None
    half = limit // 2
    note = f"classified the first and last {half} of {len(text)} characters (limit {limit})"
    return f"{text[:half]}\n{text[-half:]}", note


#: Largest seed the servers accept (TGI and vLLM read it as an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse standard call parameters every expert would refuse, before any is called (so a
    bad parameter costs no expert call and no fallback).

    Raises:
        InputError: naming the parameter, its value and the accepted range.
    """
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise InputError(f"{name} must be a finite number, got {value!r}")
    temperature = params.get("temperature")
    if temperature is not None and temperature < 0:
        raise InputError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    top_p = params.get("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
    for name, low, high in (("max_tokens", 1, None), ("seed", 0, MAX_SEED)):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise InputError(f"{name} must be {bound}, got {value}")
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, (list, tuple)) and all(isinstance(item, str) for item in stop)
    ):
        raise InputError(f"stop must be a list of strings, got {stop!r}")
