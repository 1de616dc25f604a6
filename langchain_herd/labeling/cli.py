"""``herd label``: build a router's ground truth by running a dataset through every expert.

Usage::

    herd label CONFIG DATASET --out DIR [--resume] [--limit N] [--concurrency N]
               [--judge EXPERT_NAME]

(also ``python -m langchain_herd.labeling.cli ...``). The config's ``local_servers`` are
started first when it lists any. Exit status: 0 done; 1 the run failed (a local server did
not start, the disk); 2 bad arguments, config, dataset or output folder; 130 interrupted
(resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from langchain_herd.config import HerdConfig, load_config
from langchain_herd.errors import ConfigError, HerdError
from langchain_herd.labeling.datasets import LabelDataset, load_dataset
from langchain_herd.labeling.errors import DatasetError, OutputDirError, ResumeMismatchError
from langchain_herd.labeling.runner import LabelResult, label_dataset

__all__ = ["build_parser", "label_main"]

_USAGE_ERRORS = (ConfigError, DatasetError, OutputDirError, ResumeMismatchError)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``herd label``."""
    parser = argparse.ArgumentParser(
        prog="herd label",
        description=(
            "Run every question of DATASET through every expert of the herd in CONFIG and "
            "write the correctness table (router ground truth) and the answers table (what "
            "each expert answered) to --out."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="herd config YAML")
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help="MMLU or correctness-table .parquet, or .jsonl of {id, prompt, reference?}",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out (finished work is kept)"
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N questions")
    parser.add_argument(
        "--concurrency", type=int, default=2, metavar="N", help="calls in flight per expert"
    )
    parser.add_argument(
        "--judge",
        default=None,
        metavar="EXPERT_NAME",
        help="expert of the config that judges open-ended answers (and is checked on "
        "multiple-choice ones)",
    )
    parser.add_argument(
        "--judge-retries",
        type=int,
        default=2,
        metavar="N",
        help="re-asks after an unreadable verdict (default 2)",
    )
    parser.add_argument(
        "--format",
        choices=["auto", "mmlu", "correctness", "jsonl"],
        default="auto",
        help="dataset shape (default: from the extension and columns)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _waiting(name: str, waited: float) -> None:
    if int(waited * 2) % 20 == 0:
        print(f"  waiting for local server {name!r} ({waited:.0f}s)...", file=sys.stderr)


def _judge_for(config: HerdConfig, name: str | None) -> tuple[Any, str | None, float | None]:
    if name is None:
        return None, None, None
    from langchain_herd.experts import build_chat_model

    expert = config.expert(name)  # ConfigError naming the known experts
    # Its chat model only: the expert's system prompt is about answering, not judging.
    # Its endpoint and model are in run.json with the other experts; the name suffices here.
    model = build_chat_model(expert, config.token_for(name))
    return model, f"expert:{name}", expert.timeout_s


def _summary(result: LabelResult, questions: int) -> str:
    lines = [
        f"labeled {questions} questions x {len(result.experts)} experts -> {result.table_path}"
    ]
    width = max(len("expert"), *(len(name) for name in result.experts))
    lines.append(f"  {'expert':<{width}}  labeled  null  accuracy")
    accuracy = result.accuracy()
    for name in result.experts:
        column = result.table[name]
        share = accuracy[name]
        shown = f"{share:.3f}" if share is not None else "-"
        lines.append(
            f"  {name:<{width}}  {int(column.notna().sum()):>7}  "
            f"{int(column.isna().sum()):>4}  {shown:>8}"
        )
    lines.append(
        f"calls this run: {result.calls} ({result.failed} failed), reused: {result.reused}, "
        f"judge verdicts asked: {result.judge_questions} "
        f"({result.judge_unparseable} unreadable after retries)"
    )
    lines.append(f"answers table: {result.answers_path}")
    lines.append(f"raw log: {result.raw_path}")
    report = result.judge_report
    if report is not None:
        overall = report["overall"]
        kappa = overall["kappa"]
        lines.append(
            f"judge vs exact match: agreement {overall['accuracy']}, kappa "
            f"{'undefined' if kappa is None else f'{kappa:.3f}'} (n={overall['n']}, "
            f"unparseable {report['judge_unparseable']})"
        )
    return "\n".join(lines)


async def _run(config: HerdConfig, dataset: LabelDataset, args: argparse.Namespace) -> LabelResult:
    judge, judge_id, judge_timeout_s = _judge_for(config, args.judge)
    return await label_dataset(
        config,
        dataset,
        args.out,
        concurrency_per_expert=args.concurrency,
        resume=args.resume,
        judge=judge,
        judge_id=judge_id,
        judge_timeout_s=judge_timeout_s,
        judge_retries=args.judge_retries,
        limit=args.limit,
        progress=not args.quiet,
    )


def label_main(argv: list[str] | None = None) -> int:
    """Run ``herd label`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be at least 0")
    if args.judge_retries < 0:
        parser.error("--judge-retries must be at least 0")
    try:
        config = load_config(args.config)
        dataset = load_dataset(args.dataset, format=args.format)
        if args.judge is not None:
            config.expert(args.judge)  # fail before starting servers: ConfigError naming them
        if config.local_servers:
            from langchain_herd.local_servers import LocalHerd

            with LocalHerd(config, on_wait=_waiting):
                result = asyncio.run(_run(config, dataset, args))
        else:
            result = asyncio.run(_run(config, dataset, args))
    except _USAGE_ERRORS as exc:
        print(f"herd label: {exc}", file=sys.stderr)
        return 2
    except HerdError as exc:
        print(f"herd label: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"herd label: interrupted; finished results are in {args.out}/raw.jsonl, "
            "continue with --resume",
            file=sys.stderr,
        )
        return 130
    questions = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    print(_summary(result, questions))
    return 0


if __name__ == "__main__":
    sys.exit(label_main())
