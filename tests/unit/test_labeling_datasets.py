"""Reading the three dataset shapes, and clear errors for bad files (real files in tmp)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from langchain_herd.labeling import (
    DatasetError,
    LabelDataset,
    LabelQuery,
    load_dataset,
    read_correctness_questions,
    read_jsonl,
    read_mmlu,
)
from langchain_herd.mmlu import BUNDLED_MMLU_PATH, format_question


@pytest.fixture(scope="module")
def mmlu_rows() -> pd.DataFrame:
    return pd.read_parquet(BUNDLED_MMLU_PATH).head(5)


def test_mmlu_parquet(tmp_path: Path, mmlu_rows: pd.DataFrame) -> None:
    path = tmp_path / "mmlu.parquet"
    mmlu_rows.to_parquet(path)
    dataset = load_dataset(path)
    assert dataset.name == "mmlu" and len(dataset) == 5
    first, row = dataset.queries[0], mmlu_rows.iloc[0]
    assert first.prompt == format_question(row["question"], [row[c] for c in "ABCD"])
    assert first.gold == row["answer"] and first.kind == "multiple_choice"
    assert first.choices == tuple(row[c] for c in "ABCD")
    assert first.extras == {"split": row["split"], "subject": row["subject"], "group": row["group"]}
    assert dataset.extra_columns == ["split", "subject", "group"]


def test_mmlu_with_ten_options_and_no_optional_columns(tmp_path: Path) -> None:
    row = {"id": "q", "question": "Pick J.", "answer": "J"}
    row.update({letter: f"opt {letter}" for letter in "ABCDEFGHIJ"})
    path = tmp_path / "ten.parquet"
    pd.DataFrame([row]).to_parquet(path)
    query = read_mmlu(path).queries[0]
    assert len(query.choices) == 10 and query.gold == "J" and query.extras == {}
    assert "(A, B, C, D, E, F, G, H, I or J)" in query.prompt


def test_mmlu_missing_columns_and_bad_answers(tmp_path: Path, mmlu_rows: pd.DataFrame) -> None:
    path = tmp_path / "bad.parquet"
    mmlu_rows.drop(columns=["C", "answer"]).to_parquet(path)
    with pytest.raises(DatasetError, match=r"bad\.parquet: lacks the column\(s\) C, answer"):
        read_mmlu(path)
    broken = mmlu_rows.copy()
    broken.loc[broken.index[1], "answer"] = "E"
    broken.to_parquet(path)
    bad_id = broken.iloc[1]["id"]
    with pytest.raises(DatasetError, match=f"row id '{bad_id}': answer 'E' is not one of"):
        read_mmlu(path)


def test_correctness_table(tmp_path: Path) -> None:
    rows = [
        {
            "id": "t1",
            "dataset": "mmlu_pro",
            "subject": "law",
            "group": "humanities",
            "prompt": "Which?\nI. one\nII. two\nA. I only\nB. II only\nC. both",
            "answer": "C",
            "some-model": 1,
        },
        {
            "id": "t2",
            "dataset": None,
            "subject": None,
            "group": None,
            "prompt": "Q\nA. x\nB. y",
            "answer": None,
            "some-model": 0,
        },
    ]
    path = tmp_path / "table.parquet"
    pd.DataFrame(rows).to_parquet(path)
    dataset = load_dataset(path)
    first, second = dataset.queries
    assert first.choices == ("I only", "II only", "both") and first.gold == "C"
    assert first.prompt.endswith("Answer with the letter only (A, B or C).")
    assert first.dataset == "mmlu_pro" and first.extras == {"subject": "law", "group": "humanities"}
    assert second.dataset == "table"  # from the file name where the row has none
    assert second.gold is None  # kept: its cells stay null
    plain = read_correctness_questions(path, add_instruction=False)
    assert plain.queries[0].prompt == rows[0]["prompt"]


def test_correctness_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame([{"id": "t1", "prompt": "no options", "answer": "A"}]).to_parquet(path)
    with pytest.raises(DatasetError, match="row id 't1': the prompt lists no options"):
        read_correctness_questions(path)
    pd.DataFrame([{"id": "t1", "prompt": "Q\nA. x\nB. y", "answer": "D"}]).to_parquet(path)
    with pytest.raises(DatasetError, match="answer 'D' is not one of the option letters A-B"):
        read_correctness_questions(path)
    pd.DataFrame([{"id": "t1", "text": "Q"}]).to_parquet(path)
    with pytest.raises(DatasetError, match="neither a 'question' column"):
        load_dataset(path)


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "open.jsonl"
    lines = [
        {
            "id": "a",
            "prompt": "Explain tides.",
            "reference": "The moon's gravity.",
            "group": "stem",
        },
        {"id": 7, "prompt": "Write a haiku.", "metadata": {"source": "me"}},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    dataset = load_dataset(path)
    assert [q.id for q in dataset] == ["a", "7"]
    assert dataset.queries[0].reference == "The moon's gravity."
    assert dataset.queries[0].kind == "open" and dataset.queries[0].extras == {"group": "stem"}
    assert dataset.queries[1].reference is None
    assert dataset.queries[1].answer_column is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"\n',
            r"open\.jsonl:2: not valid JSON",
        ),
        ('{"id": "a", "prompt": "x"}\n["a", "b"]\n', r"open\.jsonl:2: expected a JSON object"),
        ('{"prompt": "x"}\n', r"open\.jsonl:1: 'id' must be"),
        ('{"id": "a"}\n', r"open\.jsonl:1: 'prompt' is missing or empty"),
        (
            '{"id": "a", "prompt": "x", "refrence": "y"}\n',
            r"open\.jsonl:1: unknown key\(s\) \['refrence'\]",
        ),
        (
            '{"id": "a", "prompt": "x", "reference": 3}\n',
            r"open\.jsonl:1: 'reference' must be a string",
        ),
        (
            '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
            r"id 'a' appears more than once",
        ),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "open.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_jsonl(path)


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("id,prompt\n")
    with pytest.raises(DatasetError, match=r"unknown dataset file type '\.csv'"):
        load_dataset(tmp_path / "data.csv")
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(tmp_path / "absent.jsonl")


def test_dataset_errors_are_value_errors() -> None:
    assert issubclass(DatasetError, ValueError)


def test_fingerprint_follows_content_not_path() -> None:
    one = LabelDataset("d", [LabelQuery("a", "x", dataset="d")], source="/one")
    two = LabelDataset("d", [LabelQuery("a", "x", dataset="d")], source="/two")
    changed = LabelDataset("d", [LabelQuery("a", "y", dataset="d")])
    assert one.fingerprint() == two.fingerprint() != changed.fingerprint()
    assert one.head(0).fingerprint() != one.fingerprint()


def test_query_json_round_trip() -> None:
    query = LabelQuery(
        "a", "Q\nA. x\nB. y", dataset="d", gold="B", choices=("x", "y"), extras={"group": "stem"}
    )
    assert LabelQuery.from_json(json.loads(json.dumps(query.to_json()))) == query
