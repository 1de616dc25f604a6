"""Batched generation: several waiting requests share one forward pass per token.

A :class:`BatchScheduler` owns one worker thread. Requests queue up; whenever the model is
free the worker takes up to ``max_batch_size`` of them and runs them as one static batch:
the prompts left-padded into one tensor with an ``attention_mask`` and explicit
``position_ids`` (the mask's cumulative sum minus one), one prefill, then one forward pass per
step over the rows still running. Finished and cancelled rows leave the batch (their KV cache
rows are dropped with ``batch_select_indices``), so a long request does not keep paying for
short ones. Each row keeps its own chooser, grammar, incremental decoder and stop logic
(:class:`~langchain_herd.server.backend.GenerationBackend`'s per-sequence state, the same one a
lone request uses) and hands each event to its own consumer as soon as it is chosen, so a
stream sees its tokens while the batch runs.

What runs alone:

- a batch of one (a lone request, or the only one that fits): exactly the unbatched path,
  token for token, with no padding, mask or position ids;
- a request asking for the prompt's logprobs (``decoder_input_details``): keeping every
  position's logits of a padded batch costs ``batch x prompt x vocab`` floats, so it takes
  the unbatched path.

Requests that arrive while a batch runs wait for the next one (static batching; joining a
running batch would need the newcomer's prefill merged into a padded cache, which is not
cheap here). When the worker finds fewer than ``max_batch_size`` requests it waits
``batch_wait_s`` (a few milliseconds) for more, since concurrent clients rarely arrive in the
same millisecond.

LoRA adapters: ``mixed`` (the default) puts requests for different adapters in one batch and
passes PEFT's ``adapter_names=[...]`` forward argument (``"__base__"`` for the base model):
every LoRA layer runs the base weights once for the whole batch and each adapter on its own
sub-batch. ``grouped`` batches only requests for the same adapter, with that adapter set on
the model. Measured on SmolLM2 with three adapters (``bench/server_batching.py``): when all
requests are queued at once, grouped is a little faster (x2.50 over one at a time, mixed
x2.37: PEFT's per-adapter sub-batches cost more than a few more batches); when requests for
different adapters arrive interleaved (``bench/router_grouping.py``), grouped splits them into
batches of 2-3 and runs at 0.80 of mixed. Mixed is the default because it does not depend on
the arrival order; ``HerdRouter.batch`` sends a herd's queries grouped by adapter, and with
that grouped is the fastest pair (x1.12 over mixed).

Numerics: a padded batch runs different matrix shapes than a lone request, so logits can
differ from the unbatched ones in the last bits of float32; greedy and seeded outputs agree
unless two tokens are that close to a tie.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from langchain_herd.server.generation import GenerationEvent, GenerationPlan, TokenEvent

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

LoraBatching = Literal["mixed", "grouped"]
"""How requests for different LoRA adapters share batches (see the module docstring)."""

DEFAULT_MAX_BATCH_SIZE = 8
"""Requests per batch when none is configured (``herd serve --max-batch-size``)."""

DEFAULT_BATCH_WAIT_S = 0.005
"""How long the worker waits for more requests before starting a batch that is not full."""

BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed batch's ``adapter_names``."""

_END = object()


class _Sequence(Protocol):
    """One generation's own state (choices, grammar, decoding, stops): what a row runs."""

    plan: GenerationPlan

    def advance(self, logits: torch.Tensor) -> TokenEvent: ...


class BatchableModel(Protocol):
    """What batching needs of the model it drives (``GenerationBackend`` is one)."""

    model: Any
    batch_stats: BatchStats
    stopped_generations: int

    @property
    def pad_token_id(self) -> int: ...

    def generate_alone(
        self, plan: GenerationPlan, cancel: threading.Event
    ) -> Iterator[GenerationEvent]: ...

    def model_turn(self) -> contextlib.AbstractContextManager[None]: ...

    def start_sequence(self, plan: GenerationPlan) -> _Sequence: ...

    def forward_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        extra: Mapping[str, Any],
    ) -> tuple[torch.Tensor, Any]: ...


@dataclass
class BatchStats:
    """What the batching worker did, for tests, benchmarks and ``/metrics`` readers.

    Example:
        >>> stats = BatchStats()
        >>> stats.record_batch(3)
        >>> stats.record_forward(3)
        >>> (stats.batches, stats.largest_batch, stats.forward_passes, stats.rows_forwarded)
        (1, 3, 1, 3)
    """

    batches: int = 0
    """Batches the scheduler started (a lone request counts as a batch of one; with
    ``max_batch_size`` 1 there is no scheduler and this stays 0)."""
    forward_passes: int = 0
    """Forward passes of the model, prefill included."""
    rows_forwarded: int = 0
    """Sequences summed over all forward passes (over ``forward_passes``: mean batch width)."""
    largest_batch: int = 0
    """The most requests one batch started with."""
    batch_sizes: Counter[int] = field(default_factory=Counter)
    """How many batches started with each size."""

    def record_batch(self, size: int) -> None:
        """Count a batch of ``size`` requests."""
        self.batches += 1
        self.batch_sizes[size] += 1
        self.largest_batch = max(self.largest_batch, size)

    def record_forward(self, rows: int) -> None:
        """Count one forward pass over ``rows`` sequences."""
        self.forward_passes += 1
        self.rows_forwarded += rows


