"""The cloze scorer against the same log-likelihoods computed one choice at a time."""

from __future__ import annotations

import pytest
import torch

from langchain_herd.choice_questions import ChoiceQuestion, cloze_prompt, load_questions
from langchain_herd.choice_scoring import score_questions
from langchain_herd.server import load_backend


def _loglik(
    model: torch.nn.Module, tokenizer: object, prompt: str, continuation: str
) -> list[float]:
    """Each continuation token's log-probability, from one unpadded forward pass."""
    head = tokenizer.encode(prompt, add_special_tokens=True)  # type: ignore[attr-defined]
    tail = tokenizer.encode(" " + continuation, add_special_tokens=False)  # type: ignore[attr-defined]
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return [float(logprobs[len(head) + i - 1, token]) for i, token in enumerate(tail)]


def test_batched_scores_equal_choice_by_choice_ones() -> None:
    backend = load_backend("tiny")
    questions = load_questions("skills", "dev", per_group=3)
    questions.append(ChoiceQuestion("x", "other", "A long one?", ("yes", "no, not at all"), 1))
    scores = score_questions(backend.model, backend.tokenizer, questions, batch_size=5)
    for index, question in enumerate(questions):
        prompt = cloze_prompt(question.question)
        per_token = [_loglik(backend.model, backend.tokenizer, prompt, c) for c in question.choices]
        means = [sum(values) / len(values) for values in per_token]
        picked = max(range(len(means)), key=means.__getitem__)
        assert scores.picked[index] == picked
        assert scores.correct[index] == (picked == question.answer)
        gold = sum(per_token[question.answer])
        assert scores.gold_loglik[index] == pytest.approx(gold, abs=1e-3)
    assert scores.accuracy == pytest.approx(scores.correct.mean())
