"""What constrained decoding costs per token: a grammar's token mask against no grammar.

Loads one server backend and generates, rounds interleaved so machine noise hits both alike:

- unconstrained: greedy decoding of the prompt;
- constrained: the same prompt under a JSON schema grammar (an object with one long string, so
  the output keeps going), every step masked by llguidance.

Each decode step is timed from one token to the next (the first token, which includes the
prompt's forward pass, is left out), so outputs of different lengths compare fairly. The
ratio is constrained over unconstrained p50 time per token. The mask's own cost (computing
it, applying it to the logits, advancing past the chosen token) is then timed alone by
replaying the constrained tokens with random logits.

    .venv/bin/python bench/constrained_decoding.py [--model tiny|smollm2] [--tokens 48]
        [--rounds 5] [--threads N] [--out bench/results/constrained_decoding.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from common import emit, percentile  # bench/common.py (the script's folder is on sys.path)

from langchain_herd.server import GenerationBackend, load_backend
from langchain_herd.server.generation import GenerationPlan, TokenEvent
from langchain_herd.server.grammar import GrammarVocabulary, json_schema_grammar

SCHEMA = {
    "type": "object",
    "properties": {"description": {"type": "string"}},
    "required": ["description"],
}
QUESTION = "Describe Paris for a travel guide, in JSON."


def step_times(
    backend: GenerationBackend, plan: GenerationPlan
) -> tuple[list[float], list[int], str]:
    """Milliseconds between consecutive tokens, the generated ids, and the text."""
    times: list[float] = []
    ids: list[int] = []
    text = ""
    last: float | None = None
    for event in backend.generate(plan):
        if not isinstance(event, TokenEvent):
            continue
        now = time.perf_counter()
        if last is not None:
            times.append((now - last) * 1000)
        last = now
        ids.append(event.token.id)
        text = event.finish.generated_text if event.finish is not None else text
    return times, ids, text


def mask_times(backend: GenerationBackend, grammar: str, ids: list[int]) -> list[float]:
    """Microseconds per step of mask + apply + advance, replaying ``ids`` on random logits."""
    import torch

    constraint = GrammarVocabulary(backend.tokenizer, sorted(backend.eos_token_ids)).constraint(
        grammar
    )
    width = int(backend.model.config.vocab_size)
    logits = torch.randn(1, width)
    times = []
    for token_id in ids:
        scores = logits.clone()
        started = time.perf_counter()
        constraint.mask(scores)
        constraint.advance(token_id)
        times.append((time.perf_counter() - started) * 1e6)
        if constraint.is_finished:
            break
    return times


def summary(values: list[float], unit: str) -> dict[str, float]:
    return {
        f"p50_{unit}": percentile(values, 0.5),
        f"p95_{unit}": percentile(values, 0.95),
        f"mean_{unit}": statistics.fmean(values),
        "n": len(values),
    }


def run(model: str, tokens: int, rounds: int, threads: int | None) -> dict[str, Any]:
    backend = load_backend(model)
    if threads is not None:
        backend.torch_threads = threads
    if backend.has_chat_template:
        prompt = backend.render_chat([{"role": "user", "content": QUESTION}])
    else:
        prompt = QUESTION
    input_ids = tuple(backend.encode(prompt, add_special_tokens=not backend.has_chat_template))
    grammar = json_schema_grammar(SCHEMA)
    free = GenerationPlan(input_ids=input_ids, max_new_tokens=tokens)
    constrained = GenerationPlan(input_ids=input_ids, max_new_tokens=tokens, grammar=grammar)
    step_times(backend, constrained)  # warm-up; also builds the grammar vocabulary once
    step_times(backend, free)
    free_ms: list[float] = []
    constrained_ms: list[float] = []
    constrained_ids: list[int] = []
    constrained_text = ""
    for _ in range(rounds):
        times, _ids, _text = step_times(backend, free)
        free_ms += times
        times, constrained_ids, constrained_text = step_times(backend, constrained)
        constrained_ms += times
    mask_us = mask_times(backend, grammar, constrained_ids)
    free_p50 = percentile(free_ms, 0.5)
    constrained_p50 = percentile(constrained_ms, 0.5)
    return {
        "model": backend.model_id,
        "max_new_tokens": tokens,
        "rounds": rounds,
        "torch_threads": backend.torch_threads,
        "unconstrained": summary(free_ms, "ms_per_token"),
        "constrained": summary(constrained_ms, "ms_per_token"),
        "ratio_p50": constrained_p50 / free_p50,
        "overhead_p50_ms_per_token": constrained_p50 - free_p50,
        "mask_alone": summary(mask_us, "us_per_token"),
        "mask_share_of_constrained_step_p50": percentile(mask_us, 0.5) / 1000 / constrained_p50,
        "constrained_output": constrained_text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm2, a folder or a .gguf")
    parser.add_argument("--tokens", type=int, default=48, help="max_new_tokens per generation")
    parser.add_argument("--rounds", type=int, default=5, help="generations of each kind")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the backend's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    emit(run(args.model, args.tokens, args.rounds, args.threads), args.out)


if __name__ == "__main__":
    main()
