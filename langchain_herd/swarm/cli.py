"""``herd swarm CONFIG --utility DATASET --out DIR``: Model Swarms over the herd's LoRA adapters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langchain_herd.errors import HerdError


def _parser() -> argparse.ArgumentParser:
    from langchain_herd.swarm.search import MIN_QUESTIONS, SwarmSettings

    d = SwarmSettings()
    parser = argparse.ArgumentParser(
        prog="herd swarm",
        description="Model Swarms (arXiv 2410.11163): a particle swarm search over the LoRA "
        "adapters of CONFIG's local server, scored on development questions. Writes DIR/best "
        "(an adapter for herd serve --lora-adapters swarm=DIR/best), DIR/swarm.json and "
        "DIR/herd-swarm.yaml; saves its state every step, and rerunning the same command "
        "resumes a killed run.",
    )
    parser.add_argument("config", metavar="CONFIG", help="herd config with lora_adapters")
    parser.add_argument(
        "--utility",
        required=True,
        metavar="DATASET",
        help="questions: skills, skills:stem+other, mmlu (their dev split) or a .jsonl/.parquet",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output and state folder"
    )
    parser.add_argument("--server", default=None, help="the local server, if several have adapters")
    parser.add_argument(
        "--swarm-size",
        type=int,
        default=None,
        help="particles (default twice the adapters; the rest are random mixes of two)",
    )
    parser.add_argument("--max-steps", type=int, default=d.max_steps)
    parser.add_argument(
        "--patience", type=int, default=d.patience, help="stop after this many steps without gain"
    )
    parser.add_argument(
        "--metric",
        choices=["loglik", "accuracy"],
        default=d.metric,
        help="utility: mean gold log-likelihood (smooth; default) or accuracy; both are reported",
    )
    parser.add_argument("--step-size", type=float, default=d.step_size, help="lambda")
    parser.add_argument("--step-decay", type=float, default=d.step_decay, help="phi_lambda")
    parser.add_argument("--inertia", type=float, default=d.inertia, help="phi_v")
    parser.add_argument("--personal", type=float, default=d.personal, help="phi_p")
    parser.add_argument("--social", type=float, default=d.social, help="phi_g")
    parser.add_argument("--repel", type=float, default=d.repel, help="phi_w")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--per-group",
        type=int,
        default=60,
        help="dev questions per group of a named set (default 60: 240 for four groups)",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--device", default=None, help="default cuda when available, else cpu")
    parser.add_argument(
        "--allow-small",
        action="store_true",
        help=f"accept fewer than {MIN_QUESTIONS} questions (quick tests only)",
    )
    return parser


def swarm_main(argv: list[str]) -> int:
    """Run ``herd swarm``; 0 on success, 2 on a refused input."""
    args = _parser().parse_args(argv)
    from pydantic import ValidationError

    from langchain_herd.choice_questions import resolve_questions
    from langchain_herd.swarm.search import SwarmSettings, run_swarm

    try:
        try:
            settings = SwarmSettings(
                swarm_size=args.swarm_size,
                max_steps=args.max_steps,
                patience=args.patience,
                metric=args.metric,
                step_size=args.step_size,
                step_decay=args.step_decay,
                inertia=args.inertia,
                personal=args.personal,
                social=args.social,
                repel=args.repel,
                seed=args.seed,
                batch_size=args.batch_size,
                device=args.device,
                allow_small=args.allow_small,
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                for e in exc.errors()
            )
            raise HerdError(problems) from None
        # The dev split: the test split is never used to pick weights.
        questions = resolve_questions(args.utility, "dev", per_group=args.per_group, seed=args.seed)
        result = run_swarm(args.config, questions, args.out, settings, server=args.server)
    except HerdError as exc:
        print(f"herd swarm: {exc}", file=sys.stderr)
        return 2
    start = ", ".join(
        f"{name} {m['accuracy']:.4f}/{m['loglik']:.4f}" for name, m in result.start.items()
    )
    print(f"experts (accuracy/loglik): {start}")
    print(
        f"best: accuracy {result.best_accuracy:.4f}, loglik {result.best_loglik:.4f} after "
        f"{result.steps} steps (stopped: {result.stopped})"
    )
    print(f"adapter: herd serve --lora-adapters swarm={result.best_folder}")
    print(f"config:  {result.config_file}")
    print(f"report:  {result.report_file}")
    return 0
