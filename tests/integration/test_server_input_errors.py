"""Malformed and hostile request bodies on both servers: each a clear 4xx, never 424 or 500.

``herd serve`` (tiny model) answers input faults in TGI's shape (``{"error", "error_type":
"validation"}``, 422, or 400 for a body that is not JSON at all); ``herd serve-router`` in
OpenAI's (``{"error": {"message", "type", "param", "code"}}``, 400). Every reply and stream
event is parsed as strict JSON, so a ``NaN`` anywhere fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.hostile_servers import (
    CHAT_ROUTE,
    GREEDY,
    TGI_ROUTES,
    Servers,
    chat_body,
    hostile_servers,
    openai_error_of,
    sse_payloads,
    strict_json,
    tgi_error_of,
)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with hostile_servers() as started:
        yield started


def generate_text(parameters: str, inputs: str = '"hello"') -> str:
    """A generate body written by hand, so it can hold what ``json.dumps`` would not write."""
    extra = f", {parameters}" if parameters else ""
    return f'{{"inputs": {inputs}, "parameters": {{"max_new_tokens": 2{extra}}}}}'


def local_error(
    servers: Servers, route: str, body: Any, *, raw: bool = False, status: int | None = None
) -> dict[str, Any]:
    """The validation error the local server answers ``body`` with (checked: its shape, and
    ``status`` if given; streams carry it in a 200 event, like TGI)."""
    reply = servers.post(f"{servers.local}{route}", body, raw=raw)
    error = tgi_error_of(reply)
    assert error is not None, f"expected an input error, got {reply.status_code}: {reply.text}"
    assert error["error_type"] == "validation", error
    if status is not None:
        assert reply.status_code == status, reply.text
    return error


def router_error(servers: Servers, body: Any, *, raw: bool = False) -> dict[str, Any]:
    reply = servers.post(f"{servers.router}{CHAT_ROUTE}", body, raw=raw)
    assert reply.status_code == 400, reply.text
    error = openai_error_of(reply)
    assert error is not None
    return error


# -- non-finite numbers, seeds, surrogates, whitespace ----------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate", generate_text('"temperature": NaN'), "parameters.temperature"),
        ("/generate", generate_text('"temperature": Infinity'), "parameters.temperature"),
        ("/", generate_text('"repetition_penalty": 1e999'), "parameters.repetition_penalty"),
        # The stream: a NaN penalty used to stream "logprob":NaN, which is not JSON.
        (
            "/generate_stream",
            generate_text('"repetition_penalty": NaN'),
            "parameters.repetition_penalty",
        ),
        (CHAT_ROUTE, '{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}', "top_p"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(
    servers: Servers, route: str, body: str, field: str
) -> None:
    error = local_error(servers, route, body, raw=True, status=422)
    assert f"'{field}'" in error["error"] and "finite" in error["error"]


def test_router_refuses_non_finite_numbers_anywhere_in_the_body(servers: Servers) -> None:
    tool = (
        '{"type": "function", "function": {"name": "f", "parameters": {"type": "object", '
        '"properties": {"x": {"type": "number", "maximum": Infinity}}}}}'
    )
    body = f'{{"messages": [{{"role": "user", "content": "hi"}}], "tools": [{tool}]}}'
    error = router_error(servers, body, raw=True)
    assert error["param"] == "tools[0].function.parameters.properties.x.maximum"
    assert error["code"] == "invalid_json" and "finite" in error["message"]


@pytest.mark.parametrize("seed", [2**64, -1])
def test_out_of_range_seed_is_a_validation_error(servers: Servers, seed: int) -> None:
    body = {"inputs": "hello", "parameters": {**GREEDY, "do_sample": True, "seed": seed}}
    assert "`seed` must be >= 0" in local_error(servers, "/generate", body)["error"]
    assert "`seed`" in local_error(servers, CHAT_ROUTE, chat_body("hi", seed=seed))["error"]
    assert router_error(servers, chat_body("hi", seed=seed))["param"] == "seed"


def test_lone_surrogates_are_refused_naming_the_field(servers: Servers) -> None:
    generate = local_error(servers, "/generate", generate_text("", inputs=r'"a\ud800b"'), raw=True)
    assert "'inputs' holds a lone UTF-16 surrogate" in generate["error"]
    chat = r'{"messages": [{"role": "user", "content": "\udc00"}], "max_tokens": 2}'
    assert "'messages[0].content'" in local_error(servers, CHAT_ROUTE, chat, raw=True)["error"]
    routed = router_error(servers, chat, raw=True)
    assert routed["param"] == "messages[0].content" and "surrogate" in routed["message"]
    # A proper pair is an emoji, not an error.
    pair = r'{"inputs": "\ud83d\ude00", "parameters": {"max_new_tokens": 1}}'
    assert servers.post(f"{servers.local}/generate", pair, raw=True).status_code == 200


def test_whitespace_only_inputs_are_a_validation_error(servers: Servers) -> None:
    for route in TGI_ROUTES:
        error = local_error(servers, route, {"inputs": " \n\t ", "parameters": GREEDY})
        assert "`inputs` must hold at least one token" in error["error"]


# -- bodies that are not what a route reads ----------------------------------------------------


def test_deeply_nested_json_is_a_client_error_on_every_post_route(servers: Servers) -> None:
    deep = '{"inputs": "hi", "parameters": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for route in (*TGI_ROUTES, CHAT_ROUTE):
        assert "levels deep" in local_error(servers, route, deep, raw=True)["error"]
    assert "levels deep" in router_error(servers, deep, raw=True)["message"]
    servers.assert_healthy()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[1, 2]", "JSON array"),
        ("null", "JSON null"),
        ('"hello"', "JSON string"),
        ('{"inputs": 5}', "inputs: Input should be a valid string"),
        ('{"inputs": "hi", "parameters": "fast"}', "parameters:"),
        ('{"inputs": "hi", "parameters": {"max_new_tokens": "many"}}', "max_new_tokens"),
        ('{"inputs": "hi", "parameters": {"max_new_tokens": 1e30}}', "max_new_tokens"),
        ('{"inputs": "hi", "parameters": {"max_new_tokens": ' + str(10**30) + "}}", "1000000000"),
        (b'{"inputs": "caf\xe9"}', "not valid UTF-8"),
        ('{"inputs": "hi", "parameters": {"seed": ' + "9" * 5000 + "}}", "4300 digits"),
    ],
)
def test_malformed_generate_bodies_say_what_is_wrong(
    servers: Servers, body: str | bytes, says: str
) -> None:
    for route in TGI_ROUTES:
        assert says in local_error(servers, route, body, raw=True)["error"]


def test_router_refuses_bodies_that_are_not_strict_json(servers: Servers) -> None:
    assert "not valid UTF-8" in router_error(servers, b'{"model": "h\xe9rd"}', raw=True)["message"]
    not_object = router_error(servers, "[1]", raw=True)["message"]
    assert not_object.startswith("the request body must be a JSON object, such as {")
    wrong = router_error(servers, chat_body("hi", max_tokens="many"))
    assert wrong["param"] == "max_tokens"


# -- numbers the server emits ------------------------------------------------------------------


def test_extreme_sampling_settings_give_finite_json(servers: Servers) -> None:
    """Valid but extreme settings overflow float32 (inf - inf = NaN) inside the softmax; the
    server must still answer, with finite logprobs only."""
    for extreme in ({"temperature": 1e-300}, {"repetition_penalty": 1e-300}):
        params = {**GREEDY, "details": True, "top_n_tokens": 3, "seed": 1, **extreme}
        body = {"inputs": "hello hello", "parameters": params}
        reply = servers.post(f"{servers.local}/generate", body)
        assert reply.status_code == 200, reply.text
        tokens = strict_json(reply.text)["details"]["tokens"]
        assert all(-9999.0 <= token["logprob"] <= 0.0 for token in tokens)
        stream = servers.post(f"{servers.local}/generate_stream", body)
        events = sse_payloads(stream.text)  # strict: a NaN anywhere fails here
        assert events and all("error" not in event for event in events), stream.text
    chat = chat_body("hello", logprobs=True, top_logprobs=2, temperature=1e-300, stream=True)
    chat_events = sse_payloads(servers.post(f"{servers.local}{CHAT_ROUTE}", chat).text)
    assert chat_events[-1] == "[DONE]" and "error" not in chat_events[0], chat_events


# -- long prompts: refused cheaply, tokenized off the event loop -------------------------------


def test_oversized_prompt_is_refused_before_tokenizing(servers: Servers) -> None:
    body = {"inputs": "word " * 200_000, "parameters": GREEDY}  # 1 MB
    started = time.perf_counter()
    error = local_error(servers, "/generate", body)
    elapsed = time.perf_counter() - started
    assert "`inputs` must have less than 900 tokens" in error["error"]
    assert "set `truncate`" in error["error"]
    assert elapsed < 0.5, f"took {elapsed:.2f} s: the prompt was tokenized before the check"


def test_long_prompt_is_tokenized_off_the_event_loop(servers: Servers) -> None:
    # With `truncate` a long prompt is legal and must be tokenized; /health is answered meanwhile.
    body = {"inputs": "word " * 100_000, "parameters": {**GREEDY, "truncate": 10}}
    done = threading.Event()

    def long_request() -> None:
        reply = servers.post(f"{servers.local}/generate", body)
        done.set()
        assert reply.status_code == 200, reply.text

    worker = threading.Thread(target=long_request)
    started = time.perf_counter()
    worker.start()
    waits: list[float] = []
    while not done.is_set():
        asked = time.perf_counter()
        assert servers.http.get(f"{servers.local}/health").status_code == 200
        waits.append(time.perf_counter() - asked)
        time.sleep(0.01)
    worker.join()
    took = time.perf_counter() - started
    # Tokenizing on the event loop made one /health wait nearly the whole request.
    assert max(waits) < took / 2, f"/health waited {max(waits):.2f} s of {took:.2f} s"
