"""Throughput of ``HerdRouter.abatch`` against four local experts, vs the experts called directly.

Starts four local expert servers (the project's TGI-protocol server with the tiny model,
one process and one port per expert, so client and servers do not share an interpreter)
and builds the herd of ``tgi_configs/local.yaml`` on them: four MMLU-group experts (stem,
humanities, social_sciences, other), two on TGI's generate API and two on the OpenAI chat
route, routed by ``bundled:mmlu-group-tfidf``. Generation is a few tokens, so the figures
measure what routing costs rather than what generating does.

Then, over the same N MMLU questions (with choices), in rounds that alternate which path
goes first so machine noise hits both alike:

- router: ``router.abatch(queries, config={"max_concurrency": C})``;
- direct: each query sent to the expert the router picks for it (decided beforehand), as
  ``expert.model.ainvoke(expert.prepare(messages))`` gathered with the same concurrency
  limit ``abatch`` uses (``gather_with_concurrency``), through the same client objects.

Reported: queries/s both ways and router/direct; the client's CPU time per query (this
process only: the servers run apart, so this is what the router itself costs, even when the
servers are the bottleneck and throughput cannot show it); per-query latency (p50/p95, from
the run's start to its end as LangChain's callbacks see it; both paths carry the same inline
handler); and that no query fell back to another expert (so both paths did the same work).

    .venv/bin/python bench/abatch_throughput.py [--queries 1000] [--concurrency 16]
        [--rounds 3] [--max-new-tokens 4] [--quick] [--out bench/results/abatch_throughput.json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from common import (  # bench/common.py (the script's folder is on sys.path)
    emit,
    free_port,
    percentile,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.utils import gather_with_concurrency

from langchain_herd import HerdRouter
from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.inputs import HerdInput
from langchain_herd.local_servers import LocalHerd
from langchain_herd.mmlu import format_question, load_mmlu, sample_questions

ROOT = Path(__file__).resolve().parents[1]
HERD_CONFIG = ROOT / "tgi_configs" / "local.yaml"
SEED = 0
# The tiny model's context is 4096 tokens; the longest MMLU prompt is 943 of its tokens.
MAX_INPUT_TOKENS, MAX_TOTAL_TOKENS = 3072, 4096


def herd_config(max_new_tokens: int, concurrency: int) -> HerdConfig:
    """local.yaml's four experts, each on its own tiny-model server on a free port."""
    data = yaml.safe_load(HERD_CONFIG.read_text(encoding="utf-8"))
    data["local_servers"] = []
    for expert in data["experts"]:
        port = free_port()
        data["local_servers"].append(
            {
                "name": f"bench-{expert['name']}",
                "model": "tiny",
                "port": port,
                "max_input_tokens": MAX_INPUT_TOKENS,
                "max_total_tokens": MAX_TOTAL_TOKENS,
                # At most `concurrency` requests are in flight in all, so none gets a 429.
                "max_concurrent_requests": concurrency,
            }
        )
        expert["url"] = f"http://127.0.0.1:{port}"
        expert["generation"] = {"max_new_tokens": max_new_tokens}
    return parse_config(data, source=f"{HERD_CONFIG} (bench)", base_dir=HERD_CONFIG.parent)


def mmlu_queries(n: int) -> list[str]:
    frame = sample_questions(load_mmlu(), n, seed=SEED, allocation="proportional")
    return [
        format_question(row.question, [row.A, row.B, row.C, row.D])
        for row in frame.itertuples(index=False)
    ]


