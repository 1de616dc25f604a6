"""The local TGI-protocol server, driven over loopback by the real Hugging Face clients.

One tiny-model server is started per module; every test talks to it with
``huggingface_hub.InferenceClient`` / ``AsyncInferenceClient``, ``langchain_huggingface``'s
``HuggingFaceEndpoint`` and ``ChatHuggingFace``, or raw ``httpx`` where the wire format itself is
the subject. The ``slow`` test loads the real SmolLM2 model through the conversion cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast

import httpx
import pytest
from huggingface_hub import (
    AsyncInferenceClient,
    ChatCompletionInputStreamOptions,
    InferenceClient,
)
from huggingface_hub.errors import (
    BadRequestError,
    GenerationError,
    HfHubHTTPError,
    OverloadedError,
    TextGenerationError,
    UnknownError,
    ValidationError,
)
from langchain_huggingface import ChatHuggingFace, HuggingFaceEndpoint

from langchain_herd.server import (
    FaultConfig,
    GenerationBackend,
    ServerStartError,
    ServerThread,
    create_app,
    load_backend,
)
from langchain_herd.server.loading import CACHE_MARKER, convert_gguf

PROMPT = "hello world"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cli_process() -> Iterator[subprocess.Popen[str]]:
    """``python -m langchain_herd.server`` in a child process, started first so its model load
    overlaps with the rest of the module instead of adding to it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langchain_herd.server",
            "--model",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-id",
            "cli-tiny",
            "--fail-next",
            "1",
            "--fail-status",
            "503",
            "--log-level",
            "info",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def backend(cli_process: subprocess.Popen[str]) -> GenerationBackend:
    return load_backend("tiny")


@pytest.fixture(scope="module")
def url(backend: GenerationBackend) -> Iterator[str]:
    with ServerThread(create_app(backend, max_input_tokens=256, max_total_tokens=512)) as server:
        yield server.url


@pytest.fixture
def faults(url: str) -> Iterator[Any]:
    """Sets the server's faults (``faults(fail_next=1, ...)``) and clears them afterwards."""

    def set_faults(**config: Any) -> None:
        httpx.post(f"{url}/_herd/faults", json=config).raise_for_status()

    yield set_faults
    httpx.delete(f"{url}/_herd/faults").raise_for_status()


@pytest.fixture(scope="module")
def client(url: str) -> InferenceClient:
    return InferenceClient(base_url=url)


def endpoint(url: str, **kwargs: Any) -> HuggingFaceEndpoint:
    # HuggingFaceEndpoint sends temperature 0.8, top_p and typical_p 0.95 unless told not to,
    # which makes TGI sample; None everywhere gives greedy, repeatable output.
    return HuggingFaceEndpoint(
        endpoint_url=url, temperature=None, top_p=None, typical_p=None, **kwargs
    )


def status_of(error: BaseException) -> int:
    cause = error.__cause__
    assert isinstance(cause, HfHubHTTPError) and cause.response is not None
    return cause.response.status_code


def metric_values(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def sse_payloads(response: httpx.Response) -> list[Any]:
    return [
        line[len("data: ") :] if line == "data: [DONE]" else json.loads(line[len("data: ") :])
        for line in response.iter_lines()
        if line.startswith("data: ")
    ]


# --- routes and shapes ----------------------------------------------------------------------------


def test_health_info_and_models(url: str) -> None:
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(url).status_code == 200  # TGI also answers health checks on GET /
    # health_check / get_endpoint_info refuse to run unless the provider is hf-inference.
    with pytest.raises(ValueError, match="not supported"):
        InferenceClient(base_url=url).health_check()
    client = InferenceClient(model=url, provider="hf-inference")
    assert client.health_check() is True
    info = client.get_endpoint_info()
    assert info["model_id"] == "tiny"
    assert info["router"] == "text-generation-router"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (256, 512)
    assert info["max_concurrent_requests"] == 8
    assert (info["model_dtype"], info["model_device_type"]) == ("torch.float32", "cpu")
    models = httpx.get(f"{url}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"]


def test_greedy_output_is_non_empty_and_deterministic(url: str, client: InferenceClient) -> None:
    first = client.text_generation(PROMPT, max_new_tokens=8, return_full_text=False)
    second = InferenceClient(model=url).text_generation(
        PROMPT, max_new_tokens=8, return_full_text=False
    )
    assert first.strip() and first == second
    assert len(first.split()) == 8  # one plain word per token with the tiny tokenizer
    raw = httpx.post(
        f"{url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}
    ).json()
    assert raw == {"generated_text": first}  # /generate answers the bare object


def test_compat_route_answers_a_list_and_full_text_by_default(url: str) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}
    reply = httpx.post(url, json=body).json()
    assert isinstance(reply, list) and len(reply) == 1
    # Like TGI for text-generation models: POST / prepends the prompt unless told not to.
    assert reply[0]["generated_text"].startswith(PROMPT)
    client = InferenceClient(base_url=url)
    full = client.text_generation(PROMPT, max_new_tokens=4)
    bare = client.text_generation(PROMPT, max_new_tokens=4, return_full_text=False)
    assert full == PROMPT + bare


