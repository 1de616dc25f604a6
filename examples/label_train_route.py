"""The whole router loop on the embedded local herd: label -> train -> calibrate -> route.

1. Label a seeded sample of MMLU questions with every expert of `bundled:local` (four
   SmolLM2 subject experts; `--config` names another herd), scoring each answer by its option
   letter.
2. Train a Herd-style `correctness` router (TF-IDF backend) on the resulting table.
3. Calibrate the `margin` policy on a validation share of the training questions.
4. Route held-out questions with the new router.

The models are tiny (135M), so the scores are low: the point is that every step runs for
real. Resumable: run it again and the labeling picks up where it stopped.

    .venv/bin/python examples/label_train_route.py --questions 80 --out out/loop
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from langchain_herd import HerdRouter, load_classifier, load_config
from langchain_herd.calibration import calibrate_artifact
from langchain_herd.config import parse_config
from langchain_herd.labeling import label_dataset
from langchain_herd.local_servers import LocalHerd
from langchain_herd.mmlu import format_question, load_mmlu, sample_questions
from langchain_herd.training import train_router

CONFIG = "bundled:local"


def run(config_path: str | Path, questions: int, out: Path, seed: int = 0) -> None:
    config = load_config(config_path)
    out.mkdir(parents=True, exist_ok=True)
    mmlu = load_mmlu()
    sample = sample_questions(mmlu[mmlu["split"] == "test"], questions, seed)
    dataset = out / "questions.parquet"
    # MMLU's own split column says "test" for all of these; training makes its own split.
    sample.drop(columns=["split"]).to_parquet(dataset, index=False)

    with LocalHerd(config):
        labels = asyncio.run(label_dataset(config, dataset, out / "labels", resume=True))
        table = out / "labels" / "correctness.parquet"
        print(f"labeled {labels.table.shape[0]} questions x {len(config.experts)} experts")

        trained = train_router(
            table, mode="correctness", backend="tfidf", out_dir=out / "router", seed=seed
        )
        print(trained.report())

        calibration = calibrate_artifact(
            out / "router", table, policy="margin", expert=config.default_expert, seed=seed
        )
        print(
            f"calibrated margin {calibration.value:g}: accuracy {calibration.accuracy:.3f} "
            f"on {calibration.n_questions} validation questions"
        )

        data = config.model_dump(mode="json")
        data["router"] = {
            "classifier": {"path": str((out / "router").resolve())},
            "policy": {"name": "margin"},
        }
        routed = parse_config(data, base_dir=config.base_dir)
        router = HerdRouter.from_config(routed, classifier=load_classifier(out / "router"))
        held_out = mmlu[(mmlu["split"] == "test") & ~mmlu["id"].isin(sample["id"])]
        for record in sample_questions(held_out, 4, seed + 1).to_dict("records"):
            prompt = format_question(
                record["question"], [record["A"], record["B"], record["C"], record["D"]]
            )
            answer, decision = router.invoke_with_decision(prompt)
            print(
                f"[{record['group']}] -> {decision.answered_by} "
                f"(scores {', '.join(f'{k}={v:.2f}' for k, v in decision.scores.items())}): "
                f"{answer.text.strip()[:40]!r} (gold {record['answer']})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=CONFIG, help="herd config (default: %(default)s)")
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("out/loop"))
    args = parser.parse_args()
    run(args.config, args.questions, args.out)


if __name__ == "__main__":
    main()
