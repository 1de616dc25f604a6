"""TGI's request validation: the same checks, in the same order, with the same messages.

The messages follow TGI's router (``validation.rs``); each is wrapped as
``Input validation error: ...`` with status 422 by :meth:`TGIError.validation`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import anyio.to_thread

from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.generation import GenerationPlan, SamplingParams
from langchain_herd.server.grammar import GrammarError, compile_grammar
from langchain_herd.server.schemas import ChatRequest, GenerateParameters, Grammar
from langchain_herd.server.tgi_errors import TGIError

DEFAULT_GENERATION_LENGTH = 1024
"""TGI's cap on ``max_new_tokens`` when a request sends ``null`` (fill up to the context)."""

MAX_CHARS_PER_TOKEN = 64
"""A prompt longer than ``max_input_tokens`` times this many characters is refused before it
is tokenized, so an oversized prompt costs the server nothing. Tokens of the usual
vocabularies are far shorter, so a prompt that fits in tokens is not refused by this bound."""

INLINE_PROMPT_CHARS = 8192
"""Prompts up to this size are tokenized on the event loop; longer ones in a worker thread."""

MAX_SEED = 2**64 - 1
"""TGI's seed is a ``u64``."""


@dataclass(frozen=True)
class ServerLimits:
    """The router limits TGI reports in ``/info`` and enforces on every request.

    Attributes:
        max_input_tokens: longest accepted prompt, in tokens.
        max_total_tokens: prompt plus ``max_new_tokens`` must fit in this.
        max_concurrent_requests: more requests in flight than this are answered 429.
        max_best_of: always 1 (``best_of`` is not implemented).
        max_stop_sequences: most stop sequences per request.
        max_top_n_tokens: most ``top_n_tokens`` per request.
        default_max_new_tokens: used when a request does not say (TGI's default is 100).
    """

    max_input_tokens: int = 1024
    max_total_tokens: int = 2048
    max_concurrent_requests: int = 8
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    default_max_new_tokens: int = 100


@dataclass(frozen=True)
class ValidatedRequest:
    """A request that passed validation.

    Attributes:
        plan: what the backend must generate.
        input_length: prompt length in tokens, after truncation.
        details: whether the reply carries ``details``.
        return_full_text: whether the prompt is prepended to the generated text.
        inputs: the prompt text as received.
    """

    plan: GenerationPlan
    input_length: int
    details: bool
    return_full_text: bool
    inputs: str


def validate_generate(
    inputs: str,
    params: GenerateParameters,
    *,
    backend: GenerationBackend,
    limits: ServerLimits,
    stream: bool = False,
    add_special_tokens: bool = True,
) -> ValidatedRequest:
    """Check a generate request and tokenize its prompt.

    Args:
        inputs: the prompt.
        params: its parameters (``max_new_tokens`` missing vs null is read from
            ``params.model_fields_set``).
        backend: tokenizes the prompt.
        limits: the server's limits.
        stream: the reply is streamed (forbids ``best_of`` and ``decoder_input_details``).
        add_special_tokens: False for chat prompts, which the template already framed.

    Returns:
        The validated request.

    Raises:
        TGIError: a validation error (422) with TGI's message.
    """
    best_of = params.best_of if params.best_of is not None else 1
    if stream and best_of != 1:
        raise TGIError.validation("`best_of` != 1 is not supported when streaming tokens")
    if stream and params.decoder_input_details:
        raise TGIError.validation(
            "`decoder_input_details` == true is not supported when streaming tokens"
        )
    if best_of != 1:
        if limits.max_best_of == 1:
            raise TGIError.validation("`best_of` != 1 is not allowed for this endpoint")
        raise TGIError.validation(
            f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}"
        )
    sampling = _sampling_params(params)
    max_new_tokens = params.max_new_tokens
    if "max_new_tokens" not in params.model_fields_set:
        max_new_tokens = limits.default_max_new_tokens
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise TGIError.validation("`max_new_tokens` must be strictly positive")
    if len(params.stop) > limits.max_stop_sequences:
        raise TGIError.validation(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. "
            f"Given: {len(params.stop)}"
        )
    top_n_tokens = params.top_n_tokens or 0
    if top_n_tokens < 0 or top_n_tokens > limits.max_top_n_tokens:
        raise TGIError.validation(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n_tokens}"
        )
    if not inputs:
        raise TGIError.validation("`inputs` cannot be empty")
    max_chars = limits.max_input_tokens * MAX_CHARS_PER_TOKEN
    if params.truncate is None and len(inputs) > max_chars:
        # Refused before tokenizing: tokenizing megabytes would hold the server for seconds.
        raise TGIError.validation(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: "
            f"{len(inputs)} characters, more than this server reads for that many tokens "
            f"({max_chars}); shorten the prompt or set `truncate`"
        )
    truncate = params.truncate
    if truncate is not None and (truncate <= 0 or truncate > limits.max_input_tokens):
        raise TGIError.validation(
            "`truncate` must be strictly positive and less than "
            f"{limits.max_input_tokens}. Given: {truncate}"
        )
    input_ids = backend.encode(inputs, add_special_tokens=add_special_tokens)
    if truncate is not None:
        input_ids = input_ids[-truncate:]  # TGI keeps the end of the prompt
    input_length = len(input_ids)
    if input_length == 0:
        # The model cannot run on nothing (whitespace-only text may tokenize to no token).
        raise TGIError.validation(
            "`inputs` must hold at least one token; this prompt tokenizes to none (it is only "
            "whitespace?): send some text"
        )
    if max_new_tokens is None:
        # An explicit null: generate up to the context, capped like TGI.
        max_new_tokens = max(
            min(limits.max_total_tokens - input_length, DEFAULT_GENERATION_LENGTH), 1
        )
    if input_length + max_new_tokens > limits.max_total_tokens:
        raise TGIError.validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > limits.max_input_tokens:
        raise TGIError.validation(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
        )
    grammar = validate_grammar(params.grammar) if params.grammar is not None else None
    adapter = backend.adapter_for(params.adapter_id)
    plan = GenerationPlan(
        input_ids=tuple(input_ids),
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop_sequences=tuple(params.stop),
        top_n_tokens=top_n_tokens,
        decoder_input_details=params.decoder_input_details,
        grammar=grammar,
        adapter=adapter,
    )
    return ValidatedRequest(
        plan=plan,
        input_length=input_length,
        details=params.details or params.decoder_input_details,
        return_full_text=bool(params.return_full_text),
        inputs=inputs,
    )


