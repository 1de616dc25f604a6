"""Property-based fuzzing of both servers' request bodies, over real HTTP on loopback.

Bodies are drawn from each route's own schema (the pydantic models' JSON schema, through
hypothesis-jsonschema), then some are mutated: a field set to a wrong type, an extreme number,
``NaN``, an odd string (a lone surrogate, NUL, 10 000 characters), an unknown key; or the text
itself broken (cut short, invalid UTF-8, nested 10 000 deep, not an object, random bytes).

The property: every reply is 2xx, or a 4xx in the route's error shape with a strict-JSON body
(TGI's ``{"error", "error_type"}`` on ``herd serve``, OpenAI's ``{"error": {...}}`` on
``herd serve-router``), never a 5xx or 424 for what the client sent, and afterwards both
servers still answer ``/health`` and a normal request.

CI runs a small, fixed (derandomized) set and stops at the first failure.
``HERD_FUZZ_EXAMPLES=2000`` runs that many random examples per test (one valid body in ten
then from hypothesis-jsonschema) and goes on past failures to list every distinct one;
``HERD_FUZZ_REPORT=path`` gets the counts.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from langchain_herd.endpoint.schemas import ChatCompletionRequest
from langchain_herd.server.schemas import ChatRequest, GenerateRequest
from tests.integration.hostile_servers import (
    CHAT_ROUTE,
    TGI_ROUTES,
    Servers,
    hostile_servers,
    openai_error_of,
    tgi_error_of,
)
from tests.integration.jsonschema_strategies import bodies_of, compiled_bodies

EXAMPLES = int(os.environ.get("HERD_FUZZ_EXAMPLES", "0"))
"""Examples per test for a long run; 0: the CI set."""

FAST_TOKENS = 3
"""Generated bodies ask for at most this many tokens (the fuzzing is about input, not output)."""

SLOWEST: list[tuple[float, str, bytes]] = []
TRIED: Counter[str] = Counter()
FAILURES: list[str] = []
"""A long run's failures (a CI run stops at the first)."""
REFUSALS: Counter[str] = Counter()
"""Refusals by route and reason (a refusal that hides a server bug shows up here)."""
"""Inputs sent, by test and outcome."""


def fuzz_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or ci_examples,
        deadline=None,
        database=None,
        derandomize=not EXAMPLES,  # CI: the same examples every run, so it cannot flake
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with hostile_servers() as started:
        yield started
    write_report()


def write_report() -> None:
    """Write the counts (and a long run's failures) to ``HERD_FUZZ_REPORT``, if set."""
    report = os.environ.get("HERD_FUZZ_REPORT")
    if report:
        summary = {"tried": TRIED, "refusals": REFUSALS, "failures": FAILURES}
        with open(report, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=1, sort_keys=True)


def no_failures(test: str) -> None:
    mine = [failure for failure in FAILURES if failure.startswith(f"{test}: ")]
    assert not mine, "\n".join(dict.fromkeys(mine))


