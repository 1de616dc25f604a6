"""Train the bundled "which MMLU group is this question" router.

Writes ``langchain_herd/router_models/mmlu-group-tfidf/``: a TF-IDF + logistic-regression
classifier (``tfidf-logreg``) over the four MMLU groups, trained on the same prompt the
demo routes (``format_question(question, [A, B, C, D])``).

The held-out set stays honest: 20% of the distinct question texts, stratified by subject
and drawn with a fixed seed, never touch training or tuning. Hyper-parameters are picked
on a validation split carved out of the training part, the shipped model is trained on the
training part only, and the held-out metrics, split seed and shares are stored in the
artifact's ``config.json`` under ``metadata``.

Run from the repository root (needs ``pip install -e '.[train]'`` or ``PYTHONPATH=.``)::

    python scripts/train_bundled_router.py
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.classifiers.tfidf import TfidfClassifier
from langchain_herd.mmlu import MMLU_GROUPS, format_question, load_mmlu

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "langchain_herd/router_models/mmlu-group-tfidf"
# Validation accuracy plateaus at about 100k terms (150k and the full ~280k vocabulary did
# no better in a one-off check), and 100k keeps the artifact near 3.5 MB with float32 weights.
GRID_MAX_FEATURES = (20_000, 50_000, 100_000)
GRID_C = (3.0, 10.0, 30.0)


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


def training_texts(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Each question twice: as the demo's multiple-choice prompt and as bare text, so the
    router also places free-form questions (a user's chat turn) that come without choices."""
    groups = df["group"].tolist()
    return prompts(df) + df["question"].tolist(), groups + groups


