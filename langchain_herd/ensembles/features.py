"""Agreement features of a tier of experts: the signal a cascade's escalation score reads.

A tier's first expert is its main (weak) model, the others its helpers. Whether they agree
says more about the main answer being right than the question text does: cheap models that
err tend to err differently, so agreement is evidence of an easy question. The features are
built from a pairwise ``agreement`` matrix, so any measure fits: identical option letters
(:func:`letter_agreement`), normalised exact match, embedding cosine in [0, 1], a judge's 0/1.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import numpy.typing as npt

__all__ = ["letter_agreement", "tier_feature_names", "tier_features"]

Array = npt.NDArray[np.float64]


def letter_agreement(answers: npt.ArrayLike) -> tuple[Array, npt.NDArray[np.bool_]]:
    """Pairwise agreement of extracted answers (letters, normalised texts).

    Args:
        answers: ``(n, k)`` answers, ``""`` or None where an expert gave none.

    Returns:
        ``(agreement, missing)``: ``agreement[i, a, b]`` is 1 when experts ``a`` and ``b``
        gave the same readable answer on row ``i`` (the diagonal: 1 when ``a`` answered),
        else 0; ``missing[i, a]`` is True when expert ``a`` gave no answer.

    Example:
        >>> agreement, missing = letter_agreement([["A", "A", ""]])
        >>> agreement[0].tolist(), missing[0].tolist()
        ([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [False, False, True])
    """
    raw = np.asarray(answers)
    if raw.ndim != 2:
        raise ValueError(f"answers must be (rows, experts), got shape {raw.shape}")
    if raw.dtype.kind == "U":
        text = raw
    else:  # None stands for no answer; anything else compares as its text
        text = np.array(
            [["" if v is None else str(v) for v in row] for row in raw.tolist()], dtype=str
        ).reshape(raw.shape)
    missing = text == ""
    same = text[:, :, None] == text[:, None, :]
    present = ~missing[:, :, None] & ~missing[:, None, :]
    return (same & present).astype(np.float64), missing


def tier_feature_names(k: int) -> list[str]:
    """The names of :func:`tier_features`' columns for a tier of ``k`` experts.

    Example:
        >>> tier_feature_names(2)
        ['agree_0_1', 'missing_0', 'missing_1']
    """
    if k < 1:
        raise ValueError(f"a tier has at least one expert, got {k}")
    names = [f"agree_{a}_{b}" for a, b in combinations(range(k), 2)]
    names += [f"missing_{a}" for a in range(k)]
    if k >= 3:
        names += ["main_support", "top_support", "main_is_top", "all_agree"]
    return names


def tier_features(agreement: npt.ArrayLike, missing: npt.ArrayLike) -> Array:
    """Features of a tier's agreement pattern, one row per query.

    Columns (see :func:`tier_feature_names`): every pairwise agreement (with the main
    expert first), each expert's missing flag and, from three experts on, the main answer's
    support (mean agreement with the others), the best-supported answer's support, whether
    the main answer is the best supported (what a tier vote would keep) and whether all agree.

    Args:
        agreement: ``(n, k, k)`` symmetric, values in [0, 1]; entries with a missing expert
            are treated as 0 whatever they hold.
        missing: ``(n, k)`` True where an expert gave no answer.

    Example:
        >>> agreement, missing = letter_agreement([["A", "A", "B"]])
        >>> tier_features(agreement, missing).tolist()
        [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 0.0]]
    """
    a = np.asarray(agreement, dtype=np.float64)
    m = np.asarray(missing, dtype=bool)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or m.shape != a.shape[:2]:
        raise ValueError(
            f"agreement must be (n, k, k) and missing (n, k); got {a.shape} and {m.shape}"
        )
    n, k, _ = a.shape
    present = (~m).astype(np.float64)
    a = np.clip(a, 0.0, 1.0) * present[:, :, None] * present[:, None, :]
    pairs = list(combinations(range(k), 2))
    columns = [a[:, i, j] for i, j in pairs] + [m[:, i].astype(np.float64) for i in range(k)]
    if k >= 3:
        off = a * (1.0 - np.eye(k))[None]
        support = off.sum(axis=2) / (k - 1)  # (n, k): each answer's mean agreement
        # A missing expert's answer cannot be kept, so it never counts as supported.
        support = np.where(m, -1.0, support)
        top = support.max(axis=1)
        columns += [
            np.maximum(support[:, 0], 0.0),
            np.maximum(top, 0.0),
            ((support[:, 0] >= top) & ~m[:, 0]).astype(np.float64),
            np.prod(np.stack([a[:, i, j] for i, j in pairs], axis=1), axis=1),
        ]
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0))
