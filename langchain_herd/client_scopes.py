"""How long the experts' HTTP clients live: one per event loop, or one per call.

- :class:`PerLoop`: a client per event loop behind one object. An async client's connection
  pool belongs to the loop that first used it; shared, it fails with "Event loop is closed"
  once a router is used from a second loop (``asyncio.run`` twice, notebooks, worker threads).
- :class:`PerCallInferenceClient` and :class:`PerCallAsyncInferenceClient`: huggingface_hub's
  inference clients, a fresh one per call, closed as soon as its answer ends. A client enters
  every response into its ``exit_stack`` and lets go of them only when the client closes, so
  one long-lived client keeps every request it ever sent, prompts included (about 6 KB per
  call with a 1 KB prompt, measured through ``tests/integration/test_client_scopes.py``).
  Clients are cheap: the sync ones share huggingface_hub's session, and the async ones are
  given the loop's shared ``httpx.AsyncClient`` so that connections are still pooled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any


class PerLoop:
    """One object per event loop (and one outside any loop), made on first use.

    Attribute access goes to the current loop's object; objects of loops that have closed
    are dropped.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._objects: dict[int, tuple[asyncio.AbstractEventLoop | None, Any]] = {}
        self._lock = threading.Lock()

    def current(self) -> Any:
        """The running loop's object (made now if it has none)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            entry = self._objects.get(id(loop))
            if entry is None or entry[0] is not loop:
                for key, (old, _) in list(self._objects.items()):
                    if old is not None and old.is_closed():
                        del self._objects[key]
                entry = (loop, self._factory())
                self._objects[id(loop)] = entry
            return entry[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


class PerCallInferenceClient:
    """A sync ``InferenceClient`` per call: every method makes a client, calls it and closes
    it when the result has been read (a stream: when it ends or its reader closes it)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        # Never sends a request: answers attribute reads and says which names are methods.
        self._template = factory()

    def __repr__(self) -> str:
        return f"PerCallInferenceClient({self._template!r})"

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._template, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            client = self._factory()
            try:
                result = getattr(client, name)(*args, **kwargs)
            except BaseException:
                client.close()
                raise
            if isinstance(result, Iterator):
                return _closing(result, client)
            client.close()
            return result

        return call


class PerCallAsyncInferenceClient:
    """An ``AsyncInferenceClient`` per call, on the loop's shared ``httpx.AsyncClient``.

    Args:
        factory: makes a client (model, timeout, headers).
        sessions: the ``httpx.AsyncClient`` of the running loop.
    """

    def __init__(self, factory: Callable[[], Any], sessions: PerLoop) -> None:
        self._factory = factory
        self._sessions = sessions
        self._template = factory()  # as in PerCallInferenceClient: never sends a request

    def __repr__(self) -> str:
        return f"PerCallAsyncInferenceClient({self._template!r})"

    def _client(self) -> Any:
        client = self._factory()
        if hasattr(client, "_async_client"):
            # Without it each call would open its own pool (a new connection every call);
            # set this way, the client's exit stack holds only the call's response.
            client._async_client = self._sessions.current()
        return client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._template, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            client = self._client()
            try:
                result = await getattr(client, name)(*args, **kwargs)
            except BaseException:
                await client.close()
                raise
            if isinstance(result, AsyncIterator):
                return _aclosing(result, client)
            await client.close()
            return result

        return call


def _closing(items: Iterator[Any], client: Any) -> Iterator[Any]:
    try:
        yield from items
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
        client.close()


async def _aclosing(items: AsyncIterator[Any], client: Any) -> AsyncIterator[Any]:
    try:
        async for item in items:
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
        await client.close()