def validate_grammar(grammar: Grammar) -> str:
    """Compile a request's grammar, failing like TGI (last of its checks, 422).

    Returns:
        The compiled grammar for :attr:`GenerationPlan.grammar`.

    Raises:
        TGIError: ``grammar is not valid: <why>``.
    """
    try:
        return compile_grammar(grammar.type, grammar.value)
    except GrammarError as exc:
        raise TGIError.validation(f"grammar is not valid: {exc}") from exc


async def avalidate_generate(
    inputs: str,
    params: GenerateParameters,
    *,
    backend: GenerationBackend,
    limits: ServerLimits,
    stream: bool = False,
) -> ValidatedRequest:
    """:func:`validate_generate` with a long prompt tokenized in a worker thread.

    Tokenizing is CPU work that holds the event loop (a megabyte takes about a second), during
    which no other request, ``/health`` included, would be answered.
    """
    if len(inputs) <= INLINE_PROMPT_CHARS:
        return validate_generate(inputs, params, backend=backend, limits=limits, stream=stream)
    return await anyio.to_thread.run_sync(
        lambda: validate_generate(inputs, params, backend=backend, limits=limits, stream=stream)
    )


def _finite(name: str, value: float | None) -> None:
    # NaN passes every range check (all comparisons are false) and infinity breaks the
    # softmax; both would fail deep inside generation, as a server error.
    if value is not None and not math.isfinite(value):
        raise TGIError.validation(f"`{name}` must be a finite number. Given: {value}")


def _sampling_params(params: GenerateParameters) -> SamplingParams:
    for name in ("temperature", "repetition_penalty", "frequency_penalty", "top_p", "typical_p"):
        _finite(name, getattr(params, name))
    if params.seed is not None and not 0 <= params.seed <= MAX_SEED:
        raise TGIError.validation(f"`seed` must be >= 0 and <= {MAX_SEED}. Given: {params.seed}")
    temperature = params.temperature if params.temperature is not None else 1.0
    if temperature <= 0:
        raise TGIError.validation("`temperature` must be strictly positive")
    repetition_penalty = params.repetition_penalty if params.repetition_penalty is not None else 1.0
    if repetition_penalty <= 0:
        raise TGIError.validation("`repetition_penalty` must be strictly positive")
    frequency_penalty = params.frequency_penalty if params.frequency_penalty is not None else 0.0
    if not -2.0 <= frequency_penalty <= 2.0:
        raise TGIError.validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if params.top_p is not None and not 0.0 < params.top_p < 1.0:
        raise TGIError.validation("`top_p` must be > 0.0 and < 1.0")
    if params.typical_p is not None and not 0.0 < params.typical_p < 1.0:
        raise TGIError.validation("`typical_p` must be > 0.0 and < 1.0")
    if params.top_k is not None and params.top_k <= 0:
        raise TGIError.validation("`top_k` must be strictly positive")
    seed = params.seed if params.seed is not None else random.getrandbits(64)
    return SamplingParams(
        do_sample=params.do_sample,
        temperature=temperature,
        top_k=params.top_k or 0,
        top_p=params.top_p if params.top_p is not None else 1.0,
        typical_p=params.typical_p if params.typical_p is not None else 1.0,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        seed=seed,
    )


def chat_parameters(request: ChatRequest, limits: ServerLimits) -> GenerateParameters:
    """The generate parameters TGI derives from a chat request.

    TGI decodes greedily only when ``temperature`` is exactly 0; otherwise (missing included)
    it samples. ``presence_penalty`` becomes ``repetition_penalty = presence_penalty + 2``.
    """
    greedy = request.temperature == 0.0
    return GenerateParameters(
        do_sample=not greedy,
        temperature=None if greedy else request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stop_sequences(),
        max_new_tokens=(
            request.max_tokens
            if request.max_tokens is not None
            else request.max_completion_tokens
            if request.max_completion_tokens is not None
            else limits.default_max_new_tokens
        ),
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=(
            request.presence_penalty + 2.0 if request.presence_penalty is not None else None
        ),
        top_n_tokens=request.top_logprobs,
        details=True,
    )
