"""Does ``HerdRouter.batch`` grouping queries by adapter help on the local server?

A herd of K experts that are K LoRA adapters of one base model on one local TGI-protocol
server (in this process, on loopback; random PEFT LoRA weights made here). N queries spread
round-robin over the experts (the worst case for an ungrouped batch: neighbours never share
an adapter) go through ``router.batch(queries, {"max_concurrency": C})`` with:

- ``group_batches=False``: sent in the caller's order;
- ``group_batches=True``: decided first, then sent grouped by server and adapter
  (:mod:`langchain_herd.batch_grouping`);

against the server batching requests of different adapters together (``mixed``, PEFT's
``adapter_names``) and one adapter per batch (``grouped``). Rounds alternate the order of
the four setups. Reported: queries/s, batches the server ran and mean rows per forward pass,
and the ratio of grouped over ungrouped sending for each server mode. The classifier routes
by a keyword in the query (the routing decision is not what is measured here).

    nice -n 15 .venv/bin/python bench/router_grouping.py [--models tiny,smollm2]
        [--queries 32] [--experts 4] [--concurrency 8] [--max-new-tokens 16] [--rounds 2]
        [--out bench/results/router_grouping.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from common import emit  # bench/common.py (the script's folder is on sys.path)
from server_batching import make_adapters  # random PEFT adapters on the model

from langchain_herd import HerdRouter
from langchain_herd.config import HerdConfig
from langchain_herd.server import GenerationBackend, ServerThread, create_app, load_backend

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ["river", "king", "music", "city", "water", "mountain", "book", "ocean"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class KeywordClassifier:
    """Routes a query to the expert whose keyword it contains."""

    def __init__(self, keywords: dict[str, str]) -> None:
        self.keywords = keywords
        self.labels = list(keywords)

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.full((len(texts), len(self.labels)), 0.01)
        for row, text in enumerate(texts):
            for col, label in enumerate(self.labels):
                if self.keywords[label] in text:
                    out[row, col] = 0.97
        return out


def herd(url: str, experts: list[str], max_new_tokens: int, *, grouped: bool) -> HerdRouter:
    config = HerdConfig.model_validate(
        {
            "name": "lora-bench",
            "experts": [
                {
                    "name": name,
                    "url": url,
                    "protocol": "tgi",
                    "adapter_id": name,
                    "routes": [name],
                    "generation": {"max_new_tokens": max_new_tokens},
                    "timeout_s": 600,
                }
                for name in experts
            ],
        }
    )
    keywords = {name: SUBJECTS[i] for i, name in enumerate(experts)}
    return HerdRouter.from_config(
        config, classifier=KeywordClassifier(keywords), group_batches=grouped
    )


def measure(
    backend: GenerationBackend, router: HerdRouter, queries: list[str], concurrency: int
) -> dict[str, Any]:
    stats = backend.batch_stats
    batches, passes, rows = stats.batches, stats.forward_passes, stats.rows_forwarded
    began = time.perf_counter()
    answers = router.batch(queries, {"max_concurrency": concurrency})
    wall = time.perf_counter() - began
    passes = stats.forward_passes - passes
    return {
        "queries_per_s": len(queries) / wall,
        "wall_s": wall,
        "batches": stats.batches - batches,
        "mean_rows_per_forward": (stats.rows_forwarded - rows) / max(passes, 1),
        "answers": [str(a.content) for a in answers],
    }


def bench_model(model: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log(f"[{model}] loading the model with {args.experts} LoRA adapters")
    backend = load_backend(model)
    specs = make_adapters(model, workdir / model, args.experts)
    backend.load_adapters(specs)
    backend.max_batch_size = args.concurrency
    names = [spec.name for spec in specs]
    queries = [
        f"Tell me about the {SUBJECTS[i % len(names)]} (question {i})." for i in range(args.queries)
    ]
    app = create_app(backend, max_concurrent_requests=4 * args.concurrency)
    setups = [(mode, grouped) for mode in ("mixed", "grouped") for grouped in (False, True)]
    runs: dict[str, list[dict[str, Any]]] = {}
    with ServerThread(app) as server:
        routers = {g: herd(server.url, names, args.max_new_tokens, grouped=g) for g in (0, 1)}
        routers[0].batch(queries[:4], {"max_concurrency": 4})  # warm-up
        for round_index in range(args.rounds):
            order = setups if round_index % 2 == 0 else list(reversed(setups))
            for mode, grouped in order:
                backend.lora_batching = mode  # type: ignore[assignment]
                label = f"server {mode}, router {'grouped' if grouped else 'in order'}"
                figures = measure(backend, routers[int(grouped)], queries, args.concurrency)
                log(
                    f"    round {round_index + 1} {label:<34} "
                    f"{figures['queries_per_s']:6.2f} q/s  {figures['batches']:3d} batches  "
                    f"{figures['mean_rows_per_forward']:.2f} rows/forward"
                )
                runs.setdefault(label, []).append(figures)
    summary: dict[str, Any] = {}
    for label, measured in runs.items():
        best = max(measured, key=lambda m: m["queries_per_s"])
        summary[label] = {
            **{k: v for k, v in best.items() if k != "answers"},
            "queries_per_s_all_rounds": [m["queries_per_s"] for m in measured],
        }
    reference = next(iter(runs.values()))[0]["answers"]
    summary["same_answers_in_every_setup"] = all(
        m["answers"] == reference for measured in runs.values() for m in measured
    )
    for mode in ("mixed", "grouped"):
        ratio = (
            summary[f"server {mode}, router grouped"]["queries_per_s"]
            / summary[f"server {mode}, router in order"]["queries_per_s"]
        )
        summary[f"router_grouping_speedup_server_{mode}"] = ratio
        log(f"[{model}] server {mode}: grouped sending x{ratio:.2f} over in-order sending")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "router_grouping.json"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "settings": {
            "queries": args.queries,
            "experts": args.experts,
            "concurrency": args.concurrency,
            "max_new_tokens": args.max_new_tokens,
            "rounds": args.rounds,
            "server_max_batch_size": args.concurrency,
        }
    }
    with tempfile.TemporaryDirectory(prefix="herd-bench-grouping-") as workdir:
        for model in (m.strip() for m in args.models.split(",") if m.strip()):
            results[model] = bench_model(model, args, Path(workdir))
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
