"""Training sequences for subject experts: the loss sees the answer and EOS, never the prompt."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_herd.choice_questions import ChoiceQuestion, cloze_prompt, load_questions
from langchain_herd.choice_scoring import choice_token_ids
from langchain_herd.errors import ConfigError
from langchain_herd.expert_training.data import (
    IGNORE_INDEX,
    encode_question,
    load_training_questions,
    pad_batch,
    split_validation,
)
from langchain_herd.expert_training.router_table import group_table
from langchain_herd.server.tiny_model import build_tiny_tokenizer

QUESTION = ChoiceQuestion(
    id="q1",
    group="social_sciences",
    question="what is the capital of france ?",
    choices=("london", "paris", "rome", "berlin"),
    answer=1,
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tiny_tokenizer()


def test_prompt_is_masked_and_answer_plus_eos_is_labelled(tokenizer: Any) -> None:
    example = encode_question(tokenizer, QUESTION)
    prompt = tokenizer.encode(cloze_prompt(QUESTION.question), add_special_tokens=True)
    answer = tokenizer.encode(" paris", add_special_tokens=False)
    assert example.input_ids == (*prompt, *answer, tokenizer.eos_token_id)
    assert example.labels[: len(prompt)] == (IGNORE_INDEX,) * len(prompt)
    assert example.labels[len(prompt) :] == (*answer, tokenizer.eos_token_id)
    assert example.answer_tokens == len(answer) + 1


def test_training_sequence_is_what_the_scorer_reads(tokenizer: Any) -> None:
    prompt, choices = choice_token_ids(tokenizer, QUESTION)
    example = encode_question(tokenizer, QUESTION)
    assert list(example.input_ids[:-1]) == prompt + choices[QUESTION.answer]


def test_long_prompts_lose_their_start_not_the_answer(tokenizer: Any) -> None:
    example = encode_question(tokenizer, QUESTION, max_length=5)
    assert len(example.input_ids) == 5
    assert example.labels[-2:] == (tokenizer.encode(" paris")[0], tokenizer.eos_token_id)
    with pytest.raises(ConfigError, match="answer alone"):
        encode_question(tokenizer, QUESTION, max_length=2)


def test_pad_batch_pads_right_and_ignores_the_padding(tokenizer: Any) -> None:
    short = encode_question(tokenizer, QUESTION)
    longer = encode_question(
        tokenizer,
        ChoiceQuestion("q2", "x", "what is the capital of the old state ?", ("a", "b"), 0),
    )
    batch = pad_batch([short, longer], pad_id=0)
    width = len(longer.input_ids)
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"][0].sum() == len(short.input_ids)
    assert (batch["labels"][0, len(short.input_ids) :] == IGNORE_INDEX).all()
    assert batch["labels"][1].tolist() == list(longer.labels)


def test_validation_split_keeps_facts_whole_and_is_seeded() -> None:
    questions = load_questions("skills", "train", groups=["social_sciences"])
    train, val = split_validation(questions, 0.1, seed=0)
    assert abs(len(val) - 0.1 * len(questions)) < 0.05 * len(questions)
    fact = {q.id.split("#")[0] for q in val}
    assert not fact & {q.id.split("#")[0] for q in train}
    assert split_validation(questions, 0.1, seed=0) == (train, val)
    assert split_validation(questions, 0.1, seed=1) != (train, val)
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        split_validation(questions, 1.0, seed=0)


def test_named_sets_train_on_their_train_split_only() -> None:
    train_ids = {q.id for q in load_questions("skills", "train", groups=["stem"])}
    assert {q.id for q in load_training_questions("skills:stem")} == train_ids
    with pytest.raises(ConfigError, match="unknown question set"):
        load_training_questions("trivia:stem")


def test_router_table_trains_on_train_and_holds_out_dev() -> None:
    frame = group_table("skills")
    train_ids = {q.id for q in load_questions("skills", "train")}
    dev_ids = {q.id for q in load_questions("skills", "dev")}
    assert set(frame.loc[frame["split"] == "train", "id"]) == train_ids
    assert set(frame.loc[frame["split"] == "test", "id"]) == dev_ids
    assert set(frame["group"]) == {"stem", "humanities", "social_sciences", "other"}
