"""The TGI route's clients keep nothing of a finished call and still pool connections.

huggingface_hub's inference clients enter each response into an exit stack that only
closing the client empties: a router holding one client for its lifetime kept every
response and request (prompt included) it ever made. Real local server, real clients.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from langchain_herd.config import parse_config
from langchain_herd.experts import TGIGenerateChat, build_chat_model
from langchain_herd.server import ServerThread, create_app, load_backend

PROMPT = "Name a prime number. " * 20


@pytest.fixture(scope="module")
def chat() -> Iterator[TGIGenerateChat]:
    server = ServerThread(create_app(load_backend("tiny"), model_id="tiny")).start()
    expert = {"name": "a", "url": server.url, "protocol": "tgi", "routes": ["stem"]}
    expert["generation"] = {"max_new_tokens": 4}
    config = parse_config({"name": "scopes", "experts": [expert]})
    model = build_chat_model(config.experts[0])
    assert isinstance(model, TGIGenerateChat)
    yield model
    server.stop()


def live_responses() -> int:
    gc.collect()
    return sum(isinstance(o, httpx.Response) for o in gc.get_objects())


def test_sync_calls_keep_no_response(chat: TGIGenerateChat) -> None:
    chat.invoke(PROMPT)
    before = live_responses()
    for _ in range(30):
        assert chat.invoke(PROMPT).content is not None
        for _ in chat.stream(PROMPT):
            break  # a reader that stops early closes the response too
    assert live_responses() <= before


async def test_async_calls_keep_no_response_and_share_one_pool(chat: TGIGenerateChat) -> None:
    await chat.ainvoke(PROMPT)
    before = live_responses()
    for _ in range(30):
        await chat.ainvoke(PROMPT)
        async for _ in chat.astream(PROMPT):
            break
    await asyncio.gather(*(chat.ainvoke(PROMPT) for _ in range(8)))
    assert live_responses() <= before
    # Every call of this loop went through one connection pool, whose connections are reused.
    session: Any = chat.llm.async_client._sessions.current()
    connections = session._transport._pool.connections
    assert 1 <= len(connections) <= 8, connections
