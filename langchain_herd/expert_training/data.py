"""Training data for a subject expert: questions in, masked token sequences out.

A question becomes the sequence the scorer reads (:mod:`langchain_herd.choice_scoring`):
``cloze_prompt(question)`` tokenized with the tokenizer's special tokens, then ``" " + gold``
without them, then the end-of-sequence token. The loss is on the answer's tokens and the EOS
only (the prompt's labels are ``-100``), so the adapter learns to answer, not to ask, and a
higher answer likelihood is exactly what cloze scoring rewards.

Example:
    >>> from langchain_herd.choice_questions import load_questions
    >>> questions = load_training_questions("skills:stem")
    >>> {q.group for q in questions}, len(questions) > 300
    ({'stem'}, True)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_herd.choice_questions import ChoiceQuestion, cloze_prompt, resolve_questions
from langchain_herd.errors import ConfigError

__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "encode_question",
    "load_training_questions",
    "pad_batch",
    "split_validation",
]

IGNORE_INDEX = -100
"""Label of a token the loss skips (transformers' convention)."""


@dataclass(frozen=True)
class EncodedExample:
    """One training sequence.

    Attributes:
        input_ids: prompt, answer and EOS token ids.
        labels: ``input_ids`` with the prompt's positions set to :data:`IGNORE_INDEX`.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def answer_tokens(self) -> int:
        """Tokens the loss is computed on."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def load_training_questions(
    source: str, *, per_group: int | None = None, seed: int = 0
) -> list[ChoiceQuestion]:
    """The questions ``herd finetune-expert DATA`` trains on.

    A named set (``skills``, ``skills:stem``, ``mmlu:stem+other``) always gives its ``train``
    split: the ``dev`` and ``test`` questions are never trained on. A ``.jsonl`` / ``.parquet``
    file is taken whole (holding out is then the file author's business).

    Raises:
        ConfigError: the source names nothing known, or holds no question.
    """
    questions = resolve_questions(source, split="train", per_group=per_group, seed=seed)
    if not questions:
        raise ConfigError(f"{source}: no training questions (an empty file or group?)")
    return questions


def encode_question(
    tokenizer: Any, question: ChoiceQuestion, *, max_length: int | None = None
) -> EncodedExample:
    """The question with its gold answer as one training sequence.

    Args:
        tokenizer: the base model's tokenizer.
        question: the question.
        max_length: longest sequence; a longer prompt loses tokens from its start (the
            answer and the prompt's end are kept).

    Raises:
        ConfigError: the tokenizer has no EOS token, or the answer alone exceeds
            ``max_length``.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the base model's tokenizer has no EOS token to end answers with")
    prompt = list(tokenizer.encode(cloze_prompt(question.question), add_special_tokens=True))
    answer = [*tokenizer.encode(" " + question.gold, add_special_tokens=False), int(eos)]
    if max_length is not None and len(prompt) + len(answer) > max_length:
        keep = max_length - len(answer)
        if keep < 1:
            raise ConfigError(
                f"question {question.id!r}: its answer alone is {len(answer)} tokens, more "
                f"than max_length {max_length}"
            )
        prompt = prompt[-keep:]
    return EncodedExample(
        input_ids=tuple(prompt + answer),
        labels=tuple([IGNORE_INDEX] * len(prompt) + answer),
    )


def split_validation(
    questions: Sequence[ChoiceQuestion], share: float, seed: int
) -> tuple[list[ChoiceQuestion], list[ChoiceQuestion]]:
    """A seeded ``(train, validation)`` split of ``questions``.

    Variants of one fact (ids equal before ``#``, as in :func:`split_of`) fall on one side,
    so validation loss measures unseen facts rather than seen ones with other distractors.
    With ``share > 0`` at least one fact is held out; the validation side takes whole facts
    until it holds ``share`` of the questions.

    Raises:
        ConfigError: ``share`` is outside [0, 1), or it leaves no training question.

    Example:
        >>> from langchain_herd.choice_questions import load_questions
        >>> qs = load_questions("skills", "train", groups=["stem"])
        >>> train, val = split_validation(qs, 0.1, seed=0)
        >>> len(train) + len(val) == len(qs), 0 < len(val) < len(train)
        (True, True)
    """
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"validation share must be in [0, 1), got {share}")
    if not questions:
        raise ConfigError("no questions to train on")
    if share == 0.0:
        return list(questions), []
    facts: dict[str, list[ChoiceQuestion]] = {}
    for question in questions:
        facts.setdefault(question.id.split("#", 1)[0], []).append(question)
    keys = sorted(facts)
    random.Random(seed).shuffle(keys)
    wanted = share * len(questions)
    held: set[str] = set()
    count = 0
    for key in keys:
        if held and count + len(facts[key]) / 2 > wanted:
            break
        held.add(key)
        count += len(facts[key])
    train = [q for q in questions if q.id.split("#", 1)[0] not in held]
    validation = [q for q in questions if q.id.split("#", 1)[0] in held]
    if not train:
        raise ConfigError(
            f"validation share {share} of {len(questions)} question(s) leaves none to train "
            "on; lower --validation-share or give more questions"
        )
    return train, validation


def pad_batch(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
