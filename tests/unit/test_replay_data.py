"""The bundled replay table: its rows, columns, costs and letters, and how questions are found."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from langchain_herd.mmlu import extract_letter
from langchain_herd.replay import (
    BUNDLED_REPLAY_PATH,
    NO_LETTER_REPLY,
    QUESTION_COLUMNS,
    ReplayTable,
    normalise,
    reply_text,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "correctness"


@pytest.fixture(scope="module")
def table() -> ReplayTable:
    return ReplayTable.load()


def test_rows_columns_and_costs(table: ReplayTable) -> None:
    import pyarrow.parquet as pq

    assert len(table) == 6810
    assert len(set(table.ids)) == len(table)
    assert len(table.unique_rows) == 6651  # 159 questions appear twice under two ids
    columns = pq.read_schema(BUNDLED_REPLAY_PATH).names
    assert tuple(columns[: len(QUESTION_COLUMNS)]) == QUESTION_COLUMNS
    assert columns[len(QUESTION_COLUMNS) :] == table.models
    assert len(table.models) == 28
    assert table.cost("Meta-Llama-3_1-70B-Instruct") == 70.6
    assert table.cost("gemini-1.5-pro-002") is None  # closed: no parameter count
    assert BUNDLED_REPLAY_PATH.stat().st_size < 2_000_000
    assert set(table.answers) <= set("ABCDEFGHIJ")
    assert all(ord(gold) - ord("A") < table.n_choices(r) for r, gold in enumerate(table.answers))


def test_letters_are_options_or_null(table: ReplayTable) -> None:
    answers = table.answers_matrix(table.models, range(len(table)))
    assert set(np.unique(answers).tolist()) <= set("ABCDEFGHIJ") | {""}
    nulls = dict(zip(table.models, (answers == "").sum(axis=0).tolist(), strict=True))
    assert nulls["Meta-Llama-3_1-8B-Instruct"] == 0 and nulls["Qwen1.5-7B-Chat"] == 904


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared data folder is not beside the repo")
def test_letters_and_costs_match_the_shared_tables(table: ReplayTable) -> None:
    import pandas as pd

    questions = pd.read_parquet(SHARED / "mmlu_pro.parquet")
    letters = pd.read_parquet(SHARED / "mmlu_pro_predictions.parquet")
    keep = questions["source"].str.startswith("ori_mmlu-").to_numpy()
    assert letters["id"][keep].tolist() == table.ids
    assert questions["prompt"][keep].tolist() == table.prompts
    assert questions["answer"][keep].tolist() == table.answers
    assert questions["category"][keep].tolist() == table.categories
    for model in table.models:
        shared = [None if pd.isna(v) else v for v in letters[model][keep]]
        assert shared == [table.letter(r, model) for r in range(len(table))], model
    costs = json.loads((SHARED / "models.json").read_text())["mmlu_pro.parquet"]
    assert {m: table.cost(m) for m in table.models} == {
        m: costs[m]["active_params_b"] for m in table.models
    }


def test_packaged_and_attributed() -> None:
    # Package data: the datasets/ glob ships every file of the folder (tomllib is 3.11+).
    assert '"datasets/*"' in (ROOT / "pyproject.toml").read_text()
    attribution = (ROOT / "langchain_herd" / "datasets" / "ATTRIBUTION.md").read_text()
    assert "mmlu_pro_replay.parquet" in attribution and "Apache" in attribution
    # The RouterDC table has no licence: it must never be shipped.
    assert not any("routerdc" in p.name.lower() for p in BUNDLED_REPLAY_PATH.parent.iterdir())


def test_find_matches_normalised_text_and_trims_lines(table: ReplayTable) -> None:
    prompt = table.prompts[42]
    assert table.find(prompt) == 42
    assert table.find("  " + prompt.replace("\n", " \n  ") + "\n") == 42
    assert table.find(f"You are an expert.\n\n{prompt}\n\nAnswer with the letter only.") == 42
    assert table.find("What is the capital of France?") is None
    assert table.find("") is None
    duplicate = next(r for r in range(len(table)) if r not in set(table.unique_rows))
    assert table.find(table.prompts[duplicate]) in table.unique_rows
    assert normalise(" a \n\n b\t") == "a b"


def test_replies_read_back_as_the_recorded_letter() -> None:
    for letter in "ABCDEFGHIJ":
        assert extract_letter(reply_text(letter), n_choices=10) == letter
    assert reply_text(None) == NO_LETTER_REPLY
    assert extract_letter(NO_LETTER_REPLY, n_choices=10) is None


def test_model_names_are_read_leniently(table: ReplayTable) -> None:
    assert table.resolve_model("gemma-7b") == "gemma-7b"
    assert table.resolve_model("meta-llama/Meta-Llama-3.1-8B-Instruct") == (
        "Meta-Llama-3_1-8B-Instruct"
    )
    assert table.resolve_model("mistral-7b-instruct-v0.2") == "Mistral-7B-Instruct-v0.2"
    assert table.resolve_model("gpt-4o") is None


def test_correctness_frame_for_training(table: ReplayTable) -> None:
    frame = table.to_frame(["gemma-7b", "Phi-3-mini-4k-instruct"])
    assert list(frame.columns) == [*QUESTION_COLUMNS, "gemma-7b", "Phi-3-mini-4k-instruct"]
    expected = [int(table.letter(r, "gemma-7b") == table.answers[r]) for r in range(len(table))]
    assert frame["gemma-7b"].tolist() == expected
    assert re.fullmatch(r"mmlupro-\d+", frame["id"].iloc[0])