def test_details_tokens_prefill_and_top_tokens(client: InferenceClient) -> None:
    out = client.text_generation(
        PROMPT,
        max_new_tokens=5,
        details=True,
        decoder_input_details=True,
        top_n_tokens=3,
        return_full_text=False,
    )
    details = out.details
    assert details is not None
    assert details.finish_reason == "length" and details.generated_tokens == 5
    assert details.seed is None  # greedy: TGI reports no seed
    assert "".join(t.text for t in details.tokens) == out.generated_text
    assert all(t.logprob <= 0 and not t.special for t in details.tokens)
    assert [p.text for p in details.prefill] == ["hello", "world"]
    assert details.prefill[0].logprob is None and details.prefill[1].logprob is not None
    assert details.top_tokens is not None and len(details.top_tokens) == 5
    for chosen, top in zip(details.tokens, details.top_tokens, strict=True):
        # huggingface_hub leaves nested top_tokens as plain dicts.
        assert len(top) == 3 and top[0]["id"] == chosen.id  # greedy picks the most likely


def test_stream_matches_generate(url: str, client: InferenceClient) -> None:
    text = client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False)
    tokens = list(client.text_generation(PROMPT, max_new_tokens=6, stream=True))
    assert "".join(tokens) == text
    events = list(client.text_generation(PROMPT, max_new_tokens=6, stream=True, details=True))
    last = events[-1]
    assert [e.index for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    # InferenceClient posts to TGI's POST /, whose return_full_text defaults to true.
    assert last.generated_text == PROMPT + text and last.details is not None
    assert last.details.finish_reason == "length" and last.details.input_length == 2
    with httpx.stream(
        "POST",
        f"{url}/generate_stream",
        json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response)
    assert set(payloads[0]) == {"index", "token", "generated_text", "details"}
    assert payloads[-1]["details"] is None  # TGI sends stream details only when asked
    compat = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}, "stream": True}
    with httpx.stream("POST", url, json=compat) as response:  # POST / streams too
        payloads = sse_payloads(response)
    first_three = client.text_generation(PROMPT, max_new_tokens=3, return_full_text=False)
    assert len(payloads) == 3 and payloads[-1]["generated_text"] == PROMPT + first_three


def test_stop_sequence_is_kept_in_text_like_tgi(client: InferenceClient, url: str) -> None:
    words = client.text_generation(PROMPT, max_new_tokens=8, return_full_text=False).split()
    stop = words[2]
    out = client.text_generation(
        PROMPT, max_new_tokens=8, stop=[stop], details=True, return_full_text=False
    )
    assert out.generated_text.split() == words[:3]
    assert out.details is not None and out.details.finish_reason == "stop_sequence"
    # LangChain strips the stop sequence that TGI leaves in.
    llm = endpoint(url, max_new_tokens=8)
    assert llm.invoke(PROMPT, stop=[stop]).split() == words[:2]


