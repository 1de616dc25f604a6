"""Score a causal LM on multiple-choice questions by the likelihood of each choice (cloze).

Each (question, choice) pair is one sequence, ``cloze_prompt(question) + " " + choice``; pairs
are sorted by length and run in right-padded batches, so a set of a few hundred questions
takes one pass of a few dozen forward calls. A question counts as answered correctly when its
gold choice has the highest mean log-probability per token (length-normalized, as lm-eval's
``acc_norm`` by tokens); the smoother score is the gold choice's total log-likelihood.

Example:
    >>> from langchain_herd.server import load_backend  # doctest: +SKIP
    >>> backend = load_backend("smollm2")  # doctest: +SKIP
    >>> scores = score_questions(backend.model, backend.tokenizer, questions)  # doctest: +SKIP
    >>> scores.accuracy, scores.mean_gold_loglik  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from langchain_herd.choice_questions import ChoiceQuestion, cloze_prompt

__all__ = ["ChoiceScores", "choice_token_ids", "score_questions"]


@dataclass(frozen=True)
class ChoiceScores:
    """Per-question results of :func:`score_questions`, in the questions' order.

    Attributes:
        ids: question ids.
        correct: whether the gold choice scored highest.
        gold_loglik: the gold choice's summed log-probability (nats).
        picked: index of the choice that scored highest.
    """

    ids: tuple[str, ...]
    correct: np.ndarray
    gold_loglik: np.ndarray
    picked: np.ndarray

    @property
    def accuracy(self) -> float:
        """Share of questions answered correctly."""
        return float(self.correct.mean()) if len(self.ids) else 0.0

    @property
    def mean_gold_loglik(self) -> float:
        """Mean gold log-likelihood per question (higher is better)."""
        return float(self.gold_loglik.mean()) if len(self.ids) else 0.0


def choice_token_ids(tokenizer: Any, question: ChoiceQuestion) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids and each choice's continuation ids (after one space)."""
    prompt = list(tokenizer.encode(cloze_prompt(question.question), add_special_tokens=True))
    choices = [
        list(tokenizer.encode(" " + choice, add_special_tokens=False))
        for choice in question.choices
    ]
    return prompt, choices


def score_questions(
    model: Any,
    tokenizer: Any,
    questions: Sequence[ChoiceQuestion],
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> ChoiceScores:
    """Score ``questions`` with ``model`` as it stands (its active adapter, if any).

    Args:
        model: a transformers causal LM (or a PEFT model over one).
        tokenizer: its tokenizer.
        questions: the questions.
        batch_size: sequences per forward pass.
        progress: called with (sequences done, sequences in all) after each batch.
    """
    import torch

    pairs: list[tuple[int, int, list[int], int]] = []  # question, choice, ids, choice start
    for qi, question in enumerate(questions):
        prompt, choices = choice_token_ids(tokenizer, question)
        for ci, continuation in enumerate(choices):
            pairs.append((qi, ci, prompt + continuation, len(prompt)))
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][2]))
    total = [[0.0] * len(q.choices) for q in questions]
    mean = [[0.0] * len(q.choices) for q in questions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = [pairs[i] for i in order[start : start + batch_size]]
                width = max(len(ids) for _, _, ids, _ in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, (_, _, ids, _) in enumerate(rows):
                    input_ids[r, : len(ids)] = torch.tensor(ids)
                    mask[r, : len(ids)] = 1
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device)
                ).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = logprobs.gather(2, input_ids[:, 1:].to(device).unsqueeze(2)).squeeze(2)
                for r, (qi, ci, ids, begin) in enumerate(rows):
                    # Position t predicts token t + 1: the choice's tokens are begin..len-1.
                    values = picked[r, begin - 1 : len(ids) - 1]
                    total[qi][ci] = float(values.sum())
                    mean[qi][ci] = float(values.mean())
                if progress is not None:
                    progress(min(start + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    picks = np.array([int(np.argmax(m)) for m in mean], dtype=np.int64)
    answers = np.array([q.answer for q in questions], dtype=np.int64)
    return ChoiceScores(
        ids=tuple(q.id for q in questions),
        correct=picks == answers,
        gold_loglik=np.array([total[i][q.answer] for i, q in enumerate(questions)]),
        picked=picks,
    )
