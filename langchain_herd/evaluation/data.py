"""What ``herd eval`` evaluates on: a herd's correctness table, costs, votes and splits.

:func:`load_eval_data` reads a correctness table (any model names, any number of models),
keeps the rows that match ``where`` filters and have a result from every herd model, and
attaches per-model costs (``models.json`` shape), a reference model (compared against,
never routed to) and, for voting baselines, each model's chosen letter. :func:`splits`
gives the held-out splits: the table's own ``split`` column, or seeded random ones.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd.tables import CorrectnessTable, TableError, read_correctness_table

__all__ = [
    "EvalData",
    "EvalSplit",
    "ModelPool",
    "load_costs",
    "load_eval_data",
    "parse_where",
    "splits",
]

_GROUP_COLUMNS = ("group", "subject", "category")


@dataclass(frozen=True)
class ModelPool:
    """Every model column of the table with predictions (the herd first), row-aligned with
    the evaluation's rows: what ensembles choose helpers from (a cascade over a strong/weak
    pair may call cheaper models outside the pair).

    Example:
        >>> data.pool.models[:2] == data.models  # doctest: +SKIP
        True
    """

    models: list[str]
    correct: npt.NDArray[np.float64]
    """``(rows, models)`` correctness; NaN where a model has no result (none given: wrong)."""
    answers: npt.NDArray[np.str_]
    """``(rows, models)`` each model's chosen answer, "" where none."""
    costs: dict[str, float | None]
    """Cost per call by model (1 per call without a costs file; None: unknown)."""


@dataclass(frozen=True)
class EvalData:
    """The rows and models one evaluation runs on, as arrays aligned by row.

    Attributes:
        table: the filtered table (herd models plus the reference, if any).
        models: the herd: the model columns routers choose among, in table order.
        correct: ``(rows, models)`` correctness in [0, 1], no missing values.
        costs: cost per herd model (active parameters in billions, or 1 per call).
        cost_unit: what a cost is, for reports.
        reference: a model compared against but not routed to (e.g. a closed model).
        reference_correct: its correctness per row (NaN where it has no result).
        votes: ``(rows, models)`` letters each model chose ("" for none), for voting.
        answers: the gold letter per row, for voting.
        labels: per-row group labels (``group``, ``subject``, ``category`` when present).
        info: how the rows were chosen (for the report).

    Example:
        >>> data = load_eval_data("table.parquet", costs_path="models.json")  # doctest: +SKIP
        >>> data.models, data.correct.shape  # doctest: +SKIP
        (['llama-8b', 'mistral-7b'], (6810, 2))
    """

    table: CorrectnessTable
    models: list[str]
    correct: npt.NDArray[np.float64]
    costs: npt.NDArray[np.float64]
    cost_unit: str
    reference: str | None = None
    reference_correct: npt.NDArray[np.float64] | None = None
    votes: npt.NDArray[np.str_] | None = None
    answers: npt.NDArray[np.str_] | None = None
    labels: dict[str, npt.NDArray[np.str_]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    pool: ModelPool | None = None
    """With predictions: every model column, herd or not, for ensembles' helpers."""

    def __len__(self) -> int:
        return len(self.correct)

    @property
    def texts(self) -> list[str]:
        """The query texts, one per row."""
        return self.table.prompts


@dataclass(frozen=True)
class EvalSplit:
    """Row indices of one train/held-out split and the seed that made (or trains on) it.

    Example:
        >>> split = EvalSplit(0, np.arange(8), np.arange(8, 10), "seeded")
        >>> len(split.train), len(split.test)
        (8, 2)
    """

    seed: int
    train: npt.NDArray[np.intp]
    test: npt.NDArray[np.intp]
    method: str


def parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    """``COLUMN=PATTERN`` filters (shell-style wildcards) as pairs.

    Raises:
        TableError: an item without ``=``.

    Example:
        >>> parse_where(["source=ori_mmlu-*"])
        [('source', 'ori_mmlu-*')]
    """
    pairs = []
    for item in items:
        column, sep, pattern = item.partition("=")
        if not sep or not column:
            raise TableError(f"--where {item!r}: write COLUMN=PATTERN, e.g. source=ori_mmlu-*")
        pairs.append((column.strip(), pattern.strip()))
    return pairs


def load_costs(path: str | Path, table_file: str | Path | None = None) -> dict[str, float | None]:
    """Per-model costs from a ``models.json``-shaped file.

    Accepted shapes: ``{file: {model: {"active_params_b": x}}}`` (the entry for the
    table's file name is used, else all files merged), ``{model: {"active_params_b": x}}``
    or ``{model: x}``. ``None`` means unknown (e.g. a closed model).

    Raises:
        TableError: the file is missing, not JSON, or not one of these shapes.
    """
    source = Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"{source}: cannot read the costs file ({exc})") from exc
    if not isinstance(raw, dict):
        raise TableError(f"{source}: expected a JSON object of model costs")

    def entry_cost(name: str, value: Any) -> float | None:
        if isinstance(value, dict):
            value = value.get("active_params_b", value.get("cost"))
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise TableError(f"{source}: cost of {name!r} must be a number >= 0, got {value!r}")
        return float(value)

    def is_per_file(value: Any) -> bool:
        return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())

    if raw and all(is_per_file(v) for v in raw.values()):
        name = Path(table_file).name if table_file is not None else None
        files = [raw[name]] if name in raw else list(raw.values())
        return {m: entry_cost(m, v) for part in files for m, v in part.items()}
    return {m: entry_cost(m, v) for m, v in raw.items()}