def test_eos_token_ends_the_generation(backend: GenerationBackend, client: InferenceClient) -> None:
    # With this chat prompt the tiny model ends its turn after one word.
    prompt = backend.render_chat([{"role": "user", "content": "what"}])
    events = list(
        client.text_generation(
            prompt, max_new_tokens=20, stream=True, details=True, return_full_text=False
        )
    )
    last = events[-1]
    assert last.details is not None and last.details.finish_reason == "eos_token"
    # Like TGI, the end-of-sequence token is streamed with its text and special=True, and left
    # out of generated_text: plain token streams (and LangChain's) end with "<|im_end|>".
    assert last.token.special and last.token.text.strip() == "<|im_end|>"
    assert last.generated_text == "".join(e.token.text for e in events[:-1])
    chat = client.chat_completion(
        [{"role": "user", "content": "what"}], max_tokens=20, temperature=0
    )
    assert chat.choices[0].finish_reason == "stop"
    assert chat.choices[0].message.content == last.generated_text


def test_sampling_with_seed_is_repeatable(client: InferenceClient) -> None:
    def sample(seed: int) -> Any:
        return client.text_generation(
            PROMPT,
            max_new_tokens=10,
            do_sample=True,
            seed=seed,
            details=True,
            return_full_text=False,
            top_k=50,
            temperature=1.5,
        )

    first, again, other = sample(7), sample(7), sample(8)
    assert first.generated_text == again.generated_text
    assert first.details is not None and first.details.seed == 7
    assert other.generated_text != first.generated_text


def test_truncate_keeps_the_end_of_the_prompt(client: InferenceClient) -> None:
    long_prompt = " ".join(["water"] * 400)
    events = list(
        client.text_generation(
            long_prompt, max_new_tokens=2, truncate=10, stream=True, details=True
        )
    )
    assert events[-1].details is not None and events[-1].details.input_length == 10


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 0.0}, "`temperature` must be strictly positive"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_k": -1}, "`top_k` must be strictly positive"),
        ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
        ({"max_new_tokens": 600}, "`inputs` tokens + `max_new_tokens` must be <= 512. Given: 2"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"truncate": 1000}, "`truncate` must be strictly positive and less than 256"),
        ({"best_of": 2}, "`best_of` != 1 is not allowed for this endpoint"),
        ({"top_n_tokens": 9}, "`top_n_tokens` must be >= 0 and <= 5. Given: 9"),
    ],
)
def test_validation_errors_raise_validation_error(
    client: InferenceClient, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        client.text_generation(PROMPT, **params)
    assert str(caught.value).startswith("Input validation error: ")
    assert message in str(caught.value)
    assert status_of(caught.value) == 422


def test_input_too_long_and_empty_input(client: InferenceClient, url: str) -> None:
    with pytest.raises(ValidationError, match=r"`inputs` must have less than 256 tokens"):
        client.text_generation(" ".join(["water"] * 300), max_new_tokens=1)
    reply = httpx.post(f"{url}/generate", json={"inputs": "", "parameters": {}})
    assert reply.status_code == 422
    assert reply.json() == {
        "error": "Input validation error: `inputs` cannot be empty",
        "error_type": "validation",
    }


def test_validation_error_inside_a_stream(url: str, client: InferenceClient) -> None:
    # TGI reports validation errors of a stream as an SSE event with HTTP 200.
    with httpx.stream(
        "POST",
        f"{url}/generate_stream",
        json={"inputs": PROMPT, "parameters": {"temperature": -1}},
    ) as response:
        assert response.status_code == 200
        assert sse_payloads(response) == [
            {
                "error": "Input validation error: `temperature` must be strictly positive",
                "error_type": "validation",
            }
        ]
    with pytest.raises(ValidationError):
        list(client.text_generation(PROMPT, temperature=-1.0, stream=True))


def test_malformed_bodies(url: str) -> None:
    assert httpx.post(f"{url}/generate", content=b"{not json").status_code == 400
    reply = httpx.post(f"{url}/generate", json={"parameters": {}})
    assert reply.status_code == 422 and reply.json()["error_type"] == "validation"


# --- chat -----------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hello"}]


def test_chat_completion_and_stream_agree(client: InferenceClient, url: str) -> None:
    out = client.chat_completion(MESSAGES, max_tokens=6, temperature=0)
    content = out.choices[0].message.content
    assert content and content.strip()
    assert out.choices[0].finish_reason == "length"
    assert out.model == "tiny"
    assert out.usage.completion_tokens == 6
    assert out.usage.total_tokens == out.usage.prompt_tokens + 6
    raw = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "tgi", "messages": MESSAGES, "max_tokens": 6, "temperature": 0},
    ).json()
    assert raw["object"] == "chat.completion" and raw["choices"][0]["message"]["content"] == content
    chunks = list(
        client.chat_completion(
            MESSAGES,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options=ChatCompletionInputStreamOptions(include_usage=True),
        )
    )
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == content
    assert chunks[-2].choices[0].finish_reason == "length"
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={"model": "tgi", "messages": MESSAGES, "max_tokens": 2, "stream": True},
    ) as response:
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    assert payloads[0]["object"] == "chat.completion.chunk"


