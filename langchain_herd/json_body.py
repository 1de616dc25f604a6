"""Decoding an untrusted JSON request body: strict UTF-8, strict JSON, bounded nesting.

Python's ``json`` accepts what JSON forbids and what a server must not pass on: ``NaN`` and
``Infinity`` (and ``1e999``, which overflows to infinity), strings holding lone UTF-16
surrogates (``"\\ud800"``, which no encoder can write back), and nesting as deep as the
recursion limit (``[[[[...]]]]`` 100 000 levels deep raises ``RecursionError``). Both servers
(``herd serve`` and ``herd serve-router``) decode request bodies here, so each of those is a
clear client error naming the field, never a crash deep inside generation.

Example:
    >>> loads_body(b'{"inputs": "Hi", "parameters": {"temperature": 0.5}}')["inputs"]
    'Hi'
    >>> try:
    ...     loads_body(b'{"parameters": {"temperature": NaN}}')
    ... except JsonBodyError as exc:
    ...     exc.param
    'parameters.temperature'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Literal

from langchain_herd.errors import HerdError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; far above any request (tool schemas
included) and far below what would strain the parser or the code that walks the value."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: the only way a surrogate gets past strict UTF-8."""
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonBodyError(HerdError, ValueError):
    """A request body that is not strict JSON, or holds what no JSON text may.

    Attributes:
        message: what is wrong and what to send instead.
        param: where (``messages[0].content``), when one field is to blame.
        kind: ``syntax`` for a body that is not JSON at all (bad UTF-8, bad syntax),
            ``content`` for JSON whose value cannot be used (NaN, too deep, lone surrogates).
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        kind: Literal["syntax", "content"] = "syntax",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.kind = kind


class _NonFinite:
    """Stands in for a non-finite number while parsing, so the walk can name its field."""

    def __init__(self, text: str) -> None:
        self.text = text


def loads_body(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body as strict JSON.

    Args:
        raw: the body's bytes (JSON over HTTP is UTF-8).
        max_depth: deepest nesting of arrays and objects accepted.

    Bodies over 64 KiB are best decoded in a worker thread (:func:`aloads_body`): checking a
    large body walks it in Python.

    Returns:
        The decoded value (any JSON type: callers check that it is an object).

    Raises:
        JsonBodyError: invalid UTF-8, empty, not JSON, ``NaN``/``Infinity`` or a number too
            large for a float, nesting deeper than ``max_depth``, a lone surrogate.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(
            f"the request body is not valid UTF-8 (byte {exc.start} is "
            f"{raw[exc.start : exc.start + 1]!r}); send the JSON text encoded as UTF-8"
        ) from None
    if not text.strip():
        raise JsonBodyError("the request body is empty; send a JSON object")
    non_finite = False

    def constant(name: str) -> _NonFinite:
        nonlocal non_finite
        non_finite = True
        return _NonFinite(name)

    def number(literal: str) -> float | _NonFinite:
        value = float(literal)
        return value if math.isfinite(value) else constant(literal)

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); send one JSON object"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise JsonBodyError(
            f"the request body holds a number that cannot be read ({exc}); send numbers of "
            "at most 4300 digits"
        ) from None
    if text.count("[") + text.count("{") > max_depth and _nests_deeper(text, max_depth):
        raise _too_deep(max_depth)
    if non_finite:
        path, value = _find(data, lambda v: isinstance(v, _NonFinite))
        assert isinstance(value, _NonFinite)
        raise JsonBodyError(
            f"'{path or 'body'}' is {value.text}, which JSON does not allow (numbers must be "
            "finite and fit a 64-bit float); send a finite number",
            param=path or None,
            kind="content",
        )
    if _SURROGATE_ESCAPE.search(text):
        try:  # the C encoder finds a lone surrogate fast; the walk only says where
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            path, value = _find(data, _is_not_text)
            _check_text(value, path)
    return data


def _too_deep(max_depth: int) -> JsonBodyError:
    return JsonBodyError(
        f"the request body nests arrays/objects more than {max_depth} levels deep; "
        "flatten the request",
        kind="content",
    )


def _nests_deeper(text: str, max_depth: int) -> bool:
    # Valid JSON (already parsed) whose strings are removed: brackets only, peeled one level
    # per round, all at C speed (walking a value node by node is 100x slower).
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(max_depth):
        brackets = brackets.replace("[]", "").replace("{}", "")
        if not brackets:
            return False
    return True


def _is_not_text(value: Any) -> bool:
    return isinstance(value, str) and not _encodes(value)


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _find(data: Any, wanted: Callable[[Any], bool]) -> tuple[str, Any]:
    """The path and value of the first part of ``data`` (keys included) that is ``wanted``."""
    pending: list[tuple[Any, str]] = [(data, "")]
    while pending:  # iterative: a deep value cannot exhaust the stack of the code checking it
        value, path = pending.pop()
        if wanted(value):
            return path, value
        if isinstance(value, dict):
            for key, item in value.items():
                # A key may be the bad text itself: escape it, so the message stays valid text.
                name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
                child = f"{path}.{name}" if path else name
                if wanted(key):
                    return child, key
                pending.append((item, child))
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    raise AssertionError("_find is only called when json.loads produced such a value")


def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        raise JsonBodyError(
            f"'{path or 'body'}' holds a lone UTF-16 surrogate (\\u{ord(char):04x} at "
            f"character {exc.start}), which is not text; send valid Unicode (a surrogate "
            "escape must be a high-low pair, as in \\ud83d\\ude00)",
            param=path or None,
            kind="content",
        ) from None


INLINE_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop (a thread hop costs more than that)."""


async def aloads_body(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """:func:`loads_body` off the event loop for large bodies, so other requests are served."""
    if len(raw) <= INLINE_BODY_BYTES:
        return loads_body(raw, max_depth=max_depth)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(lambda: loads_body(raw, max_depth=max_depth))
