"""MMLU helpers: prompt format, answer-letter extraction, loading and sampling the bundled copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_herd.errors import ConfigError, HerdError
from langchain_herd.mmlu import (
    BUNDLED_MMLU_PATH,
    MMLU_COLUMNS,
    MMLU_GROUPS,
    extract_letter,
    format_question,
    load_mmlu,
    sample_questions,
)

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
# Imported after the skips, so an install without the data extra skips instead of failing.
import pandas as pd

# ---------------------------------------------------------------- format_question


def test_format_question_layout() -> None:
    prompt = format_question("  What is 2 + 2?\n", ["3", "4", " 5 ", "6"])
    assert prompt == (
        "What is 2 + 2?\n\nA. 3\nB. 4\nC. 5\nD. 6\n\nAnswer with the letter only (A, B, C or D)."
    )


def test_format_question_other_choice_counts() -> None:
    assert format_question("q", ["x", "y"]).endswith("(A or B).")
    assert format_question("q", ["x"]).endswith("(A).")
    ten = format_question("q", [str(i) for i in range(10)])
    assert "J. 9" in ten and ten.endswith("(A, B, C, D, E, F, G, H, I or J).")


def test_format_question_keeps_literal_none_choice() -> None:
    # MMLU has choices that are the string "None"; they must survive formatting.
    assert "C. None" in format_question("q", ["a", "b", "None", "d"])


@pytest.mark.parametrize("choices", [[], [str(i) for i in range(27)]])
def test_format_question_rejects_bad_choice_counts(choices: list[str]) -> None:
    with pytest.raises(ValueError, match="1 to 26 choices"):
        format_question("q", choices)


# ---------------------------------------------------------------- extract_letter


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("C", "C"),
        ("C.", "C"),
        ("c", "C"),
        ("  d  ", "D"),
        ("(C)", "C"),
        ("[B]", "B"),
        ("**C**", "C"),
        ("**C. Paris**", "C"),
        ("C. Paris", "C"),
        ("C) Paris", "C"),
        ("(C) Paris", "C"),
        ("B - because of the second law", "B"),
        ("Answer: C", "C"),
        ("answer: c", "C"),
        ("Answer: (C)", "C"),
        ("**Answer: (c)**", "C"),
        ("Answer: D) 42", "D"),
        ("The answer is C", "C"),
        ("The answer is C.", "C"),
        ("the answer is (b).", "B"),
        ("The correct answer is: B", "B"),
        ("The answer is option D", "D"),
        ("Option B", "B"),
        ("I think it is D", "D"),
        ("C is correct", "C"),
        ("A cell divides by mitosis, so B", "B"),
        ("<think>It could be A or B.</think>\nB", "B"),
        ("`A`", "A"),
        ("A", "A"),
    ],
)
def test_extract_letter_finds_the_answer(reply: str, expected: str) -> None:
    assert extract_letter(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "E",  # out of range for four choices
        "The answer is E",
        "A or B",  # ambiguous
        "A and B are wrong, so C",  # two candidates: refuse rather than guess
        "The answer is a bit unclear",  # the article, not a letter
        "I am not sure",
        "<think>The answer is B</think>",  # nothing after the reasoning
    ],
)
def test_extract_letter_refuses_unclear_replies(reply: str) -> None:
    assert extract_letter(reply) is None


def test_extract_letter_respects_n_choices() -> None:
    assert extract_letter("J", n_choices=10) == "J"
    assert extract_letter("The answer is I", n_choices=10) == "I"
    assert extract_letter("J") is None
    assert extract_letter("C", n_choices=2) is None
    with pytest.raises(ValueError, match="n_choices"):
        extract_letter("A", n_choices=0)


# ---------------------------------------------------------------- data


def test_groups_are_the_four_experts() -> None:
    assert MMLU_GROUPS == ("stem", "humanities", "social_sciences", "other")


def test_bundled_copy_and_attribution_ship_with_the_package() -> None:
    assert BUNDLED_MMLU_PATH.is_file()
    attribution = (BUNDLED_MMLU_PATH.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "Hendrycks" in attribution and "MIT License" in attribution


def test_load_mmlu_bundled() -> None:
    df = load_mmlu()
    assert tuple(df.columns) == MMLU_COLUMNS
    assert len(df) == 14_042 + 285
    assert df["split"].value_counts().to_dict() == {"test": 14_042, "dev": 285}
    assert set(df["group"]) == set(MMLU_GROUPS)
    assert df["subject"].nunique() == 57
    assert set(df["answer"]) == {"A", "B", "C", "D"}
    # The literal choice "None" is text, not a missing value.
    assert not df[["A", "B", "C", "D"]].isna().any().any()
    assert (df[["A", "B", "C", "D"]] == "None").any().any()


def test_load_mmlu_from_path(tmp_path: Path) -> None:
    subset = load_mmlu().head(10)
    path = tmp_path / "small.parquet"
    subset.to_parquet(path)
    assert load_mmlu(path)["id"].tolist() == subset["id"].tolist()
    assert len(load_mmlu(str(path))) == 10


def test_load_mmlu_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such MMLU file"):
        load_mmlu(tmp_path / "nope.parquet")


def test_load_mmlu_wrong_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pd.DataFrame({"question": ["q"], "answer": ["A"]}).to_parquet(path)
    with pytest.raises(ConfigError, match="lacks the column") as info:
        load_mmlu(path)
    assert isinstance(info.value, HerdError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------- sample_questions


@pytest.fixture(scope="module")
def mmlu() -> pd.DataFrame:
    return load_mmlu()


def test_sample_is_deterministic(mmlu: pd.DataFrame) -> None:
    first = sample_questions(mmlu, 40, seed=3)
    again = sample_questions(mmlu, 40, seed=3)
    other = sample_questions(mmlu, 40, seed=4)
    assert first["id"].tolist() == again["id"].tolist()
    assert first["id"].tolist() != other["id"].tolist()
    assert first["id"].is_unique


def test_sample_equal_allocation(mmlu: pd.DataFrame) -> None:
    counts = sample_questions(mmlu, 10, seed=0)["group"].value_counts().to_dict()
    # 10 = 3 + 3 + 2 + 2, the remainder going to the first groups in MMLU_GROUPS order.
    assert counts == {"stem": 3, "humanities": 3, "social_sciences": 2, "other": 2}


def test_sample_proportional_allocation(mmlu: pd.DataFrame) -> None:
    sample = sample_questions(mmlu, 1000, seed=0, allocation="proportional")
    counts = sample["group"].value_counts()
    shares = mmlu["group"].value_counts(normalize=True)
    assert counts.sum() == 1000
    for group in MMLU_GROUPS:
        assert abs(counts[group] - 1000 * shares[group]) < 1


def test_sample_interleaves_groups(mmlu: pd.DataFrame) -> None:
    groups = sample_questions(mmlu, 40, seed=0)["group"].tolist()
    assert groups != sorted(groups, key=MMLU_GROUPS.index)


def test_sample_small_group_gives_its_share_away() -> None:
    df = pd.DataFrame({"group": ["stem"] * 2 + ["humanities"] * 50 + ["other"] * 50})
    counts = sample_questions(df, 30, seed=0)["group"].value_counts().to_dict()
    assert counts == {"stem": 2, "humanities": 14, "other": 14}


def test_sample_edge_cases(mmlu: pd.DataFrame) -> None:
    assert len(sample_questions(mmlu, 0, seed=0)) == 0
    small = mmlu.head(5)
    assert sorted(sample_questions(small, 5, seed=1)["id"]) == sorted(small["id"])
    with pytest.raises(ValueError, match="cannot sample"):
        sample_questions(small, 6, seed=0)
    with pytest.raises(ValueError, match="allocation"):
        sample_questions(mmlu, 4, seed=0, allocation="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'group' column"):
        sample_questions(pd.DataFrame({"x": [1]}), 1, seed=0)