def test_chat_applies_the_template_and_logprobs(client: InferenceClient) -> None:
    out = client.chat_completion(
        MESSAGES, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2
    )
    assert out.usage.prompt_tokens == 6  # <|im_start|> user hello <|im_end|> <|im_start|> assistant
    logprobs = out.choices[0].logprobs
    assert logprobs is not None and len(logprobs.content) == 3
    assert all(len(entry.top_logprobs) == 2 for entry in logprobs.content)


def test_chat_samples_unless_temperature_is_zero(client: InferenceClient) -> None:
    # TGI's chat route decodes greedily only for temperature 0; a seed makes sampling repeatable.
    seeded = [
        client.chat_completion(MESSAGES, max_tokens=8, seed=3).choices[0].message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    greedy = client.chat_completion(MESSAGES, max_tokens=8, temperature=0)
    assert greedy.choices[0].message.content != seeded[0]


def test_chat_errors(client: InferenceClient) -> None:
    too_long = [{"role": "user", "content": " ".join(["water"] * 300)}]
    with pytest.raises(HfHubHTTPError) as caught:  # the chat route's errors are plain HTTP
        client.chat_completion(too_long, max_tokens=2)
    assert not isinstance(caught.value, TextGenerationError)
    assert caught.value.response is not None and caught.value.response.status_code == 422
    with pytest.raises(ValidationError, match="must have less than 256 tokens"):
        list(client.chat_completion(too_long, max_tokens=2, stream=True))
    with pytest.raises(HfHubHTTPError) as caught:  # forcing a tool that was not given
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        client.chat_completion(
            MESSAGES, max_tokens=2, tools=cast(Any, [tool]), tool_choice=cast(Any, "g")
        )
    assert caught.value.response is not None and caught.value.response.status_code == 422
    assert "Tool with name g not found" in caught.value.response.text


# --- async clients and LangChain ------------------------------------------------------------ -----


async def test_async_client_matches_sync(client: InferenceClient, url: str) -> None:
    expected = client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False)
    async_client = AsyncInferenceClient(base_url=url)
    assert (
        await async_client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False)
        == expected
    )
    stream = await async_client.text_generation(PROMPT, max_new_tokens=6, stream=True)
    assert "".join([token async for token in stream]) == expected
    chat = await async_client.chat_completion(MESSAGES, max_tokens=4, temperature=0)
    assert chat.choices[0].message.content
    with pytest.raises(ValidationError):
        await async_client.text_generation(PROMPT, temperature=0.0)


def test_langchain_endpoint_sync(client: InferenceClient, url: str) -> None:
    expected = client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False)
    llm = endpoint(url, max_new_tokens=6)
    assert llm.invoke(PROMPT) == expected
    assert "".join(llm.stream(PROMPT)) == expected


async def test_langchain_endpoint_async(client: InferenceClient, url: str) -> None:
    expected = client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False)
    llm = endpoint(url, max_new_tokens=6)
    assert await llm.ainvoke(PROMPT) == expected
    assert "".join([chunk async for chunk in llm.astream(PROMPT)]) == expected


def test_chat_huggingface_sync(client: InferenceClient, url: str) -> None:
    expected = client.chat_completion(MESSAGES, max_tokens=5, temperature=0)
    chat = ChatHuggingFace(llm=endpoint(url), temperature=0, max_tokens=5)
    message = chat.invoke("hello")
    assert message.content == expected.choices[0].message.content
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == 5
    streamed = "".join(str(chunk.content) for chunk in chat.stream("hello"))
    assert streamed == message.content


