"""Throughput of the local TGI-protocol server with batched generation vs one request at a time.

For each model (``tiny``, the random test model, and ``smollm2``, the real SmolLM2-135M), the
server runs in this process on loopback (``ServerThread``) and N concurrent greedy requests
(``max_new_tokens`` each) go to it through huggingface_hub's ``InferenceClient``, one thread
per request, all released together. The same requests run, in the same process and in
alternating order over the rounds:

- base model: ``max_batch_size`` 1 (one at a time) and ``max_batch_size`` B;
- LoRA: the requests spread round-robin over K adapters (random PEFT LoRA weights made here),
  with ``max_batch_size`` 1, B grouped (one adapter per batch) and B mixed (PEFT's
  ``adapter_names`` in one batch).

Reported per configuration: generated tokens/s (tokens counted from ``details``), wall time,
batches and mean rows per forward pass, and whether every text equals the one-at-a-time text;
then the speed-up ratios over one at a time.

    nice -n 15 .venv/bin/python bench/server_batching.py [--models tiny,smollm2]
        [--requests 16] [--max-new-tokens 32] [--batch-size 8] [--adapters 3] [--rounds 2]
        [--out bench/results/server_batching.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import emit  # bench/common.py (the script's folder is on sys.path)
from huggingface_hub import InferenceClient

from langchain_herd.server import GenerationBackend, ServerThread, create_app, load_backend
from langchain_herd.server.adapters import AdapterSpec

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [
    "the river and the sea",
    "a story of the king",
    "music",
    "the city at night",
    "water",
    "the mountain and the tree in the north",
    "a good book",
    "the ocean",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prompts(n: int) -> list[str]:
    """N prompts of different lengths (so batches really are padded)."""
    return [
        f"tell me about {TOPICS[i % len(TOPICS)]}" + " and the world" * (i % 4) for i in range(n)
    ]


def make_adapters(model: str, folder: Path, count: int) -> list[AdapterSpec]:
    """``count`` LoRA adapters with random weights for ``model``, saved with PEFT."""
    import peft
    import torch

    base = load_backend(model).model
    specs = []
    for index in range(count):
        torch.manual_seed(100 + index)
        config = peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        lora = peft.get_peft_model(base, config)
        with torch.no_grad():
            for name, weight in lora.named_parameters():
                if "lora_" in name:
                    weight.normal_(0.0, 0.05)
        name = f"expert{index}"
        lora.save_pretrained(folder / name)
        base = lora.unload()
        specs.append(AdapterSpec(name, str(folder / name)))
    return specs


def run_requests(
    url: str, texts: list[str], adapters: list[str | None], max_new_tokens: int
) -> tuple[float, list[str], int]:
    """Send every request at once; (wall seconds, generated texts, generated tokens)."""
    start = threading.Barrier(len(texts) + 1)

    def one(index: int) -> tuple[str, int]:
        client = InferenceClient(base_url=url)
        extra = {} if adapters[index] is None else {"adapter_id": adapters[index]}
        start.wait()
        out = client.text_generation(
            texts[index], max_new_tokens=max_new_tokens, details=True, **extra
        )
        assert out.details is not None
        return out.generated_text, out.details.generated_tokens

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        futures = [pool.submit(one, i) for i in range(len(texts))]
        start.wait()
        began = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - began
    return wall, [text for text, _ in results], sum(tokens for _, tokens in results)


def measure(
    backend: GenerationBackend,
    url: str,
    label: str,
    setup: dict[str, Any],
    texts: list[str],
    adapters: list[str | None],
    max_new_tokens: int,
) -> dict[str, Any]:
    backend.max_batch_size = setup["max_batch_size"]
    backend.lora_batching = setup.get("lora_batching", "mixed")
    stats = backend.batch_stats
    batches, passes, rows = stats.batches, stats.forward_passes, stats.rows_forwarded
    wall, outputs, tokens = run_requests(url, texts, adapters, max_new_tokens)
    passes = stats.forward_passes - passes
    figures = {
        "tokens_per_s": tokens / wall,
        "wall_s": wall,
        "generated_tokens": tokens,
        "batches": stats.batches - batches,
        "mean_rows_per_forward": (stats.rows_forwarded - rows) / max(passes, 1),
        "outputs": outputs,
    }
    log(
        f"    {label:<24} {figures['tokens_per_s']:8.1f} tokens/s  {wall:6.2f} s  "
        f"{figures['batches']:3d} batches  {figures['mean_rows_per_forward']:.2f} rows/forward"
    )
    return figures


def bench_model(
    model: str, args: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, dict[str, Any]]]:
    texts = prompts(args.requests)
    batch = args.batch_size
    scenarios: dict[str, tuple[GenerationBackend, list[str | None], dict[str, dict[str, Any]]]]
    log(f"[{model}] loading the model, and the model with {args.adapters} LoRA adapters")
    plain = load_backend(model)
    with_lora = load_backend(model)
    specs = make_adapters(model, workdir / model, args.adapters)
    with_lora.load_adapters(specs)
    spread: list[str | None] = [specs[i % len(specs)].name for i in range(len(texts))]
    scenarios = {
        "base": (
            plain,
            [None] * len(texts),
            {"one_at_a_time": {"max_batch_size": 1}, "batched": {"max_batch_size": batch}},
        ),
        "lora": (
            with_lora,
            spread,
            {
                "one_at_a_time": {"max_batch_size": 1},
                "grouped": {"max_batch_size": batch, "lora_batching": "grouped"},
                "mixed": {"max_batch_size": batch, "lora_batching": "mixed"},
            },
        ),
    }
    results: dict[str, dict[str, dict[str, Any]]] = {}
    limit = args.requests * 2
    for scenario, (backend, adapters, setups) in scenarios.items():
        app = create_app(backend, max_concurrent_requests=limit, default_max_new_tokens=8)
        with ServerThread(app) as server:
            log(f"[{model}] {scenario}: {len(texts)} requests x {args.max_new_tokens} tokens")
            backend.max_batch_size = 1
            run_requests(server.url, texts[:2], adapters[:2], 4)  # warm-up
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
            for round_index in range(args.rounds):
                order = list(setups) if round_index % 2 == 0 else list(reversed(setups))
                for name in order:
                    runs[name].append(
                        measure(
                            backend,
                            server.url,
                            f"round {round_index + 1} {name}",
                            setups[name],
                            texts,
                            adapters,
                            args.max_new_tokens,
                        )
                    )
        reference = runs["one_at_a_time"][0]["outputs"]
        summary: dict[str, dict[str, Any]] = {}
        for name, measured in runs.items():
            best = max(measured, key=lambda m: m["tokens_per_s"])
            same = sum(
                a == b for m in measured for a, b in zip(m["outputs"], reference, strict=True)
            )
            summary[name] = {
                **{k: v for k, v in best.items() if k != "outputs"},
                "tokens_per_s_all_rounds": [m["tokens_per_s"] for m in measured],
                "same_text_as_one_at_a_time": f"{same}/{len(reference) * len(measured)}",
            }
        one = summary["one_at_a_time"]["tokens_per_s"]
        for name in summary:
            summary[name]["speedup_vs_one_at_a_time"] = summary[name]["tokens_per_s"] / one
        ratios = ", ".join(
            f"{name} x{figures['speedup_vs_one_at_a_time']:.2f}"
            for name, figures in summary.items()
            if name != "one_at_a_time"
        )
        log(
            f"[{model}] {scenario}: best of {args.rounds} rounds, {one:.1f} tokens/s alone; "
            f"{ratios}"
        )
        results[scenario] = summary
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "server_batching.json"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "settings": {
            "requests": args.requests,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "adapters": args.adapters,
            "rounds": args.rounds,
            "client": "huggingface_hub.InferenceClient, one thread per request",
        }
    }
    with tempfile.TemporaryDirectory(prefix="herd-bench-lora-") as workdir:
        for model in (m.strip() for m in args.models.split(",") if m.strip()):
            results[model] = bench_model(model, args, Path(workdir))
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
