"""Correctness tables: one row per question, one 0/1 (or [0, 1]) column per expert model.

A correctness table is what a labeling run over a herd produces and what a router is
trained and evaluated on (see ``herd label`` and ``herd train``); its companion, the answers
table (:func:`read_answers_table`), holds what each model answered. A correctness table's
shape:

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
    "AnswersTable",
    "CorrectnessTable",
    "TableError",
    "TableSplit",
    "read_answers_table",
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


# ---------------------------------------------------------------- answers tables

#: Above this share of multiple-choice cells where a model's letter and its 0/1 disagree
#: (letter == gold vs correct), the two tables are taken to be from different runs. A judge
#: that grades letters differently from exact match stays far below it.
_MISMATCH_LIMIT = 0.2
_MISMATCH_MIN_CELLS = 20


@dataclass(frozen=True)
class AnswersTable:
    """An answers table: per question (``id``), what each model answered.

    The companion of a correctness table, written by ``herd label`` as ``answers.parquet``
    (the shape of the shared ``mmlu_pro_predictions.parquet``): an ``id`` column, optional
    row columns (those of :data:`METADATA_COLUMNS`), and one text column per model holding
    the option letter it chose (multiple choice) or its reply (open-ended), missing where it
    gave none. Read one with :func:`read_answers_table`; line it up with a correctness table
    with :meth:`aligned`.

    Example:
        >>> answers = read_answers_table("answers.parquet")  # doctest: +SKIP
        >>> table = read_correctness_table("correctness.parquet")  # doctest: +SKIP
        >>> answers.aligned(table).shape  # doctest: +SKIP
        (1000, 3)
    """

    frame: pd.DataFrame
    """All rows and columns; model columns as text with missing values for "no answer"."""
    model_columns: list[str]
    """The model (expert) columns, in file order."""
    source: str = "<memory>"
    """Where the table came from (a path), for messages."""
    id_column: str = "id"
    """The column of question ids (unique)."""

    def __len__(self) -> int:
        return len(self.frame)

    def aligned(
        self,
        table: CorrectnessTable,
        models: Sequence[str] | None = None,
        *,
        check_letters: bool = True,
    ) -> npt.NDArray[np.str_]:
        """The answers of ``table``'s rows (matched by id), as ``(rows, models)`` text
        (``""`` where a model gave no answer).

        Args:
            table: the correctness table (or one side of its split) to line up with.
            models: the model columns, in this order (default: the table's model columns).
            check_letters: refuse when a model's option letters contradict its 0/1 labels
                (letter equal to the gold ``answer`` vs correct) in more than a fifth of the
                multiple-choice cells: the tables are then not from the same run.

        Raises:
            TableError: the correctness table has no id column; a model has no answer
                column; a question id of the table has no answers; letters and labels
                contradict each other.
        """
        import pandas as pd

        names = list(table.model_columns if models is None else models)
        id_column = table.id_column
        if id_column is None or id_column not in table.frame.columns:
            raise TableError(
                f"{table.source}: no id column; answers are matched to questions by id, so "
                f"the correctness table needs the {self.id_column!r} column it was labeled with"
            )
        missing = [m for m in names if m not in self.model_columns]
        if missing:
            raise TableError(
                f"{self.source}: no answer column for model(s) {missing} of {table.source}; "
                f"its answer columns are {self.model_columns}"
            )
        by_id = self.frame.set_index(self.id_column)
        ids = pd.Index(table.frame[id_column].astype("string"))
        absent = ids.difference(by_id.index)
        if len(absent):
            common = len(ids) - len(absent)
            raise TableError(
                f"{self.source}: no answers for {len(absent)} of the {len(ids)} question ids "
                f"of {table.source} (first: {list(absent[:3])}"
                + (
                    "; no id in common: the two tables are not from the same questions)"
                    if common == 0
                    else ")"
                )
                + "; use the answers table of the same labeling run (herd label writes both)"
            )
        picked = by_id.loc[ids, names]
        values = picked.astype("string").fillna("").to_numpy(dtype=str)
        if check_letters and "answer" in table.frame.columns:
            self._check_letters(table, names, values)
        return values

    def _check_letters(
        self, table: CorrectnessTable, names: list[str], values: npt.NDArray[np.str_]
    ) -> None:
        gold = table.frame["answer"].astype("string").fillna("").str.strip().to_numpy(dtype=str)
        correct = table.correctness(names)
        is_letter = np.char.str_len(gold) == 1
        for j, name in enumerate(names):
            letters = values[:, j]
            # Only letter cells of lettered questions with a 0/1 label say anything here.
            cells = is_letter & (np.char.str_len(letters) <= 1) & np.isin(correct[:, j], (0, 1))
            if cells.sum() < _MISMATCH_MIN_CELLS:
                continue
            chose_gold = letters[cells] == gold[cells]
            share = float(np.mean(chose_gold != (correct[cells, j] == 1)))
            if share > _MISMATCH_LIMIT:
                raise TableError(
                    f"{self.source}: the letters of {name!r} contradict its 0/1 labels in "
                    f"{table.source} on {share:.0%} of {int(cells.sum())} multiple-choice rows "
                    f"(a letter equal to the gold answer should be a 1); the two tables are not "
                    f"from the same run, or their columns are named differently"
                )


def read_answers_table(
    path: str | Path,
    *,
    models: Sequence[str] | None = None,
    id_column: str = "id",
    metadata_columns: Sequence[str] = (),
) -> AnswersTable:
    """Read an answers table from parquet, CSV or JSON lines.

    Args:
        path: a ``.parquet``, ``.csv``, ``.jsonl`` or ``.json`` file.
        models: use exactly these model columns (default: every column that is not the id
            or a metadata column).
        id_column: the column of question ids.
        metadata_columns: more column names that are never models.

    Raises:
        TableError: the file is missing or unreadable, has no id column, missing or repeated
            ids, no model column, a named model column that is missing, or 0/1 model columns
            (a correctness table given in its place).
    """
    import pandas as pd

    source = str(path)
    frame = _read_frame(Path(path))
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise TableError(f"{source}: repeated column names in {list(frame.columns)}")
    if id_column not in frame.columns:
        raise TableError(
            f"{source}: no id column {id_column!r}; an answers table has one row per question "
            f"id, like the correctness table it belongs to; columns are {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise TableError(f"{source}: the table has no rows")
    ids = frame[id_column].astype("string")
    if ids.isna().any():
        raise TableError(f"{source}: {int(ids.isna().sum())} row(s) have no {id_column!r}")
    repeated = ids[ids.duplicated()].unique().tolist()
    if repeated:
        raise TableError(
            f"{source}: {len(repeated)} question id(s) occur more than once (first: "
            f"{repeated[:3]}); an answers table has one row per question"
        )
    excluded = {*METADATA_COLUMNS, id_column, *map(str, metadata_columns)}
    if models is None:
        chosen = [c for c in frame.columns if c not in excluded]
    else:
        chosen = [str(m) for m in models]
        absent = [m for m in chosen if m not in frame.columns]
        if absent:
            raise TableError(
                f"{source}: no answer column(s) {absent}; columns are {list(frame.columns)}"
            )
        if len(set(chosen)) != len(chosen):
            raise TableError(f"{source}: a model is named twice in {chosen}")
    if not chosen:
        raise TableError(
            f"{source}: no model columns; an answers table needs one column per model with "
            f"the letter (or text) it answered, besides {id_column!r} and metadata columns "
            f"{sorted(METADATA_COLUMNS)}; columns are {list(frame.columns)}"
        )
    numeric = [c for c in chosen if _model_column_problem(frame[c]) is None]
    if numeric:
        raise TableError(
            f"{source}: column(s) {numeric[:5]} hold 0/1 values, not answers; this looks like "
            f"a correctness table. Give the correctness table as the table and the answers "
            f"table (herd label's answers.parquet: one letter or text per model) as the answers"
        )
    frame = frame.copy()
    frame[id_column] = ids
    for column in chosen:
        # Answers are compared as text: trimmed, "" and missing both mean no answer.
        values = frame[column].astype("string").str.strip()
        frame[column] = values.mask(values == "", pd.NA)
    return AnswersTable(
        frame=frame.reset_index(drop=True),
        model_columns=chosen,
        source=source,
        id_column=id_column,
    )