class RunTimer(BaseCallbackHandler):
    """Start and end time of every top-level run, and a progress line every quarter."""

    # Inline: otherwise LangChain's async managers hand sync handlers to a thread pool.
    run_inline = True

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.started: dict[UUID, float] = {}
        self.latencies_ms: list[float] = []

    def _start(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        if parent_run_id is None:
            self.started[run_id] = time.perf_counter()

    def _end(self, run_id: UUID) -> None:
        started = self.started.pop(run_id, None)
        if started is None:
            return
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        done = len(self.latencies_ms)
        if done % max(1, self.total // 4) == 0:
            print(f"    {self.label}: {done}/{self.total}", file=sys.stderr, flush=True)

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)


async def router_pass(
    router: HerdRouter, queries: list[str], concurrency: int, timer: RunTimer
) -> list[BaseMessage]:
    config: RunnableConfig = {"max_concurrency": concurrency, "callbacks": [timer]}
    inputs: list[HerdInput] = list(queries)
    return await router.abatch(inputs, config=config)


async def direct_pass(
    router: HerdRouter,
    queries: list[str],
    assignment: list[str],
    concurrency: int,
    timer: RunTimer,
) -> list[BaseMessage]:
    config: RunnableConfig = {"callbacks": [timer]}
    calls = [
        router.experts[name].model.ainvoke(
            router.experts[name].prepare([HumanMessage(content=query)]), config
        )
        for query, name in zip(queries, assignment, strict=True)
    ]
    return await gather_with_concurrency(concurrency, *calls)


def fallbacks(answers: list[BaseMessage], assignment: list[str]) -> list[str]:
    """Why routed answers did not come from the one expert the direct path called."""
    found = []
    for answer, name in zip(answers, assignment, strict=True):
        decision = answer.response_metadata["herd"]
        if len(decision["attempts"]) != 1 or decision["answered_by"] != name:
            failed = [a for a in decision["attempts"] if not a["ok"]]
            found += [f"{a['expert']}: {a['failure']}: {a['error']}" for a in failed]
    return found


@dataclass
class Pass:
    """One pass of one path over all the queries."""

    seconds: float
    cpu_seconds: float
    answers: list[BaseMessage]
    latencies_ms: list[float]


async def timed_pass(
    label: str, run: Callable[[RunTimer], Awaitable[list[BaseMessage]]], total: int
) -> Pass:
    timer = RunTimer(label, total)
    cpu_started, started = time.process_time(), time.perf_counter()
    answers = await run(timer)
    return Pass(
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        answers=answers,
        latencies_ms=timer.latencies_ms,
    )


async def measure(
    router: HerdRouter, queries: list[str], concurrency: int, rounds: int
) -> dict[str, Any]:
    # Argmax over a herd with no open breaker always ranks every expert: ranking[0] exists.
    assignment = [router.route(query).ranking[0] for query in queries]
    paths: dict[str, Callable[[RunTimer], Awaitable[list[BaseMessage]]]] = {
        "direct": lambda t: direct_pass(router, queries, assignment, concurrency, t),
        "router": lambda t: router_pass(router, queries, concurrency, t),
    }
    warm: list[HerdInput] = list(queries[: 4 * concurrency])
    await router.abatch(warm, config={"max_concurrency": concurrency})  # connections, caches
    passes: dict[str, list[Pass]] = {name: [] for name in paths}
    for index in range(rounds):
        order = list(paths) if index % 2 == 0 else list(reversed(paths))
        for name in order:
            print(f"  round {index + 1}/{rounds}, {name}", file=sys.stderr, flush=True)
            passes[name].append(await timed_pass(name, paths[name], len(queries)))
    fell_back = [why for run in passes["router"] for why in fallbacks(run.answers, assignment)]
    return {
        **summarise(passes, len(queries)),
        "queries_per_expert": dict(Counter(assignment)),
        "router_fallbacks": len(fell_back),
        "router_fallback_reasons": dict(Counter(fell_back)),
    }


def path_summary(runs: list[Pass], n: int) -> dict[str, Any]:
    latencies = [ms for run in runs for ms in run.latencies_ms]
    return {
        "queries_per_s": n / statistics.median(run.seconds for run in runs),
        "queries_per_s_per_round": [n / run.seconds for run in runs],
        "client_cpu_ms_per_query": statistics.median(run.cpu_seconds for run in runs) * 1e3 / n,
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p95_ms": percentile(latencies, 0.95),
    }


def summarise(passes: dict[str, list[Pass]], n: int) -> dict[str, Any]:
    direct, router = path_summary(passes["direct"], n), path_summary(passes["router"], n)
    per_round = [
        d.seconds / r.seconds for d, r in zip(passes["direct"], passes["router"], strict=True)
    ]
    return {
        "direct": direct,
        "router": router,
        "router_over_direct_throughput": router["queries_per_s"] / direct["queries_per_s"],
        "router_over_direct_per_round": per_round,
        "router_over_direct_client_cpu": router["client_cpu_ms_per_query"]
        / direct["client_cpu_ms_per_query"],
        "router_added_client_cpu_ms_per_query": router["client_cpu_ms_per_query"]
        - direct["client_cpu_ms_per_query"],
        "router_over_direct_latency_p50": router["latency_p50_ms"] / direct["latency_p50_ms"],
    }


def run(n: int, concurrency: int, rounds: int, max_new_tokens: int) -> dict[str, Any]:
    config = herd_config(max_new_tokens, concurrency)
    queries = mmlu_queries(n)
    print(f"starting {len(config.local_servers)} expert servers ...", file=sys.stderr, flush=True)
    with LocalHerd(config):
        router = HerdRouter.from_config(config)
        results = asyncio.run(measure(router, queries, concurrency, rounds))
    protocols = {e.name: e.protocol for e in config.experts}
    return {
        "queries": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "max_new_tokens": max_new_tokens,
        "experts": protocols,
        "classifier": config.router.classifier.path,
        **results,
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"{'path':<28} {'queries/s':>10} {'client CPU ms/q':>16} {'p50 ms':>9} {'p95 ms':>9}")
    for label, key in (("experts called directly", "direct"), ("HerdRouter.abatch", "router")):
        stats = results[key]
        print(
            f"{label:<28} {stats['queries_per_s']:>10.1f} "
            f"{stats['client_cpu_ms_per_query']:>16.3f} {stats['latency_p50_ms']:>9.2f} "
            f"{stats['latency_p95_ms']:>9.2f}"
        )
    print()
    per_round = ", ".join(f"{r:.3f}" for r in results["router_over_direct_per_round"])
    print(
        f"router / direct, throughput:  {results['router_over_direct_throughput']:.3f} "
        f"(per round: {per_round})"
    )
    print(
        f"router / direct, client CPU:  {results['router_over_direct_client_cpu']:.3f} "
        f"(+{results['router_added_client_cpu_ms_per_query']:.3f} ms per query)"
    )
    print(f"router / direct, p50 latency: {results['router_over_direct_latency_p50']:.3f}")
    print(
        f"{results['queries']} MMLU questions, max_concurrency {results['concurrency']}, "
        f"{results['rounds']} rounds, max_new_tokens {results['max_new_tokens']}; queries per "
        f"expert {results['queries_per_expert']}; router fallbacks {results['router_fallbacks']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16, help="max_concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="passes of each path")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="200 queries, 1 round")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.queries, args.rounds = 200, 1
    results = run(args.queries, args.concurrency, args.rounds, args.max_new_tokens)
    print_table(results)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
