"""Training router classifiers on correctness tables (``herd train``).

Example:
    >>> from langchain_herd.training import train_router
    >>> result = train_router(  # doctest: +SKIP
    ...     "correctness.parquet", mode="correctness", backend="tfidf", out_dir="my-router"
    ... )
    >>> result.heldout["routed_accuracy"], result.heldout["best_single_accuracy"]  # doctest: +SKIP
    (0.66, 0.65)
"""

from langchain_herd.training.params import EmbeddingParams, FinetuneParams, TfidfParams
from langchain_herd.training.progress import PrintProgress, Progress, SilentProgress
from langchain_herd.training.train import (
    TrainResult,
    check_classifier_fits,
    evaluate_router,
    train_router,
)

__all__ = [
    "EmbeddingParams",
    "FinetuneParams",
    "PrintProgress",
    "Progress",
    "SilentProgress",
    "TfidfParams",
    "TrainResult",
    "check_classifier_fits",
    "evaluate_router",
    "train_router",
]