def load_eval_data(
    table_path: str | Path,
    *,
    models: Sequence[str] | None = None,
    where: Sequence[tuple[str, str]] = (),
    costs_path: str | Path | None = None,
    max_cost: float | None = None,
    reference: str | None = None,
    predictions_path: str | Path | None = None,
) -> EvalData:
    """Read and filter a correctness table for evaluation.

    Args:
        table_path: the correctness table.
        models: the herd (default: every model column, minus the reference; with
            ``max_cost``, those whose known cost is at most ``max_cost``).
        where: ``(column, pattern)`` row filters, all of which must match.
        costs_path: per-model costs (``models.json`` shape); default 1 per call.
        max_cost: keep only models with a known cost up to this (needs ``costs_path``).
        reference: a model column to compare with (not routed to).
        predictions_path: a table of each model's chosen letter per question (same ``id``
            values and model columns), for the majority-vote baseline.

    Raises:
        TableError: an unknown column or model, a filter that leaves too few rows, a herd
            model without a cost, or predictions that do not line up with the table.
    """
    try:
        table = read_correctness_table(table_path)
    except TableError as exc:
        if "no prompt column" in str(exc):
            raise TableError(
                f"{exc}. If this file holds each model's chosen letter rather than 0/1 "
                f"correctness, give it as --predictions next to its correctness table"
            ) from exc
        raise
    frame = table.frame
    for column, pattern in where:
        if column not in frame.columns:
            raise TableError(
                f"{table.source}: --where names column {column!r}; the table's columns are "
                f"{list(frame.columns)}"
            )
        values = frame[column].astype("string").fillna("")
        frame = frame[values.map(lambda v, p=pattern: fnmatch.fnmatchcase(v, p)).to_numpy(bool)]
        if frame.empty:
            raise TableError(f"{table.source}: no row has {column} matching {pattern!r}")
    cost_of = load_costs(costs_path, table_path) if costs_path is not None else None
    if reference is not None and reference not in table.model_columns:
        raise TableError(
            f"{table.source}: reference model {reference!r} is not a model column; the model "
            f"columns are {table.model_columns}"
        )
    herd = _choose_herd(table, models, reference, cost_of, max_cost)
    complete = ~np.isnan(table.with_frame(frame).correctness(herd)).any(axis=1)
    dropped = int((~complete).sum())
    frame = frame[complete]
    if len(frame) < 10:
        raise TableError(
            f"{table.source}: only {len(frame)} rows have a result from every herd model "
            f"{herd}; an evaluation needs more"
        )
    kept = table.select_models([*herd, *([reference] if reference else [])]).with_frame(frame)
    correct = kept.correctness(herd)
    if cost_of is None:
        costs, unit = np.ones(len(herd)), "calls"
    else:
        unknown = [m for m in herd if cost_of.get(m) is None]
        if unknown:
            raise TableError(
                f"{costs_path}: no cost for herd model(s) {unknown}; add them to the file or "
                f"leave them out of the herd (--models)"
            )
        costs = np.asarray([cost_of[m] for m in herd], dtype=np.float64)
        unit = "active params (B)"
    votes = answers = None
    pool = None
    if predictions_path is not None:
        votes, answers = _read_votes(predictions_path, kept, herd)
        pool = _model_pool(predictions_path, table.with_frame(frame), herd, reference, cost_of)
    labels = {
        c: frame[c].astype("string").fillna("<none>").to_numpy(dtype=str)
        for c in _GROUP_COLUMNS
        if c in frame.columns and frame[c].notna().any()
    }
    info = {
        "file": str(table_path),
        "rows_in_file": len(table),
        "where": [f"{c}={p}" for c, p in where],
        "rows": len(frame),
        "rows_without_every_result": dropped,
        "models": herd,
        "costs": dict(zip(herd, costs.tolist(), strict=True)),
        "cost_unit": unit,
        "reference": reference,
        "max_cost": max_cost,
        "predictions": str(predictions_path) if predictions_path else None,
    }
    return EvalData(
        table=kept,
        models=herd,
        correct=correct,
        costs=costs,
        cost_unit=unit,
        reference=reference,
        reference_correct=kept.correctness([reference])[:, 0] if reference else None,
        votes=votes,
        answers=answers,
        labels=labels,
        info=info,
        pool=pool,
    )


