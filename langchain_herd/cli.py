"""The ``herd`` command: serve, up, route, demo, label, train, eval and calibrate.

CONFIG is a herd config YAML file or ``bundled:<name>``, one shipped with the package
(``bundled:local``: the embedded default herd of local SmolLM2 experts).

- ``herd serve``: one local TGI-protocol server (see ``python -m langchain_herd.server -h``).
- ``herd serve-router CONFIG``: the herd as one OpenAI-compatible HTTP endpoint
  (``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/metrics``).
- ``herd up CONFIG``: start the config's local servers, wait for health, keep them up.
- ``herd route CONFIG "question"``: print the decision and the answer.
- ``herd check CONFIG``: probe every expert's endpoint and report unreachable servers and
  model, adapter and context-limit mismatches with the config (exit 1 on any problem).
- ``herd compose CONFIG [-o FILE] [--kubernetes] [--replicas N]``: a docker-compose file (or
  Kubernetes manifests) for the config's ``deploy`` servers, the router and Redis.
- ``herd demo``: start the embedded local herd, route a sample of MMLU questions, and print
  a table and a summary. ``herd demo --replay``: a REPLAY of six real models' recorded
  MMLU-Pro answers, served by the local replay server: routed, voted and cascaded.
- ``herd label CONFIG DATASET --out DIR``: run a dataset through every expert and score
  the answers into a correctness table (router ground truth).
- ``herd train TABLE --mode correctness|category --backend tfidf|embedding|finetune``:
  train a router classifier.
- ``herd eval TABLE --out DIR``: compare routers and baselines on held-out questions
  (accuracy, cost, oracle gap, PGR/APGR/CPT, AIQ, ECE; JSON, Markdown and plots).
- ``herd finetune-expert BASE DATA --out DIR``: train a subject expert, a LoRA adapter on
  one group's questions (``skills:stem``), for ``herd serve --lora-adapters``.
- ``herd swarm CONFIG --utility DATASET --out DIR``: Model Swarms, a particle swarm search over
  the herd's LoRA adapters scored on development questions; writes the best as a new expert.
- ``herd compare-experts CONFIG --out DIR``: the base model, each subject adapter, the router
  over them, merges and the swarm's best on the same held-out questions, with intervals.
- ``herd calibrate ARTIFACT TABLE --policy threshold|margin --expert NAME``: pick the
  policy's value on labelled questions and store it in the artifact.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from langchain_herd.config import BUNDLED_PREFIX, HerdConfig, bundled_configs, load_config
from langchain_herd.decision import RouteDecision
from langchain_herd.errors import HerdError

#: The embedded default herd, shipped in the package so ``herd demo`` runs from any folder.
DEFAULT_CONFIG = "bundled:local"


def _config_help() -> str:
    bundled = ", ".join(BUNDLED_PREFIX + name for name in bundled_configs())
    return f"herd config: a YAML file, or one shipped with the package ({bundled})"


def _waiting(name: str, waited: float) -> None:
    # Model loads take seconds (tens of seconds the first time SmolLM2 is converted).
    if int(waited * 2) % 20 == 0:
        print(
            f"  waiting for local server {name!r} ({waited:.0f}s)...", file=sys.stderr, flush=True
        )


def cmd_serve(argv: list[str]) -> int:
    from langchain_herd.server.__main__ import serve_main

    return serve_main(argv)


def cmd_serve_router(argv: list[str]) -> int:
    from langchain_herd.endpoint.cli import serve_router_main

    return serve_router_main(argv)


def cmd_label(argv: list[str]) -> int:
    from langchain_herd.labeling.cli import label_main

    return label_main(argv)


def cmd_compose(argv: list[str]) -> int:
    from langchain_herd.deploy.cli import compose_main

    return compose_main(argv)


def cmd_compare_experts(argv: list[str]) -> int:
    from langchain_herd.expert_comparison.cli import compare_experts_main

    return compare_experts_main(argv)


def cmd_merge(argv: list[str]) -> int:
    from langchain_herd.merging.cli import merge_main

    return merge_main(argv)


def cmd_swarm(argv: list[str]) -> int:
    from langchain_herd.swarm.cli import swarm_main

    return swarm_main(argv)


def cmd_finetune_expert(argv: list[str]) -> int:
    from langchain_herd.expert_training.cli import finetune_main

    return finetune_main(argv)


def cmd_eval(argv: list[str]) -> int:
    from langchain_herd.evaluation.cli import eval_main

    return eval_main(argv)


def cmd_train(argv: list[str]) -> int:
    from langchain_herd.training.cli import train_main

    return train_main(argv)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from langchain_herd.calibration import calibrate_artifact

    result = calibrate_artifact(
        args.artifact,
        args.table,
        policy=args.policy,
        expert=args.expert,
        objective=args.objective,
        target_share=args.target_share,
        split=args.split,
        seed=args.seed,
        write=not args.dry_run,
    )
    subject = "strong expert" if result.policy == "threshold" else "calls leaving the default"
    print(
        f"{result.policy} = {result.value:g} ({result.objective}"
        f"{f', target share {result.target_share:g}' if result.target_share is not None else ''})"
    )
    print(
        f"on {result.n_questions} {args.split} questions: accuracy {result.accuracy:.4f}, "
        f"share of {subject} {result.share:.4f} (expert {result.expert})"
    )
    print("not written (--dry-run)" if args.dry_run else f"written to {args.artifact}/config.json")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from langchain_herd.local_servers import LocalHerd

    config = load_config(args.config, resolve_secrets=False)
    if not config.local_servers:
        print(f"{args.config}: lists no local_servers; nothing to start", file=sys.stderr)
        return 1
    herd = LocalHerd(config, startup_timeout_s=args.timeout, on_wait=_waiting)
    with herd:
        for name, url in herd.urls.items():
            state = "already running" if name in herd.reused else "started"
            print(f"{name}: {url} ({state}; log {herd.log_path(name)})", flush=True)
        print("herd is up; Ctrl-C to stop", flush=True)
        stop = False

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def _print_decision(decision: RouteDecision) -> None:
    scores = ", ".join(
        f"{label}={score:.3f}"
        for label, score in sorted(decision.scores.items(), key=lambda item: -item[1])
    )
    print(f"scores:   {scores}")
    print(
        f"ranking:  {' > '.join(decision.ranking)} (policy {decision.policy}, "
        f"classified in {decision.classify_ms:.2f} ms)"
    )
    for name, reason in decision.skipped.items():
        print(f"skipped:  {name}: {reason}")
    for attempt in decision.attempts:
        outcome = "ok" if attempt.ok else f"{attempt.failure}: {attempt.error}"
        print(f"attempt:  {attempt.expert} {attempt.latency_ms:.0f} ms {outcome}")


def cmd_route(args: argparse.Namespace) -> int:
    from langchain_herd.chat_models import HerdRouter
    from langchain_herd.local_servers import LocalHerd

    config = load_config(args.config)
    router = HerdRouter.from_config(config)
    if args.decision_only:
        _print_decision(router.route(args.question))
        return 0
    with LocalHerd(config, on_wait=_waiting) if config.local_servers else _nullcontext():
        answer, decision = router.invoke_with_decision(args.question)
    if args.json:
        print(json.dumps({"answer": answer.text, "decision": decision.metadata()}, indent=2))
        return 0
    _print_decision(decision)
    print(f"expert:   {decision.answered_by}")
    print(f"answer:   {answer.text.strip()}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from langchain_herd.check import check_config

    report = check_config(load_config(args.config), timeout_s=args.timeout)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    return 0 if report.ok else 1


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _route_groups(config: HerdConfig) -> dict[str, set[str]]:
    return {expert.name: set(expert.routes) for expert in config.experts}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_demo(config_path: str, n: int, seed: int, out: Path | None) -> dict[str, Any]:
    """Route ``n`` MMLU test questions through the local herd; return the summary."""
    from tqdm import tqdm

    from langchain_herd.chat_models import HerdRouter
    from langchain_herd.local_servers import LocalHerd
    from langchain_herd.mmlu import extract_letter, format_question, load_mmlu, sample_questions

    config = load_config(config_path)
    questions = load_mmlu()
    sample = sample_questions(questions[questions["split"] == "test"], n, seed)
    groups_of = _route_groups(config)
    rows: list[dict[str, Any]] = []
    print(
        f"starting the local herd from {config_path} (first run converts SmolLM2, ~1 min)",
        file=sys.stderr,
        flush=True,
    )
    with LocalHerd(config, on_wait=_waiting):
        router = HerdRouter.from_config(config)
        for record in tqdm(
            sample.to_dict("records"), desc="routing MMLU", unit="q", file=sys.stderr
        ):
            prompt = format_question(
                record["question"], [record["A"], record["B"], record["C"], record["D"]]
            )
            started = time.perf_counter()
            try:
                answer, decision = router.invoke_with_decision(prompt)
                text, error = answer.text.strip(), None
            except HerdError as exc:
                decision, text, error = router.route(prompt), "", str(exc)
            latency = (time.perf_counter() - started) * 1000
            letter = extract_letter(text)
            rows.append(
                {
                    "id": record["id"],
                    "question": record["question"],
                    "group": record["group"],
                    "chosen": decision.chosen,
                    "answered_by": decision.answered_by,
                    "scores": decision.scores,
                    "answer": text,
                    "letter": letter,
                    "gold": record["answer"],
                    "correct": letter == record["answer"],
                    "routed_right": record["group"] in groups_of.get(decision.chosen or "", set()),
                    "fallbacks": max(0, len(decision.attempts) - 1),
                    "latency_ms": latency,
                    "error": error,
                }
            )
    summary = _summarise(rows)
    _print_table(rows)
    _print_summary(summary)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2, default=str))
        print(f"wrote {out}")
    return summary


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [row["latency_ms"] for row in rows]
    per_expert: dict[str, int] = {}
    for row in rows:
        key = row["answered_by"] or "(failed)"
        per_expert[key] = per_expert.get(key, 0) + 1
    return {
        "questions": len(rows),
        "routing_accuracy": statistics.fmean(r["routed_right"] for r in rows) if rows else 0.0,
        "answer_accuracy": statistics.fmean(r["correct"] for r in rows) if rows else 0.0,
        "unparsed_answers": sum(r["letter"] is None for r in rows),
        "failed_requests": sum(r["error"] is not None for r in rows),
        "fallbacks": sum(r["fallbacks"] for r in rows),
        "latency_ms_p50": _percentile(latencies, 0.5),
        "latency_ms_p95": _percentile(latencies, 0.95),
        "answered_by": per_expert,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'question':<46} {'group':<15} {'expert':<15} {'top score':>9} {'answer':<14} ok"
    print(header)
    print("-" * len(header))
    for row in rows:
        question = row["question"].replace("\n", " ")
        question = question[:43] + "..." if len(question) > 46 else question
        top = max(row["scores"].values()) if row["scores"] else float("nan")
        answer = row["answer"].replace("\n", " ")[:14]
        mark = "yes" if row["correct"] else "no"
        print(
            f"{question:<46} {row['group']:<15} {row['answered_by'] or '-':<15} "
            f"{top:>9.3f} {answer:<14} {mark}"
        )


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"questions:          {summary['questions']}")
    print(
        f"routing accuracy:   {summary['routing_accuracy']:.3f} "
        f"(chosen expert serves the question's MMLU group)"
    )
    print(
        f"answer accuracy:    {summary['answer_accuracy']:.3f} "
        f"(4 choices: chance is 0.25; unparsed answers: {summary['unparsed_answers']})"
    )
    print(
        f"failed requests:    {summary['failed_requests']} (fallbacks used: {summary['fallbacks']})"
    )
    print(
        f"latency:            p50 {summary['latency_ms_p50']:.0f} ms, "
        f"p95 {summary['latency_ms_p95']:.0f} ms"
    )
    print(f"answered by:        {summary['answered_by']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="run one local TGI-protocol server (args: see --help)", add_help=False
    )
    sub.add_parser(
        "serve-router",
        help="serve the herd as an OpenAI-compatible endpoint (args: see --help)",
        add_help=False,
    )
    sub.add_parser(
        "label", help="label a dataset with every expert (args: see --help)", add_help=False
    )
    sub.add_parser("train", help="train a router classifier (args: see --help)", add_help=False)
    sub.add_parser(
        "eval", help="compare routers and baselines on held-out questions", add_help=False
    )
    sub.add_parser(
        "compose",
        help="write docker-compose or Kubernetes files for the config's servers (args: --help)",
        add_help=False,
    )
    sub.add_parser(
        "merge",
        help="merge experts (LoRA adapters or models): linear, ties, dare, slerp (args: --help)",
        add_help=False,
    )
    sub.add_parser(
        "swarm",
        help="Model Swarms: particle swarm search over the herd's LoRA adapters (--help)",
        add_help=False,
    )
    sub.add_parser(
        "compare-experts",
        help="base, subject adapters, router, merges and swarm on held-out questions (--help)",
        add_help=False,
    )
    sub.add_parser(
        "finetune-expert",
        help="train a subject expert: a LoRA adapter on a question set (args: --help)",
        add_help=False,
    )
    calibrate = sub.add_parser("calibrate", help="calibrate a policy value into an artifact")
    calibrate.add_argument("artifact", help="classifier directory (a correctness router)")
    calibrate.add_argument("table", help="correctness table (parquet)")
    calibrate.add_argument("--policy", choices=["threshold", "margin"], required=True)
    calibrate.add_argument(
        "--expert", required=True, help="strong expert (threshold) or default expert (margin)"
    )
    calibrate.add_argument("--objective", choices=["accuracy", "share"], default="accuracy")
    calibrate.add_argument(
        "--target-share",
        type=float,
        default=None,
        help="for --objective share: wanted share of calls",
    )
    calibrate.add_argument(
        "--split",
        choices=["validation", "train", "test", "all"],
        default="validation",
        help="which questions (default: a seeded validation share of the training rows)",
    )
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--dry-run", action="store_true", help="print, do not write")
    up = sub.add_parser("up", help="start a config's local servers and wait for health")
    up.add_argument("config", metavar="CONFIG", help=_config_help())
    up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for health")
    route = sub.add_parser("route", help="route one question and print decision and answer")
    route.add_argument("config", metavar="CONFIG", help=_config_help())
    route.add_argument("question")
    route.add_argument("--json", action="store_true", help="print JSON")
    route.add_argument(
        "--decision-only", action="store_true", help="classify and rank without calling an expert"
    )
    check = sub.add_parser(
        "check", help="check every expert's endpoint against the config (exit 1 on problems)"
    )
    check.add_argument("config", metavar="CONFIG", help=_config_help())
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per probe request")
    demo = sub.add_parser("demo", help="route a sample of MMLU through the local herd")
    demo.add_argument(
        "--config",
        metavar="CONFIG",
        default=DEFAULT_CONFIG,
        help=f"{_config_help()}; default {DEFAULT_CONFIG}",
    )
    demo.add_argument(
        "-n", "--questions", type=int, default=None, help="questions (default 24; --replay 200)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="write rows and summary as JSON")
    replay = demo.add_argument_group("replay (recorded answers of real models; no model runs)")
    replay.add_argument(
        "--replay",
        action="store_true",
        help="REPLAY a herd of six real models (Llama-3.1 8B/70B Instruct, Mistral, Qwen, gemma, "
        "Phi-3) from their recorded MMLU-Pro answers: train a router, a cascade and a learned "
        "vote, then route, vote and cascade held-out questions over HTTP",
    )
    replay.add_argument(
        "--budget",
        type=float,
        default=0.6,
        help="cost budget per query of the cost policy and the cascade, as a share of the "
        "strong model's cost (default 0.6)",
    )
    replay.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the trained router, scorers and herd configs here",
    )
    replay.add_argument(
        "--max-train-rows",
        type=int,
        default=None,
        help="train on at most this many training questions (quicker; default all)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded = {
        "serve": cmd_serve,
        "serve-router": cmd_serve_router,
        "label": cmd_label,
        "train": cmd_train,
        "eval": cmd_eval,
        "compose": cmd_compose,
        "merge": cmd_merge,
        "swarm": cmd_swarm,
        "compare-experts": cmd_compare_experts,
        "finetune-expert": cmd_finetune_expert,
    }
    if argv and argv[0] in forwarded:
        return forwarded[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "route":
            return cmd_route(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "calibrate":
            return cmd_calibrate(args)
        if args.replay:
            from langchain_herd.replay_demo import run_replay_demo

            run_replay_demo(
                args.questions or 200,
                args.seed,
                args.out,
                budget_share=args.budget,
                workdir=args.workdir,
                max_train_rows=args.max_train_rows,
            )
            return 0
        run_demo(args.config, args.questions or 24, args.seed, args.out)
        return 0
    except HerdError as exc:
        print(f"herd: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
