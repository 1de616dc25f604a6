"""What a generation is asked to do and what it yields, independent of HTTP and of torch.

The HTTP layer turns a validated request into a :class:`GenerationPlan`; the backend runs it and
yields :class:`PrefillEvent` (only when prompt logprobs were asked for) and one
:class:`TokenEvent` per generated token, the last one carrying a :class:`Finish`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["length", "eos_token", "stop_sequence"]
"""TGI's finish reasons, spelled as TGI serializes them."""


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; the defaults are TGI's resolved defaults (greedy, no warpers).

    Attributes:
        do_sample: sample from the distribution instead of taking the argmax.
        temperature: logits are divided by this (1.0 = unchanged).
        top_k: keep only the k most likely tokens (0 = off).
        top_p: nucleus sampling mass (1.0 = off).
        typical_p: typical decoding mass (1.0 = off).
        repetition_penalty: CTRL-style penalty on tokens already seen (1.0 = off).
        frequency_penalty: subtracted in proportion to each token's frequency (0.0 = off).
        seed: seed of the sampling generator (always set, like TGI, even when greedy).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    seed: int = 0

    @property
    def has_warpers(self) -> bool:
        """Whether any distribution warper is active; TGI samples whenever one is."""
        return (
            self.temperature != 1.0 or self.top_k != 0 or self.top_p < 1.0 or self.typical_p < 1.0
        )

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (TGI: ``do_sample`` or any warper), else greedy."""
        return self.do_sample or self.has_warpers


@dataclass(frozen=True)
class GenerationPlan:
    """A validated generation request, ready for the backend.

    Attributes:
        input_ids: prompt token ids, already truncated.
        max_new_tokens: stop after this many generated tokens.
        sampling: how each token is chosen.
        stop_sequences: stop once the generated text ends with one of these.
        top_n_tokens: also report this many most likely alternatives per token.
        decoder_input_details: also compute the prompt tokens' logprobs (the ``prefill``).
        grammar: a compiled grammar (:mod:`langchain_herd.server.grammar`) every token must
            keep the output inside, or None.
        adapter: the loaded LoRA adapter that answers, or None for the base model.
    """

    input_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_sequences: tuple[str, ...] = ()
    top_n_tokens: int = 0
    decoder_input_details: bool = False
    grammar: str | None = None
    adapter: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    """One token as TGI reports it (``logprob`` is None only for the first prompt token)."""

    id: int
    text: str
    logprob: float | None
    special: bool = False

    def to_json(self) -> dict[str, object]:
        """TGI's ``Token`` object."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}

    def to_prefill_json(self) -> dict[str, object]:
        """TGI's ``PrefillToken`` object (no ``special`` field)."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob}


@dataclass(frozen=True)
class Finish:
    """How a generation ended, attached to its last token.

    Attributes:
        reason: why it stopped.
        generated_tokens: how many tokens were generated.
        generated_text: the whole generated text, special tokens removed (TGI keeps stop
            sequences in it).
        seed: the sampling seed, or None when decoding was greedy (as TGI reports it).
    """

    reason: FinishReason
    generated_tokens: int
    generated_text: str
    seed: int | None


@dataclass(frozen=True)
class PrefillEvent:
    """The prompt tokens with their logprobs; sent first, only if ``decoder_input_details``."""

    tokens: tuple[TokenInfo, ...]


@dataclass(frozen=True)
class TokenEvent:
    """One generated token; ``finish`` is set on the last one only."""

    token: TokenInfo
    top_tokens: tuple[TokenInfo, ...] = ()
    finish: Finish | None = None


GenerationEvent = PrefillEvent | TokenEvent
"""Anything a backend yields while generating."""