def splits(
    data: EvalData, seeds: Sequence[int], *, test_share: float = 0.2, use_split_column: bool | None
) -> list[EvalSplit]:
    """One split per seed: the table's ``split`` column (seeds then vary training only), or a
    seeded random split of ``test_share`` of the question ids."""
    position = {label: i for i, label in enumerate(data.table.frame.index)}
    out = []
    for seed in seeds:
        train_frame, test_frame = data.table.split(
            seed=seed, test_share=test_share, use_split_column=use_split_column
        )
        train = np.asarray([position[i] for i in train_frame.index], dtype=np.intp)
        test = np.asarray([position[i] for i in test_frame.index], dtype=np.intp)
        method = data.table.split_description(seed, test_share, use_split_column=use_split_column)[
            "method"
        ]
        out.append(EvalSplit(seed=seed, train=train, test=test, method=method))
    return out


def _choose_herd(
    table: CorrectnessTable,
    models: Sequence[str] | None,
    reference: str | None,
    cost_of: dict[str, float | None] | None,
    max_cost: float | None,
) -> list[str]:
    if models:
        if max_cost is not None:
            raise TableError(
                "give the herd either by name (--models/--pair) or by cost (--max-cost), not both"
            )
        herd = list(models)
        unknown = [m for m in herd if m not in table.model_columns]
        if unknown:
            raise TableError(
                f"{table.source}: no model column(s) {unknown}; the model columns are "
                f"{table.model_columns}"
            )
        if reference in herd:
            raise TableError(f"the reference model {reference!r} cannot also be in the herd")
    else:
        herd = [m for m in table.model_columns if m != reference]
        if max_cost is not None:
            if cost_of is None:
                raise TableError("--max-cost needs a costs file (--costs models.json)")
            herd = [m for m in herd if (c := cost_of.get(m)) is not None and c <= max_cost]
    if len(set(herd)) != len(herd):
        raise TableError(f"a model is named twice in the herd {herd}")
    if len(herd) < 2:
        raise TableError(
            f"{table.source}: routing needs at least two herd models, got {herd}"
            + (f" (max cost {max_cost})" if max_cost is not None else "")
        )
    return herd


def _read_votes(
    path: str | Path, table: CorrectnessTable, herd: list[str]
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    import pandas as pd

    from langchain_herd.tables import _read_frame

    source = Path(path)
    frame = _read_frame(source)
    if "answer" not in table.frame.columns:
        raise TableError(f"{table.source}: voting needs an 'answer' column (the gold letter)")
    id_column = table.id_column
    if id_column is None or id_column not in frame.columns or id_column not in table.frame:
        raise TableError(f"{source}: predictions and table both need an {id_column!r} column")
    missing = [m for m in herd if m not in frame.columns]
    if missing:
        raise TableError(f"{source}: no prediction column(s) for herd model(s) {missing}")
    by_id = frame.drop_duplicates(id_column).set_index(id_column)
    ids = pd.Index(table.frame[id_column])
    absent = ids.difference(by_id.index)
    if len(absent):
        raise TableError(
            f"{source}: no predictions for {len(absent)} question id(s) of the table "
            f"(first: {list(absent[:3])})"
        )
    picked = by_id.loc[ids, herd]
    votes = picked.astype("string").fillna("").apply(lambda c: c.str.strip().str.upper())
    answers = table.frame["answer"].astype("string").fillna("").str.strip().str.upper()
    return votes.to_numpy(dtype=str), answers.to_numpy(dtype=str)


def _model_pool(
    path: str | Path,
    table: CorrectnessTable,
    herd: list[str],
    reference: str | None,
    cost_of: dict[str, float | None] | None,
) -> ModelPool:
    from langchain_herd.tables import _read_frame

    columns = set(_read_frame(Path(path)).columns)
    others = [m for m in table.model_columns if m not in herd and m != reference and m in columns]
    models = [*herd, *others]
    return ModelPool(
        models=models,
        correct=table.correctness(models),
        answers=_read_votes(path, table, models)[0],
        costs={m: (1.0 if cost_of is None else cost_of.get(m)) for m in models},
    )


def finite(value: float) -> float | None:
    """JSON-safe float: None for NaN/inf."""
    return None if value is None or not math.isfinite(value) else float(value)
