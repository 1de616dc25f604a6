"""Train one subject expert: a PEFT LoRA adapter on a base model, from multiple-choice questions.

The loop is written out rather than run through ``transformers.Trainer``: it is a few dozen
lines, needs no ``accelerate``, and keeps the parts that matter here explicit (loss on the
answer only, validation every N steps on held-back facts, early stopping that restores the
best weights, a seeded order so a CPU run is repeatable).

Example:
    >>> from pathlib import Path
    >>> result = finetune_expert(  # doctest: +SKIP
    ...     "smollm2", "skills:stem", Path("out/stem"), FinetuneSettings(max_steps=60)
    ... )
    >>> result.best_step, result.best_val_loss < result.base_val_loss  # doctest: +SKIP
    (60, True)
"""

from __future__ import annotations

import json
import math
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_herd.choice_questions import ChoiceQuestion, sample_per_group
from langchain_herd.errors import ConfigError
from langchain_herd.expert_training.data import (
    IGNORE_INDEX,
    EncodedExample,
    encode_question,
    load_training_questions,
    pad_batch,
    split_validation,
)
from langchain_herd.server.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

__all__ = [
    "LLAMA_TARGET_MODULES",
    "RUN_FILE",
    "FinetuneResult",
    "FinetuneSettings",
    "detect_target_modules",
    "finetune_expert",
]

RUN_FILE = "herd-finetune.json"
"""What ``finetune_expert`` writes next to the adapter: settings, data, history, timing."""

