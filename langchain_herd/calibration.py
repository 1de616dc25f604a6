"""Calibrate a policy's knob (``margin`` or ``threshold``) on labelled questions.

RouteLLM's lesson: a threshold means nothing until it is tied to an outcome. ``calibrate``
sweeps the knob over a correctness table's questions, picks the value that gives the best
accuracy or the share of calls (to the strong expert, or away from the default) closest to
a target, and writes it into the classifier artifact, where ``HerdRouter.from_config``
finds it for a policy whose value the config leaves unset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.artifact_files import read_json
from langchain_herd.atomic_files import write_atomically
from langchain_herd.classifiers.base import CONFIG_FILE, SavedClassifier, load_classifier
from langchain_herd.errors import ArtifactError, ConfigError

Objective = Literal["accuracy", "share"]
GRID = np.round(np.linspace(0.0, 1.0, 201), 4)


@dataclass(frozen=True)
class Calibration:
    """The chosen value and what it achieved on the calibration questions."""

    policy: str
    value: float
    objective: str
    target_share: float | None
    expert: str
    """The strong expert (threshold) or the default expert (margin)."""
    share: float
    """Share of calls to the strong expert (threshold) or away from the default (margin)."""
    accuracy: float
    """Mean correctness of the first-ranked expert (unknown cells count as wrong)."""
    n_questions: int


def _choices_threshold(
    scores: npt.NDArray[np.float64], strong: int, values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    others = scores.copy()
    others[:, strong] = -np.inf
    best_other = others.argmax(axis=1)
    expensive = scores[:, strong][None, :] > values[:, None]
    return np.where(expensive, strong, best_other[None, :]), expensive


def _choices_margin(
    scores: npt.NDArray[np.float64], default: int, values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    best = scores.argmax(axis=1)
    gap = scores[np.arange(len(scores)), best] - scores[:, default]
    leave = gap[None, :] > values[:, None]
    return np.where(leave, best[None, :], default), leave


def sweep(
    policy: Literal["threshold", "margin"],
    scores: npt.NDArray[np.float64],
    correct: npt.NDArray[np.float64],
    expert_index: int,
    values: npt.NDArray[np.float64] = GRID,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Accuracy and share for each candidate value.

    Args:
        policy: ``threshold`` (``expert_index`` is the strong expert) or ``margin`` (it is
            the default expert).
        scores: ``[n, k]`` per-expert scores from the classifier.
        correct: ``[n, k]`` 0/1 correctness, NaN where unknown (counted as wrong).
        expert_index: column of the strong or default expert.
        values: candidate thresholds or margins.
    """
    if policy == "threshold":
        chosen, flagged = _choices_threshold(scores, expert_index, values)
    else:
        chosen, flagged = _choices_margin(scores, expert_index, values)
    known = np.nan_to_num(correct, nan=0.0)
    accuracy = known[np.arange(len(scores))[None, :], chosen].mean(axis=1)
    return accuracy, flagged.mean(axis=1)


def choose(
    values: npt.NDArray[np.float64],
    accuracy: npt.NDArray[np.float64],
    share: npt.NDArray[np.float64],
    objective: Objective,
    target_share: float | None,
) -> int:
    """Index of the chosen value: best accuracy (ties: fewer flagged calls), or the share
    nearest the target (ties: better accuracy)."""
    if objective == "accuracy":
        return int(np.lexsort((share, -accuracy))[0])
    if target_share is None or not 0 <= target_share <= 1:
        raise ConfigError("objective 'share' needs target_share in [0, 1]")
    return int(np.lexsort((-accuracy, np.abs(share - target_share)))[0])


def calibrate_scores(
    policy: Literal["threshold", "margin"],
    scores: npt.NDArray[np.float64],
    correct: npt.NDArray[np.float64],
    experts: Sequence[str],
    expert: str,
    objective: Objective = "accuracy",
    target_share: float | None = None,
) -> Calibration:
    """Calibrate from score and correctness matrices whose columns are ``experts``."""
    if expert not in experts:
        raise ConfigError(
            f"expert {expert!r} is not one of the classifier's labels {list(experts)}"
        )
    if len(scores) == 0:
        raise ConfigError("no questions to calibrate on")
    index = list(experts).index(expert)
    accuracy, share = sweep(policy, scores, correct, index)
    best = choose(GRID, accuracy, share, objective, target_share)
    return Calibration(
        policy=policy,
        value=float(GRID[best]),
        objective=objective,
        target_share=target_share,
        expert=expert,
        share=float(share[best]),
        accuracy=float(accuracy[best]),
        n_questions=len(scores),
    )


def write_calibration(artifact: str | Path, calibration: Calibration) -> None:
    """Store the calibration in the artifact's ``config.json`` (atomically)."""
    path = Path(artifact) / CONFIG_FILE
    config = read_json(path)
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    config["calibration"] = asdict(calibration)
    write_atomically(path, json.dumps(config, indent=2))


def calibrate_artifact(
    artifact: str | Path,
    table: str | Path,
    *,
    policy: Literal["threshold", "margin"],
    expert: str,
    objective: Objective = "accuracy",
    target_share: float | None = None,
    split: str = "validation",
    seed: int = 0,
    test_share: float = 0.2,
    val_share: float = 0.15,
    write: bool = True,
) -> Calibration:
    """Calibrate a correctness classifier's policy value on a correctness table.

    Args:
        artifact: the classifier directory (must be a ``correctness`` router).
        table: a correctness table whose model columns include the classifier's labels.
        policy: ``threshold`` or ``margin``.
        expert: the strong expert (threshold) or the default expert (margin).
        objective: ``accuracy`` or ``share`` (of calls, see ``Calibration.share``).
        target_share: for ``share``.
        split: which rows: ``validation`` (a seeded ``val_share`` of the training rows),
            ``train``, ``test`` or ``all``. The default never touches held-out questions.
        seed: seed of the split (tables without a ``split`` column) and of the validation
            share.
        test_share: held-out share for tables without a ``split`` column.
        val_share: share of the training rows used for ``validation``.
        write: store the result in the artifact.
    """
    from langchain_herd.tables import read_correctness_table

    classifier: SavedClassifier = load_classifier(artifact)
    if classifier.mode != "correctness":
        raise ArtifactError(
            f"{artifact}: calibration needs a correctness router (per-expert "
            f"probability of a right answer); this one is {classifier.mode!r}"
        )
    data = read_correctness_table(table)
    missing = [label for label in classifier.labels if label not in data.model_columns]
    if missing:
        raise ConfigError(
            f"{table}: no correctness column for the classifier's experts "
            f"{missing}; its model columns are {data.model_columns}"
        )
    if split == "all":
        rows = data.frame
    else:
        train, test = data.split(seed=seed, test_share=test_share)
        chosen = {"train": train, "test": test}.get(split)
        if chosen is None:
            order = np.random.default_rng([seed, 2]).permutation(len(train))
            chosen = train.iloc[np.sort(order[: max(1, round(val_share * len(train)))])]
        rows = chosen
    scores = classifier.predict_proba(rows["prompt"].astype(str).tolist())
    correct = rows[classifier.labels].astype("float64").to_numpy()
    result = calibrate_scores(
        policy, scores, correct, classifier.labels, expert, objective, target_share
    )
    if write:
        write_calibration(artifact, result)
    return result
