"""``herd eval``: compare routers and baselines on a correctness table's held-out questions."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from langchain_herd.errors import HerdError
from langchain_herd.evaluation.ensembles import ENSEMBLES
from langchain_herd.evaluation.routers import ROUTERS
from langchain_herd.training.progress import PrintProgress

__all__ = ["build_parser", "eval_main", "run_eval"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``herd eval``."""
    parser = argparse.ArgumentParser(
        prog="herd eval",
        description=(
            "Evaluate routers and baselines on a correctness table (one row per question, one "
            "0/1 column per model) on held-out questions, over several seeds. Writes "
            "report.json (every figure), report.md and PNG plots to --out."
        ),
        epilog="routers: "
        + ", ".join(f"{n} ({s.family})" for n, s in ROUTERS.items())
        + "; with --predictions also: "
        + ", ".join(f"{n} ({s.family})" for n, s in ENSEMBLES.items()),
    )
    parser.add_argument("table", help="correctness table (.parquet, .csv or .jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument(
        "--test-share", type=float, default=0.2, help="held-out share without a split column"
    )
    parser.add_argument(
        "--ignore-split-column",
        action="store_true",
        help="seeded random splits even if the table has a split column",
    )
    herd = parser.add_argument_group("which questions and models")
    herd.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=PATTERN",
        help="keep rows whose COLUMN matches PATTERN (wildcards * ?), e.g. source=ori_mmlu-*",
    )
    herd.add_argument(
        "--models",
        action="append",
        default=None,
        help="the herd: model columns (comma-separated or repeated; default: all)",
    )
    herd.add_argument(
        "--costs", type=Path, default=None, help="per-model costs (models.json shape)"
    )
    herd.add_argument(
        "--max-cost",
        type=float,
        default=None,
        help="herd = models with a known cost up to this (e.g. 72.5 for open models <= 72B)",
    )
    herd.add_argument("--reference", default=None, help="a model to compare with, not routed to")
    herd.add_argument(
        "--pair",
        nargs=2,
        metavar=("STRONG", "WEAK"),
        default=None,
        help="strong/weak evaluation: herd = these two; adds PGR, APGR, CPT",
    )
    herd.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="each model's chosen letter per question (same ids), for majority vote",
    )
    routing = parser.add_argument_group("routers")
    routing.add_argument(
        "--routers",
        default=None,
        help="comma-separated router names (default: all the table supports, but fine-tuning)",
    )
    routing.add_argument(
        "--with-finetune",
        action="store_true",
        help="also run the fine-tuning routers (slow on a CPU; fast on a GPU)",
    )
    routing.add_argument("--encoder", default=None, help="sentence encoder folder (MiniLM)")
    routing.add_argument("--finetune-epochs", type=float, default=None)
    routing.add_argument(
        "--finetune-max-train-rows",
        type=int,
        default=None,
        help="fine-tune on a seeded sample of at most this many training rows",
    )
    routing.add_argument(
        "--finetune-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a FinetuneParams setting for the fine-tuning routers, e.g. max_length=256",
    )
    ensembles = parser.add_argument_group("cascades and votes (with --predictions)")
    ensembles.add_argument(
        "--helpers",
        default="auto",
        help="a cascade's helpers: auto (chosen out-of-fold on each split's training rows "
        "among the table's models cheaper than the strong one), none, or NAME,NAME",
    )
    ensembles.add_argument(
        "--max-helpers", type=int, default=2, help="at most this many helpers with auto"
    )
    ensembles.add_argument(
        "--max-tier-share",
        type=float,
        default=0.5,
        help="auto helpers keep the first tier (weak + helpers) at most this share of the "
        "strong model's cost (0 or less: no cap)",
    )
    ensembles.add_argument(
        "--keep",
        choices=("auto", "first", "vote"),
        default="auto",
        help="what a cascade's first tier keeps: the weak model's answer, the tier's majority "
        "vote, or auto (the better out-of-fold)",
    )
    ensembles.add_argument(
        "--helper-objective",
        choices=("frontier", "apgr"),
        default="frontier",
        help="what auto helpers maximise: frontier (accuracy over average costs from the weak "
        "to the strong model's, every call paid) or apgr (RouteLLM's, helper calls free)",
    )
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def run_eval(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the evaluation ``args`` describe and write the report files; return the report."""
    from langchain_herd.evaluation.data import load_eval_data, parse_where
    from langchain_herd.evaluation.ensembles import EnsembleOptions
    from langchain_herd.evaluation.report import markdown_report, write_plots
    from langchain_herd.evaluation.run import EvalOptions, evaluate

    if args.seeds < 1:
        raise HerdError(f"--seeds must be at least 1, got {args.seeds}")
    models = (
        [m.strip() for chunk in args.models for m in chunk.split(",") if m.strip()]
        if args.models
        else None
    )
    if args.pair and models:
        raise HerdError("give the herd either as --models or as --pair STRONG WEAK, not both")
    progress = None if args.quiet else PrintProgress()
    data = load_eval_data(
        args.table,
        models=list(args.pair) if args.pair else models,
        where=parse_where(args.where),
        costs_path=args.costs,
        max_cost=args.max_cost,
        reference=args.reference,
        predictions_path=args.predictions,
    )
    finetune: dict[str, Any] = {}
    if args.finetune_epochs is not None:
        finetune["epochs"] = args.finetune_epochs
    if args.finetune_max_train_rows is not None:
        finetune["max_train_rows"] = args.finetune_max_train_rows
    if args.encoder:
        finetune["model"] = args.encoder
    for item in args.finetune_param:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HerdError(f"--finetune-param wants KEY=VALUE, got {item!r}")
        try:
            finetune[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            finetune[key.strip()] = raw
    if args.max_helpers < 0:
        raise HerdError(f"--max-helpers must be >= 0, got {args.max_helpers}")
    helpers_arg = args.helpers.strip()
    helpers = (
        None
        if helpers_arg == "auto"
        else []
        if helpers_arg in ("none", "")
        else [h.strip() for h in helpers_arg.split(",") if h.strip()]
    )
    options = EvalOptions(
        seeds=list(range(args.seeds)),
        test_share=args.test_share,
        use_split_column=False if args.ignore_split_column else None,
        routers=[r.strip() for r in args.routers.split(",") if r.strip()] if args.routers else None,
        include_slow=args.with_finetune,
        pair=tuple(args.pair) if args.pair else None,
        encoder=args.encoder,
        finetune=finetune,
        ensembles=EnsembleOptions(
            helpers=helpers,
            max_helpers=args.max_helpers,
            objective=args.helper_objective,
            max_tier_share=args.max_tier_share if args.max_tier_share > 0 else None,
            keep=args.keep,
        ),
    )
    report = evaluate(data, options, progress)
    report["command"] = command
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown_report(report, title=args.title), encoding="utf-8")
    write_plots(report, out)
    return report


def eval_main(argv: list[str] | None = None) -> int:
    """Run ``herd eval`` with ``argv`` (without the ``eval`` word); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = run_eval(args, "herd eval " + shlex.join(argv))
    except HerdError as exc:
        print(f"herd eval: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"herd eval: {exc}; install the evaluation extras: pip install "
            f"'langchain-herd[train,eval]'",
            file=sys.stderr,
        )
        return 2
    from langchain_herd.evaluation.report import markdown_report

    text = markdown_report(report)
    table = text.split("## Routers", 1)[1].split("## Models", 1)[0]
    print("## Routers" + table.rstrip())
    print(f"\nreport: {args.out / 'report.md'} (figures: report.json, plots: *.png)")
    return 0
