"""The question sets: fixed splits by fact, seeded samples, question files and their errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from langchain_herd.choice_questions import (
    GROUPS,
    load_questions,
    read_question_file,
    resolve_questions,
    split_of,
)
from langchain_herd.errors import ConfigError


def test_skills_splits_share_no_fact_and_keep_their_sizes() -> None:
    facts = {
        split: {q.id.split("#")[0] for q in load_questions("skills", split)}
        for split in ("train", "dev", "test")
    }
    assert not facts["train"] & facts["dev"]
    assert not facts["train"] & facts["test"]
    assert not facts["dev"] & facts["test"]
    sizes = {split: len(load_questions("skills", split)) for split in facts}
    assert sizes == {"train": 1460, "dev": 297, "test": 643}
    everything = load_questions("skills")
    assert Counter(q.group for q in everything) == {g: 600 for g in GROUPS}
    for question in everything:
        assert len(set(question.choices)) == len(question.choices) == 4
        assert question.gold == question.choices[question.answer]


def test_samples_are_seeded_per_group_and_groups_filter() -> None:
    one = load_questions("skills", "test", per_group=5, seed=1)
    assert one == load_questions("skills", "test", per_group=5, seed=1)
    assert one != load_questions("skills", "test", per_group=5, seed=2)
    assert Counter(q.group for q in one) == {g: 5 for g in GROUPS}
    stem = resolve_questions("skills:stem+other", "dev")
    assert {q.group for q in stem} == {"stem", "other"}
    assert all(split_of(q.id) == "dev" for q in stem)
    mmlu = load_questions("mmlu", "test", per_group=3)
    assert len(mmlu) == 12 and all(len(q.choices) == 4 for q in mmlu)


def test_question_files_take_letters_or_indices(tmp_path: Path) -> None:
    rows = [
        {"question": "2 + 2 =", "A": "3", "B": "4", "answer": "B", "group": "stem"},
        {"id": "q2", "question": "Opposite of hot?", "choices": ["cold", "warm"], "answer": 0},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    first, second = resolve_questions(str(path))
    assert (first.gold, first.group) == ("4", "stem")
    assert (second.id, second.gold) == ("q2", "cold")


def test_bad_sources_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown question set"):
        load_questions("trivia")
    with pytest.raises(ConfigError, match="unknown group"):
        resolve_questions("skills:physics")
    with pytest.raises(ConfigError, match="unknown split"):
        load_questions("skills", "holdout")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no such question file"):
        read_question_file(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "choices": ["a"], "answer": 0}\n')
    with pytest.raises(ConfigError, match="at least two choices"):
        read_question_file(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1 is not JSON"):
        read_question_file(bad)
