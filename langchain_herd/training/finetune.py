"""The ``finetune`` backend: fine-tune a transformers encoder for sequence classification.

``AutoModelForSequenceClassification`` on a local encoder folder (all-MiniLM-L6-v2 by
default), one output per label. Correctness: masked binary cross-entropy on the logits
(soft labels, missing results ignored per expert; transformers' built-in multi-label loss
would count a missing result as wrong). Category: cross-entropy. AdamW with linear warm-up
and decay, batches of similar length, validation loss checked a few times per epoch, and
the best checkpoint kept (early stopping). Uses CUDA when available; on a CPU keep
``max_length`` at 128 and cap the rows (``max_train_rows``) for large tables.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from langchain_herd.classifiers.base import SavedClassifier
from langchain_herd.classifiers.embedding import (
    default_encoder_path,
    length_batches,
    pick_device,
    quiet_transformers,
)
from langchain_herd.classifiers.finetuned import PROBLEM_TYPES, FinetunedClassifier
from langchain_herd.errors import ArtifactError
from langchain_herd.training.data import TrainingData
from langchain_herd.training.embedding import initial_bias, loss_fn
from langchain_herd.training.params import FinetuneParams
from langchain_herd.training.progress import Progress

__all__ = ["BACKEND", "FinetuneBackend"]


class FinetuneBackend:
    """Fine-tunes the whole encoder plus a new classification layer."""

    name = "finetune"
    params_model = FinetuneParams

    def fit(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: FinetuneParams,
        *,
        seed: int,
        progress: Progress,
    ) -> SavedClassifier:
        import torch
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            get_linear_schedule_with_warmup,
        )

        path = Path(params.model).expanduser() if params.model else default_encoder_path()
        if not (path / "model.safetensors").is_file():
            raise ArtifactError(
                f"{path}: no model.safetensors; fine-tuning starts from a local folder with "
                f"safetensors weights (pickle checkpoints are refused)"
            )
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        device = pick_device()
        labels = train.labels
        with progress.phase(f"loading {path}"), quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path),
                local_files_only=True,
                use_safetensors=True,
                num_labels=len(labels),
                problem_type=PROBLEM_TYPES[train.mode],
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
            )
        head = _output_layer(model)
        if head is not None and head.bias is not None:
            with torch.no_grad():
                bias = initial_bias(fit.targets, train.mode, len(labels))
                head.bias.copy_(torch.from_numpy(bias))
        model.to(device)
        progress.note(f"fine-tuning on {device}, max_length {params.max_length}")

        def encode(texts: list[str]) -> list[list[int]]:
            ids: list[list[int]] = tokenizer(texts, truncation=True, max_length=params.max_length)[
                "input_ids"
            ]
            return ids

        with progress.phase("tokenizing"):
            fit_ids, val_ids = encode(fit.texts), encode(val.texts)
        dtype = torch.float32 if train.mode == "correctness" else torch.long
        fit_y = torch.as_tensor(fit.targets, dtype=dtype)
        val_y = torch.as_tensor(val.targets, dtype=dtype)
        loss = loss_fn(train.mode)

        def batch_inputs(ids: list[list[int]], rows: list[int]) -> dict[str, Any]:
            padded = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            return {k: v.to(device) for k, v in padded.items()}

        def val_loss() -> float:
            model.eval()
            total, weight = 0.0, 0
            with torch.inference_mode():
                for rows in length_batches(val_ids, params.eval_batch_size):
                    logits = model(**batch_inputs(val_ids, rows)).logits.float().cpu()
                    total += float(loss(logits, val_y[rows])) * len(rows)
                    weight += len(rows)
            model.train()
            return total / max(weight, 1)

        steps_per_epoch = math.ceil(len(fit_ids) / params.batch_size)
        total_steps = max(1, math.ceil(params.epochs * steps_per_epoch))
        eval_every = max(1, steps_per_epoch // params.evals_per_epoch)
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=params.lr, weight_decay=params.weight_decay
        )
        schedule = get_linear_schedule_with_warmup(
            optimiser, round(params.warmup_share * total_steps), total_steps
        )
        rng = np.random.default_rng(seed)
        best_loss, best_step, stale, step = float("inf"), 0, 0, 0
        best_state: dict[str, Any] | None = None
        history: list[dict[str, float]] = []
        model.train()
        with progress.phase(
            f"fine-tuning: {total_steps} steps of {params.batch_size} "
            f"({params.epochs:g} epochs of {len(fit_ids)} rows)"
        ):
            stop = False
            while not stop and step < total_steps:
                for rows in _bucketed_batches(fit_ids, params.batch_size, rng):
                    out = model(**batch_inputs(fit_ids, rows)).logits
                    batch_loss = loss(out.float(), fit_y[rows].to(device))
                    batch_loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimiser.step()
                    schedule.step()
                    optimiser.zero_grad()
                    step += 1
                    progress.update(step, total_steps)
                    if step % eval_every == 0 or step == total_steps:
                        current = val_loss()
                        history.append({"step": step, "val_loss": round(current, 5)})
                        progress.note(f"step {step}: validation loss {current:.4f}")
                        if current < best_loss - 1e-5:
                            best_loss, best_step, stale = current, step, 0
                            best_state = {
                                k: v.detach().to("cpu", copy=True)
                                for k, v in model.state_dict().items()
                            }
                        else:
                            stale += 1
                            if stale >= params.patience:
                                stop = True
                    if stop or step >= total_steps:
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return FinetunedClassifier(
            model=model,
            tokenizer=tokenizer,
            labels=labels,
            mode=train.mode,
            max_length=params.max_length,
            batch_size=params.eval_batch_size,
            device=device,
            metadata={
                "trainer": "langchain_herd.training.finetune",
                "base_model": str(path),
                "device": device,
                "n_fit": len(fit),
                "n_val": len(val),
                "steps": step,
                "best_step": best_step,
                "best_val_loss": best_loss,
                "stopped_early": step < total_steps,
                "val_history": history,
            },
        )

    def save(self, classifier: SavedClassifier, out_dir: Path, params: FinetuneParams) -> None:
        assert isinstance(classifier, FinetunedClassifier)
        classifier.save_pretrained(out_dir)


def _output_layer(model: Any) -> Any:
    """The final linear layer of a sequence-classification model, where it has one."""
    import torch

    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
        inner = getattr(layer, "out_proj", None)
        if isinstance(inner, torch.nn.Linear):
            return inner
    return None


def _bucketed_batches(
    ids: list[list[int]], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within chunks, shuffle the batches."""
    order = rng.permutation(len(ids))
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk].tolist(), key=lambda i: len(ids[i]))
        batches += [block[k : k + batch_size] for k in range(0, len(block), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


BACKEND = FinetuneBackend()
