"""Correctness tables: one row per question, one 0/1 (or [0, 1]) column per expert model.

A correctness table is what a labeling run over a herd produces and what a router is
trained and evaluated on (see ``herd label`` and ``herd train``). Its shape:

- ``prompt``: the question as the models saw it (the column name can be changed);
- metadata columns such as ``id``, ``dataset``, ``split``, ``subject``, ``group``,
  ``answer``, ``source``, ``category`` (all optional);
- one column per model, named for the model, holding 1 (answered correctly), 0 (wrong),
  a soft label in ``[0, 1]`` (e.g. a judge's confidence) or a missing value (no result).

Neither the model names nor their number are assumed: the model columns are the numeric
or boolean columns, other than the metadata ones, whose values all lie in ``[0, 1]``.
pandas and pyarrow are needed (``pip install 'langchain-herd[train]'``).

Example:
    >>> from langchain_herd.tables import read_correctness_table
    >>> table = read_correctness_table("correctness.parquet")  # doctest: +SKIP
    >>> table.model_columns  # doctest: +SKIP
    ['llama-8b', 'mistral-7b', 'qwen-7b']
    >>> train, test = table.split(seed=0, test_share=0.2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from langchain_herd.errors import HerdError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "METADATA_COLUMNS",
    "CorrectnessTable",
    "TableError",
    "TableSplit",
    "read_correctness_table",
]

METADATA_COLUMNS: frozenset[str] = frozenset(
    {"id", "dataset", "split", "subject", "group", "prompt", "answer", "source", "category"}
)
"""Column names that are never model columns, whatever their values."""

SPLIT_COLUMN = "split"
_TRAIN, _TEST = "train", "test"


class TableError(HerdError, ValueError):
    """A correctness table cannot be read or used; the message names the file and the problem."""


class TableSplit(NamedTuple):
    """The two sides of a train/test split, as data frames (unpack as ``train, test``)."""

    train: pd.DataFrame
    """Rows to train (and tune) on."""
    test: pd.DataFrame
    """Held-out rows, never used for training or tuning."""


@dataclass(frozen=True)
class CorrectnessTable:
    """A correctness table in memory: the frame and which of its columns are models.

    Build one with :func:`read_correctness_table`. ``frame`` keeps every column of the
    file (metadata included); the model columns are ``float64`` with ``NaN`` where a
    model has no result.

    Example:
        >>> table = read_correctness_table("routerdc.parquet")  # doctest: +SKIP
        >>> table.correctness().shape  # doctest: +SKIP
        (6189, 7)
    """

    frame: pd.DataFrame
    """All rows and columns; model columns as float64 with NaN for "no result"."""
    model_columns: list[str]
    """The model (expert) columns, in file order."""
    source: str = "<memory>"
    """Where the table came from (a path), for messages and training metadata."""
    prompt_column: str = "prompt"
    """The column holding the query text."""
    id_column: str | None = "id"
    """The column of question ids (used by the seeded split), or None if there is none."""
    ignored_columns: dict[str, str] = field(default_factory=dict)
    """Numeric columns that were not taken as models, with the reason (for reports)."""

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def prompts(self) -> list[str]:
        """The query texts, one per row."""
        return [str(text) for text in self.frame[self.prompt_column].tolist()]

    @property
    def has_split_column(self) -> bool:
        """Whether the table carries its own train/test assignment (a ``split`` column)."""
        return SPLIT_COLUMN in self.frame.columns

    def correctness(self, models: Sequence[str] | None = None) -> npt.NDArray[np.float64]:
        """The model columns as an array ``(rows, models)``; NaN where there is no result."""
        columns = list(self.model_columns if models is None else models)
        return self.frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)

    def with_frame(self, frame: pd.DataFrame) -> CorrectnessTable:
        """The same table description over other rows (e.g. one side of a split)."""
        return CorrectnessTable(
            frame=frame,
            model_columns=list(self.model_columns),
            source=self.source,
            prompt_column=self.prompt_column,
            id_column=self.id_column,
            ignored_columns=dict(self.ignored_columns),
        )

    def select_models(self, models: Sequence[str]) -> CorrectnessTable:
        """Keep only the named model columns (in the given order).

        Raises:
            TableError: a name is not one of the table's model columns.
        """
        wanted = [str(m) for m in models]
        unknown = [m for m in wanted if m not in self.model_columns]
        if unknown:
            raise TableError(
                f"{self.source}: no model column(s) {unknown}; the table's model columns are "
                f"{self.model_columns}"
            )
        if len(set(wanted)) != len(wanted):
            raise TableError(f"{self.source}: a model is named twice in {wanted}")
        return CorrectnessTable(
            frame=self.frame,
            model_columns=wanted,
            source=self.source,
            prompt_column=self.prompt_column,
            id_column=self.id_column,
            ignored_columns=dict(self.ignored_columns),
        )

    def category_labels(self, column: str) -> list[str | None]:
        """The values of a label column (e.g. ``group``) as strings, None where missing.

        Raises:
            TableError: the column does not exist.
        """
        if column not in self.frame.columns:
            raise TableError(
                f"{self.source}: no label column {column!r} for category mode; the table's "
                f"columns are {list(self.frame.columns)} (pass --label-column)"
            )
        values = self.frame[column]
        missing = values.isna().to_numpy()
        return [None if miss else str(v) for v, miss in zip(values.tolist(), missing, strict=True)]

    def split_description(
        self, seed: int = 0, test_share: float = 0.2, *, use_split_column: bool | None = None
    ) -> dict[str, Any]:
        """How :meth:`split` will divide the rows (for reports and training metadata)."""
        if self._uses_split_column(use_split_column):
            return {"method": "column", "column": SPLIT_COLUMN}
        return {
            "method": "seeded",
            "seed": seed,
            "test_share": test_share,
            "unit": self.id_column or "row number",
        }

    def split(
        self, seed: int = 0, test_share: float = 0.2, *, use_split_column: bool | None = None
    ) -> TableSplit:
        """Divide the rows into train and held-out test rows.

        When the table has a ``split`` column (and ``use_split_column`` is not False), its
        ``train``/``test`` values decide and ``seed``/``test_share`` are not used. Otherwise
        ``test_share`` of the distinct ids (or of the rows, without an id column), drawn with
        ``seed``, are held out; rows sharing an id stay on one side.

        Args:
            seed: seed of the random split.
            test_share: held-out share for the random split, strictly between 0 and 1.
            use_split_column: True to require the ``split`` column, False to ignore it,
                None (default) to use it when present.

        Returns:
            ``TableSplit(train, test)``, two data frames (unpack as ``train, test``).

        Raises:
            TableError: the split column holds other values than train/test, one side would
                be empty, or ``test_share`` is out of range.
        """
        frame = self.frame
        if self._uses_split_column(use_split_column):
            values = frame[SPLIT_COLUMN].astype("string").str.strip().str.lower()
            other = sorted({str(v) for v in values.dropna().unique()} - {_TRAIN, _TEST})
            if other or values.isna().any():
                found = [*other, *(["<missing>"] if values.isna().any() else [])]
                raise TableError(
                    f"{self.source}: column {SPLIT_COLUMN!r} holds {found} besides "
                    f"'train'/'test'; fix the column, or ignore it and split at random "
                    f"(use_split_column=False, `herd train --ignore-split-column`)"
                )
            is_test = (values == _TEST).to_numpy(dtype=bool)
        else:
            if not 0.0 < test_share < 1.0:
                raise TableError(f"test_share must be between 0 and 1, got {test_share}")
            if self.id_column is not None and self.id_column in frame.columns:
                keys = frame[self.id_column].astype("string").fillna("<missing>").to_numpy()
            else:
                keys = np.arange(len(frame)).astype(str)
            unique = np.unique(keys)
            rng = np.random.default_rng(seed)
            n_test = round(test_share * len(unique))
            held = set(rng.permutation(unique)[:n_test].tolist())
            is_test = np.fromiter((k in held for k in keys), dtype=bool, count=len(keys))
        if is_test.all() or not is_test.any():
            side = "train" if is_test.all() else "test"
            marked = _TEST if side == "train" else _TRAIN
            hint = (
                f"; the {SPLIT_COLUMN!r} column marks every row {marked!r}: split at random "
                f"instead (use_split_column=False, --ignore-split-column)"
                if self._uses_split_column(use_split_column)
                else ""
            )
            raise TableError(
                f"{self.source}: the split leaves no {side} rows ({len(frame)} rows in all); "
                f"a router needs both training and held-out questions{hint}"
            )
        return TableSplit(frame[~is_test], frame[is_test])

    def _uses_split_column(self, use_split_column: bool | None) -> bool:
        if use_split_column and not self.has_split_column:
            raise TableError(
                f"{self.source}: use_split_column=True but the table has no {SPLIT_COLUMN!r} "
                f"column; its columns are {list(self.frame.columns)}"
            )
        return self.has_split_column if use_split_column is None else use_split_column


def read_correctness_table(
    path: str | Path,
    *,
    models: Sequence[str] | None = None,
    prompt_column: str = "prompt",
    id_column: str = "id",
    metadata_columns: Sequence[str] = (),
) -> CorrectnessTable:
    """Read a correctness table from parquet, CSV or JSON lines.

    Args:
        path: a ``.parquet``, ``.csv``, ``.jsonl`` or ``.json`` (records or lines) file.
        models: use exactly these model columns (default: every column that looks like
            one: numeric or boolean, not metadata, values in ``[0, 1]``, at least one value).
        prompt_column: the column of query texts.
        id_column: the column of question ids (optional in the file).
        metadata_columns: more column names that are never models (besides
            :data:`METADATA_COLUMNS`).

    Raises:
        TableError: the file is missing or unreadable, has no prompt column, empty or
            non-text prompts, no model column, or a named model column that is missing or
            holds values outside ``[0, 1]``.
    """
    import pandas as pd

    source = str(path)
    frame = _read_frame(Path(path))
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise TableError(f"{source}: repeated column names in {list(frame.columns)}")
    if prompt_column not in frame.columns:
        raise TableError(
            f"{source}: no prompt column {prompt_column!r} (the query text each model "
            f"answered); columns are {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise TableError(f"{source}: the table has no rows")
    prompts = frame[prompt_column]
    bad = prompts.isna().to_numpy() | ~prompts.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if not bad.any():
        bad = (prompts.str.strip() == "").to_numpy(dtype=bool)
    if bad.any():
        where = _row_names(frame, bad, id_column)
        raise TableError(
            f"{source}: {int(bad.sum())} row(s) have a missing, empty or non-text "
            f"{prompt_column!r} (first: {where}); every question needs its text"
        )
    excluded = {*METADATA_COLUMNS, prompt_column, id_column, *map(str, metadata_columns)}
    ignored: dict[str, str] = {}
    if models is None:
        chosen: list[str] = []
        for column in frame.columns:
            if column in excluded:
                continue
            problem = _model_column_problem(frame[column])
            if problem is None:
                chosen.append(column)
            elif problem != "not numeric":
                ignored[column] = problem
        if not chosen:
            raise TableError(
                f"{source}: no model columns found; a correctness table needs one column per "
                f"model with values 0/1 (or in [0, 1]) and missing values for no result, "
                f"besides metadata columns {sorted(METADATA_COLUMNS)}; columns are "
                f"{list(frame.columns)}"
                + (f"; numeric columns not taken: {ignored}" if ignored else "")
            )
    else:
        chosen = [str(m) for m in models]
        for column in chosen:
            if column not in frame.columns:
                raise TableError(
                    f"{source}: no model column {column!r}; columns are {list(frame.columns)}"
                )
            problem = _model_column_problem(frame[column])
            if problem is not None:
                raise TableError(f"{source}: column {column!r} is not a model column: {problem}")
        if len(set(chosen)) != len(chosen):
            raise TableError(f"{source}: a model is named twice in {chosen}")
    frame = frame.copy()
    for column in chosen:
        frame[column] = pd.to_numeric(frame[column].astype("Float64")).astype("float64")
    frame = frame.reset_index(drop=True)
    return CorrectnessTable(
        frame=frame,
        model_columns=chosen,
        source=source,
        prompt_column=prompt_column,
        id_column=id_column if id_column in frame.columns else None,
        ignored_columns=ignored,
    )


def _read_frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise TableError(
            f"{path}: no such file; pass a correctness table (.parquet, .csv or .jsonl), "
            f"e.g. the output of `herd label`"
        )
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            try:
                return pd.read_json(path)
            except ValueError:
                return pd.read_json(path, lines=True)
    except ImportError as exc:
        raise TableError(
            f"{path}: reading it needs {exc.name or 'pyarrow'}; install "
            f"`pip install 'langchain-herd[train]'`"
        ) from exc
    except Exception as exc:  # pandas raises many types for a damaged file
        raise TableError(f"{path}: could not be read as {suffix[1:]} ({exc})") from exc
    raise TableError(
        f"{path}: unknown table format {suffix or '(no suffix)'!r}; use .parquet, .csv, "
        f".jsonl or .json"
    )


def _model_column_problem(column: pd.Series) -> str | None:
    """Why a column cannot be a model column, or None if it can."""
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None if column.notna().any() else "no values"
    if not pd.api.types.is_numeric_dtype(dtype):
        return "not numeric"
    values = pd.to_numeric(column.astype("Float64")).dropna()
    if values.empty:
        return "no values (every row is missing)"
    finite = np.isfinite(values.to_numpy(dtype=np.float64))
    if not finite.all() or values.min() < 0.0 or values.max() > 1.0:
        return f"values outside [0, 1] (min {values.min()}, max {values.max()})"
    return None


def _row_names(frame: pd.DataFrame, mask: npt.NDArray[np.bool_], id_column: str) -> list[str]:
    rows = np.flatnonzero(mask)[:3]
    if id_column in frame.columns:
        return [f"{id_column}={frame[id_column].iloc[i]!r}" for i in rows]
    return [f"row {i}" for i in rows]