async def test_chat_huggingface_async(url: str) -> None:
    chat = ChatHuggingFace(llm=endpoint(url), temperature=0, max_tokens=5)
    message = await chat.ainvoke("hello")
    assert message.content
    assert "".join([str(c.content) async for c in chat.astream("hello")]) == message.content


# --- concurrency ----------------------------------------------------------------------------------


def test_concurrent_requests_are_all_answered_correctly(url: str) -> None:
    prompts = [f"{word} world" for word in ("hello", "water", "story", "music", "river", "ocean")]
    client = InferenceClient(base_url=url)
    expected = [
        client.text_generation(p, max_new_tokens=6, return_full_text=False) for p in prompts
    ]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        answers = list(
            pool.map(
                lambda p: InferenceClient(base_url=url).text_generation(
                    p, max_new_tokens=6, return_full_text=False
                ),
                prompts,
            )
        )
    assert answers == expected


async def test_concurrent_streams_and_calls_on_one_event_loop(url: str) -> None:
    async_client = AsyncInferenceClient(base_url=url)
    expected = await async_client.text_generation(PROMPT, max_new_tokens=5, return_full_text=False)

    async def streamed() -> str:
        stream = await async_client.text_generation(PROMPT, max_new_tokens=5, stream=True)
        return "".join([token async for token in stream])

    async def plain() -> str:
        return await async_client.text_generation(PROMPT, max_new_tokens=5, return_full_text=False)

    results = await asyncio.gather(*[streamed() if i % 2 else plain() for i in range(6)])
    assert results == [expected] * 6


async def test_overload_answers_429(backend: GenerationBackend) -> None:
    # Two slots and a 500 ms latency fault keep the first two requests in flight.
    app = create_app(backend, max_concurrent_requests=2, faults=FaultConfig(latency_ms=500))
    with ServerThread(app) as server:
        async_client = AsyncInferenceClient(base_url=server.url)
        results = await asyncio.gather(
            *[async_client.text_generation(PROMPT, max_new_tokens=2) for _ in range(5)],
            return_exceptions=True,
        )
        overloaded = [r for r in results if isinstance(r, OverloadedError)]
        assert len(overloaded) == 3 and sum(isinstance(r, str) for r in results) == 2
        assert all(status_of(error) == 429 for error in overloaded)
        assert str(overloaded[0]) == "Model is overloaded"

        async def stream() -> str:
            tokens = await async_client.text_generation(PROMPT, max_new_tokens=2, stream=True)
            return "".join([t async for t in tokens])

        results = await asyncio.gather(*[stream() for _ in range(3)], return_exceptions=True)
        assert sum(isinstance(r, OverloadedError) for r in results) == 1  # an SSE error event
        metrics = metric_values(server.url)
        assert metrics['tgi_request_failure{err="overloaded"}'] == 4
        assert metrics["herd_requests_in_flight"] == 0


def test_client_disconnect_cancels_the_generation(url: str, client: InferenceClient) -> None:
    before = metric_values(url).get('tgi_request_failure{err="cancelled"}', 0)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 500}}
    with httpx.stream("POST", f"{url}/generate_stream", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    # The abandoned generation stops between tokens and frees the model for the next request.
    assert client.text_generation(PROMPT, max_new_tokens=2)
    deadline = time.monotonic() + 5
    while metric_values(url).get('tgi_request_failure{err="cancelled"}', 0) == before:
        assert time.monotonic() < deadline, "the disconnect was not noticed"
        time.sleep(0.05)
    assert metric_values(url)["herd_requests_in_flight"] == 0


def test_server_thread_reports_a_taken_port(backend: GenerationBackend, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ServerStartError, match="cannot listen"):
        ServerThread(create_app(backend), port=port).start()


def test_load_backend_from_a_model_folder(backend: GenerationBackend, tmp_path: Path) -> None:
    backend.model.save_pretrained(tmp_path)
    backend.tokenizer.save_pretrained(tmp_path)
    loaded = load_backend(str(tmp_path))
    assert loaded.model_id == str(tmp_path) and loaded.has_chat_template
    assert loaded.generate_text(PROMPT, max_new_tokens=6) == backend.generate_text(
        PROMPT, max_new_tokens=6
    )
    with pytest.raises(ValueError, match="cannot load model"):
        load_backend(str(tmp_path / "missing"))


def test_gguf_cache_is_reused_and_stale_partials_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / CACHE_MARKER).write_text("{}")
    stale = tmp_path / ".model.partial-999999999-abcd"  # a conversion whose process is gone
    live = tmp_path / f".model.partial-{os.getpid()}-abcd"  # one still running
    stale.mkdir()
    live.mkdir()
    # A complete cache entry is returned without reading the (here missing) GGUF file.
    assert convert_gguf(tmp_path / "missing.gguf", target) == target
    assert not stale.exists() and live.exists()


