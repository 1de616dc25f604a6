"""The training backends by name: each turns training data into a saved classifier kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from langchain_herd.classifiers.base import SavedClassifier
from langchain_herd.training.data import TrainingData
from langchain_herd.training.progress import Progress

__all__ = ["BACKENDS", "Backend", "get_backend", "masked_log_loss"]


class Backend(Protocol):
    """How one backend trains and saves a classifier."""

    name: str
    """The ``--backend`` name."""
    params_model: type[BaseModel]
    """The pydantic model of its settings."""

    def fit(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: Any,
        *,
        seed: int,
        progress: Progress,
    ) -> SavedClassifier:
        """Train on ``fit`` (tuning or early stopping on ``val``; ``train`` = both) and
        return the classifier, with its training details in ``metadata``."""
        ...

    def save(self, classifier: SavedClassifier, out_dir: Path, params: Any) -> None:
        """Write the artifact."""
        ...


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``tfidf``, ``embedding`` or ``finetune``).

    Raises:
        ValueError: no such backend.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    module = __import__(BACKENDS[name], fromlist=["BACKEND"])
    backend: Backend = module.BACKEND
    return backend


BACKENDS: dict[str, str] = {
    "tfidf": "langchain_herd.training.tfidf",
    "embedding": "langchain_herd.training.embedding",
    "finetune": "langchain_herd.training.finetune",
}
"""Backend name -> module holding its ``BACKEND`` (imported on use: torch only when needed)."""


def masked_log_loss(
    proba: npt.NDArray[np.float64], targets: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Per-label binary cross-entropy over the observed (non-NaN) targets; soft targets ok."""
    p = np.clip(proba, 1e-7, 1.0 - 1e-7)
    seen = ~np.isnan(targets)
    t = np.where(seen, targets, 0.0)
    loss = -(t * np.log(p) + (1.0 - t) * np.log(1.0 - p)) * seen
    return np.asarray(loss.sum(axis=0) / np.maximum(seen.sum(axis=0), 1), dtype=np.float64)
