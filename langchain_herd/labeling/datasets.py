"""The queries a labeling run sends to every expert, read from the three supported files.

- **MMLU parquet** (``id, question, A, B, C, D, answer`` and optional ``split, subject,
  group``; more option columns ``E``, ``F``, ... are used when present): the prompt sent is
  :func:`langchain_herd.mmlu.format_question` of the question and its options.
- **Correctness-table parquet** (``id, prompt, answer`` and optional ``dataset, split,
  subject, group, source, category``), the shape of the correctness tables themselves: the
  prompt already lists its options as ``A. ...`` lines; ``answer`` is the gold letter
  (``A``-``J`` and beyond). Other columns (the models' 0/1 columns) are ignored.
- **JSONL** of ``{"id", "prompt", "reference"?}`` objects for open-ended tasks (optional
  ``dataset, split, subject, group``, and ``metadata``, an object that is kept out of the
  way). Other keys are errors, so a misspelt ``reference`` cannot silently turn a line into
  a reference-free one.

pandas and pyarrow are imported only to read parquet (``pip install 'langchain-herd[data]'``).

Example:
    .. code-block:: python

        from langchain_herd.labeling import load_dataset

        dataset = load_dataset("questions.jsonl")
        print(dataset.name, len(dataset), dataset.queries[0].kind)
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from langchain_herd.labeling.errors import DatasetError
from langchain_herd.labeling.letters import MAX_CHOICES, parse_lettered_choices
from langchain_herd.mmlu import format_question

__all__ = [
    "EXTRA_COLUMNS",
    "LabelDataset",
    "LabelQuery",
    "QueryKind",
    "load_dataset",
    "read_correctness_questions",
    "read_jsonl",
    "read_mmlu",
]

QueryKind = Literal["multiple_choice", "open"]

EXTRA_COLUMNS: tuple[str, ...] = ("split", "source", "category", "subject", "group")
"""Descriptive columns carried from the dataset into the correctness table, in this order."""

_LETTERS = string.ascii_uppercase
_MMLU_REQUIRED = ("id", "question", "A", "B", "C", "D", "answer")
_TABLE_REQUIRED = ("id", "prompt", "answer")
_JSONL_KEYS = frozenset({"id", "prompt", "reference", "dataset", "metadata", *EXTRA_COLUMNS})


@dataclass(frozen=True)
class LabelQuery:
    """One question to label.

    Example:
        >>> q = LabelQuery("q1", "2 + 2 =\\nA. 3\\nB. 4", dataset="toy", gold="B",
        ...                choices=("3", "4"))
        >>> q.kind
        'multiple_choice'
    """

    id: str
    """Unique key of the question in its dataset."""
    prompt: str
    """Exactly what every expert receives (as one user message)."""
    dataset: str
    """The ``dataset`` column of the correctness table."""
    gold: str | None = None
    """Gold option letter of a multiple-choice question (None: unknown)."""
    choices: tuple[str, ...] = ()
    """Option texts in letter order; non-empty means multiple choice."""
    reference: str | None = None
    """Reference answer of an open-ended question (None: judged pairwise)."""
    extras: Mapping[str, str | None] = field(default_factory=dict)
    """Descriptive columns (:data:`EXTRA_COLUMNS`) carried into the table."""

    @property
    def kind(self) -> QueryKind:
        """``multiple_choice`` when the question has options, else ``open``."""
        return "multiple_choice" if self.choices else "open"

    @property
    def answer_column(self) -> str | None:
        """The table's ``answer`` cell: the gold letter, or the reference text."""
        return self.gold if self.choices else self.reference

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``queries.jsonl`` stores)."""
        data = asdict(self)
        data["choices"] = list(self.choices)
        data["extras"] = dict(self.extras)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelQuery:
        """Rebuild a query from :meth:`to_json` output."""
        return cls(
            id=data["id"],
            prompt=data["prompt"],
            dataset=data["dataset"],
            gold=data.get("gold"),
            choices=tuple(data.get("choices") or ()),
            reference=data.get("reference"),
            extras=dict(data.get("extras") or {}),
        )


@dataclass(frozen=True)
class LabelDataset:
    """The questions of one labeling run, in order.

    Example:
        >>> ds = LabelDataset("toy", [LabelQuery("q1", "Say hi.", dataset="toy")])
        >>> len(ds), ds.head(0).queries
        (1, ())
    """

    name: str
    """Dataset name (default for the ``dataset`` column)."""
    queries: Sequence[LabelQuery]
    """The questions, in table order."""
    source: str | None = None
    """The file it was read from, for messages and ``run.json``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queries", tuple(self.queries))
        seen: set[str] = set()
        for query in self.queries:
            if query.id in seen:
                where = f"{self.source}: " if self.source else ""
                raise DatasetError(
                    f"{where}id {query.id!r} appears more than once; ids are the table's keys"
                )
            seen.add(query.id)

    def __len__(self) -> int:
        return len(self.queries)

    def __iter__(self) -> Iterator[LabelQuery]:
        return iter(self.queries)

    def head(self, n: int) -> LabelDataset:
        """The first ``n`` questions (what ``limit`` labels)."""
        return replace(self, queries=tuple(self.queries[:n]))

    @property
    def extra_columns(self) -> list[str]:
        """The descriptive columns any query carries, in :data:`EXTRA_COLUMNS` order."""
        present = {key for query in self.queries for key in query.extras}
        return [column for column in EXTRA_COLUMNS if column in present]

    def fingerprint(self) -> str:
        """SHA-256 over every query's content, independent of the file's path."""
        digest = hashlib.sha256()
        for query in self.queries:
            line = json.dumps(query.to_json(), sort_keys=True, ensure_ascii=False)
            digest.update(line.encode("utf-8") + b"\n")
        return digest.hexdigest()


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError, ImportError):
        return False


