"""``herd train``: train a router classifier on a correctness table and print its report, or
(``--kind cascade|learned-vote``) a cascade or learned vote from a correctness table plus an
answers table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langchain_herd.errors import HerdError
from langchain_herd.training.progress import PrintProgress

__all__ = ["build_parser", "train_main"]

# Which backends each shortcut option applies to, and the setting it sets there.
_SHORTCUTS: dict[str, dict[str, str]] = {
    "encoder": {"embedding": "encoder", "finetune": "model"},
    "copy_encoder": {"embedding": "copy_encoder"},
    "max_length": {"embedding": "max_length", "finetune": "max_length"},
    "batch_size": {"embedding": "batch_size", "finetune": "batch_size"},
    "epochs": {"finetune": "epochs"},
    "head": {"embedding": "head"},
    "max_features": {"tfidf": "max_features"},
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``herd train``."""
    parser = argparse.ArgumentParser(
        prog="herd train",
        description=(
            "Train a router classifier on a correctness table (one row per question, one "
            "0/1 column per model), evaluate it on held-out questions, and save it as a "
            "folder of config.json + safetensors. With --kind cascade or learned-vote, fit "
            "an escalation cascade or a learned vote from the correctness table plus its "
            "answers table (--answers) and save it as one JSON file."
        ),
    )
    parser.add_argument("table", help="correctness table (.parquet, .csv or .jsonl)")
    parser.add_argument(
        "--kind",
        choices=["router", "cascade", "learned-vote"],
        default="router",
        help="router (default): a classifier (--mode, --backend); cascade or learned-vote: "
        "an ensemble scorer (--answers)",
    )
    parser.add_argument(
        "--mode",
        choices=["correctness", "category"],
        default=None,
        help="correctness: per model, P(answers right) (Herd); category: a route label "
        "(Hivemind); required for --kind router",
    )
    parser.add_argument(
        "--backend",
        choices=["tfidf", "embedding", "finetune"],
        default=None,
        help="required for --kind router",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="artifact directory (router) or JSON file (cascade, learned-vote)",
    )
    parser.add_argument("--label-column", default="group", help="label column (category mode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test-share", type=float, default=0.2, help="held-out share without a split column"
    )
    parser.add_argument(
        "--val-share", type=float, default=0.15, help="of the training rows, for tuning"
    )
    parser.add_argument(
        "--max-train-rows", type=int, default=None, help="train on a seeded sample of this size"
    )
    parser.add_argument(
        "--models",
        action="append",
        default=None,
        help="model columns to use (comma-separated or repeated; default: all)",
    )
    parser.add_argument(
        "--ignore-split-column",
        action="store_true",
        help="split at random (by id, with --seed) even if the table has a split column",
    )
    group = parser.add_argument_group("backend settings")
    group.add_argument("--encoder", default=None, help="encoder folder (embedding, finetune)")
    group.add_argument(
        "--copy-encoder", action="store_true", default=None, help="copy it into the artifact"
    )
    group.add_argument("--max-length", type=int, default=None, help="tokens per text")
    group.add_argument("--batch-size", type=int, default=None)
    group.add_argument("--epochs", type=float, default=None, help="finetune epochs")
    group.add_argument("--head", choices=["auto", "linear", "mlp"], default=None)
    group.add_argument("--max-features", type=int, default=None, help="tfidf vocabulary size")
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any backend setting (VALUE parsed as JSON when it can be), e.g. lr=3e-5",
    )
    _add_ensemble_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cascade and learned-vote (--kind cascade|learned-vote)")
    group.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="the answers table of TABLE (herd label's answers.parquet: per model, the letter "
        "or text it answered)",
    )
    group.add_argument("--weak", default=None, help="cascade: the first tier's main model")
    group.add_argument("--strong", default=None, help="cascade: the model escalated to")
    group.add_argument(
        "--helpers",
        action="append",
        default=None,
        help="cascade: fixed helpers called with the weak model (comma-separated or repeated); "
        "default: chosen out-of-fold among --candidates",
    )
    group.add_argument(
        "--candidates",
        action="append",
        default=None,
        help="cascade: models helpers are chosen from (default: every other model with a "
        "known cost below the strong model's)",
    )
    group.add_argument(
        "--max-helpers", type=int, default=2, help="cascade: most helpers chosen (default 2)"
    )
    group.add_argument(
        "--keep",
        choices=["auto", "first", "vote"],
        default="auto",
        help="cascade: the answer the first tier keeps: the weak model's, the tier's vote, or "
        "the better out-of-fold (default)",
    )
    group.add_argument(
        "--objective",
        choices=["auto", "frontier", "apgr"],
        default="auto",
        help="cascade: what helper choice maximises (auto: frontier with costs, apgr without)",
    )
    group.add_argument(
        "--costs", type=Path, default=None, help="cascade: per-model costs (models.json shape)"
    )
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        help="cascade: take each model's cost from this herd config's experts (same names)",
    )
    group.add_argument(
        "--members",
        action="append",
        default=None,
        help="learned-vote: the voters (comma-separated or repeated; default: every model)",
    )
    group.add_argument(
        "--text-router",
        type=Path,
        default=None,
        help="a correctness router artifact whose predicted correctness joins the features",
    )
    group.add_argument(
        "--text-scores",
        choices=["auto", "artifact", "refit"],
        default="auto",
        help="its scores as predicted, or refit out-of-fold with its settings (auto: refit "
        "when it was trained on TABLE)",
    )
    group.add_argument(
        "--rows",
        choices=["all", "train"],
        default="all",
        help="fit on all rows (default) or on the training side of the split (--seed, "
        "--test-share, --ignore-split-column), leaving held-out rows for herd eval",
    )


