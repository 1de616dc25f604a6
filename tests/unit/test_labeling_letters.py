"""Option-letter extraction on messy, realistic model replies."""

from __future__ import annotations

import pytest

from langchain_herd.labeling.letters import extract_choice, parse_lettered_choices

CAPITALS = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # the bare letter, wrapped in every way small models wrap it
        ("C", "C"),
        ("C.", "C"),
        (" C \n", "C"),
        ("**C**", "C"),
        ("`C`", "C"),
        ("(C)", "C"),
        ("[C]", "C"),
        ("c", "C"),
        ("(c)", "C"),
        ("c.", "C"),
        ("a", "A"),
        ("A", "A"),
        ("Option C", "C"),
        ("Answer: C", "C"),
        ("answer: c", "C"),
        ("### Answer\nC", "C"),
        # explicit statements inside prose
        ("The answer is (C)", "C"),
        ("The answer is (C).", "C"),
        ("The correct answer is C because Rome is the capital.", "C"),
        ("the answer is c because rome is the capital", "C"),
        ("**Answer: (c)**", "C"),
        ("Final answer: **B**", "B"),
        ("Answer: B) Paris", "B"),
        ("The correct option is D.", "D"),
        ("Option C is correct.", "C"),
        ("C is the correct answer.", "C"),
        ("I'd go with option D.", "D"),
        ("I choose B", "B"),
        ("\\boxed{C}", "C"),
        ("$\\boxed{\\text{(B)}}$", "B"),
        ("Option A is wrong and option B is wrong, so the correct option is D.", "D"),
        ("Let me think. A is too big. The answer is A... no wait, the answer is B.", "B"),
        ("<think>Maybe A? Or C?</think>\nD", "D"),
        ("<think>The answer is A.</think>The answer is B.", "B"),
        # leading with the option
        ("C) Rome", "C"),
        ("C. Rome", "C"),
        ("(d) Berlin", "D"),
        ("d) Berlin", "D"),
        ("B: Paris", "B"),
        ("B - Paris", "B"),
        # echoed instruction and an invented next question
        ("Answer with the letter only (A, B, C or D). B", "B"),
        ("Answer: B\n\nQuestion: What is 3 + 3?\nAnswer: C", "B"),
        # an echo of the options followed by the choice
        ("A. London\nB. Paris\nC. Rome\nD. Berlin\nAnswer: B", "B"),
        # one lone capital letter in prose
        ("I think it's B", "B"),
        ("Hmm, B seems right to me", "B"),
    ],
)
def test_extracts_the_letter(reply: str, expected: str) -> None:
    assert extract_choice(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "I don't know",
        "A or B",
        "The answer is A or B.",
        "It is either B/C",
        "The answer is a bit unclear to me",
        "A cell is the unit of life",
        "The correct answer is not A.",
        "A. London\nB. Paris\nC. Rome\nD. Berlin",
        "B and D both look plausible",
        "E",  # not an option of a 4-option question
        "The answer is E.",
        "U.S. and D.C. are places",
        "the answer is i",  # 'i' is no option of 4
        "saw busy port way enough simple",
    ],
)
def test_ambiguous_or_absent_gives_none(reply: str) -> None:
    assert extract_choice(reply) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Paris", "B"),
        ("paris.", "B"),
        ("  PARIS  ", "B"),
        ("It is Paris, of course", "B"),
        ("The capital is Berlin.", "D"),
        ("Rome", "C"),
    ],
)
def test_choice_text_matches_one_option(reply: str, expected: str) -> None:
    assert extract_choice(reply, CAPITALS) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "Paris or Rome",
        "Not London but maybe Berlin",
        # a long chain of thought that names one option in passing is no answer
        "Thinking about European history at length. " * 6 + "Paris was mentioned once.",
    ],
)
def test_choice_text_ambiguity_gives_none(reply: str) -> None:
    assert extract_choice(reply, CAPITALS) is None


def test_an_option_inside_a_longer_option_counts_as_the_longer_one() -> None:
    options = ["True, True", "True, False", "False, True", "False, False"]
    assert extract_choice("True, False", options) == "B"
    assert extract_choice("Statement 1 is false; so: False, True", options) == "C"
    assert extract_choice("True", options) is None


def test_numbers_as_options() -> None:
    options = ["0", "4", "2", "6"]
    assert extract_choice("The degree is 4", options) == "B"
    assert extract_choice("2 + 2 = 4", options) is None  # two options named
    assert extract_choice("14", options) is None  # '4' only as part of a number


def test_an_explicit_letter_beats_the_option_text() -> None:
    assert extract_choice("B. Rome", CAPITALS) == "B"


def test_ten_options_a_to_j() -> None:
    assert extract_choice("The answer is (J).", n_choices=10) == "J"
    assert extract_choice("I think it is J", n_choices=10) == "J"
    assert extract_choice("I", n_choices=10) == "I"
    assert extract_choice("answer: h", n_choices=10) == "H"
    assert extract_choice("I think so", n_choices=10) is None  # the pronoun
    assert extract_choice("The answer is J.", n_choices=4) is None
    options = [f"option number {n}" for n in range(10)]
    assert extract_choice("option number 7", options) == "H"


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="1 to 26"):
        extract_choice("A", n_choices=0)
    with pytest.raises(ValueError, match="n_choices=3"):
        extract_choice("A", ["x", "y"], n_choices=3)


def test_parse_lettered_choices_takes_the_last_run_from_a() -> None:
    prompt = "Which hold?\nI. x > 0\nII. y < 0\nA. I only\nB. II only\nC. both\nD. neither"
    assert parse_lettered_choices(prompt) == ["I only", "II only", "both", "neither"]
    assert parse_lettered_choices("A. stray line\nQ?\nA. one\nB. two") == ["one", "two"]
    assert parse_lettered_choices("no options here") == []
    ten = "Q\n" + "\n".join(f"{letter}. opt {letter}" for letter in "ABCDEFGHIJ")
    assert len(parse_lettered_choices(ten)) == 10