# -- what is sent ------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    " \n\t ",
    "\x00",
    "\ud800",
    "a\udfffb",
    "\u202eevil",
    "💥" * 50,
    "x" * 10_000,
    "<|im_end|>",
    "{{ raise }}",
    [],
    {},
    [[[]]],
    {"type": "json", "value": {"type": "object"}},
]
"""Values that have broken servers: extremes, non-finite floats, odd text, wrong shapes."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
"""Any JSON value, NaN and infinities included."""
odd_values = st.sampled_from(ODD_VALUES) | json_values


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


@st.composite
def mutated(draw: st.DrawFn, body: Any) -> Any:
    """``body`` with one part replaced by an odd value, or an unknown key added."""
    paths = [p for p in _paths(body) if p]
    if not paths or (draw(st.booleans()) and isinstance(body, dict)):
        return {**body, draw(st.text(max_size=12)): draw(odd_values)}
    path = draw(st.sampled_from(paths))
    changed = json.loads(json.dumps(body))  # a deep copy
    parent = changed
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = draw(odd_values)
    return changed


def encode(body: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the non-JSON tokens a sloppy client writes.
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def broken_text(draw: st.DrawFn, body: Any) -> bytes:
    """``body``'s JSON text, broken: cut short, invalid UTF-8, or a value nested very deep."""
    text = encode(body)
    how = draw(st.sampled_from(["cut", "bad_utf8", "deep", "bytes", "not_object"]))
    if how == "cut":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if how == "bad_utf8":
        at = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
        return text[:at] + bad + text[at:]
    if how == "deep":
        depth = draw(st.sampled_from([65, 1_000, 100_000]))
        return b'{"inputs": "hi", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    if how == "not_object":
        return encode(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    return draw(st.binary(max_size=64))


def _fast(body: Any, keys: tuple[str, ...]) -> Any:
    """Cap the tokens a drawn body asks for (a huge or non-positive count stays: it is
    refused before any generation)."""
    if not isinstance(body, dict):
        return body
    holder = body.get("parameters") if "parameters" in keys else body
    if not isinstance(holder, dict):
        return body
    for key in keys:
        if key == "parameters":
            continue
        value = holder.get(key, FAST_TOKENS)
        if value is None or (isinstance(value, int) and FAST_TOKENS < value <= 10_000):
            holder[key] = FAST_TOKENS
    return body


def contents(
    valid: st.SearchStrategy[Any], targeted: st.SearchStrategy[Any]
) -> st.SearchStrategy[bytes]:
    """Request bodies: valid ones, mutated ones, targeted ones and broken texts."""
    return st.one_of(
        valid.map(encode),
        valid.flatmap(mutated).map(encode),
        targeted.map(encode),
        valid.flatmap(broken_text),
    )


def targeted(
    base: st.SearchStrategy[dict[str, Any]], fields: list[str], token_keys: tuple[str, ...]
) -> st.SearchStrategy[Any]:
    """A body the route accepts with one of its known fields (``a.b``: nested) set to an odd
    value: random mutations rarely land on the one field that matters."""

    @st.composite
    def body(draw: st.DrawFn) -> Any:
        drawn = json.loads(json.dumps(draw(base)))  # a deep copy: `base` may share objects
        path = draw(st.sampled_from(fields)).split(".")
        holder: Any = drawn
        for part, after in itertools.pairwise(path):
            key: Any = int(part) if isinstance(holder, list) else part
            child = holder[key] if isinstance(holder, list) else holder.get(key)
            if not isinstance(child, dict | list) or not child:
                # Where the drawn body has text (a message's content), put the nested shape.
                child = [{}] if after.isdigit() else {}
                holder[key] = child
            holder = child
        last = path[-1]
        holder[int(last) if isinstance(holder, list) else last] = draw(odd_values)
        return _fast(drawn, token_keys)

    return body()


def field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The fields a body of ``model`` may carry, nested models' fields as ``a.b``."""
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name)
        pending: list[Any] = [field.annotation]
        while pending:  # through `X | None` and `list[X]` to the models inside
            candidate = pending.pop()
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names += field_names(candidate, f"{prefix}{name}.")
            elif typing.get_origin(candidate) is list:
                item = typing.get_args(candidate)[0]
                if isinstance(item, type) and issubclass(item, BaseModel):
                    names += field_names(item, f"{prefix}{name}.0.")
            else:
                pending += typing.get_args(candidate)
    return names


PROMPTS = st.sampled_from(["Hello", "What is 2 + 2?", "Name a colour.", "Write a haiku."])
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": PROMPTS}
    ),
    min_size=1,
    max_size=3,
).map(lambda turns: [*turns, {"role": "user", "content": "Hello"}])
"""Conversations a template accepts, so that drawn parameters reach generation too."""