def _names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [m.strip() for chunk in values for m in chunk.split(",") if m.strip()]


_ROUTER_ONLY = ("mode", "backend", "models", "max_train_rows", *_SHORTCUTS)
_ENSEMBLE_ONLY = {
    "answers": None,
    "weak": None,
    "strong": None,
    "helpers": None,
    "candidates": None,
    "max_helpers": 2,
    "keep": "auto",
    "objective": "auto",
    "costs": None,
    "config": None,
    "members": None,
    "text_router": None,
    "text_scores": "auto",
    "rows": "all",
}
_CASCADE_ONLY = ("weak", "strong", "helpers", "candidates", "max_helpers", "keep", "objective")


def _check_kind_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Options of one kind are refused with another: a silently ignored flag misleads."""

    def flag(option: str) -> str:
        return "--" + option.replace("_", "-")

    if args.kind == "router":
        missing = [flag(o) for o in ("mode", "backend") if getattr(args, o) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        given = [flag(o) for o, default in _ENSEMBLE_ONLY.items() if getattr(args, o) != default]
        if given:
            parser.error(f"{', '.join(given)} apply to --kind cascade or learned-vote")
        return
    given = [flag(o) for o in _ROUTER_ONLY if getattr(args, o) not in (None, False)]
    given += ["--param"] if args.param else []
    given += ["--val-share"] if args.val_share != 0.15 else []
    if given:
        parser.error(f"{', '.join(given)} apply to --kind router, not {args.kind}")
    if args.answers is None:
        parser.error(f"--kind {args.kind} needs --answers (the answers table of TABLE)")
    if args.kind == "cascade":
        missing = [flag(o) for o in ("weak", "strong") if getattr(args, o) is None]
        if missing:
            parser.error(f"--kind cascade needs {' and '.join(missing)}")
        if args.members is not None:
            parser.error("--members applies to --kind learned-vote (a cascade has tiers)")
        if args.costs is not None and args.config is not None:
            parser.error("give the costs once: --costs or --config, not both")
    else:
        given = [flag(o) for o in _CASCADE_ONLY if getattr(args, o) != _ENSEMBLE_ONLY[o]]
        given += [flag(o) for o in ("costs", "config") if getattr(args, o) is not None]
        if given:
            parser.error(f"{', '.join(given)} apply to --kind cascade, not learned-vote")


def _costs(args: argparse.Namespace, table: Path) -> tuple[dict[str, float | None] | None, str]:
    if args.costs is not None:
        from langchain_herd.evaluation.data import load_costs

        return load_costs(args.costs, table), str(args.costs)
    if args.config is not None:
        from langchain_herd.config import load_config

        config = load_config(args.config)
        return {e.name: e.cost for e in config.experts}, f"experts' cost in {args.config}"
    return None, "one per call"


def _train_ensemble(args: argparse.Namespace) -> int:
    from langchain_herd.training.ensemble import train_cascade, train_learned_vote

    progress = None if args.quiet else PrintProgress()
    common: dict[str, Any] = {
        "out": args.out,
        "text_router": args.text_router,
        "text_scores": args.text_scores,
        "rows": args.rows,
        "seed": args.seed,
        "test_share": args.test_share,
        "use_split_column": False if args.ignore_split_column else None,
        "progress": progress,
    }
    table = Path(args.table)
    try:
        if args.kind == "cascade":
            costs, source = _costs(args, table)
            result = train_cascade(
                table,
                args.answers,
                weak=args.weak,
                strong=args.strong,
                helpers=_names(args.helpers),
                candidates=_names(args.candidates),
                max_helpers=args.max_helpers,
                keep=args.keep,
                costs=costs,
                costs_source=source,
                objective=args.objective,
                **common,
            )
        else:
            result = train_learned_vote(table, args.answers, members=_names(args.members), **common)
    except HerdError as exc:
        print(f"herd train: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"herd train: {exc}; install the training extras: pip install 'langchain-herd[train]'",
            file=sys.stderr,
        )
        return 2
    print(result.report())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def _params(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for option, targets in _SHORTCUTS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if args.backend not in targets:
            flag = "--" + option.replace("_", "-")
            parser.error(
                f"{flag} does not apply to --backend {args.backend} "
                f"(it applies to {', '.join(targets)})"
            )
        params[targets[args.backend]] = value
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--param wants KEY=VALUE, got {item!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def train_main(argv: list[str] | None = None) -> int:
    """Run ``herd train`` with ``argv`` (without the ``train`` word); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_kind_options(args, parser)
    if args.kind != "router":
        return _train_ensemble(args)
    params = _params(args, parser)
    from langchain_herd.training.train import train_router

    models = (
        [m.strip() for chunk in args.models for m in chunk.split(",") if m.strip()]
        if args.models
        else None
    )
    progress = None if args.quiet else PrintProgress()
    try:
        result = train_router(
            args.table,
            mode=args.mode,
            backend=args.backend,
            out_dir=args.out,
            label_column=args.label_column,
            seed=args.seed,
            test_share=args.test_share,
            val_share=args.val_share,
            models=models,
            max_train_rows=args.max_train_rows,
            use_split_column=False if args.ignore_split_column else None,
            params=params,
            progress=progress,
        )
    except HerdError as exc:
        print(f"herd train: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"herd train: {exc}; install the training extras: "
            f"pip install 'langchain-herd[train,server]'",
            file=sys.stderr,
        )
        return 2
    print(result.report())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
