"""``herd merge METHOD EXPERT... --out DIR``: a new expert from several, in weight space."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langchain_herd.errors import HerdError
from langchain_herd.merging.methods import MERGE_METHODS, MergeRequest


def _parser() -> argparse.ArgumentParser:
    methods = "\n".join(f"  {name}: {what}" for name, what in MERGE_METHODS.items())
    parser = argparse.ArgumentParser(
        prog="herd merge",
        description="Merge experts: LoRA adapter folders of one base model (with PEFT; the "
        "result is an adapter for herd serve --lora-adapters) or full model folders (with "
        "mergekit; the result is a model folder).\n\nmethods:\n" + methods,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method", choices=sorted(MERGE_METHODS))
    parser.add_argument("experts", nargs="+", type=Path, help="expert folders")
    parser.add_argument("--out", type=Path, required=True, help="the new expert's folder")
    parser.add_argument(
        "--base",
        default=None,
        help="base model: required for ties, dare and task_arithmetic on full models; for "
        "adapters, default their base_model_name_or_path (tiny, smollm2 or a folder)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="comma-separated, one per expert (default: 1/n for linear, 1 otherwise)",
    )
    parser.add_argument("--density", type=float, default=0.5, help="ties, dare (default 0.5)")
    parser.add_argument("--t", type=float, default=0.5, help="slerp (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="dare's random drops")
    return parser


def merge_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        weights = None
        if args.weights:
            try:
                weights = tuple(float(w) for w in args.weights.split(","))
            except ValueError:
                raise HerdError(f"--weights must be numbers, got {args.weights!r}") from None
        request = MergeRequest(
            method=args.method,
            experts=tuple(args.experts),
            out=args.out,
            base=args.base,
            weights=weights,
            density=args.density,
            t=args.t,
            seed=args.seed,
        )
        from langchain_herd.merging.adapters import is_adapter

        kinds = {is_adapter(path) for path in request.experts}
        if len(kinds) > 1:
            raise HerdError("merge adapters with adapters, or model folders with model folders")
        if kinds == {True}:
            from langchain_herd.merging.adapters import merge_adapters

            merge_adapters(request)
            what = f"a LoRA adapter: herd serve --lora-adapters merged={args.out}"
        else:
            from langchain_herd.merging.checkpoints import merge_checkpoints

            merge_checkpoints(request)
            what = f"a model folder: herd serve --model {args.out}"
    except HerdError as exc:
        print(f"herd merge: {exc}", file=sys.stderr)
        return 2
    print(f"herd merge: {args.method} of {len(args.experts)} experts -> {what}")
    return 0
