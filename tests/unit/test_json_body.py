"""``loads_body``: strict JSON for request bodies, each refusal naming what and where."""

from __future__ import annotations

import pytest

from langchain_herd.json_body import MAX_JSON_DEPTH, JsonBodyError, loads_body


@pytest.mark.parametrize(
    ("raw", "param", "says"),
    [
        (b'{"a": NaN}', "a", "is NaN"),
        (b'{"a": {"b": [1, 1e999]}}', "a.b[1]", "is 1e999"),
        (b'{"a": -Infinity}', "a", "is -Infinity"),
        (rb'{"m": [{"content": "x\ud800"}]}', "m[0].content", r"lone UTF-16 surrogate (\ud800"),
        # A bad key is named escaped, so the message itself stays valid text.
        (rb'{"m": {"\udc00": 1}}', r"m.\udc00", "surrogate"),
        (b'{"inputs": "caf\xe9"}', None, "not valid UTF-8 (byte 15"),
        (b" \n ", None, "empty"),
        (b'{"a": 1', None, "not valid JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", None, "4300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, None, f"more than {MAX_JSON_DEPTH} levels"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), None, "levels deep"),
    ],
)
def test_refusals_say_what_and_where(raw: bytes, param: str | None, says: str) -> None:
    with pytest.raises(JsonBodyError) as caught:
        loads_body(raw)
    assert says in caught.value.message
    assert caught.value.param == param
    caught.value.message.encode("utf-8")  # always sendable


def test_what_json_allows_is_kept() -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert loads_body(nested) is not None
    # Brackets inside strings are text, not nesting; an escaped pair is one character.
    text = '{"s": "' + "[" * 500 + '\\"{", "e": "\\ud83d\\ude00", "n": 1e308}'
    assert loads_body(text.encode()) == {"s": "[" * 500 + '"{', "e": "😀", "n": 1e308}
