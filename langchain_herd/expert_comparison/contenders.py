"""What is compared: read from a herd config whose local server carries LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Contender"]


@dataclass(frozen=True)
class Contender:
    """One row of the comparison.

    Attributes:
        name: the row's name (``base``, an adapter's name, ``router``, ``merge:ties``...).
        kind: ``base``, ``adapter``, ``router``, ``merge`` or ``swarm``.
        adapter: the adapter folder it runs (None: the base model, or the router's pick).
    """

    name: str
    kind: str
    adapter: Path | None = None