# --- fault injection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (503, GenerationError),
        (500, GenerationError),
        (424, GenerationError),
        (429, OverloadedError),
        (422, ValidationError),
        (400, ValidationError),
    ],
)
def test_fail_next_answers_status_and_tgi_error(
    client: InferenceClient, url: str, faults: Any, status: int, error_class: type[Exception]
) -> None:
    faults(fail_next=2, fail_status=status)
    with pytest.raises(error_class) as caught:
        client.text_generation(PROMPT, max_new_tokens=2)
    assert status_of(caught.value) == status
    assert httpx.get(f"{url}/_herd/faults").json()["fail_next"] == 1
    with pytest.raises(error_class):  # streams fail with the HTTP status too
        list(client.text_generation(PROMPT, max_new_tokens=2, stream=True))
    assert client.text_generation(PROMPT, max_new_tokens=2)  # both failures used up


def test_fail_next_on_chat_and_custom_error_type(client: InferenceClient, faults: Any) -> None:
    faults(fail_next=1, fail_status=400)
    with pytest.raises(BadRequestError):  # the chat route: plain HTTP errors
        client.chat_completion(MESSAGES, max_tokens=2)
    faults(fail_next=1, fail_status=401, fail_error_type="unauthorized", fail_message="no key")
    with pytest.raises(UnknownError, match="no key"):  # unknown error_type: UnknownError
        client.text_generation(PROMPT, max_new_tokens=2)


def test_faults_skip_health_info_and_metrics(
    url: str, client: InferenceClient, faults: Any
) -> None:
    faults(fail_next=1, fail_status=503, latency_ms=50)
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/info").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert httpx.get(f"{url}/_herd/faults").json()["fail_next"] == 1
    with pytest.raises(GenerationError):
        client.text_generation(PROMPT, max_new_tokens=2)


def test_latency_fault(url: str, client: InferenceClient, faults: Any) -> None:
    faults(latency_ms=300)
    started = time.perf_counter()
    assert client.text_generation(PROMPT, max_new_tokens=2)
    assert time.perf_counter() - started >= 0.3
    # The client's timeout surfaces as httpx's, not as huggingface_hub's InferenceTimeoutError.
    with pytest.raises(httpx.ReadTimeout):
        InferenceClient(base_url=url, timeout=0.1).text_generation(PROMPT, max_new_tokens=2)


def test_drop_stream_after_k_tokens(url: str, client: InferenceClient, faults: Any) -> None:
    faults(drop_stream_after=2)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        for token in client.text_generation(PROMPT, max_new_tokens=8, stream=True):
            received.append(token)
    assert len(received) == 2
    chunks: list[str] = []
    # temperature=0: the chat route samples when it is missing (as TGI does), and a sampled
    # end-of-sequence before the second token would end the stream before the cut.
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in client.chat_completion(MESSAGES, max_tokens=8, stream=True, temperature=0):
            chunks.append(chunk.choices[0].delta.content or "")
    assert len(chunks) == 2
    # Non-streaming requests are untouched; the server stays healthy.
    assert client.text_generation(PROMPT, max_new_tokens=3)
    assert metric_values(url)['tgi_request_failure{err="dropped"}'] >= 2


