"""Progress reports for long training steps: silent in the library, printed by the CLI."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol, TextIO, runtime_checkable

__all__ = ["PrintProgress", "Progress", "SilentProgress"]


@runtime_checkable
class Progress(Protocol):
    """Receives the phases of a training run and the advance of the long ones."""

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A context manager around one step (reading, embedding, fitting, scoring...)."""
        ...

    def update(self, done: int, total: int) -> None:
        """Within the current phase: ``done`` of ``total`` units are finished."""
        ...

    def note(self, message: str) -> None:
        """A one-line remark (a choice made, a number worth seeing while it runs)."""
        ...


class SilentProgress:
    """Reports nothing (the library default)."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def update(self, done: int, total: int) -> None:
        return None

    def note(self, message: str) -> None:
        return None


class PrintProgress:
    """Prints phases with elapsed times, and advances at most every ``interval`` seconds.

    Example:
        >>> progress = PrintProgress()  # doctest: +SKIP
        >>> with progress.phase("embedding"):  # doctest: +SKIP
        ...     progress.update(10, 100)
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._start = time.perf_counter()
        self._phase = ""
        self._phase_start = self._start
        self._last = 0.0

    def _print(self, message: str) -> None:
        elapsed = time.perf_counter() - self._start
        print(f"[{elapsed:7.1f}s] {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        outer, outer_start = self._phase, self._phase_start
        self._phase, self._phase_start = name, time.perf_counter()
        self._last = self._phase_start
        self._print(f"{name}...")
        try:
            yield
        finally:
            self._print(f"{name}: done in {time.perf_counter() - self._phase_start:.1f}s")
            self._phase, self._phase_start = outer, outer_start

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        spent = now - self._phase_start
        share = done / total if total else 1.0
        eta = f", about {spent / share - spent:.0f}s left" if 0 < share < 1 else ""
        self._print(f"  {self._phase}: {done}/{total} ({share:.0%}){eta}")

    def note(self, message: str) -> None:
        self._print(f"  {message}")
