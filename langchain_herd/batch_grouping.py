"""The order a batch is sent in, so queries for adapters of one server arrive together.

Several experts can be LoRA adapters of one base model on one server (TGI, vLLM, SGLang or
``herd serve --lora-adapters``). Such a server batches the requests waiting at each step; where
a batch holds one adapter (``herd serve --lora-batching grouped``), queries for different
adapters that arrive interleaved split into small batches, and where adapters mix in a batch
(vLLM's and TGI's multi-LoRA kernels, the local server's default) the order matters less.
``HerdRouter.batch`` and ``abatch`` decide each query first, then send them grouped by server
and expert, and hand the results back in the caller's order. Where no server hosts two
experts, nothing is reordered. ``bench/router_grouping.py`` measures what it gains."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from langchain_herd.experts import Expert

__all__ = ["grouped_order", "shares_servers"]


def shares_servers(experts: Mapping[str, Expert]) -> bool:
    """Whether some server URL hosts more than one of ``experts`` (adapters of one base)."""
    urls = Counter(expert.url.rstrip("/") for expert in experts.values() if expert.url)
    return any(count > 1 for count in urls.values())


def grouped_order(chosen: Sequence[str | None], experts: Mapping[str, Expert]) -> list[int]:
    """Indices of the queries in sending order: grouped by the chosen expert's server, then
    by the expert (its adapter), first-come within a group; undecided queries go last.

    Example:
        >>> grouped_order(["b", "a", "b", None, "a"], {})
        [1, 4, 0, 2, 3]
    """

    def key(index: int) -> tuple[int, str, str, int]:
        name = chosen[index]
        if name is None:
            return (1, "", "", index)
        expert = experts.get(name)
        url = (expert.url or "").rstrip("/") if expert is not None else ""
        return (0, url, name, index)

    return sorted(range(len(chosen)), key=key)
