"""The Hivemind router's training table: each question labelled with its subject expert.

:func:`train_group_router` learns question -> ``group`` from it (what ``herd train --mode
category --backend tfidf`` runs; that command reads a file and wants at least one model
column, which a pure category table has none of, so the table is passed in memory, as
``scripts/train_bundled_router.py`` does). The ``split`` column keeps the set's own split:
the router trains on the ``train`` questions (the adapters' training set) and is scored on
the ``dev`` ones, never on ``test``.

Example:
    >>> frame = group_table("skills")
    >>> sorted(frame["split"].unique()), sorted(frame["group"].unique())[:2]
    (['test', 'train'], ['humanities', 'other'])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from langchain_herd.choice_questions import Split, load_questions

if TYPE_CHECKING:
    import pandas as pd

    from langchain_herd.training.train import TrainResult

__all__ = ["group_table", "train_group_router", "write_group_table"]


def group_table(name: str = "skills") -> pd.DataFrame:
    """Rows ``id, prompt, group, split`` for set ``name``: its train split as ``train``, its
    dev split as ``test`` (what ``herd train`` holds out), its test split left out."""
    import pandas as pd

    sides: tuple[tuple[Split, str], ...] = (("train", "train"), ("dev", "test"))
    rows = [
        {"id": q.id, "prompt": q.question, "group": q.group, "split": table_split}
        for split, table_split in sides
        for q in load_questions(name, split)
    ]
    return pd.DataFrame(rows, columns=["id", "prompt", "group", "split"])


def write_group_table(path: str | Path, name: str = "skills") -> Path:
    """Write :func:`group_table` as parquet (or ``.csv`` / ``.jsonl`` by suffix)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    frame = group_table(name)
    if file.suffix == ".csv":
        frame.to_csv(file, index=False)
    elif file.suffix == ".jsonl":
        frame.to_json(file, orient="records", lines=True)
    else:
        frame.to_parquet(file, index=False)
    return file


def train_group_router(out: str | Path, name: str = "skills", seed: int = 0) -> TrainResult:
    """Train and save a tfidf category router (question -> group) on set ``name``.

    Example:
        >>> result = train_group_router("router")  # doctest: +SKIP
        >>> result.heldout["accuracy"]  # doctest: +SKIP
    """
    from langchain_herd.tables import CorrectnessTable
    from langchain_herd.training.train import train_router

    table = CorrectnessTable(
        frame=group_table(name), model_columns=[], source=f"{name} train (dev held out)"
    )
    return train_router(
        table,
        mode="category",
        backend="tfidf",
        out_dir=out,
        label_column="group",
        seed=seed,
        use_split_column=True,
    )
