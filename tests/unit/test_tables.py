"""Correctness tables: any model names and counts, odd shapes, splits, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
# Imported after the skips, so an install without the data extras skips instead of failing.
import pandas as pd

from langchain_herd.errors import HerdError
from langchain_herd.tables import CorrectnessTable, TableError, read_correctness_table


def frame(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "prompt": [f"question number {i}" for i in range(n)],
            "subject": ["math"] * n,
            "answer": ["A"] * n,
            "alpha/model-7b": pd.array(rng.integers(0, 2, n), dtype="Int8"),
            "beta": pd.array(rng.integers(0, 2, n), dtype="Int8"),
        }
    )


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_reads_models_by_shape_not_by_name(tmp_path: Path, suffix: str) -> None:
    df = frame()
    df.loc[3, "beta"] = pd.NA
    table = read_correctness_table(write(df, tmp_path / f"t{suffix}"))
    assert isinstance(table, CorrectnessTable)
    assert table.model_columns == ["alpha/model-7b", "beta"]
    assert table.prompts[:2] == ["question number 0", "question number 1"]
    y = table.correctness()
    assert y.shape == (20, 2) and y.dtype == np.float64
    assert np.isnan(y[3, 1]) and np.isnan(y).sum() == 1
    assert table.source.endswith(suffix)


def test_any_number_of_models_bool_and_soft_columns(tmp_path: Path) -> None:
    df = frame()
    for k in range(9):
        df[f"m{k}"] = pd.array([k % 2] * 20, dtype="Int64")
    df["judge-soft"] = np.linspace(0.0, 1.0, 20)  # soft labels in [0, 1]
    df["flag-model"] = [True, False] * 10  # booleans count as 0/1
    df["n_tokens"] = np.arange(20) * 7  # numeric, but not a correctness column
    df["difficulty"] = [0.5] * 20
    table = read_correctness_table(
        write(df, tmp_path / "t.parquet"), metadata_columns=["difficulty"]
    )
    assert table.model_columns == [
        "alpha/model-7b",
        "beta",
        *[f"m{k}" for k in range(9)],
        "judge-soft",
        "flag-model",
    ]
    assert "n_tokens" in table.ignored_columns
    assert "outside [0, 1]" in table.ignored_columns["n_tokens"]
    np.testing.assert_allclose(table.correctness(["judge-soft"])[:, 0], np.linspace(0, 1, 20))
    np.testing.assert_array_equal(table.correctness(["flag-model"])[:2, 0], [1.0, 0.0])


def test_missing_prompt_column_is_a_clear_error(tmp_path: Path) -> None:
    path = write(frame().rename(columns={"prompt": "question"}), tmp_path / "t.parquet")
    with pytest.raises(TableError, match=r"t\.parquet: no prompt column 'prompt'") as info:
        read_correctness_table(path)
    assert "question" in str(info.value)  # lists the columns there are
    assert isinstance(info.value, HerdError) and isinstance(info.value, ValueError)
    table = read_correctness_table(path, prompt_column="question")
    assert table.prompts[0] == "question number 0"


def test_empty_or_missing_prompts_name_the_rows(tmp_path: Path) -> None:
    df = frame()
    df.loc[4, "prompt"] = None
    with pytest.raises(TableError, match=r"1 row\(s\) .*id='q4'"):
        read_correctness_table(write(df, tmp_path / "t.parquet"))
    df.loc[4, "prompt"] = "   "
    with pytest.raises(TableError, match="empty"):
        read_correctness_table(write(df, tmp_path / "t.parquet"))


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=r"nope\.parquet: no such file"):
        read_correctness_table(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(TableError, match=r"bad\.parquet: could not be read as parquet"):
        read_correctness_table(bad)
    odd = tmp_path / "table.xlsx"
    odd.write_bytes(b"")
    with pytest.raises(TableError, match="unknown table format"):
        read_correctness_table(odd)


def test_no_model_columns(tmp_path: Path) -> None:
    df = frame().drop(columns=["alpha/model-7b", "beta"])
    df["score"] = np.arange(20)
    with pytest.raises(TableError, match=r"no model columns found.*not taken.*score"):
        read_correctness_table(write(df, tmp_path / "t.parquet"))


def test_named_models(tmp_path: Path) -> None:
    df = frame()
    df["n_tokens"] = np.arange(20) * 7
    path = write(df, tmp_path / "t.parquet")
    assert read_correctness_table(path, models=["beta"]).model_columns == ["beta"]
    with pytest.raises(TableError, match="no model column 'gamma'"):
        read_correctness_table(path, models=["gamma"])
    with pytest.raises(TableError, match="'n_tokens' is not a model column: values outside"):
        read_correctness_table(path, models=["n_tokens"])
    table = read_correctness_table(path)
    assert table.select_models(["beta", "alpha/model-7b"]).model_columns == [
        "beta",
        "alpha/model-7b",
    ]
    with pytest.raises(TableError, match=r"no model column\(s\) \['gamma'\]"):
        table.select_models(["gamma"])


def test_split_column_decides(tmp_path: Path) -> None:
    df = frame()
    df["split"] = ["train"] * 15 + ["test"] * 5
    table = read_correctness_table(write(df, tmp_path / "t.parquet"))
    train, test = table.split(seed=123, test_share=0.5)
    assert list(test["id"]) == [f"q{i}" for i in range(15, 20)]
    assert len(train) == 15
    assert table.split_description() == {"method": "column", "column": "split"}
    # Ignoring the column gives the seeded split.
    train, test = table.split(seed=0, test_share=0.5, use_split_column=False)
    assert len(test) == 10


def test_bad_split_values(tmp_path: Path) -> None:
    df = frame()
    df["split"] = ["train"] * 15 + ["dev"] * 5
    table = read_correctness_table(write(df, tmp_path / "t.parquet"))
    with pytest.raises(TableError, match=r"holds \['dev'\] besides 'train'/'test'"):
        table.split()
    df["split"] = ["train"] * 20
    table = read_correctness_table(write(df, tmp_path / "t.parquet"))
    with pytest.raises(TableError, match="leaves no test rows"):
        table.split()


def test_seeded_split_by_id(tmp_path: Path) -> None:
    df = pd.concat([frame(50), frame(50).iloc[:10]])  # ids q0..q9 appear twice
    table = read_correctness_table(write(df, tmp_path / "t.parquet"))
    train, test = table.split(seed=7, test_share=0.2)
    _, again_test = table.split(seed=7, test_share=0.2)
    assert list(test["id"]) == list(again_test["id"])
    assert not set(train["id"]) & set(test["id"])  # a repeated id stays on one side
    assert table.split(seed=8, test_share=0.2).test["id"].tolist() != test["id"].tolist()
    assert len(set(test["id"])) == 10  # 20% of the 50 distinct ids
    with pytest.raises(TableError, match="test_share"):
        table.split(test_share=1.5)
    with pytest.raises(TableError, match="has no 'split' column"):
        table.split(use_split_column=True)


def test_table_without_id_splits_by_row(tmp_path: Path) -> None:
    table = read_correctness_table(write(frame().drop(columns=["id"]), tmp_path / "t.csv"))
    assert table.id_column is None
    train, test = table.split(seed=0, test_share=0.25)
    assert (len(train), len(test)) == (15, 5)
    assert table.split_description()["unit"] == "row number"


def test_category_labels(tmp_path: Path) -> None:
    df = frame()
    df["group"] = ["stem", None] * 10
    table = read_correctness_table(write(df, tmp_path / "t.parquet"))
    assert table.category_labels("group")[:2] == ["stem", None]
    with pytest.raises(TableError, match="no label column 'topic'"):
        table.category_labels("topic")