def schema_bodies(
    model: type[BaseModel],
    token_keys: tuple[str, ...],
    plausible: dict[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[Any]:
    """Bodies valid against the route's schema (the long run adds hypothesis-jsonschema's).

    Each key of ``plausible`` is, half the time, replaced by a value the route accepts (a
    real conversation, a known model), so random parameters get past the first check.
    """
    valid = compiled_bodies(model)
    if EXAMPLES:  # one body in ten from hypothesis-jsonschema: it takes ~0.5 s per body
        valid = st.one_of([valid] * 9 + [bodies_of(model)])

    @st.composite
    def body(draw: st.DrawFn) -> Any:
        drawn = draw(valid)
        for key, value in plausible.items():
            if isinstance(drawn, dict) and draw(st.booleans()):
                drawn[key] = draw(value)
        return _fast(drawn, token_keys)

    return body()


generate_bodies = schema_bodies(
    GenerateRequest, ("parameters", "max_new_tokens"), {"inputs": PROMPTS}
)
local_chat_bodies = schema_bodies(
    ChatRequest, ("max_tokens", "max_completion_tokens"), {"messages": MESSAGES}
)
router_chat_bodies = schema_bodies(
    ChatCompletionRequest,
    ("max_tokens", "max_completion_tokens"),
    {"messages": MESSAGES, "model": st.sampled_from(["herd", "herd/solo"])},
)
targeted_generate = targeted(
    st.fixed_dictionaries(
        {"inputs": PROMPTS, "parameters": st.just({"max_new_tokens": FAST_TOKENS})}
    ),
    field_names(GenerateRequest),
    ("parameters", "max_new_tokens"),
)
targeted_chat = targeted(
    st.fixed_dictionaries({"messages": MESSAGES, "max_tokens": st.just(FAST_TOKENS)}),
    field_names(ChatRequest),
    ("max_tokens", "max_completion_tokens"),
)
targeted_router_chat = targeted(
    st.fixed_dictionaries({"messages": MESSAGES, "max_tokens": st.just(FAST_TOKENS)}),
    field_names(ChatCompletionRequest),
    ("max_tokens", "max_completion_tokens"),
)


def send(
    servers: Servers,
    url: str,
    content: bytes,
    check: Callable[[httpx.Response], dict[str, Any] | None],
    test: str,
) -> None:
    started = time.perf_counter()
    TRIED[f"{test}: inputs"] += 1
    try:
        reply = servers.post(url, content, raw=True, timeout=60)
        SLOWEST.append((time.perf_counter() - started, test, content[:300]))
        error = check(reply)
    except (AssertionError, httpx.TransportError) as failure:
        TRIED[f"{test}: failures"] += 1
        if not EXAMPLES:
            raise  # CI: stop and shrink to the smallest failing body
        # A long run goes on, to find every distinct failure, not only the first.
        FAILURES.append(f"{test}: {failure}: {content[:500]!r}")
        return
    TRIED[f"{test}: {'refused' if error is not None else 'answered'}"] += 1
    if EXAMPLES and TRIED[f"{test}: inputs"] % 100 == 0:
        write_report()
    if error is not None:
        why = error.get("code") or error.get("error_type") or "?"
        REFUSALS[f"{test}: {why}: {str(error.get('message') or error.get('error'))[:50]}"] += 1


# -- the properties ----------------------------------------------------------------------------


def test_fuzz_local_generate_routes(servers: Servers) -> None:
    @fuzz_settings(ci_examples=100)
    @given(route=st.sampled_from(TGI_ROUTES), content=contents(generate_bodies, targeted_generate))
    def one(route: str, content: bytes) -> None:
        send(servers, f"{servers.local}{route}", content, tgi_error_of, "serve generate")

    one()
    no_failures("serve generate")
    servers.assert_healthy()


def test_fuzz_local_chat_route(servers: Servers) -> None:
    @fuzz_settings(ci_examples=60)
    @given(content=contents(local_chat_bodies, targeted_chat))
    def one(content: bytes) -> None:
        send(servers, f"{servers.local}{CHAT_ROUTE}", content, tgi_error_of, "serve chat")

    one()
    no_failures("serve chat")
    servers.assert_healthy()


def test_fuzz_router_chat_route(servers: Servers) -> None:
    @fuzz_settings(ci_examples=60)
    @given(content=contents(router_chat_bodies, targeted_router_chat))
    def one(content: bytes) -> None:
        send(servers, f"{servers.router}{CHAT_ROUTE}", content, openai_error_of, "router chat")

    one()
    no_failures("router chat")
    servers.assert_healthy()
