"""Held-out metrics of a router, and how long it takes to decide."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd.classifiers.base import Classifier

__all__ = ["auc", "category_metrics", "correctness_metrics", "decision_time"]


def auc(scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank of each distinct score (1-based), so ties share their mean rank.
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def correctness_metrics(
    proba: npt.NDArray[np.float64],
    targets: npt.NDArray[np.float64],
    train_targets: npt.NDArray[np.float64],
    labels: Sequence[str],
) -> dict[str, Any]:
    """How well a correctness router routes held-out questions.

    The routing figures use the questions with a result for every expert: ``routed``
    (mean correctness of the expert with the highest predicted correctness), ``best_single``
    (the expert with the best training accuracy, always), ``oracle`` (right if any expert
    is), ``random`` (mean over experts), ``best_single_hindsight`` (the best expert on the
    held-out questions themselves). Per expert: held-out accuracy, AUC (hard labels), Brier
    score and the Brier score of always predicting the training rate, and how often routing
    picked it.
    """
    names = list(labels)
    complete = ~np.isnan(targets).any(axis=1)
    y, p = targets[complete], proba[complete]
    train_rate = np.nanmean(train_targets, axis=0)
    best = int(np.nanargmax(train_rate))
    result: dict[str, Any] = {"n": int(complete.sum()), "n_incomplete": int((~complete).sum())}
    if len(y):
        choice = p.argmax(axis=1)
        routed = float(y[np.arange(len(y)), choice].mean())
        single = float(y[:, best].mean())
        oracle = float(y.max(axis=1).mean())
        result.update(
            {
                "routed_accuracy": routed,
                "best_single": names[best],
                "best_single_accuracy": single,
                "oracle_accuracy": oracle,
                "random_accuracy": float(y.mean()),
                "best_single_hindsight_accuracy": float(y.mean(axis=0).max()),
                "routed_minus_best_single": routed - single,
                "gap_closed": (routed - single) / (oracle - single) if oracle > single else None,
            }
        )
        shares = np.bincount(choice, minlength=len(names)) / len(y)
    else:
        shares = np.zeros(len(names))
    per_model: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        seen = ~np.isnan(targets[:, j])
        t, s = targets[seen, j], proba[seen, j]
        hard = (t == 0.0) | (t == 1.0)
        per_model[name] = {
            "n": int(seen.sum()),
            "accuracy": float(t.mean()) if len(t) else None,
            "train_rate": float(train_rate[j]),
            "auc": auc(s[hard], t[hard] == 1.0) if hard.any() else None,
            "brier": float(np.mean((s - t) ** 2)) if len(t) else None,
            "brier_base": float(np.mean((train_rate[j] - t) ** 2)) if len(t) else None,
            "routed_share": float(shares[j]),
        }
    result["per_model"] = per_model
    aucs = [m["auc"] for m in per_model.values() if m["auc"] is not None]
    result["mean_auc"] = float(np.mean(aucs)) if aucs else None
    return result


def category_metrics(
    proba: npt.NDArray[np.float64],
    targets: npt.NDArray[np.int64],
    train_targets: npt.NDArray[np.int64],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label recall and the majority-label baseline."""
    names = list(labels)
    predicted = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
    right = predicted == targets
    majority = int(np.bincount(train_targets, minlength=len(names)).argmax())
    f1s, recall = [], {}
    for k, name in enumerate(names):
        tp = int(((predicted == k) & (targets == k)).sum())
        n_pred, n_true = int((predicted == k).sum()), int((targets == k).sum())
        if n_true:
            recall[name] = tp / n_true
        f1s.append(2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0)
    return {
        "n": len(targets),
        "n_unknown_label": int((targets < 0).sum()),
        "accuracy": float(right.mean()) if len(targets) else None,
        "macro_f1": float(np.mean(f1s)),
        "majority_label": names[majority],
        "majority_accuracy": float((targets == majority).mean()) if len(targets) else None,
        "per_label_recall": recall,
    }


def decision_time(classifier: Classifier, texts: Sequence[str], n_single: int) -> dict[str, Any]:
    """Median and p95 milliseconds of ``predict_proba`` on one query at a time."""
    sample = list(texts[: max(1, n_single)])
    for text in sample[:2]:  # warm-up: lazy inits, allocator, thread pools
        classifier.predict_proba([text])
    timings = []
    for text in sample:
        start = time.perf_counter()
        classifier.predict_proba([text])
        timings.append((time.perf_counter() - start) * 1e3)
    return {
        "single_ms_median": float(np.median(timings)),
        "single_ms_p95": float(np.percentile(timings, 95)),
        "single_n": len(timings),
    }
