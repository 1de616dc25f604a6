"""``herd compare-experts CONFIG --out DIR``: base, adapters, router, merges, swarm side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from langchain_herd.errors import HerdError
from langchain_herd.expert_comparison.run import ComparisonSettings, compare_experts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herd compare-experts",
        description="Score the base model, each subject adapter, the router over them (the "
        "config's router), each merge and the swarm's best on the same held-out questions; "
        "write report.json, report.md, accuracy.png and swarm_utility.png to --out.",
    )
    parser.add_argument("config", help="herd config whose local server has lora_adapters")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument(
        "--questions",
        default="skills",
        help="comma-separated question sets (skills, mmlu, skills:stem+other) or question "
        "files; named sets give their test split, SET@N at most N per group (default skills)",
    )
    parser.add_argument("--per-group", type=int, default=None, help="test questions per group")
    parser.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a merged adapter (herd merge output); repeat for several",
    )
    parser.add_argument("--swarm", type=Path, default=None, help="a herd swarm --out folder")
    parser.add_argument("--server", default=None, help="the config's local server to read")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _merges(values: list[str]) -> dict[str, Path]:
    merges: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise HerdError(f"--merge {value!r}: expected NAME=DIR, e.g. ties=merges/ties")
        merges[name] = Path(folder)
    return merges


def compare_experts_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from langchain_herd.expert_comparison.report import write_report

        settings = ComparisonSettings(
            question_sets=tuple(s.strip() for s in args.questions.split(",") if s.strip()),
            per_group=args.per_group,
            seed=args.seed,
            batch_size=args.batch_size,
            bootstrap=args.bootstrap,
            merges=_merges(args.merge),
            swarm=args.swarm,
            server=args.server,
        )
        results = compare_experts(args.config, args.out, settings)
        command = "herd compare-experts " + shlex.join(argv)
        report = write_report(results, settings, args.out, command=command)
    except HerdError as exc:
        print(f"herd compare-experts: {exc}", file=sys.stderr)
        return 2
    for source, summary in report["question_sets"].items():
        rows = summary["contenders"]
        line = ", ".join(f"{name} {row['accuracy']:.3f}" for name, row in rows.items())
        print(f"{source} ({summary['questions']} questions): {line}")
    print(f"herd compare-experts: report in {args.out / 'report.md'}")
    return 0
