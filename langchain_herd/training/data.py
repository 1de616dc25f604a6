"""Training data in the form the backends consume: texts plus a target per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.tables import CorrectnessTable, TableError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Mode", "TrainingData", "build_data"]

Mode = Literal["correctness", "category"]
MODES: tuple[Mode, ...] = ("correctness", "category")


@dataclass
class TrainingData:
    """Texts and their targets for one mode.

    ``targets`` is ``(n, n_labels)`` float64 for ``correctness`` (1 right, 0 wrong, soft
    values between, NaN for no result) and ``(n,)`` int64 label indices for ``category``
    (-1 for a label the classifier does not have: held-out rows only).
    """

    texts: list[str]
    targets: npt.NDArray[np.float64] | npt.NDArray[np.int64]
    labels: list[str]
    mode: Mode

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: npt.NDArray[np.intp]) -> TrainingData:
        """The given rows, in that order."""
        return TrainingData(
            [self.texts[i] for i in rows], self.targets[rows], self.labels, self.mode
        )

    def carve(self, share: float, seed: int) -> tuple[TrainingData, TrainingData]:
        """Split off a seeded validation share: ``(fit, validation)``."""
        if not 0.0 < share < 1.0:
            raise ValueError(f"validation share must be between 0 and 1, got {share}")
        order = np.random.default_rng([seed, 1]).permutation(len(self))
        n_val = max(1, round(share * len(self)))
        if n_val >= len(self):
            raise TableError(f"{len(self)} training rows are too few to hold out validation")
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))


def build_data(
    table: CorrectnessTable,
    frame: pd.DataFrame,
    mode: Mode,
    *,
    label_column: str = "group",
    labels: list[str] | None = None,
) -> tuple[TrainingData, int]:
    """Turn rows of a table into training data; also return how many rows were dropped.

    Correctness: the targets are the model columns (rows without any result are dropped).
    Category: the targets are ``label_column``'s values (rows without one are dropped);
    ``labels`` fixes the label set (held-out rows), else the sorted values seen here.
    """
    part = table.with_frame(frame)
    texts = part.prompts
    if mode == "correctness":
        y = part.correctness()
        keep = [not empty for empty in np.asarray(np.isnan(y).all(axis=1)).tolist()]
        return (
            TrainingData(
                [t for t, k in zip(texts, keep, strict=True) if k],
                y[np.asarray(keep, dtype=bool)],
                list(part.model_columns),
                mode,
            ),
            keep.count(False),
        )
    if mode != "category":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    values = part.category_labels(label_column)
    keep_rows = [i for i, v in enumerate(values) if v is not None]
    names = labels if labels is not None else sorted({v for v in values if v is not None})
    index = {name: i for i, name in enumerate(names)}
    targets = np.asarray([index.get(str(values[i]), -1) for i in keep_rows], dtype=np.int64)
    return (
        TrainingData([texts[i] for i in keep_rows], targets, list(names), mode),
        len(values) - len(keep_rows),
    )