class _Request:
    """One queued generation and the channel its events go back on."""

    def __init__(self, plan: GenerationPlan, cancel: threading.Event) -> None:
        self.plan = plan
        self.cancel = cancel
        self.events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.closed = False

    def emit(self, event: GenerationEvent) -> None:
        self.events.put(event)

    def close(self, error: BaseException | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.events.put(_END if error is None else error)


class BatchScheduler:
    """Queues generations and runs them in batches on one worker thread.

    Args:
        backend: the model; its lock is held while a batch runs.
        max_batch_size: most requests per batch (at least 2; 1 means no scheduler at all).
        batch_wait_s: how long to wait for more requests before starting a batch that is
            not full.
        lora_batching: ``mixed`` or ``grouped`` (see the module docstring).

    Example:
        >>> from langchain_herd.server import load_backend
        >>> from langchain_herd.server.generation import GenerationPlan
        >>> backend = load_backend("tiny")
        >>> scheduler = BatchScheduler(backend, max_batch_size=4)
        >>> plan = GenerationPlan(input_ids=tuple(backend.encode("hello")), max_new_tokens=3)
        >>> events = list(scheduler.submit(plan, threading.Event()))
        >>> events[-1].finish.generated_tokens
        3
    """

    def __init__(
        self,
        backend: BatchableModel,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        lora_batching: LoraBatching = "mixed",
    ) -> None:
        self._backend = backend
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.lora_batching: LoraBatching = lora_batching
        self._pending: deque[_Request] = deque()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    def submit(self, plan: GenerationPlan, cancel: threading.Event) -> Iterator[GenerationEvent]:
        """Queue ``plan`` and yield its events as its batch produces them (blocks).

        Leaving the iteration early sets ``cancel``, which takes the request out of its batch
        before the next token.
        """
        request = _Request(plan, cancel)
        with self._ready:
            self._pending.append(request)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="herd-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        try:
            while True:
                item = request.events.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            cancel.set()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except BaseException as exc:  # handed to every consumer still waiting
                logger.debug("batch of %d failed: %r", len(batch), exc)
                for request in batch:
                    request.close(exc)

    def _next_batch(self) -> list[_Request]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            if len(self._pending) < self.max_batch_size and self.batch_wait_s > 0:
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._pending) < self.max_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
            return self._take()

    def _take(self) -> list[_Request]:
        """The next batch: the oldest request and, if it can share, others that fit with it."""
        head = self._pending.popleft()
        if not _batchable(head.plan):
            return [head]
        batch = [head]
        rest: deque[_Request] = deque()
        while self._pending:
            request = self._pending.popleft()
            fits = _batchable(request.plan) and (
                self.lora_batching == "mixed" or request.plan.adapter == head.plan.adapter
            )
            if fits and len(batch) < self.max_batch_size:
                batch.append(request)
            else:
                rest.append(request)
        self._pending = rest
        return batch

    def _run(self, batch: list[_Request]) -> None:
        backend = self._backend
        live = []
        for request in batch:
            if request.cancel.is_set():  # left while waiting: nothing to run
                backend.stopped_generations += 1
                request.close()
            else:
                live.append(request)
        if not live:
            return
        backend.batch_stats.record_batch(len(live))
        if len(live) == 1:
            request = live[0]
            try:
                for event in backend.generate_alone(request.plan, request.cancel):
                    request.emit(event)
            except BaseException as exc:
                request.close(exc)
            else:
                request.close()
            return
        with backend.model_turn():
            run_batch(backend, live, mixed=self.lora_batching == "mixed")


def _batchable(plan: GenerationPlan) -> bool:
    return not plan.decoder_input_details


def run_batch(backend: BatchableModel, requests: list[_Request], *, mixed: bool) -> None:
    """Generate for every request in one batch; the caller holds the model.

    Each request gets its events and then its end (or its error) on its own channel.
    """
    import torch

    from langchain_herd.server.adapters import adapter_in_use, loaded_adapters

    sequences = [backend.start_sequence(request.plan) for request in requests]
    prompts = [request.plan.input_ids for request in requests]
    width = max(len(p) for p in prompts)
    pad = backend.pad_token_id
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    extra: dict[str, Any] = {}
    adapter_context: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if loaded_adapters(backend.model):
        if mixed:
            names = [request.plan.adapter or BASE_ADAPTER for request in requests]
            extra["adapter_names"] = names
        else:  # one adapter for the whole batch (the scheduler grouped it)
            adapter_context = adapter_in_use(backend.model, requests[0].plan.adapter)

    with adapter_context:
        logits, cache = backend.forward_batch(input_ids, mask, positions, None, extra)
        active = list(range(len(requests)))  # request index of each row
        while active:
            keep: list[int] = []  # rows that go on
            next_ids: list[int] = []
            for row, index in enumerate(active):
                request, sequence = requests[index], sequences[index]
                if sequence.plan.max_new_tokens <= 0:
                    request.close()
                    continue
                if request.cancel.is_set():
                    backend.stopped_generations += 1
                    request.close()
                    continue
                try:
                    event = sequence.advance(logits[row : row + 1])
                except Exception as exc:  # this row's grammar or sampling failed: only it ends
                    request.close(exc)
                    continue
                request.emit(event)
                if event.finish is not None:
                    request.close()
                    continue
                keep.append(row)
                next_ids.append(event.token.id)
            if not keep:
                return
            if len(keep) < len(active):
                rows = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(rows)
                mask, positions = mask[rows], positions[rows]
                if "adapter_names" in extra:
                    extra["adapter_names"] = [extra["adapter_names"][r] for r in keep]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            step_ids = torch.tensor(next_ids, dtype=torch.long).unsqueeze(1)
            logits, cache = backend.forward_batch(step_ids, mask, positions, cache, extra)
