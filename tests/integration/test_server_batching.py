"""Batched generation on the local server: concurrent requests share forward passes.

A real tiny-model server on loopback (with two real PEFT LoRA adapters) and the official
huggingface_hub clients. Each concurrent run is compared with the same requests sent one at a
time, which run alone and so take the unbatched path.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient

from langchain_herd.server import GenerationBackend, ServerThread, create_app, load_backend
from langchain_herd.server.adapters import parse_adapter_specs
from tests.integration.test_lora_adapters import make_adapter

T = TypeVar("T")

PROMPTS = [
    "hello world",
    "the water is",
    "a story of the river and the sea and the mountain",
    "music",
    "where is the king of the north",
    "time to go home now",
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> GenerationBackend:
    root = tmp_path_factory.mktemp("adapters")
    folders = {name: make_adapter(root / name, seed) for name, seed in (("stem", 1), ("law", 2))}
    backend = load_backend("tiny")
    backend.load_adapters(parse_adapter_specs(",".join(f"{n}={p}" for n, p in folders.items())))
    return backend


@pytest.fixture(scope="module")
def url(backend: GenerationBackend) -> Iterator[str]:
    with ServerThread(create_app(backend, max_concurrent_requests=32)) as server:
        yield server.url


@pytest.fixture
def batching(backend: GenerationBackend) -> Iterator[GenerationBackend]:
    """Batches of up to 8 (the default), reset after the test."""
    backend.max_batch_size = 8
    yield backend
    backend.max_batch_size, backend.batch_wait_s, backend.lora_batching = 8, 0.005, "mixed"


def one_at_a_time(calls: list[Callable[[], T]]) -> list[T]:
    return [call() for call in calls]


def all_at_once(calls: list[Callable[[], T]], backend: GenerationBackend) -> list[T]:
    """Run ``calls`` concurrently, with a batch wait long enough that they share batches."""
    backend.batch_wait_s = 0.2
    try:
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(lambda call: call(), calls))
    finally:
        backend.batch_wait_s = 0.005


def generate(url: str, prompt: str, **kwargs: Any) -> tuple[str, str, list[int]]:
    out = InferenceClient(base_url=url).text_generation(
        prompt, details=True, return_full_text=False, **kwargs
    )
    assert out.details is not None
    return out.generated_text, out.details.finish_reason, [t.id for t in out.details.tokens]


def test_concurrent_greedy_requests_match_one_at_a_time(
    url: str, batching: GenerationBackend
) -> None:
    calls: list[Callable[[], tuple[str, str, list[int]]]] = [
        lambda p=p, n=n: generate(url, p, max_new_tokens=n)  # type: ignore[misc]
        for p, n in zip(PROMPTS, (12, 5, 16, 9, 12, 7), strict=True)
    ]
    # Ends of other kinds in the same batch: a stop sequence, a grammar (eos).
    calls.append(lambda: generate(url, "hello world", max_new_tokens=20, stop=["father"]))
    grammar: Any = {"type": "regex", "value": r"\d{3}-\d{4}"}
    calls.append(lambda: generate(url, "hello world", max_new_tokens=20, grammar=grammar))
    expected = one_at_a_time(calls)
    assert {reason for _, reason, _ in expected} >= {"length", "stop_sequence", "eos_token"}
    before = dict(batching.batch_stats.batch_sizes)
    assert all_at_once(calls, batching) == expected
    grown = {k: v - before.get(k, 0) for k, v in batching.batch_stats.batch_sizes.items()}
    assert any(size > 1 and count > 0 for size, count in grown.items()), grown


def test_batching_shares_forward_passes(url: str, batching: GenerationBackend) -> None:
    stats = batching.batch_stats
    passes, rows, batches = stats.forward_passes, stats.rows_forwarded, stats.batches
    results = all_at_once(
        [lambda p=p: generate(url, p, max_new_tokens=10) for p in PROMPTS], batching
    )
    # One row forwarded per token (the prefill chooses the first), in far fewer passes.
    tokens = sum(len(ids) for _, _, ids in results)
    assert stats.rows_forwarded - rows == tokens > 30
    assert stats.forward_passes - passes <= 2 * 10
    assert stats.batches - batches <= 2 and stats.largest_batch >= 3


def test_max_batch_size_one_runs_requests_one_at_a_time(
    url: str, batching: GenerationBackend
) -> None:
    batching.max_batch_size = 1
    stats = batching.batch_stats
    passes, rows = stats.forward_passes, stats.rows_forwarded
    calls = [lambda p=p: generate(url, p, max_new_tokens=4) for p in PROMPTS[:4]]
    assert all_at_once(calls, batching) == one_at_a_time(calls)
    assert stats.forward_passes - passes == stats.rows_forwarded - rows > 4 * 4
    assert httpx.get(f"{url}/info").json()["max_batch_size"] == 1


def test_seeded_sampling_matches_one_at_a_time(url: str, batching: GenerationBackend) -> None:
    calls = [
        lambda p=p, seed=seed: generate(
            url, p, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=30, seed=seed
        )
        for seed, p in enumerate(PROMPTS)
    ]
    calls.append(lambda: generate(url, "hello world", max_new_tokens=10, repetition_penalty=1.5))
    expected = one_at_a_time(calls)
    assert all_at_once(calls, batching) == expected
    assert len({text for text, _, _ in expected}) > 1


async def test_a_cancelled_stream_leaves_the_others_alone(
    url: str, batching: GenerationBackend
) -> None:
    client = AsyncInferenceClient(base_url=url)

    async def stream(prompt: str, keep: int | None) -> str:
        tokens = await client.text_generation(prompt, max_new_tokens=24, stream=True)
        text = ""
        async for token in tokens:
            text += token
            if keep is not None and len(text.split()) >= keep:
                await tokens.aclose()  # the client goes away mid-stream
                break
        return text

    expected = [await stream(p, None) for p in PROMPTS[:4]]
    stopped, batches = batching.stopped_generations, batching.batch_stats.batches
    batching.batch_wait_s = 0.2  # so the four streams share one batch
    results = await asyncio.gather(
        *[stream(p, 2 if i == 1 else None) for i, p in enumerate(PROMPTS[:4])]
    )
    batching.batch_wait_s = 0.005
    assert batching.batch_stats.batches - batches <= 2
    assert results[0] == expected[0] and results[2:] == expected[2:]
    assert expected[1].startswith(results[1]) and len(results[1]) < len(expected[1])
    for _ in range(100):  # the server notices the closed connection at its next token
        if batching.stopped_generations > stopped:
            break
        await asyncio.sleep(0.05)
    assert batching.stopped_generations == stopped + 1


@pytest.mark.parametrize("mode", ["mixed", "grouped"])
def test_each_request_in_a_batch_gets_its_own_adapter(
    url: str, batching: GenerationBackend, mode: Any
) -> None:
    batching.lora_batching = mode
    adapters = [None, "stem", "law"]
    calls = [
        lambda p=p, a=a: generate(url, p, max_new_tokens=8, adapter_id=a)
        for p in PROMPTS[:3]
        for a in adapters
    ]
    expected = one_at_a_time(calls)
    assert len({expected[i][0] for i in range(3)}) == 3  # the adapters really differ
    before = batching.batch_stats.largest_batch, batching.batch_stats.batches
    assert all_at_once(calls, batching) == expected
    if mode == "mixed":
        assert batching.batch_stats.batches - before[1] <= 2
    else:  # at least one batch per adapter
        assert batching.batch_stats.batches - before[1] >= 3


def test_generate_from_threads_without_http(batching: GenerationBackend) -> None:
    from langchain_herd.server.generation import GenerationPlan, TokenEvent

    def run(prompt: str) -> list[int]:
        plan = GenerationPlan(input_ids=tuple(batching.encode(prompt)), max_new_tokens=6)
        return [e.token.id for e in batching.generate(plan) if isinstance(e, TokenEvent)]

    expected = [run(p) for p in PROMPTS]
    results: list[list[int]] = [[] for _ in PROMPTS]

    def worker(i: int) -> None:
        results[i] = run(PROMPTS[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == expected
    assert batching.generate_text("hello world", max_new_tokens=4)


def test_cli_and_config_take_max_batch_size(tmp_path: Path) -> None:
    from langchain_herd.config import LocalServerConfig
    from langchain_herd.local_servers import server_command
    from langchain_herd.server.cli import build_parser

    assert build_parser().parse_args([]).max_batch_size == 8
    command = server_command(
        LocalServerConfig(name="a", port=8081, max_batch_size=3, lora_batching="grouped")
    )
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.max_batch_size, parsed.lora_batching) == (3, "grouped")
    with pytest.raises(ValueError, match="lora_batching"):
        LocalServerConfig(name="a", port=8081, lora_batching="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        load_backend("tiny").max_batch_size = 0
