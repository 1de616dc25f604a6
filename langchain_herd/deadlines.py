"""A whole-request deadline, for the engine's expert calls and the TGI route's own stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class Deadline:
    """A whole-request deadline: httpx times out per read, so a slow trickle never would."""

    def __init__(self, seconds: float | None) -> None:
        self.expires = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    async def wait(self, awaitable: Any) -> Any:
        if self.expires is None:
            return await awaitable
        remaining = max(self.expires - time.monotonic(), 0.0)
        try:
            return await asyncio.wait_for(awaitable, remaining)
        except asyncio.TimeoutError:
            raise self._expired() from None

    def check(self) -> None:
        """Raise ``TimeoutError`` once the deadline has passed (sync streams, per chunk)."""
        if self.expires is not None and time.monotonic() > self.expires:
            raise self._expired()

    def _expired(self) -> TimeoutError:
        return TimeoutError(f"no complete answer within the {self.seconds:g}s deadline")
