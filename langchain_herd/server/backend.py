"""The loaded model and tokenizer, and the token loop that runs one generation.

Generation is a manual loop over the model's forward pass with a KV cache, so each token can be
reported with its logprob, stop sequences can be checked on the decoded text the way TGI does,
and a stream can be cancelled between tokens. A lock gives the model to one loop at a time (one
model instance is not safe to share mid-forward). With ``max_batch_size`` above 1, concurrent
requests are batched so that one loop advances several sequences per forward pass
(:mod:`langchain_herd.server.batching`); with 1 they run one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_herd.server.adapters import (
    AdapterSpec,
    adapter_in_use,
    attach_adapters,
    loaded_adapters,
)
from langchain_herd.server.batching import (
    DEFAULT_BATCH_WAIT_S,
    DEFAULT_MAX_BATCH_SIZE,
    BatchScheduler,
    BatchStats,
    LoraBatching,
)
from langchain_herd.server.generation import (
    Finish,
    FinishReason,
    GenerationEvent,
    GenerationPlan,
    PrefillEvent,
    SamplingParams,
    TokenEvent,
    TokenInfo,
)
from langchain_herd.server.grammar import GrammarVocabularies, TokenConstraint
from langchain_herd.server.tgi_errors import TGIError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_DONE = object()

UNCONSTRAINED_VOCAB_KEY = "herd_unconstrained_vocab_size"
"""Model config attribute that sets :class:`GenerationBackend`'s ``unconstrained_vocab_size``."""


