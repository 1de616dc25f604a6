"""A multiple-choice dataset whose options are words the tiny model says.

The tiny model answers MMLU's options with word salad, so no letter can be read from its
replies. With "free", a word it often says, among the options, the letters are real
extractions: most replies name one option ("free free free": the letter of "free"), some
none, and some of the letters are the gold one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from langchain_herd.mmlu import BUNDLED_MMLU_PATH

WORDS = ("free", "water", "moon", "dog")


def write_word_choices(path: Path, n: int) -> Path:
    """A correctness-table-shaped dataset of ``n`` MMLU questions with word options."""
    rows = pd.read_parquet(BUNDLED_MMLU_PATH).head(n)
    prompts = []
    for i, row in enumerate(rows.itertuples()):
        # The options rotate, so "free" stands at every letter across the rows.
        options = WORDS[i % 4 :] + WORDS[: i % 4]
        lines = [f"{letter}. {word}" for letter, word in zip("ABCD", options, strict=True)]
        prompts.append("\n".join([str(row.question), *lines]))
    frame = pd.DataFrame(
        {
            "id": [f"words-{i}" for i in range(n)],
            "dataset": "words",
            "subject": rows["subject"].tolist(),
            "prompt": prompts,
            "answer": rows["answer"].tolist(),
        }
    )
    frame.to_parquet(path)
    return path
