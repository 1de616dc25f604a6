"""``herd finetune-expert BASE DATA --out DIR``: train a subject expert as a LoRA adapter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langchain_herd.errors import HerdError

__all__ = ["build_parser", "finetune_main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``herd finetune-expert``."""
    parser = argparse.ArgumentParser(
        prog="herd finetune-expert",
        description="Train a LoRA adapter (PEFT) of BASE on multiple-choice questions, with "
        "the loss on the gold answer only, a held-back validation share, early stopping "
        "(the best weights are kept) and the GPU when there is one. The folder loads with "
        "herd serve --model BASE --lora-adapters NAME=DIR (and in TGI).",
    )
    parser.add_argument("base", help="base model: smollm2, tiny, a model folder or a .gguf file")
    parser.add_argument(
        "data",
        help="questions: skills:GROUP[+GROUP], mmlu:GROUP (their train split only) or a "
        ".jsonl / .parquet file (question, choices, answer)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the adapter folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output")
    parser.add_argument("--epochs", type=float, default=None, help="passes (default 2)")
    parser.add_argument("--max-steps", type=int, default=None, help="steps; overrides --epochs")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default 16)")
    parser.add_argument("--dropout", type=float, default=None, help="LoRA dropout (0.05)")
    parser.add_argument(
        "--target-modules",
        default=None,
        help="comma-separated module names (default: the attention and MLP projections)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="questions per step (16)")
    parser.add_argument(
        "--validation-share", type=float, default=None, help="held back (default 0.1)"
    )
    parser.add_argument("--eval-every", type=int, default=None, help="steps (default 10)")
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="validations without improvement before stopping (default 3; 0: never stop)",
    )
    parser.add_argument("--per-group", type=int, default=None, help="questions per group")
    parser.add_argument("--limit", type=int, default=None, help="questions in all")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def finetune_main(argv: list[str]) -> int:
    """Run ``herd finetune-expert``; 0 on success, 2 on a refused input."""
    args = build_parser().parse_args(argv)
    try:
        from langchain_herd.expert_training.trainer import FinetuneSettings, finetune_expert

        given = {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "learning_rate": args.lr,
            "rank": args.rank,
            "alpha": args.alpha,
            "dropout": args.dropout,
            "batch_size": args.batch_size,
            "validation_share": args.validation_share,
            "eval_every": args.eval_every,
            "per_group": args.per_group,
            "limit": args.limit,
            "seed": args.seed,
            "device": args.device,
        }
        options = {key: value for key, value in given.items() if value is not None}
        if args.target_modules is not None:
            modules = tuple(m.strip() for m in args.target_modules.split(",") if m.strip())
            options["target_modules"] = modules
        if args.patience is not None:
            options["patience"] = args.patience or None
        result = finetune_expert(
            args.base,
            args.data,
            args.out,
            FinetuneSettings(**options),
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except HerdError as exc:
        print(f"herd finetune-expert: {exc}", file=sys.stderr)
        return 2
    print(f"herd finetune-expert: {result.summary()}")
    return 0