def evaluate(clf: TfidfClassifier, texts: list[str], gold: list[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score

    predicted = clf.predict(texts)
    labels = list(MMLU_GROUPS)
    gold_a, pred_a = np.asarray(gold), np.asarray(predicted)
    return {
        "n": len(gold),
        "accuracy": float((gold_a == pred_a).mean()),
        "macro_f1": float(f1_score(gold_a, pred_a, labels=labels, average="macro")),
        "per_group_accuracy": {
            g: float((pred_a[gold_a == g] == g).mean()) for g in labels if (gold_a == g).any()
        },
        "confusion": {
            "labels": labels,
            "rows_gold_cols_predicted": confusion_matrix(gold_a, pred_a, labels=labels).tolist(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MMLU parquet (default: bundled)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact directory")
    parser.add_argument("--seed", type=int, default=0, help="held-out split seed")
    parser.add_argument("--heldout-share", type=float, default=0.2)
    parser.add_argument("--val-share", type=float, default=0.2, help="of the training part")
    args = parser.parse_args(argv)

    df = load_mmlu(args.data).reset_index(drop=True)
    held = heldout_mask(df, args.heldout_share, args.seed)
    train_df, held_df = df[~held], df[held]
    val_seed = args.seed + 1
    val = heldout_mask(train_df, args.val_share, val_seed)
    fit_df, val_df = train_df[~val], train_df[val]
    print(
        f"MMLU: {len(df)} questions -> train {len(train_df)} (fit {len(fit_df)} + val "
        f"{len(val_df)}), held-out {len(held_df)}; split seed {args.seed}"
    )

    fit_x, fit_y = training_texts(fit_df)
    val_x, val_y = prompts(val_df), val_df["group"].tolist()
    grid: list[dict[str, Any]] = []
    for max_features, c in itertools.product(GRID_MAX_FEATURES, GRID_C):
        start = time.perf_counter()
        clf = TfidfClassifier.fit(
            fit_x, fit_y, max_features=max_features, C=c, label_order=MMLU_GROUPS
        )
        scores = evaluate(clf, val_x, val_y)
        grid.append(
            {
                "max_features": max_features,
                "C": c,
                "val_accuracy": round(scores["accuracy"], 4),
                "val_macro_f1": round(scores["macro_f1"], 4),
            }
        )
        print(
            f"  val  max_features={max_features:>6}  C={c:>4}: acc {scores['accuracy']:.4f}  "
            f"macro-F1 {scores['macro_f1']:.4f}  ({time.perf_counter() - start:.1f}s)"
        )
    # Best macro-F1; on a tie (to 3 decimals) the smaller model and the stronger regulariser.
    best = max(grid, key=lambda r: (round(r["val_macro_f1"], 3), -r["max_features"], -r["C"]))
    print(f"chosen: max_features={best['max_features']} C={best['C']}")

    train_x, train_y = training_texts(train_df)
    clf = TfidfClassifier.fit(
        train_x,
        train_y,
        max_features=best["max_features"],
        C=best["C"],
        label_order=MMLU_GROUPS,
    )
    # Score the artifact as shipped (float32 weights), not the float64 model in memory.
    args.out.mkdir(parents=True, exist_ok=True)
    clf.save_pretrained(args.out, dtype="float32")
    shipped = load_classifier(args.out)
    assert isinstance(shipped, TfidfClassifier)
    held_x, held_y = prompts(held_df), held_df["group"].tolist()
    heldout = evaluate(shipped, held_x, held_y)
    question_only = evaluate(shipped, held_df["question"].tolist(), held_y)

    shipped.metadata.update(
        {
            "task": "MMLU group of a question (stem, humanities, social_sciences, other)",
            "data": "MMLU test + dev (Hendrycks et al., MIT), the copy bundled with the package",
            "text_format": "langchain_herd.mmlu.format_question(question, [A, B, C, D]), "
            "and the bare question text (each training question appears in both forms)",
            "split": {
                "seed": args.seed,
                "heldout_share": args.heldout_share,
                "unit": "distinct question text (duplicates stay on one side)",
                "stratified_by": "subject",
                "n_train": len(train_df),
                "n_heldout": len(held_df),
            },
            "tuning": {
                "val_seed": val_seed,
                "val_share_of_train": args.val_share,
                "selected_by": "validation macro-F1",
                "grid": grid,
            },
            "heldout": heldout,
            "heldout_question_only": {
                k: question_only[k] for k in ("n", "accuracy", "macro_f1", "per_group_accuracy")
            },
            "script": "scripts/train_bundled_router.py",
        }
    )
    # The weights are float32 already, so re-saving them as float32 changes nothing.
    shipped.save_pretrained(args.out, dtype="float32")

    print(f"\nheld-out ({heldout['n']} questions, prompt with choices, as the demo routes):")
    print(f"  accuracy {heldout['accuracy']:.4f}   macro-F1 {heldout['macro_f1']:.4f}")
    for group, acc in heldout["per_group_accuracy"].items():
        print(f"  {group:<16} {acc:.4f}")
    print("  confusion (rows gold, columns predicted, order " + ", ".join(MMLU_GROUPS) + "):")
    confusion = heldout["confusion"]["rows_gold_cols_predicted"]
    for group, row in zip(MMLU_GROUPS, confusion, strict=True):
        print(f"    {group:<16} {row}")
    print(
        f"held-out, question text alone: accuracy {question_only['accuracy']:.4f}   "
        f"macro-F1 {question_only['macro_f1']:.4f}"
    )

    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"\nartifact {args.out}: {size / 1e6:.2f} MB")
    for file in sorted(args.out.iterdir()):
        print(f"  {file.name:<20} {file.stat().st_size / 1e6:.2f} MB")

    one = held_x[:200]
    timings = []
    for text in one:
        start = time.perf_counter()
        shipped.predict_proba([text])
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    shipped.predict_proba(held_x)
    batch = time.perf_counter() - start
    print(
        f"timing: one query median {np.median(timings) * 1e3:.3f} ms "
        f"(p95 {np.percentile(timings, 95) * 1e3:.3f} ms); batch of {len(held_x)}: "
        f"{batch:.2f} s ({batch / len(held_x) * 1e6:.0f} us/query)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
