"""Next-token choice, in TGI's order: penalties, grammar mask, warpers, greedy or sampled pick.

TGI (``NextTokenChooser``) applies the repetition and frequency penalties, then the grammar's
token mask, then the warpers (temperature, top-k, top-p, typical-p), takes the logprob of the
chosen token from the warped distribution, and samples whenever ``do_sample`` is set or any
warper is active.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_herd.server.generation import SamplingParams

if TYPE_CHECKING:
    import torch

    from langchain_herd.server.grammar import TokenConstraint


IMPOSSIBLE_LOGPROB = -9999.0
"""Reported for a token the model cannot pick (logprob -inf, e.g. masked by a grammar): JSON
has no infinity, and OpenAI uses this value for the same case."""


def json_logprob(value: float) -> float:
    """``value`` as a finite number, so every reply and stream event stays valid JSON."""
    if math.isnan(value) or value < IMPOSSIBLE_LOGPROB:
        return IMPOSSIBLE_LOGPROB
    return min(value, 0.0)


def _one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    import torch

    clean = torch.nan_to_num(scores, nan=-float("inf"))
    best = torch.argmax(clean, dim=-1, keepdim=True)
    one_hot = torch.full_like(scores, -float("inf"))
    return one_hot.scatter_(-1, best, 0.0)


@dataclass(frozen=True)
class Choice:
    """The chosen token, its logprob and the most likely alternatives ``(id, logprob)``."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class TokenChooser:
    """Chooses each next token of one generation.

    Args:
        params: the request's sampling parameters.
        top_n_tokens: how many most likely alternatives to report per step.
        suppressed_until: token ids banned while fewer than ``n`` tokens were generated, as
            ``(ids, n)``; used to keep the tiny test model from ending on its first token.
        vocab_limit: choose among the first this many ids only (None: all); the ids past it
            are cut off before anything is computed, so the choice equals that of a model
            without them.
        constraint: the grammar's mask, applied to every step; the caller advances it.
    """

    def __init__(
        self,
        params: SamplingParams,
        *,
        top_n_tokens: int = 0,
        suppressed_until: tuple[frozenset[int], int] = (frozenset(), 0),
        vocab_limit: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> None:
        import torch

        self._params = params
        self._top_n = top_n_tokens
        self._suppressed_ids, self._suppressed_steps = suppressed_until
        self._vocab_limit = vocab_limit
        self._constraint = constraint
        self._warpers = self._build_warpers(params)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(params.seed)

    @staticmethod
    def _build_warpers(params: SamplingParams) -> list[Any]:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
            TypicalLogitsWarper,
        )

        warpers: list[Any] = []
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k != 0:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        if params.typical_p < 1.0:
            warpers.append(TypicalLogitsWarper(params.typical_p))
        return warpers

    def choose(self, all_ids: torch.Tensor, logits: torch.Tensor, step: int) -> Choice:
        """Pick the next token.

        Args:
            all_ids: prompt and generated ids so far, shape ``[1, n]``.
            logits: the model's last-position logits, shape ``[1, vocab]``, float32.
            step: how many tokens were generated before this one.

        Returns:
            The chosen token with its logprob and the top alternatives.
        """
        import torch

        scores = self._penalize(all_ids, logits.clone())[:, : self._vocab_limit]
        if step < self._suppressed_steps and self._suppressed_ids:
            scores[:, list(self._suppressed_ids)] = -float("inf")
        if self._constraint is not None:
            self._constraint.mask(scores)
        unwarped = scores
        for warper in self._warpers:
            scores = warper(all_ids, scores)
        logprobs = torch.log_softmax(scores, dim=-1)
        if bool(torch.isnan(logprobs).any()):
            # Extreme but valid settings (temperature 1e-300, a penalty of 1e-300) overflow
            # float32 into inf - inf; take the limit they tend to: greedy on the unwarped scores.
            scores = _one_hot_argmax(unwarped)
            logprobs = torch.log_softmax(scores, dim=-1)
        if self._params.sampling:
            probs = torch.softmax(scores, dim=-1)
            token_id = int(torch.multinomial(probs[0], 1, generator=self._generator).item())
        else:
            token_id = int(torch.argmax(scores[0]).item())
        top: tuple[tuple[int, float], ...] = ()
        if self._top_n:
            values, indices = torch.topk(logprobs[0], self._top_n)
            top = tuple(
                (int(i), json_logprob(float(v)))
                for i, v in zip(indices.tolist(), values.tolist(), strict=True)
            )
        return Choice(token_id, json_logprob(float(logprobs[0, token_id].item())), top)

    def _penalize(self, all_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        penalty = self._params.repetition_penalty
        if penalty != 1.0:
            seen = torch.gather(scores, 1, all_ids)
            seen = torch.where(seen < 0, seen * penalty, seen / penalty)
            scores.scatter_(1, all_ids, seen)
        frequency = self._params.frequency_penalty
        if frequency != 0.0:
            # TGI's frequency penalty: subtract penalty * (count of the token / sequence length).
            counts = torch.zeros_like(scores)
            counts.scatter_add_(1, all_ids, torch.ones_like(all_ids, dtype=scores.dtype))
            scores -= frequency * counts / all_ids.shape[1]
        return scores
