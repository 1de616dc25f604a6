"""How long each classifier backend takes to decide, one query at a time and batched.

Trains tiny artifacts of the three training backends in the run (``tfidf``; ``embedding``:
frozen all-MiniLM-L6-v2 plus a head; ``finetune``: fine-tuned MiniLM) on a correctness
table built from the bundled MMLU questions with synthetic 0/1 columns (training quality
does not matter for timing), reloads each from disk as a user would, and times it next to
the bundled router ``bundled:mmlu-group-tfidf`` on real MMLU questions (with choices, as the
demo routes them) that none of them trained on:

- one query per ``predict_proba`` call: p50/p95 ms and queries/s;
- batches of 32, and the whole query set in one call: ms/query and queries/s.

Rounds interleave the backends (in a rotating order) so machine noise hits them alike.
torch runs on one thread by default (``--torch-threads``): on a shared 2-core machine its
default of one thread per core spins against the other load and made MiniLM decisions
about ten times slower in trials, where one thread stayed steady. A batch is padded to
its longest text (up to the encoder's limit: 256 tokens for embedding, 128 for finetune),
so on CPU a batch of 32 MMLU questions, whose lengths have a long tail, can cost more per
query than one call per question. Each call sorts its texts by length before batching
them, so one call over the whole set pads far less.

Figures are reported as ratios against a baseline of the same run too: each backend's
single-query p50 over the trained tfidf's, and each batched throughput over the same
backend's single-query throughput.

    .venv/bin/python bench/decision_time.py [--queries 128] [--rounds 3] [--train-rows 400]
        [--torch-threads 1] [--quick] [--out bench/results/decision_time.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit, percentile  # bench/common.py (the script's folder is on sys.path)

from langchain_herd.classifiers.base import SavedClassifier, load_classifier
from langchain_herd.classifiers.registry import resolve_classifier
from langchain_herd.mmlu import MMLU_GROUPS, format_question, load_mmlu, sample_questions
from langchain_herd.training import (
    FinetuneParams,
    PrintProgress,
    TrainResult,
    train_router,
)
from langchain_herd.training.train import BackendName

TRAINED: tuple[BackendName, ...] = ("tfidf", "embedding", "finetune")
BUNDLED = "bundled:mmlu-group-tfidf"
BASELINE = "tfidf"
BATCH = 32
SEED = 0
# Synthetic correctness: an expert is right more often on its own MMLU group, so the
# columns carry some signal and every backend has something to fit.
P_OWN_GROUP, P_OTHER_GROUP = 0.8, 0.4


def prompts(frame: Any) -> list[str]:
    """The multiple-choice prompts the demo sends (and routes on)."""
    return [
        format_question(row.question, [row.A, row.B, row.C, row.D])
        for row in frame.itertuples(index=False)
    ]


def split_questions(n_train: int, n_queries: int) -> tuple[Any, list[str]]:
    """Disjoint MMLU samples: training rows (a frame) and the timed query texts."""
    mmlu = load_mmlu()
    chosen = sample_questions(mmlu, n_train + n_queries, seed=SEED)
    return chosen.iloc[:n_train], prompts(chosen.iloc[n_train:])


def write_table(frame: Any, path: Path) -> Path:
    """A correctness table with one synthetic 0/1 column per MMLU-group expert."""
    rng = np.random.default_rng(SEED)
    groups = frame["group"].to_numpy()
    table = frame[["id", "subject", "group"]].copy()
    table["prompt"] = prompts(frame)
    for expert in MMLU_GROUPS:
        p_right = np.where(groups == expert, P_OWN_GROUP, P_OTHER_GROUP)
        table[expert] = (rng.random(len(frame)) < p_right).astype(np.int8)
    table.to_parquet(path)
    return path


def train_all(table: Path, work: Path, finetune_rows: int) -> dict[str, TrainResult]:
    """Train one correctness router per backend (phases printed to stderr)."""
    results: dict[str, TrainResult] = {}
    for backend in TRAINED:
        print(f"training {backend} ...", file=sys.stderr, flush=True)
        # Finetune is the slow one on CPU: a fraction of an epoch on capped rows suffices
        # for timing, which does not depend on how well the weights were trained.
        finetune = backend == "finetune"
        results[backend] = train_router(
            table,
            mode="correctness",
            backend=backend,
            out_dir=work / backend,
            seed=SEED,
            max_train_rows=finetune_rows if finetune else None,
            params=FinetuneParams(epochs=0.05) if finetune else None,
            progress=PrintProgress(interval=15.0),
        )
    return results


def load_all(results: dict[str, TrainResult]) -> dict[str, SavedClassifier]:
    """The saved artifacts reloaded from disk, plus the bundled router."""
    classifiers = {name: load_classifier(result.out_dir) for name, result in results.items()}
    classifiers[BUNDLED] = resolve_classifier(BUNDLED)
    return classifiers


def single_ms(classifier: SavedClassifier, queries: list[str]) -> list[float]:
    """One ``predict_proba`` call per query; ms each."""
    times = []
    for query in queries:
        started = time.perf_counter()
        classifier.predict_proba([query])
        times.append((time.perf_counter() - started) * 1000)
    return times


def batched_ms_per_query(classifier: SavedClassifier, queries: list[str], size: int) -> float:
    """One pass over the queries in calls of ``size`` texts; ms per query."""
    started = time.perf_counter()
    for start in range(0, len(queries), size):
        classifier.predict_proba(queries[start : start + size])
    return (time.perf_counter() - started) * 1000 / len(queries)


def warm_up(classifiers: dict[str, SavedClassifier], queries: list[str]) -> None:
    # First calls pay for lazy imports, thread pools and allocator growth.
    for classifier in classifiers.values():
        single_ms(classifier, queries[:8])
        batched_ms_per_query(classifier, queries[:BATCH], BATCH)


def measure(
    classifiers: dict[str, SavedClassifier], queries: list[str], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds: every backend, in a rotated order, does all three measurements."""
    names = list(classifiers)
    raw: dict[str, dict[str, list[float]]] = {
        name: {"single": [], "batch": [], "whole": []} for name in names
    }
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            classifier = classifiers[name]
            raw[name]["single"] += single_ms(classifier, queries)
            raw[name]["batch"].append(batched_ms_per_query(classifier, queries, BATCH))
            raw[name]["whole"].append(batched_ms_per_query(classifier, queries, len(queries)))
        print(f"  {index + 1}/{rounds} rounds", file=sys.stderr, flush=True)
    return raw


