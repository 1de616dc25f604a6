"""Sticky sessions: which expert answered a conversation thread last.

A follow-up turn ("now do it for 3") should stay with the expert that has the
conversation, unless the new turn clearly belongs elsewhere. The store is bounded: entries
expire after ``ttl_s`` and the least recently used are dropped beyond ``max_threads``, so a
long-running app does not grow without limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Protocol


class SessionStore(Protocol):
    """Where the expert of each thread is kept (in-process here; shared stores later)."""

    def get(self, thread_id: str) -> str | None:
        """The expert that last answered this thread, if it is remembered."""
        ...

    def set(self, thread_id: str, expert: str) -> None:
        """Remember the expert that answered this thread."""
        ...


class InMemorySessions:
    """A thread-safe LRU map of thread id to expert, with expiry.

    Example:
        >>> sessions = InMemorySessions(ttl_s=60, max_threads=2)
        >>> sessions.set("t1", "stem")
        >>> sessions.get("t1")
        'stem'
    """

    def __init__(self, ttl_s: float = 3600.0, max_threads: int = 10_000) -> None:
        if ttl_s <= 0 or max_threads < 1:
            raise ValueError("sticky sessions need ttl_s > 0 and max_threads >= 1")
        self.ttl_s = ttl_s
        self.max_threads = max_threads
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thread_id: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(thread_id)
            if entry is None:
                return None
            expert, expires = entry
            if expires <= now:
                del self._entries[thread_id]
                return None
            self._entries.move_to_end(thread_id)
            return expert

    def set(self, thread_id: str, expert: str) -> None:
        with self._lock:
            self._entries[thread_id] = (expert, time.monotonic() + self.ttl_s)
            self._entries.move_to_end(thread_id)
            while len(self._entries) > self.max_threads:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
