"""The ``embedding`` backend: frozen sentence embeddings + a small torch head.

The encoder (all-MiniLM-L6-v2 by default) embeds every training text once (cached by text
hash for the run); the head (linear, or one hidden layer) trains on those vectors with
AdamW and stops early on the validation loss. Correctness: masked binary cross-entropy
(soft labels welcome, missing results ignored per expert). Category: cross-entropy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd.classifiers.base import SavedClassifier
from langchain_herd.classifiers.embedding import (
    EmbeddingClassifier,
    SentenceEncoder,
    build_head,
    default_encoder_path,
    encoder_reference,
)
from langchain_herd.training.data import TrainingData
from langchain_herd.training.params import EmbeddingParams
from langchain_herd.training.progress import Progress

__all__ = ["BACKEND", "EmbeddingBackend", "loss_fn", "train_head"]


class EmbeddingBackend:
    """Frozen encoder, trained head (``auto``: linear and mlp, the lower validation loss wins)."""

    name = "embedding"
    params_model = EmbeddingParams

    def fit(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: EmbeddingParams,
        *,
        seed: int,
        progress: Progress,
    ) -> SavedClassifier:
        path = Path(params.encoder).expanduser() if params.encoder else default_encoder_path()
        with progress.phase(f"loading encoder {path}"):
            encoder = SentenceEncoder(
                path, max_length=params.max_length, batch_size=params.batch_size, cache=True
            )
        progress.note(f"encoder on {encoder.device}, max_length {encoder.max_length}")
        with progress.phase(f"embedding {len(fit) + len(val)} training texts"):
            x_all = encoder.encode(fit.texts + val.texts, progress=progress.update)
        x_fit, x_val = x_all[: len(fit)], x_all[len(fit) :]
        heads = ["linear", "mlp"] if params.head == "auto" else [params.head]
        trials: dict[str, dict[str, Any]] = {}
        best: tuple[float, str, Any] | None = None
        for head_type in heads:
            with progress.phase(f"training the {head_type} head"):
                module, info = train_head(
                    x_fit,
                    fit.targets,
                    x_val,
                    val.targets,
                    train.mode,
                    len(train.labels),
                    head_type,
                    params,
                    seed,
                )
            trials[head_type] = info
            progress.note(
                f"{head_type}: validation loss {info['best_val_loss']:.4f} "
                f"after {info['epochs']} epochs"
            )
            if best is None or info["best_val_loss"] < best[0]:
                best = (info["best_val_loss"], head_type, module)
        assert best is not None
        _, head_type, module = best
        encoder.cache = None  # serving mode: no unbounded cache in the returned classifier
        return EmbeddingClassifier(
            labels=train.labels,
            mode=train.mode,
            encoder=encoder,
            head=module,
            head_type="linear" if head_type == "linear" else "mlp",
            hidden=params.hidden if head_type == "mlp" else 0,
            encoder_ref=encoder_reference(path),
            metadata={
                "trainer": "langchain_herd.training.embedding",
                "n_fit": len(fit),
                "n_val": len(val),
                "head": head_type,
                "heads_tried": trials,
            },
        )

    def save(self, classifier: SavedClassifier, out_dir: Path, params: EmbeddingParams) -> None:
        assert isinstance(classifier, EmbeddingClassifier)
        classifier.save_pretrained(out_dir, copy_encoder=params.copy_encoder)


def loss_fn(mode: str) -> Any:
    """The training loss for a mode: masked BCE-with-logits, or cross-entropy."""
    import torch
    from torch.nn import functional

    if mode == "correctness":

        def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            seen = ~torch.isnan(targets)
            losses = functional.binary_cross_entropy_with_logits(
                logits, torch.nan_to_num(targets, nan=0.0), reduction="none"
            )
            return (losses * seen).sum() / seen.sum().clamp(min=1)

        return masked_bce
    return functional.cross_entropy


def initial_bias(targets: npt.NDArray[Any], mode: str, n_labels: int) -> npt.NDArray[np.float32]:
    """Output bias that starts the head at the training rates (log-odds or log-priors)."""
    if mode == "correctness":
        rate = np.clip(np.nan_to_num(np.nanmean(targets, axis=0), nan=0.5), 1e-3, 1 - 1e-3)
        return np.log(rate / (1 - rate)).astype(np.float32)
    counts = np.bincount(targets, minlength=n_labels) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


def train_head(
    x_fit: npt.NDArray[np.float32],
    y_fit: npt.NDArray[Any],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[Any],
    mode: str,
    n_labels: int,
    head_type: str,
    params: EmbeddingParams,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Train one head with AdamW and early stopping; return it (best state) and a summary."""
    import torch

    torch.manual_seed(seed)
    head = build_head(head_type, x_fit.shape[1], n_labels, params.hidden, params.dropout)
    with torch.no_grad():
        last = head[-1]
        assert isinstance(last, torch.nn.Linear)
        last.bias.copy_(torch.from_numpy(initial_bias(y_fit, mode, n_labels)))
    dtype = torch.float32 if mode == "correctness" else torch.long
    xf, yf = torch.from_numpy(x_fit), torch.as_tensor(y_fit, dtype=dtype)
    xv, yv = torch.from_numpy(x_val), torch.as_tensor(y_val, dtype=dtype)
    loss = loss_fn(mode)
    optimiser = torch.optim.AdamW(head.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best_loss, best_state, best_epoch, stale = float("inf"), copy.deepcopy(head.state_dict()), 0, 0
    epoch = 0
    for epoch in range(1, params.max_epochs + 1):
        head.train()
        for rows in torch.randperm(len(xf), generator=generator).split(params.head_batch_size):
            optimiser.zero_grad()
            loss(head(xf[rows]), yf[rows]).backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            val_loss = float(loss(head(xv), yv))
        if val_loss < best_loss - 1e-5:
            best_loss, best_state, best_epoch, stale = (
                val_loss,
                copy.deepcopy(head.state_dict()),
                epoch,
                0,
            )
        else:
            stale += 1
            if stale >= params.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return head, {"best_val_loss": best_loss, "best_epoch": best_epoch, "epochs": epoch}


BACKEND = EmbeddingBackend()