async def test_drop_stream_async_and_langchain(url: str, faults: Any) -> None:
    faults(drop_stream_after=0)
    # Keep the client referenced while streaming: a stream from a client that was already
    # garbage-collected fails on its own (httpx.StreamClosed / ReadError).
    async_client = AsyncInferenceClient(base_url=url)
    stream = await async_client.text_generation(PROMPT, max_new_tokens=4, stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        _ = [token async for token in stream]
    with pytest.raises(httpx.RemoteProtocolError):
        list(endpoint(url, max_new_tokens=4).stream(PROMPT))


def test_empty_answer_fault(url: str, client: InferenceClient, faults: Any) -> None:
    faults(empty_next=4)
    assert client.text_generation(PROMPT, max_new_tokens=4, return_full_text=False) == ""
    assert "".join(client.text_generation(PROMPT, max_new_tokens=4, stream=True)) == ""
    chat = client.chat_completion(MESSAGES, max_tokens=4)
    assert chat.choices[0].message.content == ""
    assert endpoint(url, max_new_tokens=4).invoke(PROMPT) == ""
    assert client.text_generation(PROMPT, max_new_tokens=4, return_full_text=False) != ""


def test_fault_api(url: str, faults: Any) -> None:
    faults(fail_next=3, latency_ms=10)
    current = httpx.get(f"{url}/_herd/faults").json()
    assert current == FaultConfig(fail_next=3, latency_ms=10).model_dump()
    bad = httpx.post(f"{url}/_herd/faults", json={"fail_next": -1})
    assert bad.status_code == 422
    unknown = httpx.post(f"{url}/_herd/faults", json={"explode": True})
    assert unknown.status_code == 422
    assert httpx.delete(f"{url}/_herd/faults").json() == FaultConfig().model_dump()


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_count_requests(url: str, client: InferenceClient) -> None:
    before = metric_values(url)
    client.text_generation(PROMPT, max_new_tokens=3)
    with pytest.raises(ValidationError):
        client.text_generation(PROMPT, temperature=0.0)
    after = metric_values(url)
    assert after["tgi_request_count"] - before["tgi_request_count"] == 2
    assert after["tgi_request_success"] - before["tgi_request_success"] == 1
    failures = 'tgi_request_failure{err="validation"}'
    assert after[failures] - before.get(failures, 0) == 1
    assert after["tgi_request_duration_count"] - before["tgi_request_duration_count"] == 1
    assert (
        after["tgi_request_generated_tokens_sum"] - before["tgi_request_generated_tokens_sum"] == 3
    )
    assert after["tgi_queue_size"] == 0
    text = httpx.get(f"{url}/metrics").text
    assert "# TYPE tgi_request_duration histogram" in text
    assert 'tgi_request_duration_bucket{le="+Inf"}' in text


# --- command line ---------------------------------------------------------------------------------


def test_cli_serves_with_fault_flags_and_stops_on_sigterm(
    cli_process: subprocess.Popen[str],
) -> None:
    assert cli_process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, args=(cli_process.stderr,), daemon=True).start()
    deadline = time.monotonic() + 120
    served = None
    while served is None and time.monotonic() < deadline:
        try:
            served = re.search(r"serving tiny on (http://\S+)", lines.get(timeout=1))
        except queue.Empty:
            assert cli_process.poll() is None, "the server exited before serving"
    assert served is not None, "no 'serving ... on ...' line"
    url = served.group(1)
    client = InferenceClient(base_url=url)
    with pytest.raises(GenerationError):  # --fail-next 1 --fail-status 503
        client.text_generation(PROMPT, max_new_tokens=2)
    assert client.text_generation(PROMPT, max_new_tokens=2)
    assert httpx.get(f"{url}/info").json()["model_id"] == "cli-tiny"
    cli_process.send_signal(signal.SIGTERM)
    assert cli_process.wait(30) == 0


# --- the real model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_answers_a_chat_question() -> None:
    started = time.perf_counter()
    backend = load_backend("smollm2", cache_dir=os.environ.get("HERD_CACHE_DIR"))
    loaded_s = time.perf_counter() - started
    with ServerThread(create_app(backend)) as server:
        chat = ChatHuggingFace(llm=endpoint(server.url), temperature=0, max_tokens=24)
        answer = chat.invoke("What is the capital of France?")
        info = httpx.get(f"{server.url}/info").json()
    assert "Paris" in str(answer.content), answer.content
    assert info["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    print(f"smollm2 loaded in {loaded_s:.1f} s; answer: {answer.content!r}")
