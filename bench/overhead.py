"""What routing costs: the router against calling the expert directly, in the same run.

Starts one local expert server (the tiny model, as a separate process, so client and
server do not share an interpreter) and measures, interleaving the variants so machine
noise hits them alike:

- p50/p95 latency of (a) the expert runnable called directly and (b) through HerdRouter,
  and their ratio;
- the classifier's time per query, single and batched;
- what a fallback adds when the first expert refuses connections, and when it answers 503
  (both as the failed attempt's own time and as the end-to-end difference);
- the chat-model path on the OpenAI route, with and without a tool bound (``bind_tools``
  with a forced tool, so every reply is a constrained tool call), against the same expert
  chat model called directly with the same binding.

Targets: routing adds under 5 ms p50 beyond the classifier, with or without tools bound; a
request with tools bound costs the router no more than one without; a refused connection
costs under 20 ms before the next expert is called.

    .venv/bin/python bench/overhead.py [--iterations 200] [--out bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import (  # bench/common.py (the script's folder is on sys.path)
    emit,
    free_port,
    percentile,
    summary,
)

from langchain_herd import Expert, HerdRouter
from langchain_herd.classifiers.registry import resolve_classifier
from langchain_herd.config import ExpertConfig, parse_config
from langchain_herd.experts import build_expert
from langchain_herd.local_servers import LocalHerd

QUESTION = (
    "Which of the following is the derivative of x^3 + 2x?\nA. 3x^2 + 2\nB. x^2 + 2\n"
    "C. 3x + 2\nD. x^3\nAnswer with the letter only."
)
TARGET_ROUTING_MS = 5.0
TARGET_REFUSED_MS = 20.0


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def expert(
    name: str, url: str, routes: list[str], protocol: str = "tgi", max_new_tokens: int = 4
) -> Expert:
    config = ExpertConfig(
        name=name,
        url=url,
        protocol=protocol,
        routes=routes,
        generation={"max_new_tokens": max_new_tokens},
        timeout_s=30,
    )  # type: ignore[arg-type]
    return build_expert(config)


def run(iterations: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    herd_config = parse_config(
        {
            "experts": [{"name": "live", "url": url}],
            "local_servers": [
                {"name": "bench-tiny", "model": "tiny", "port": port, "max_concurrent_requests": 64}
            ],
        }
    )
    classifier = resolve_classifier("bundled:mmlu-group-tfidf")
    labels = list(classifier.labels)
    no_breaker = {"breaker_threshold": 10**9}
    with LocalHerd(herd_config):
        live = expert("live", url, labels)
        direct_messages = live.prepare([("user", QUESTION)])  # type: ignore[list-item]
        router = HerdRouter([live], classifier, **no_breaker)
        dead = expert("dead", f"http://127.0.0.1:{free_port()}", labels)
        refused_router = HerdRouter([dead, expert("live", url, [])], classifier, **no_breaker)
        failing = expert("failing", url, labels)
        failing_router = HerdRouter([failing, expert("live", url, [])], classifier, **no_breaker)

        # Room for a whole tool call: one cut by max_tokens is TGI's 422 tool error.
        chat = expert("chat", url, labels, protocol="openai", max_new_tokens=48)
        chat_router = HerdRouter([chat], classifier, **no_breaker)
        chat_direct = chat.model
        tools_direct = chat.model.bind_tools([add], tool_choice="add")  # type: ignore[attr-defined]
        tools_routed = chat_router.bind_tools([add], tool_choice="add")

        for _ in range(10):  # warm connections, caches and the model
            live.model.invoke(direct_messages)
            router.invoke(QUESTION)
            chat_direct.invoke(direct_messages)
            tools_direct.invoke(direct_messages)
            chat_router.invoke(QUESTION)
            assert tools_routed.invoke(QUESTION).tool_calls, "the server must answer a tool call"
        direct, routed, refused, failed_503 = [], [], [], []
        refused_attempt, failed_attempt = [], []
        chat_d, chat_r, tools_d, tools_r = [], [], [], []
        total = iterations
        for index in range(total):
            direct.append(timed(lambda: live.model.invoke(direct_messages)))
            routed.append(timed(lambda: router.invoke(QUESTION)))
            chat_d.append(timed(lambda: chat_direct.invoke(direct_messages)))
            chat_r.append(timed(lambda: chat_router.invoke(QUESTION)))
            tools_d.append(timed(lambda: tools_direct.invoke(direct_messages)))
            tools_r.append(timed(lambda: tools_routed.invoke(QUESTION)))
            started = time.perf_counter()
            answer = refused_router.invoke(QUESTION)
            refused.append((time.perf_counter() - started) * 1000)
            refused_attempt.append(answer.response_metadata["herd"]["attempts"][0]["latency_ms"])
            httpx.post(f"{url}/_herd/faults", json={"fail_next": 1, "fail_status": 503})
            started = time.perf_counter()
            answer = failing_router.invoke(QUESTION)
            failed_503.append((time.perf_counter() - started) * 1000)
            attempts = answer.response_metadata["herd"]["attempts"]
            assert attempts[0]["status_code"] == 503, attempts
            failed_attempt.append(attempts[0]["latency_ms"])
            if (index + 1) % max(1, total // 10) == 0:
                print(f"  {index + 1}/{total} rounds", file=sys.stderr, flush=True)

    single = [timed(lambda: classifier.predict_proba([QUESTION])) for _ in range(500)]
    batch = [QUESTION] * 256
    batched = [timed(lambda: classifier.predict_proba(batch)) / len(batch) for _ in range(20)]
    direct_s, routed_s = summary(direct), summary(routed)
    classifier_p50 = percentile(single, 0.5)
    routing_added = routed_s["p50_ms"] - direct_s["p50_ms"] - classifier_p50
    chat_added = percentile(chat_r, 0.5) - percentile(chat_d, 0.5) - classifier_p50
    tools_added = percentile(tools_r, 0.5) - percentile(tools_d, 0.5) - classifier_p50
    return {
        "chat_model": {
            "direct": summary(chat_d),
            "router": summary(chat_r),
            "direct_tools": summary(tools_d),
            "router_tools": summary(tools_r),
            "added_beyond_classifier_p50_ms": chat_added,
            "added_with_tools_beyond_classifier_p50_ms": tools_added,
        },
        "iterations": iterations,
        "direct": direct_s,
        "router": routed_s,
        "router_over_direct_p50": routed_s["p50_ms"] / direct_s["p50_ms"],
        "classifier_single": summary(single),
        "classifier_batched_per_query_ms": statistics.median(batched),
        "routing_added_beyond_classifier_p50_ms": routing_added,
        "fallback_refused": {
            **summary(refused),
            "failed_attempt_p50_ms": percentile(refused_attempt, 0.5),
            "added_p50_ms": percentile(refused, 0.5) - routed_s["p50_ms"],
        },
        "fallback_503": {
            **summary(failed_503),
            "failed_attempt_p50_ms": percentile(failed_attempt, 0.5),
            "added_p50_ms": percentile(failed_503, 0.5) - routed_s["p50_ms"],
        },
        "targets": {
            "routing_added_under_5ms": routing_added < TARGET_ROUTING_MS,
            "chat_model_added_under_5ms": chat_added < TARGET_ROUTING_MS,
            "chat_model_tools_added_under_5ms": tools_added < TARGET_ROUTING_MS,
            # "no more": within 1 ms of the plain request's overhead (timer and noise).
            "tools_cost_no_more": tools_added <= chat_added + 1.0,
            "refused_attempt_under_20ms": percentile(refused_attempt, 0.5) < TARGET_REFUSED_MS,
        },
    }


def print_table(results: dict[str, Any]) -> None:
    rows = [
        ("expert called directly", results["direct"]),
        ("through HerdRouter", results["router"]),
        ("fallback after refused connection", results["fallback_refused"]),
        ("fallback after HTTP 503", results["fallback_503"]),
    ]
    chat = results["chat_model"]
    rows += [
        ("OpenAI route, chat model directly", chat["direct"]),
        ("OpenAI route, through the herd", chat["router"]),
        ("tools bound, chat model directly", chat["direct_tools"]),
        ("tools bound, through the herd", chat["router_tools"]),
    ]
    print(f"{'path':<36} {'p50 ms':>9} {'p95 ms':>9}")
    for label, stats in rows:
        print(f"{label:<36} {stats['p50_ms']:>9.2f} {stats['p95_ms']:>9.2f}")
    single = results["classifier_single"]
    print(f"{'classifier, one query':<36} {single['p50_ms']:>9.3f} {single['p95_ms']:>9.3f}")
    print(
        f"{'classifier, batched (per query)':<36} "
        f"{results['classifier_batched_per_query_ms']:>9.3f}"
    )
    print()
    print(f"router / direct (p50):                 {results['router_over_direct_p50']:.3f}")
    print(
        f"routing added beyond classifier (p50): "
        f"{results['routing_added_beyond_classifier_p50_ms']:.2f} ms (target < 5)"
    )
    print(
        f"chat model, added beyond classifier:   "
        f"{chat['added_beyond_classifier_p50_ms']:.2f} ms p50 without tools, "
        f"{chat['added_with_tools_beyond_classifier_p50_ms']:.2f} ms with tools (target < 5)"
    )
    print(
        f"refused attempt before next expert:    "
        f"{results['fallback_refused']['failed_attempt_p50_ms']:.2f} ms p50 (target < 20); "
        f"end to end +{results['fallback_refused']['added_p50_ms']:.2f} ms"
    )
    print(
        f"503 attempt before next expert:        "
        f"{results['fallback_503']['failed_attempt_p50_ms']:.2f} ms p50; "
        f"end to end +{results['fallback_503']['added_p50_ms']:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.iterations)
    print_table(results)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
