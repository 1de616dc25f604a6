"""``herd train``: train a router classifier on a correctness table and print its report."""

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
            "folder of config.json + safetensors."
        ),
    )
    parser.add_argument("table", help="correctness table (.parquet, .csv or .jsonl)")
    parser.add_argument(
        "--mode",
        choices=["correctness", "category"],
        required=True,
        help="correctness: per model, P(answers right) (Herd); category: a route label (Hivemind)",
    )
    parser.add_argument("--backend", choices=["tfidf", "embedding", "finetune"], required=True)
    parser.add_argument("--out", type=Path, required=True, help="artifact directory")
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
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


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
