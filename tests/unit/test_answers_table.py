"""Reading answers tables and lining them up with correctness tables (real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")

from langchain_herd.tables import (
    AnswersTable,
    TableError,
    read_answers_table,
    read_correctness_table,
)

N = 30


def correctness_frame() -> pd.DataFrame:
    gold = ["A", "B", "C"] * (N // 3)
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(N)],
            "prompt": [f"question {i}\nA. x\nB. y\nC. z" for i in range(N)],
            "answer": gold,
            # "small" is right on even rows, "big" everywhere but the last row.
            "small": pd.array([int(i % 2 == 0) for i in range(N)], dtype="Int8"),
            "big": pd.array([int(i < N - 1) for i in range(N)], dtype="Int8"),
        }
    )


def answers_frame() -> pd.DataFrame:
    table = correctness_frame()
    wrong = {"A": "B", "B": "C", "C": "A"}
    small = [g if i % 2 == 0 else wrong[g] for i, g in enumerate(table["answer"])]
    big = [*table["answer"][: N - 1], None]  # no letter on the last row: wrong
    # Stored in another row order: lining up goes by id, not by position.
    return pd.DataFrame({"id": table["id"], "small": small, "big": big}).iloc[::-1]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    table, answers = tmp_path / "correctness.parquet", tmp_path / "answers.parquet"
    correctness_frame().to_parquet(table)
    answers_frame().to_parquet(answers)
    return table, answers


def test_read_and_align_by_id(files: tuple[Path, Path]) -> None:
    table_path, answers_path = files
    answers = read_answers_table(answers_path)
    assert isinstance(answers, AnswersTable) and len(answers) == N
    assert answers.model_columns == ["small", "big"]
    table = read_correctness_table(table_path)
    values = answers.aligned(table)
    assert values.shape == (N, 2) and values.dtype.kind == "U"
    assert values[0].tolist() == ["A", "A"] and values[1].tolist() == ["C", "B"]
    assert values[-1, 1] == ""  # no answer reads as ""
    # a subset of rows (one side of a split), in the table's order, and chosen columns
    part = table.with_frame(table.frame.iloc[[5, 2]])
    assert answers.aligned(part, ["big"]).tolist() == [["C"], ["C"]]


def test_blank_answers_are_missing_and_metadata_columns_are_not_models(tmp_path: Path) -> None:
    frame = answers_frame().assign(prompt="p", dataset="d", small=lambda f: f["small"] + "  ")
    frame.loc[frame.index[0], "small"] = " "
    path = tmp_path / "answers.csv"
    frame.to_csv(path, index=False)
    answers = read_answers_table(path)
    assert answers.model_columns == ["small", "big"]
    assert answers.frame["small"].isna().sum() == 1
    assert answers.frame["small"].dropna().str.len().eq(1).all()  # trimmed


def test_ids_that_do_not_match(files: tuple[Path, Path], tmp_path: Path) -> None:
    table_path, _ = files
    table = read_correctness_table(table_path)
    partial = tmp_path / "partial.parquet"
    answers_frame().iloc[:20].to_parquet(partial)
    with pytest.raises(
        TableError, match=r"no answers for 10 of the 30 question ids .*same labeling"
    ):
        read_answers_table(partial).aligned(table)
    other = tmp_path / "other.parquet"
    answers_frame().assign(id=lambda f: "x" + f["id"]).to_parquet(other)
    with pytest.raises(TableError, match="no id in common"):
        read_answers_table(other).aligned(table)


def test_missing_model_column_and_table_without_ids(files: tuple[Path, Path]) -> None:
    table_path, answers_path = files
    answers = read_answers_table(answers_path, models=["small"])
    table = read_correctness_table(table_path)
    with pytest.raises(TableError, match=r"no answer column for model\(s\) \['big'\]"):
        answers.aligned(table)
    no_ids = read_correctness_table(table_path, id_column="key")  # the file has no 'key'
    with pytest.raises(TableError, match="no id column; answers are matched to questions by id"):
        read_answers_table(answers_path).aligned(no_ids)


def test_letters_that_contradict_the_labels(files: tuple[Path, Path], tmp_path: Path) -> None:
    table_path, _ = files
    table = read_correctness_table(table_path)
    swapped = tmp_path / "swapped.parquet"
    # Columns swapped between models: "small"'s labels with "big"'s letters.
    answers_frame().rename(columns={"small": "big", "big": "small"}).to_parquet(swapped)
    answers = read_answers_table(swapped)
    with pytest.raises(
        TableError, match=r"letters of 'small' contradict its 0/1 labels .* on 4\d%"
    ):
        answers.aligned(table)
    assert answers.aligned(table, check_letters=False).shape == (N, 2)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"key": ["a"], "m": ["A"]}), "no id column 'id'"),
        (
            pd.DataFrame({"id": ["a", "a", "b"], "m": ["A", "B", "C"]}),
            r"occur more than once .*'a'",
        ),
        (pd.DataFrame({"id": ["a", None], "m": ["A", "B"]}), "1 row.s. have no 'id'"),
        (pd.DataFrame({"id": ["a"], "prompt": ["p"]}), "no model columns"),
        (pd.DataFrame({"id": pd.Series([], dtype=str), "m": []}), "has no rows"),
        (
            pd.DataFrame({"id": ["a", "b"], "prompt": "p", "m": [1, 0]}),
            "hold 0/1 values, not answers; this looks like a correctness table",
        ),
    ],
)
def test_bad_answers_tables(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    path = tmp_path / "answers.parquet"
    frame.to_parquet(path)
    with pytest.raises(TableError, match=message):
        read_answers_table(path)


def test_missing_file_and_named_columns(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such file"):
        read_answers_table(tmp_path / "nope.parquet")
    path = tmp_path / "answers.parquet"
    pd.DataFrame({"id": ["a"], "m": ["A"]}).to_parquet(path)
    with pytest.raises(TableError, match=r"no answer column\(s\) \['x'\]"):
        read_answers_table(path, models=["m", "x"])
    assert np.asarray(read_answers_table(path).frame["m"]).tolist() == ["A"]