class _IncrementalDecoder:
    """Decodes one token at a time the way TGI does (``prefix_offset`` / ``read_offset``).

    Decoding a token alone loses the leading space of SentencePiece tokens and splits multi-byte
    characters, so each step decodes a short window ending at the new token and keeps only the
    new suffix; a trailing replacement character means the character is not complete yet.
    """

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: Sequence[int]) -> None:
        self._decode = decode
        self._ids = list(prompt_ids)
        self._prefix_offset = max(len(self._ids) - 5, 0)
        self._read_offset = len(self._ids)

    def push(self, token_id: int) -> str:
        """Add a token and return the text it completes (may be empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""


class GenerationBackend:
    """A causal language model and its tokenizer, serving concurrent requests in batches.

    Args:
        model: a transformers causal LM (``PreTrainedModel``), in eval mode.
        tokenizer: its tokenizer; ``chat_template`` is used by the chat route.
        model_id: the name the server reports (``/info``, ``/v1/models``, chat replies).
        min_new_tokens: end-of-sequence is banned until this many tokens were generated (the
            tiny random model uses 1 so greedy output is never empty).
        torch_threads: intra-op threads for the generating thread (None: torch's default).
            The tiny model uses 1: its matmuls gain nothing from threads, and OpenMP threads
            that spin while another process holds a core make it ~50x slower. torch keeps this
            setting as the default of threads started later, so it is process-wide in effect.
        unconstrained_vocab_size: without a grammar, only the first this many ids can be
            chosen, and prompt logprobs are over them alone (default: the model config's
            ``herd_unconstrained_vocab_size``, which survives ``save_pretrained``, else all).
            The tiny model's character tokens come after its words and are for grammars only,
            so its output without a grammar is what it was before they existed, down to
            seeded samples.
        max_batch_size: most concurrent requests that share one forward pass per token
            (1: one request at a time, as before batching existed).
        batch_wait_s: how long a batch that is not full waits for more requests to join it.
        lora_batching: ``mixed`` (requests for different LoRA adapters share a batch through
            PEFT's ``adapter_names``) or ``grouped`` (one adapter per batch).

    Example:
        >>> from langchain_herd.server import load_backend
        >>> backend = load_backend("tiny")
        >>> text = backend.generate_text("hello world", max_new_tokens=5)
        >>> isinstance(text, str) and len(text) > 0
        True
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        min_new_tokens: int = 0,
        torch_threads: int | None = None,
        unconstrained_vocab_size: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        lora_batching: LoraBatching = "mixed",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.min_new_tokens = min_new_tokens
        self.torch_threads = torch_threads
        if unconstrained_vocab_size is None:
            configured = getattr(getattr(model, "config", None), UNCONSTRAINED_VOCAB_KEY, None)
            unconstrained_vocab_size = int(configured) if configured is not None else None
        self.unconstrained_vocab_size = unconstrained_vocab_size
        self.eos_token_ids = self._find_eos_ids(model, tokenizer)
        self._grammars = GrammarVocabularies(tokenizer, self.eos_token_ids)
        self.special_token_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._lock = threading.Lock()
        # Fast tokenizers are Rust objects that may refuse concurrent use ("Already borrowed");
        # prompts are encoded on the event loop while the worker thread decodes.
        self._tokenizer_lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self.stopped_generations = 0
        """Generations stopped before their end because their consumer went away."""
        self.batch_stats = BatchStats()
        """Batches and forward passes run so far."""
        self._batcher = BatchScheduler(
            self, max_batch_size=2, batch_wait_s=batch_wait_s, lora_batching=lora_batching
        )
        self.max_batch_size = max_batch_size

    @property
    def max_batch_size(self) -> int:
        """Most requests that share one forward pass (1: no batching)."""
        return self._max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {value}")
        self._max_batch_size = value
        self._batcher.max_batch_size = value

    @property
    def batch_wait_s(self) -> float:
        """How long a batch that is not full waits for more requests to join it."""
        return self._batcher.batch_wait_s

    @batch_wait_s.setter
    def batch_wait_s(self, value: float) -> None:
        self._batcher.batch_wait_s = max(0.0, value)

    @property
    def lora_batching(self) -> LoraBatching:
        """How requests for different LoRA adapters share batches (``mixed`` or ``grouped``)."""
        return self._batcher.lora_batching

    @lora_batching.setter
    def lora_batching(self, value: LoraBatching) -> None:
        if value not in ("mixed", "grouped"):
            raise ValueError(f"lora_batching must be 'mixed' or 'grouped', got {value!r}")
        self._batcher.lora_batching = value

    @property
    def pad_token_id(self) -> int:
        """The id that fills the left of shorter prompts in a batch (masked out)."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = next(iter(sorted(self.eos_token_ids)), 0)
        return int(pad)

    @staticmethod
    def _find_eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
        ids: set[int] = set()
        generation_config = getattr(model, "generation_config", None)
        configured = getattr(generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured is not None:
            ids.update(int(i) for i in configured)
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        return frozenset(ids)

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the LoRA adapters loaded on the model."""
        return loaded_adapters(self.model)

    def load_adapters(self, specs: list[AdapterSpec]) -> None:
        """Load PEFT LoRA adapters onto the model (at start, before serving).

        Raises:
            ConfigError: an adapter is missing, not safetensors, or does not fit the model.
        """
        self.model = attach_adapters(self.model, specs)

    def adapter_for(self, requested: str | None) -> str | None:
        """The adapter a request's ``adapter_id`` selects (None: the base model).

        Without adapters the id is ignored, as before (clients send ids out of habit). With
        them, the base model's own name (or none) selects the base model.

        Raises:
            TGIError: a 422 naming the loaded adapters, for an id that is none of them.
        """
        adapters = self.adapters
        if requested is None or not adapters or requested in (self.model_id, "tgi", ""):
            return None
        if requested in adapters:
            return requested
        raise TGIError.validation(
            f"unknown LoRA adapter {requested!r}; this server has {list(adapters)} (or "
            f"{self.model_id!r} for the base model)"
        )

    @property
    def dtype(self) -> str:
        """The weights' dtype as TGI's ``/info`` spells it (``torch.float32``)."""
        return str(self.model.dtype)

    @property
    def device_type(self) -> str:
        """Where the model runs (``cpu``)."""
        return str(self.model.device.type)

    @property
    def queue_size(self) -> int:
        """How many generations are waiting for the model."""
        return self._waiting + self._batcher.pending

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``."""
        with self._tokenizer_lock:
            ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return [int(i) for i in ids]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``."""
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    @property
    def chat_template_source(self) -> str:
        """The chat template's Jinja source ("" without one)."""
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):  # named templates: the default one renders chats
            template = template.get("default", next(iter(template.values()), ""))
        return template if isinstance(template, str) else ""

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt for ``messages`` under the tokenizer's chat template, ready for the reply.

        Args:
            messages: role/content dicts (plus ``tool_calls`` / ``tool_call_id`` for templates
                that render them).
            tools: passed to the template as its ``tools`` variable, when it has one.

        Raises:
            ValueError: the tokenizer has no chat template.
            Exception: whatever the template raises (``raise_exception`` in Jinja).
        """
        if not self.has_chat_template:
            raise ValueError("template not found")
        extra: dict[str, Any] = {"tools": [dict(tool) for tool in tools]} if tools else {}
        with self._tokenizer_lock:
            rendered = self.tokenizer.apply_chat_template(
                [dict(message) for message in messages],
                tokenize=False,
                add_generation_prompt=True,
                **extra,
            )
        return str(rendered)

    def generate(
        self, plan: GenerationPlan, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Run one generation, waiting for the model first; blocks, so call it off the event loop.

        With ``max_batch_size`` above 1 it joins the next batch of concurrent requests.

        Args:
            plan: what to generate.
            cancel: set it to stop between tokens (the consumer went away).

        Yields:
            A :class:`PrefillEvent` if asked for, then one :class:`TokenEvent` per token.
        """
        cancel = cancel or threading.Event()
        if self.max_batch_size > 1:
            yield from self._batcher.submit(plan, cancel)
        else:
            yield from self.generate_alone(plan, cancel)

    def generate_alone(
        self, plan: GenerationPlan, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        """Run one generation by itself (no batch), waiting for the model first."""
        with self.model_turn(), adapter_in_use(self.model, plan.adapter):
            # The active adapter is model state: chosen under the model lock.
            yield from self._generate_locked(plan, cancel)

    @contextlib.contextmanager
    def model_turn(self) -> Iterator[None]:
        """Hold the model (waiting for it first) with torch set up for generating."""
        import torch

        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            if self.torch_threads is not None and torch.get_num_threads() != self.torch_threads:
                torch.set_num_threads(self.torch_threads)
            with torch.inference_mode():
                yield
        finally:
            self._lock.release()

    def _generate_locked(
        self, plan: GenerationPlan, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        import torch

        all_ids = torch.tensor([list(plan.input_ids)], dtype=torch.long)
        # All positions' logits only when the prefill logprobs are asked for.
        out = self._forward(all_ids, None, all_positions=plan.decoder_input_details)
        if plan.decoder_input_details:
            yield PrefillEvent(self._prefill_tokens(all_ids, out.logits))
        logits = out.logits[:, -1, :].float()
        cache = out.past_key_values
        sequence = self.start_sequence(plan)
        for _ in range(plan.max_new_tokens):
            if cancel.is_set():
                self.stopped_generations += 1  # under the model lock: no race
                return
            event = sequence.advance(logits)
            yield event
            if event.finish is not None:
                return
            out = self._forward(sequence.all_ids[:, -1:], cache, all_positions=False)
            logits = out.logits[:, -1, :].float()
            cache = out.past_key_values

    def start_sequence(self, plan: GenerationPlan) -> _Sequence:
        """The per-sequence state of one generation: its chooser, grammar, decoder and stops."""
        return _Sequence(self, plan)

    def _forward(self, input_ids: torch.Tensor, cache: Any, *, all_positions: bool) -> Any:
        self.batch_stats.record_forward(1)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
        if cache is not None:
            kwargs["past_key_values"] = cache
        if self._logits_to_keep:  # saves a [prompt, vocab] logits tensor on long prompts
            kwargs["logits_to_keep"] = 0 if all_positions else 1
        return self.model(**kwargs)

    def forward_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        extra: Mapping[str, Any],
    ) -> tuple[torch.Tensor, Any]:
        """One forward pass over a left-padded batch: last-position logits (float32) and cache."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": True,
            **extra,
        }
        if cache is not None:
            kwargs["past_key_values"] = cache
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        self.batch_stats.record_forward(int(input_ids.shape[0]))
        out = self.model(**kwargs)
        return out.logits[:, -1, :].float(), out.past_key_values

    def _finish_reason(
        self, plan: GenerationPlan, token_id: int, generated: int, text: str
    ) -> FinishReason | None:
        # TGI's StoppingCriteria order: length first, then EOS, then stop sequences; a stop
        # sequence counts only when the text ends with it, and it stays in the text.
        if generated >= plan.max_new_tokens:
            return "length"
        if token_id in self.eos_token_ids:
            return "eos_token"
        if any(text.endswith(stop) for stop in plan.stop_sequences if stop):
            return "stop_sequence"
        return None

    def _final_text(self, all_ids: list[int], generated: int) -> str:
        # Like TGI: decode the generated tokens after one token of context, so a leading space
        # that belongs to the first generated token survives, and drop special tokens.
        start = len(all_ids) - generated
        context = all_ids[max(start - 1, 0) : start]
        prefix = self.decode(context, skip_special_tokens=True)
        full = self.decode(context + all_ids[start:], skip_special_tokens=True)
        return full[len(prefix) :] if full.startswith(prefix) else full

    def _token_text(self, token_id: int) -> str:
        return self.decode([token_id])

    def _prefill_tokens(self, ids: torch.Tensor, logits: torch.Tensor) -> tuple[TokenInfo, ...]:
        import torch

        id_list = ids[0].tolist()
        limit = self.unconstrained_vocab_size
        if limit is not None and max(id_list) >= limit:
            limit = None  # the prompt spells grammar-only tokens: keep them in the distribution
        logprobs = torch.log_softmax(logits[0, :-1, :limit].float(), dim=-1)
        # Position i predicts token i + 1; the first prompt token has no logprob.
        picked = logprobs.gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1).tolist()
        tokens = [TokenInfo(id_list[0], self._token_text(id_list[0]), None)]
        tokens += [
            TokenInfo(i, self._token_text(i), float(lp))
            for i, lp in zip(id_list[1:], picked, strict=True)
        ]
        return tuple(tokens)

    async def agenerate(self, plan: GenerationPlan) -> AsyncGenerator[GenerationEvent, None]:
        """Run :meth:`generate` in a worker thread and yield its events on the event loop.

        Leaving the iteration early (a client that went away) cancels the generation between
        tokens, which frees the model for the next request.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (server shutdown): nobody is listening.
                cancel.set()

        def work() -> None:
            try:
                for event in self.generate(plan, cancel):
                    put(event)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(exc)
            else:
                put(_DONE)

        threading.Thread(target=work, name="herd-generate", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, PrefillEvent | TokenEvent)
                yield item
        finally:
            cancel.set()

    def generate_text(
        self, prompt: str, *, max_new_tokens: int = 20, sampling: SamplingParams | None = None
    ) -> str:
        """Generate a completion of ``prompt`` directly, without HTTP (handy in scripts)."""
        plan = GenerationPlan(
            input_ids=tuple(self.encode(prompt)),
            max_new_tokens=max_new_tokens,
            sampling=sampling or SamplingParams(),
        )
        for event in self.generate(plan):
            if isinstance(event, TokenEvent) and event.finish is not None:
                return event.finish.generated_text
        return ""


class _Sequence:
    """One generation's choices, grammar, decoded text and stopping, one token at a time.

    The same object drives a lone generation and a row of a batch, so both choose, decode and
    stop alike; only the forward pass that feeds :meth:`advance` differs.
    """

    def __init__(self, backend: GenerationBackend, plan: GenerationPlan) -> None:
        import torch

        from langchain_herd.server.sampling import TokenChooser

        self._backend = backend
        self.plan = plan
        self.all_ids = torch.tensor([list(plan.input_ids)], dtype=torch.long)
        self._constraint: TokenConstraint | None = None
        if plan.grammar is not None:
            self._constraint = backend._grammars.get().constraint(plan.grammar)
        if self._constraint is None:
            self._chooser = TokenChooser(
                plan.sampling,
                top_n_tokens=plan.top_n_tokens,
                suppressed_until=(backend.eos_token_ids, backend.min_new_tokens),
                vocab_limit=backend.unconstrained_vocab_size,
            )
        else:  # the grammar decides when the output may end, and which tokens it needs
            self._chooser = TokenChooser(
                plan.sampling, top_n_tokens=plan.top_n_tokens, constraint=self._constraint
            )
        self._decoder = _IncrementalDecoder(backend.decode, plan.input_ids)
        self._text = ""
        self.generated = 0

    def advance(self, logits: torch.Tensor) -> TokenEvent:
        """Choose the next token from this sequence's last-position ``logits`` (``[1, vocab]``,
        float32); the event carries a :class:`Finish` when the sequence is done."""
        import torch

        backend = self._backend
        choice = self._chooser.choose(self.all_ids, logits, self.generated)
        if self._constraint is not None:
            self._constraint.advance(choice.token_id)
        self.all_ids = torch.cat([self.all_ids, torch.tensor([[choice.token_id]])], dim=1)
        text = self._decoder.push(choice.token_id)
        self._text += text
        special = backend.special_token_ids
        token = TokenInfo(choice.token_id, text, choice.logprob, choice.token_id in special)
        top = tuple(TokenInfo(i, backend._token_text(i), lp, i in special) for i, lp in choice.top)
        self.generated += 1
        plan = self.plan
        reason = backend._finish_reason(plan, choice.token_id, self.generated, self._text)
        if reason is None:
            return TokenEvent(token, top)
        finish = Finish(
            reason=reason,
            generated_tokens=self.generated,
            generated_text=backend._final_text(self.all_ids[0].tolist(), self.generated),
            seed=plan.sampling.seed if plan.sampling.sampling else None,
        )
        return TokenEvent(token, top, finish)
