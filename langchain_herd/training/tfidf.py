"""The ``tfidf`` backend: TF-IDF + logistic regression, C picked on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from langchain_herd.classifiers.base import SavedClassifier
from langchain_herd.classifiers.tfidf import TfidfClassifier, TfidfCorrectnessClassifier
from langchain_herd.training.backends import masked_log_loss
from langchain_herd.training.data import TrainingData
from langchain_herd.training.params import TfidfParams
from langchain_herd.training.progress import Progress

__all__ = ["BACKEND", "TfidfBackend"]

CORRECTNESS_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
CATEGORY_C_GRID = (1.0, 3.0, 10.0, 30.0)


class TfidfBackend:
    """TF-IDF features; per-expert binary logistic regressions (correctness, C chosen per
    expert by validation log loss) or one multinomial one (category, C by validation
    accuracy). The chosen model is refitted on all training rows (fit + validation)."""

    name = "tfidf"
    params_model = TfidfParams

    def fit(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: TfidfParams,
        *,
        seed: int,
        progress: Progress,
    ) -> SavedClassifier:
        common: dict[str, Any] = {
            "max_features": params.max_features,
            "ngram_range": params.ngram_range,
            "sublinear_tf": params.sublinear_tf,
            "min_df": params.min_df,
            "max_iter": params.max_iter,
        }
        if train.mode == "correctness":
            return self._fit_correctness(train, fit, val, params, common, progress)
        return self._fit_category(train, fit, val, params, common, progress)

    def _fit_correctness(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: TfidfParams,
        common: dict[str, Any],
        progress: Progress,
    ) -> SavedClassifier:
        grid = tuple(params.C_grid or CORRECTNESS_C_GRID)
        losses = np.empty((len(grid), len(train.labels)))
        for g, c in enumerate(grid):
            with progress.phase(f"tfidf: C={c} on the fit split"):
                clf = TfidfCorrectnessClassifier.fit(
                    fit.texts, fit.targets, fit.labels, C=c, **common
                )
                losses[g] = masked_log_loss(
                    clf.predict_proba(val.texts), np.asarray(val.targets, dtype=np.float64)
                )
        chosen = [float(grid[int(np.argmin(losses[:, j]))]) for j in range(len(train.labels))]
        progress.note(f"C per expert (by validation log loss): {chosen}")
        with progress.phase("tfidf: refit on all training rows"):
            final = TfidfCorrectnessClassifier.fit(
                train.texts, train.targets, train.labels, C=chosen, **common
            )
        final.metadata["selection"] = {
            "C_grid": list(grid),
            "by": "validation log loss, per expert",
            "val_log_loss": {
                name: [round(float(x), 5) for x in losses[:, j]]
                for j, name in enumerate(train.labels)
            },
        }
        return final

    def _fit_category(
        self,
        train: TrainingData,
        fit: TrainingData,
        val: TrainingData,
        params: TfidfParams,
        common: dict[str, Any],
        progress: Progress,
    ) -> SavedClassifier:
        grid = tuple(params.C_grid or CATEGORY_C_GRID)
        fit_labels = [train.labels[int(i)] for i in fit.targets]
        val_labels = np.asarray([train.labels[int(i)] for i in val.targets])
        accuracies = []
        for c in grid:
            with progress.phase(f"tfidf: C={c} on the fit split"):
                clf = TfidfClassifier.fit(fit.texts, fit_labels, C=c, **common)
                accuracies.append(float((np.asarray(clf.predict(val.texts)) == val_labels).mean()))
        best = float(grid[int(np.argmax(accuracies))])  # first (smallest C) on a tie
        progress.note(f"C={best} (validation accuracy {max(accuracies):.4f})")
        with progress.phase("tfidf: refit on all training rows"):
            final = TfidfClassifier.fit(
                train.texts,
                [train.labels[int(i)] for i in train.targets],
                C=best,
                label_order=train.labels,
                **common,
            )
        final.metadata["selection"] = {
            "C_grid": list(grid),
            "by": "validation accuracy",
            "val_accuracy": [round(a, 5) for a in accuracies],
        }
        return final

    def save(self, classifier: SavedClassifier, out_dir: Path, params: TfidfParams) -> None:
        assert isinstance(classifier, TfidfClassifier | TfidfCorrectnessClassifier)
        classifier.save_pretrained(out_dir, dtype=params.weights_dtype)


BACKEND = TfidfBackend()