def _text(value: Any) -> str | None:
    return None if _is_missing(value) else str(value)


def _read_parquet(path: Path) -> Any:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas needs it to read parquet)
    except ImportError as exc:
        raise ImportError(
            f"reading {path} needs pandas and pyarrow ({exc.name} is missing); install them "
            "with `pip install 'langchain-herd[data]'`"
        ) from exc
    try:
        # pandas' default NA handling only: some MMLU options are the literal string "None".
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from exc


def _parquet_columns(path: Path) -> set[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return set(_read_parquet(path).columns)  # raises the install hint
    try:
        return set(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from exc


def _require_columns(
    path: Path, columns: Iterable[str], required: Sequence[str], shape: str
) -> None:
    missing = [column for column in required if column not in set(columns)]
    if missing:
        raise DatasetError(
            f"{path}: lacks the column(s) {', '.join(missing)} needed for the {shape} shape "
            f"(expected at least {', '.join(required)})"
        )


def _gold_letter(path: Path, row_id: str, value: Any, n_choices: int) -> str | None:
    gold = _text(value)
    if gold is None:
        return None  # kept: the row is labeled, its cells stay null (no gold to compare with)
    gold = gold.strip().upper()
    if len(gold) != 1 or gold not in _LETTERS[:n_choices]:
        raise DatasetError(
            f"{path}: row id {row_id!r}: answer {value!r} is not one of the option letters "
            f"{_LETTERS[0]}-{_LETTERS[n_choices - 1]}"
        )
    return gold


def _extras(row: Mapping[str, Any], columns: Iterable[str]) -> dict[str, str | None]:
    return {column: _text(row[column]) for column in EXTRA_COLUMNS if column in set(columns)}


def read_mmlu(path: str | Path, *, name: str | None = None) -> LabelDataset:
    """Read an MMLU-shaped parquet file (one column per option).

    Args:
        path: the parquet file.
        name: dataset name (default: the file's stem, e.g. ``mmlu``).

    Raises:
        DatasetError: a required column is missing, or a row has an empty question or
            option or an answer that is not one of its option letters.
    """
    file = Path(path)
    df = _read_parquet(file)
    _require_columns(file, df.columns, _MMLU_REQUIRED, "MMLU")
    option_columns = []
    for letter in _LETTERS[:MAX_CHOICES]:
        if letter not in df.columns:
            break
        option_columns.append(letter)
    dataset = name or file.stem
    queries = []
    for row in df.to_dict("records"):
        row_id = _text(row["id"])
        if row_id is None:
            raise DatasetError(f"{file}: a row has no id")
        question = _text(row["question"])
        if not question or not question.strip():
            raise DatasetError(f"{file}: row id {row_id!r}: empty question")
        choices = []
        for column in option_columns:
            option = _text(row[column])
            if option is None:
                raise DatasetError(f"{file}: row id {row_id!r}: option {column} is empty")
            choices.append(option.strip())
        queries.append(
            LabelQuery(
                id=row_id,
                prompt=format_question(question, choices),
                dataset=dataset,
                gold=_gold_letter(file, row_id, row["answer"], len(choices)),
                choices=tuple(choices),
                extras=_extras(row, df.columns),
            )
        )
    return LabelDataset(dataset, queries, source=str(file))


def _instruction(n_choices: int) -> str:
    letters = _LETTERS[:n_choices]
    listed = letters[0] if n_choices == 1 else ", ".join(letters[:-1]) + f" or {letters[-1]}"
    return f"Answer with the letter only ({listed})."


def read_correctness_questions(
    path: str | Path, *, name: str | None = None, add_instruction: bool = True
) -> LabelDataset:
    """Read a correctness-table parquet file (prompt with lettered options, gold letter).

    Args:
        path: the parquet file.
        name: dataset name for rows without a ``dataset`` column value (default: file stem).
        add_instruction: append "Answer with the letter only (A, ..., J)." to each prompt,
            as :func:`~langchain_herd.mmlu.format_question` does (the tables store prompts
            without it, and small chat models seldom answer with a bare letter unasked).

    Raises:
        DatasetError: a required column is missing, a prompt lists no ``A. ...`` options,
            or an answer is not one of its prompt's option letters.
    """
    file = Path(path)
    df = _read_parquet(file)
    _require_columns(file, df.columns, _TABLE_REQUIRED, "correctness-table")
    default_name = name or file.stem
    queries = []
    for row in df.to_dict("records"):
        row_id = _text(row["id"])
        if row_id is None:
            raise DatasetError(f"{file}: a row has no id")
        prompt = _text(row["prompt"])
        if not prompt or not prompt.strip():
            raise DatasetError(f"{file}: row id {row_id!r}: empty prompt")
        choices = parse_lettered_choices(prompt)
        if not choices:
            raise DatasetError(
                f"{file}: row id {row_id!r}: the prompt lists no options as 'A. ...' lines"
            )
        if add_instruction and "answer with the letter" not in prompt.lower():
            prompt = f"{prompt.rstrip()}\n\n{_instruction(len(choices))}"
        dataset = _text(row["dataset"]) if "dataset" in df.columns else None
        queries.append(
            LabelQuery(
                id=row_id,
                prompt=prompt,
                dataset=dataset or default_name,
                gold=_gold_letter(file, row_id, row["answer"], len(choices)),
                choices=tuple(choices),
                extras=_extras(row, df.columns),
            )
        )
    return LabelDataset(default_name, queries, source=str(file))


def _jsonl_string(file: Path, number: int, obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DatasetError(f"{file}:{number}: {key!r} must be a string, got {type(value).__name__}")
    return value


def read_jsonl(path: str | Path, *, name: str | None = None) -> LabelDataset:
    """Read a JSONL file of open-ended questions, one ``{"id", "prompt", "reference"?}`` a line.

    Blank lines are skipped. ``id`` may be a string or an integer (stored as a string).

    Args:
        path: the JSONL file.
        name: dataset name for lines without ``dataset`` (default: the file's stem).

    Raises:
        DatasetError: a line is not a JSON object, lacks ``id`` or ``prompt``, has a key
            other than the allowed ones, or a value of the wrong type; the message gives
            the file and the line number.
    """
    file = Path(path)
    default_name = name or file.stem
    queries = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{file}: not UTF-8 text ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{file}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{file}:{number}: expected a JSON object, got {line[:60]!r}")
        unknown = sorted(set(obj) - _JSONL_KEYS)
        if unknown:
            raise DatasetError(
                f"{file}:{number}: unknown key(s) {unknown}; allowed: {sorted(_JSONL_KEYS)} "
                "(put anything else under 'metadata')"
            )
        raw_id = obj.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise DatasetError(f"{file}:{number}: 'id' must be a non-empty string or integer")
        prompt = _jsonl_string(file, number, obj, "prompt")
        if not prompt or not prompt.strip():
            raise DatasetError(f"{file}:{number}: 'prompt' is missing or empty")
        reference = _jsonl_string(file, number, obj, "reference")
        extras = {}
        for key in EXTRA_COLUMNS:
            if key in obj:
                extras[key] = _jsonl_string(file, number, obj, key)
        queries.append(
            LabelQuery(
                id=str(raw_id),
                prompt=prompt,
                dataset=_jsonl_string(file, number, obj, "dataset") or default_name,
                reference=reference,
                extras=extras,
            )
        )
    return LabelDataset(default_name, queries, source=str(file))


DatasetFormat = Literal["auto", "mmlu", "correctness", "jsonl"]


def load_dataset(
    path: str | Path, *, format: DatasetFormat = "auto", name: str | None = None
) -> LabelDataset:
    """Read a labeling dataset, recognizing its shape from the extension and columns.

    ``.jsonl`` files are read with :func:`read_jsonl`; parquet files with a ``question``
    column as MMLU (:func:`read_mmlu`), with a ``prompt`` column as a correctness table
    (:func:`read_correctness_questions`).

    Args:
        path: the file.
        format: force a reader instead of recognizing the shape.
        name: dataset name (default: the file's stem).

    Raises:
        DatasetError: the file does not exist or has none of the supported shapes.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{file}: no such dataset file")
    if format == "auto":
        if file.suffix.lower() in {".jsonl", ".ndjson"}:
            format = "jsonl"
        elif file.suffix.lower() == ".parquet":
            columns = _parquet_columns(file)
            if "question" in columns:
                format = "mmlu"
            elif "prompt" in columns:
                format = "correctness"
            else:
                raise DatasetError(
                    f"{file}: a parquet file with neither a 'question' column (MMLU shape: "
                    f"{', '.join(_MMLU_REQUIRED)}) nor a 'prompt' column (correctness-table "
                    f"shape: {', '.join(_TABLE_REQUIRED)})"
                )
        else:
            raise DatasetError(
                f"{file}: unknown dataset file type {file.suffix!r}; use .parquet (MMLU or "
                "correctness-table shape) or .jsonl (open-ended questions)"
            )
    if format == "jsonl":
        return read_jsonl(file, name=name)
    if format == "mmlu":
        return read_mmlu(file, name=name)
    if format == "correctness":
        return read_correctness_questions(file, name=name)
    raise DatasetError(f"unknown dataset format {format!r}; use auto, mmlu, correctness or jsonl")