def backend_summary(raw: dict[str, list[float]]) -> dict[str, Any]:
    single = raw["single"]
    single_qps = 1000 * len(single) / sum(single)
    batch_ms = statistics.median(raw["batch"])
    whole_ms = statistics.median(raw["whole"])
    return {
        "single": {
            "p50_ms": percentile(single, 0.5),
            "p95_ms": percentile(single, 0.95),
            "mean_ms": statistics.fmean(single),
            "queries_per_s": single_qps,
            "n": len(single),
        },
        # Medians over rounds of one full pass each.
        f"batch_{BATCH}": {
            "ms_per_query": batch_ms,
            "queries_per_s": 1000 / batch_ms,
            "speedup_vs_single": (1000 / batch_ms) / single_qps,
        },
        "whole_set": {
            "ms_per_query": whole_ms,
            "queries_per_s": 1000 / whole_ms,
            "speedup_vs_single": (1000 / whole_ms) / single_qps,
        },
    }


def training_info(result: TrainResult) -> dict[str, Any]:
    return {
        "kind": result.kind,
        "train_rows": result.split["n_train"],
        "train_time_s": result.train_time_s,
        "params": result.params,
    }


def run(
    n_queries: int, rounds: int, train_rows: int, finetune_rows: int, torch_threads: int
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(torch_threads)
    train_frame, queries = split_questions(train_rows, n_queries)
    with tempfile.TemporaryDirectory(prefix="herd-bench-") as tmp:
        work = Path(tmp)
        trained = train_all(write_table(train_frame, work / "table.parquet"), work, finetune_rows)
        classifiers = load_all(trained)
        warm_up(classifiers, queries)
        raw = measure(classifiers, queries, rounds)
    backends = {name: backend_summary(values) for name, values in raw.items()}
    baseline_p50 = backends[BASELINE]["single"]["p50_ms"]
    for summary in backends.values():
        summary["single_p50_vs_tfidf"] = summary["single"]["p50_ms"] / baseline_p50
    return {
        "queries": n_queries,
        "rounds": rounds,
        "batch_size": BATCH,
        "query_words_median": statistics.median(len(q.split()) for q in queries),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "baseline": BASELINE,
        "backends": backends,
        "training": {name: training_info(result) for name, result in trained.items()},
    }


def print_table(results: dict[str, Any]) -> None:
    n = results["queries"]
    header = (
        f"{'backend':<26} {'p50 ms':>8} {'p95 ms':>8} {'q/s':>8} {'x tfidf':>8} "
        f"{f'b{BATCH} ms/q':>9} {'q/s':>8} {'x1':>6} {f'b{n} ms/q':>9} {'q/s':>8} {'x1':>6}"
    )
    print(header)
    for name, s in results["backends"].items():
        single, batch, whole = s["single"], s[f"batch_{BATCH}"], s["whole_set"]
        print(
            f"{name:<26} {single['p50_ms']:>8.3f} {single['p95_ms']:>8.3f} "
            f"{single['queries_per_s']:>8.0f} {s['single_p50_vs_tfidf']:>8.1f} "
            f"{batch['ms_per_query']:>9.3f} {batch['queries_per_s']:>8.0f} "
            f"{batch['speedup_vs_single']:>6.1f} {whole['ms_per_query']:>9.3f} "
            f"{whole['queries_per_s']:>8.0f} {whole['speedup_vs_single']:>6.1f}"
        )
    print()
    print(
        f"{n} MMLU questions with choices (median {results['query_words_median']:.0f} words), "
        f"{results['rounds']} interleaved rounds; {results['cpu_count']} CPUs, torch threads "
        f"{results['torch_threads']}."
    )
    print(
        "x tfidf: single-query p50 over the trained tfidf's; x1: batched throughput over the "
        "same backend's single-query throughput."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=128, help="timed query texts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measuring rounds")
    parser.add_argument("--train-rows", type=int, default=400, help="rows of the training table")
    parser.add_argument("--finetune-rows", type=int, default=200, help="finetune's row cap")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="64 queries, 2 rounds, 200 rows")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.queries, args.rounds, args.train_rows, args.finetune_rows = 64, 2, 200, 100
    results = run(
        args.queries, args.rounds, args.train_rows, args.finetune_rows, args.torch_threads
    )
    print_table(results)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
