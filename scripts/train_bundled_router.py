"""Train the bundled "which MMLU group is this question" router with the training pipeline.

Writes ``langchain_herd/router_models/mmlu-group-tfidf/`` by calling ``train_router`` (what
``herd train --mode category --backend tfidf`` runs) on a table built from the bundled
MMLU copy: each question appears twice, as the multiple-choice prompt the demo routes
(``format_question``) and as the bare question text, so chat-style questions without
choices are placed too. Both forms of a question share its id, so they always fall on the
same side of every split.

The held-out set stays honest: 20% of the distinct question texts, stratified by subject
and drawn with a fixed seed (the table's ``split`` column), never touch training or
tuning; the pipeline tunes C on a validation split carved from the training rows. The
held-out metrics per prompt form are added to the artifact's ``config.json`` metadata.

Run from the repository root::

    .venv/bin/python scripts/train_bundled_router.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.mmlu import MMLU_GROUPS, format_question, load_mmlu
from langchain_herd.tables import CorrectnessTable
from langchain_herd.training import train_router

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "langchain_herd/router_models/mmlu-group-tfidf"


def heldout_mask(df: pd.DataFrame, share: float, seed: int) -> np.ndarray:
    """Mark ``share`` of the distinct question texts of each subject, drawn with ``seed``.

    Rows repeating a question text (MMLU has exact duplicates) all fall on the same side.
    """
    first = df.drop_duplicates("question")
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for _, block in first.groupby("subject", sort=True):
        questions = block["question"].to_numpy()
        count = round(share * len(questions))
        chosen.update(rng.permutation(questions)[:count].tolist())
    return df["question"].isin(chosen).to_numpy()


def prompts(df: pd.DataFrame) -> list[str]:
    rows = df[["question", "A", "B", "C", "D"]].itertuples(index=False)
    return [format_question(q, [a, b, c, d]) for q, a, b, c, d in rows]


def build_table(df: pd.DataFrame, share: float, seed: int) -> CorrectnessTable:
    """MMLU as a category table: id, prompt, group, split and the prompt's form."""
    split = np.where(heldout_mask(df, share, seed), "test", "train")
    common = {"id": df["id"].to_numpy(), "group": df["group"].to_numpy(), "split": split}
    frame = pd.concat(
        [
            pd.DataFrame({**common, "prompt": prompts(df), "form": "choices"}),
            pd.DataFrame({**common, "prompt": df["question"].to_numpy(), "form": "question"}),
        ],
        ignore_index=True,
    )
    return CorrectnessTable(frame=frame, model_columns=[], source="MMLU test+dev (bundled copy)")


def accuracy_by_form(artifact: Path, held: pd.DataFrame) -> dict[str, Any]:
    classifier = load_classifier(artifact)
    out: dict[str, Any] = {}
    for form, rows in held.groupby("form"):
        proba = classifier.predict_proba(rows["prompt"].tolist())
        predicted = np.asarray(classifier.labels)[proba.argmax(axis=1)]
        gold = rows["group"].to_numpy()
        out[str(form)] = {
            "n": len(rows),
            "accuracy": round(float((predicted == gold).mean()), 4),
            "per_group_accuracy": {
                g: round(float((predicted[gold == g] == g).mean()), 4) for g in MMLU_GROUPS
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact directory")
    parser.add_argument("--seed", type=int, default=0, help="held-out split seed")
    parser.add_argument("--heldout-share", type=float, default=0.2)
    args = parser.parse_args(argv)

    table = build_table(load_mmlu().reset_index(drop=True), args.heldout_share, args.seed)
    result = train_router(
        table,
        mode="category",
        backend="tfidf",
        out_dir=args.out,
        label_column="group",
        seed=args.seed,
        use_split_column=True,
    )
    print(result.report())
    held = table.frame[table.frame["split"] == "test"]
    by_form = accuracy_by_form(args.out, held)
    config_path = args.out / "config.json"
    config = json.loads(config_path.read_text())
    config.setdefault("metadata", {})["heldout_by_form"] = by_form
    config["metadata"]["heldout_split"] = {
        "seed": args.seed,
        "share": args.heldout_share,
        "stratified_by": "subject",
        "unit": "distinct question text (both prompt forms of a question on one side)",
        "n_questions": int(len(held) // 2),
    }
    config["metadata"]["script"] = "scripts/train_bundled_router.py"
    config_path.write_text(json.dumps(config, indent=2))
    for form, figures in by_form.items():
        groups = ", ".join(f"{g} {a:.3f}" for g, a in figures["per_group_accuracy"].items())
        print(
            f"held-out, {form} form ({figures['n']}): accuracy {figures['accuracy']:.4f} ({groups})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