LLAMA_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Attention projections and MLP of Llama-style models (SmolLM2, Llama, Mistral, Qwen)."""


@dataclass(frozen=True)
class FinetuneSettings:
    """How an adapter is trained (checked on construction).

    Attributes:
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha`` (the update is scaled by ``alpha / rank``).
        dropout: LoRA dropout.
        target_modules: module names to adapt; None detects the Llama-style attention and
            MLP projections in the model.
        learning_rate: AdamW learning rate (constant after ``warmup_steps``).
        batch_size: questions per step.
        epochs: passes over the training questions (ignored when ``max_steps`` is set).
        max_steps: optimizer steps; overrides ``epochs``.
        warmup_steps: linear warm-up of the learning rate.
        weight_decay: AdamW weight decay.
        validation_share: share of the questions (whole facts) held back for validation.
        eval_every: steps between validation passes.
        patience: validation passes without improvement before stopping; None never stops
            early.
        seed: seeds the validation split, the LoRA init, dropout and the batch order.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        per_group: at most this many training questions per group (a seeded sample).
        limit: at most this many training questions in all (a seeded sample).
        max_length: longest training sequence in tokens.
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None
    learning_rate: float = 1e-3
    batch_size: int = 16
    epochs: float = 2.0
    max_steps: int | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.0
    validation_share: float = 0.1
    eval_every: int = 10
    patience: int | None = 3
    seed: int = 0
    device: str = "auto"
    per_group: int | None = None
    limit: int | None = None
    max_length: int = 256

    def __post_init__(self) -> None:
        positive = {
            "rank": self.rank,
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "max_length": self.max_length,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        for name, count in (
            ("max_steps", self.max_steps),
            ("per_group", self.per_group),
            ("limit", self.limit),
        ):
            if count is not None and count < 1:
                raise ConfigError(f"{name} must be at least 1 when given, got {count}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(
                f"patience must be at least 1 (or None: never stop early), got {self.patience}"
            )
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError("warmup_steps and weight_decay must not be negative")
        if not 0.0 <= self.validation_share < 1.0:
            raise ConfigError(f"validation_share must be in [0, 1), got {self.validation_share}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("target_modules is empty; name modules or leave it unset (detect)")


@dataclass(frozen=True)
class FinetuneResult:
    """What a training run did (also written to ``herd-finetune.json``).

    Attributes:
        out: the adapter folder.
        steps: optimizer steps run.
        best_step: the step whose weights were kept (0: the untrained adapter, the base).
        best_val_loss: validation loss per answer token at ``best_step`` (None without
            validation).
        base_val_loss: the same before training.
        early_stopped: validation stopped improving for ``patience`` passes.
        seconds: wall time, loading included.
        train_questions: questions trained on.
        validation_questions: questions held back.
        train_history: ``(step, mean training loss since the previous point)``.
        val_history: ``(step, validation loss)``, step 0 first.
    """

    out: Path
    steps: int
    best_step: int
    best_val_loss: float | None
    base_val_loss: float | None
    early_stopped: bool
    seconds: float
    train_questions: int
    validation_questions: int
    train_history: tuple[tuple[int, float], ...] = field(default=())
    val_history: tuple[tuple[int, float], ...] = field(default=())

    def summary(self) -> str:
        """One line for the end of a CLI run."""
        if self.best_val_loss is not None and self.base_val_loss is not None:
            val = f"val loss {self.base_val_loss:.3f} -> {self.best_val_loss:.3f} (best step "
            val += f"{self.best_step})"
        else:
            val = "no validation"
        stop = ", stopped early" if self.early_stopped else ""
        return (
            f"{self.train_questions} questions ({self.validation_questions} held back), "
            f"{self.steps} steps{stop}, {val}, {self.seconds:.0f}s -> {self.out}"
        )


def detect_target_modules(model: Any) -> tuple[str, ...]:
    """The Llama-style attention and MLP projections ``model`` has, in a fixed order.

    Raises:
        ConfigError: the model has none of them (name its modules in ``target_modules``).
    """
    import torch

    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    found = tuple(name for name in LLAMA_TARGET_MODULES if name in linear)
    if not found:
        raise ConfigError(
            f"the base model has none of the Llama-style projections {list(LLAMA_TARGET_MODULES)}"
            f"; its linear layers are {sorted(linear)}: name the ones to adapt in target_modules"
        )
    return found


def finetune_expert(
    base: str,
    source: str | Sequence[ChoiceQuestion],
    out: Path,
    settings: FinetuneSettings | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter of ``base`` on ``source``'s questions and save it to ``out``.

    Args:
        base: the base model, as ``herd serve --model`` takes it (``smollm2``, ``tiny``, a
            folder, a ``.gguf``); written as the adapter's ``base_model_name_or_path`` so the
            server can check what it was trained on.
        source: ``skills:stem``, ``mmlu:humanities``, a ``.jsonl`` / ``.parquet`` file (see
            :func:`load_training_questions`: named sets give their ``train`` split only), or
            the questions themselves.
        out: the adapter folder to write (``adapter_config.json``,
            ``adapter_model.safetensors``, ``herd-finetune.json``).
        settings: training settings (default :class:`FinetuneSettings`).
        progress: show a progress bar on stderr.
        overwrite: replace an earlier ``finetune_expert`` output in ``out``.
        cache_dir: where converted GGUF models are cached (see ``load_backend``).

    Raises:
        ConfigError: bad data, an ``out`` that is in the way, peft missing, or settings that
            do not fit the model.
    """
    settings = settings or FinetuneSettings()
    started = time.perf_counter()
    out = Path(out)
    _check_out(out, overwrite)
    questions, source_name = _questions(source, settings)
    train_qs, val_qs = split_validation(questions, settings.validation_share, settings.seed)
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(
            "training an expert needs peft: pip install 'langchain-herd[lora]'"
        ) from exc
    import torch

    from langchain_herd.server.loading import load_backend

    device = _device(settings.device)
    backend = load_backend(base, cache_dir=cache_dir)
    tokenizer = backend.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_examples = [
        encode_question(tokenizer, q, max_length=settings.max_length) for q in train_qs
    ]
    val_examples = [encode_question(tokenizer, q, max_length=settings.max_length) for q in val_qs]

    targets = settings.target_modules or detect_target_modules(backend.model)
    torch.manual_seed(settings.seed)
    lora_config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = peft.get_peft_model(backend.model, lora_config)
    except ValueError as exc:
        raise ConfigError(f"LoRA target modules {list(targets)} do not fit {base}: {exc}") from exc
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    per_epoch = math.ceil(len(train_examples) / settings.batch_size)
    total_steps = settings.max_steps or max(1, math.ceil(settings.epochs * per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (settings.warmup_steps + 1))
    )

    def evaluate() -> float:
        return _validation_loss(model, val_examples, settings.batch_size, pad_id, device)

    val_history: list[tuple[int, float]] = []
    train_history: list[tuple[int, float]] = []
    base_val = evaluate() if val_examples else None
    best_val = base_val
    best_step = 0
    best_weights = _trainable_state(model)
    if base_val is not None:
        val_history.append((0, base_val))
    stale = 0
    early_stopped = False
    step = 0
    running: list[float] = []
    order = random.Random(settings.seed)
    bar = _progress_bar(total_steps, progress, len(train_examples), len(val_examples))
    model.train()
    try:
        for batch in _batches(train_examples, settings.batch_size, order, total_steps):
            tensors = {k: v.to(device) for k, v in pad_batch(batch, pad_id).items()}
            loss = model(**tensors).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running.append(float(loss.detach()))
            bar.update(1)
            postfix = {"loss": f"{running[-1]:.3f}"}
            if best_val is not None:
                postfix["best_val"] = f"{best_val:.3f}"
            bar.set_postfix(postfix, refresh=False)
            if step % settings.eval_every and step != total_steps:
                continue
            train_history.append((step, sum(running) / len(running)))
            running = []
            if not val_examples:
                continue
            val = evaluate()
            val_history.append((step, val))
            if best_val is None or val < best_val:
                best_val, best_step, stale = val, step, 0
                best_weights = _trainable_state(model)
            else:
                stale += 1
                if settings.patience is not None and stale >= settings.patience:
                    early_stopped = True
                    break
    finally:
        bar.close()
    if val_examples:
        _load_trainable_state(model, best_weights)
    else:
        best_step = step

    result = FinetuneResult(
        out=out,
        steps=step,
        best_step=best_step,
        best_val_loss=best_val,
        base_val_loss=base_val,
        early_stopped=early_stopped,
        seconds=time.perf_counter() - started,
        train_questions=len(train_qs),
        validation_questions=len(val_qs),
        train_history=tuple(train_history),
        val_history=tuple(val_history),
    )
    run = {
        "base": base,
        "data": source_name,
        "settings": {**asdict(settings), "target_modules": list(targets)},
        "device": str(device),
        "questions": {
            "total": len(questions),
            "train": len(train_qs),
            "validation": len(val_qs),
            "by_group": _by_group(questions),
        },
        "answer_tokens": {
            "train": sum(e.answer_tokens for e in train_examples),
            "validation": sum(e.answer_tokens for e in val_examples),
        },
        "trainable_parameters": sum(p.numel() for p in trainable),
        "steps": step,
        "planned_steps": total_steps,
        "best_step": best_step,
        "base_val_loss": base_val,
        "best_val_loss": best_val,
        "early_stopped": early_stopped,
        "train_loss": [{"step": s, "loss": v} for s, v in train_history],
        "val_loss": [{"step": s, "loss": v} for s, v in val_history],
        "seconds": round(result.seconds, 2),
        "versions": {
            "peft": peft.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    _save(model, base, out, run, overwrite)
    return result


def _questions(
    source: str | Sequence[ChoiceQuestion], settings: FinetuneSettings
) -> tuple[list[ChoiceQuestion], str]:
    if isinstance(source, str):
        questions = load_training_questions(
            source, per_group=settings.per_group, seed=settings.seed
        )
        name = source
    else:
        questions = list(source)
        name = f"{len(questions)} questions given in Python"
        if settings.per_group is not None:
            questions = sample_per_group(questions, settings.per_group, seed=settings.seed)
    if settings.limit is not None and len(questions) > settings.limit:
        questions = sorted(
            random.Random(settings.seed).sample(questions, settings.limit), key=lambda q: q.id
        )
    if not questions:
        raise ConfigError(f"{name}: no questions to train on")
    return questions, name


def _by_group(questions: Sequence[ChoiceQuestion]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for question in questions:
        counts[question.group] = counts.get(question.group, 0) + 1
    return dict(sorted(counts.items()))


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse before any training what would fail or destroy something at the end."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the adapter")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"--out {out} exists and is not empty; choose a new folder or pass --overwrite "
            "to replace an earlier herd finetune-expert output"
        )
    if not (out / RUN_FILE).is_file():
        raise ConfigError(
            f"--out {out} is not an earlier herd finetune-expert output (no {RUN_FILE}); "
            "--overwrite only replaces those: choose another folder"
        )


def _device(wanted: str) -> Any:
    import torch

    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {wanted!r}: torch sees no CUDA device here; use cpu or auto")
    return torch.device(wanted)


def _batches(
    examples: list[EncodedExample], size: int, order: random.Random, steps: int
) -> Iterator[list[EncodedExample]]:
    """``steps`` batches: seeded shuffled passes over ``examples``, the last one cut short."""
    done = 0
    while True:
        indices = list(range(len(examples)))
        order.shuffle(indices)
        for start in range(0, len(indices), size):
            if done == steps:
                return
            yield [examples[i] for i in indices[start : start + size]]
            done += 1


def _validation_loss(
    model: Any, examples: list[EncodedExample], batch_size: int, pad_id: int, device: Any
) -> float:
    """Mean loss per answer token (not per batch: short and long batches weigh by tokens)."""
    import torch

    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                batch = pad_batch(examples[start : start + batch_size], pad_id)
                logits = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                ).logits.float()
                labels = batch["labels"][:, 1:].to(device)
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                total += float(loss)
                tokens += int((labels != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    return total / max(tokens, 1)


def _trainable_state(model: Any) -> dict[str, Any]:
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def _load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _progress_bar(total: int, enabled: bool, train: int, validation: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"finetune ({train} train / {validation} val)",
        unit="step",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )


def _save(model: Any, base: str, out: Path, run: dict[str, Any], overwrite: bool) -> None:
    """Write the folder whole under a temporary name, then move it into place."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        # Embeddings are never trained here; "auto" would look BASE up on the hub to check.
        model.save_pretrained(scratch, safe_serialization=True, save_embedding_layers=False)
        for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (scratch / required).is_file():
                raise ConfigError(f"PEFT wrote no {required}; is peft too old? (need >= 0.7)")
        (scratch / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            _check_out(out, overwrite)
            shutil.rmtree(out)
        scratch.rename(out)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
