"""The correctness and answers tables and the judge report, rebuilt from ``raw.jsonl``.

The correctness table has the shape of the tables routers are trained on: ``id``,
``dataset``, the descriptive columns the dataset had (``split``, ``source``, ``category``,
``subject``, ``group``), ``prompt`` (as the experts saw it), ``answer`` (gold letter, or the
reference text of an open-ended question), then one nullable ``Int8`` column per expert,
named exactly like the expert, in herd order: 1 correct, 0 wrong, ``<NA>`` no label (the
call failed, or no verdict could be had). :mod:`langchain_herd.labeling.scoring` holds the
rules.

The answers table has the same rows and row columns, and per expert a string column of
what it answered: the option letter it chose for a multiple-choice question (null when
none could be read from its reply), its reply text for an open-ended one (null when the
call failed). Cascades and learned votes are trained on the pair (``herd train --kind``).

Example:
    .. code-block:: python

        from langchain_herd.labeling import build_tables

        tables = build_tables("runs/mmlu-herd")  # rewrites correctness.parquet, answers.parquet
        tables.correctness.filter(like="stem").mean()
        tables.answers["stem"].value_counts()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_herd.labeling.agreement import agreement_report
from langchain_herd.labeling.datasets import EXTRA_COLUMNS, LabelQuery
from langchain_herd.labeling.records import RunState
from langchain_herd.labeling.scoring import judge_cell, pairwise_cells
from langchain_herd.labeling.store import (
    ANSWERS_FILE,
    RAW_FILE,
    REPORT_FILE,
    TABLE_FILE,
    load_queries,
    load_run_info,
    read_raw,
    write_json_atomic,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RESERVED_COLUMNS",
    "RunTables",
    "answer_cells",
    "assemble_answers",
    "assemble_table",
    "build_table",
    "build_tables",
    "judge_report",
    "query_cells",
]

RESERVED_COLUMNS: frozenset[str] = frozenset({"id", "dataset", "prompt", "answer", *EXTRA_COLUMNS})
"""Column names an expert may not have (its column would clash with them)."""


def query_cells(query: LabelQuery, experts: Sequence[str], state: RunState) -> list[int | None]:
    """The row of 0/1/None cells of one question, in ``experts`` order."""
    if query.kind == "multiple_choice":
        cells: list[int | None] = []
        for expert in experts:
            record = state.answer(query.id, expert)
            ok = record is not None and record.get("error") is None
            cells.append(record.get("correct") if ok and record is not None else None)
        return cells
    if query.reference is not None:
        cells = []
        for expert in experts:
            verdict = state.verdict("reference", query.id, expert)
            if not state.answer_ok(query.id, expert) or verdict is None:
                cells.append(None)
                continue
            correct = (verdict.get("verdict") or {}).get("correct")
            cells.append(judge_cell(verdict.get("status"), correct))
        return cells
    answered = [expert for expert in experts if state.answer_ok(query.id, expert)]
    outcomes: dict[frozenset[str], str | None] = {}
    for a, b in combinations(answered, 2):
        pair = state.pair(query.id, a, b)
        outcomes[frozenset({a, b})] = pair.get("outcome") if pair else None
    by_expert = pairwise_cells(answered, outcomes)
    return [by_expert.get(expert) for expert in experts]


def answer_cells(query: LabelQuery, experts: Sequence[str], state: RunState) -> list[str | None]:
    """The answers-table row of one question, in ``experts`` order.

    Multiple choice: the letter extracted when the answer arrived (stored in its raw line, so
    a rebuilt table never depends on today's extraction rules); open-ended: the reply text.
    """
    cells: list[str | None] = []
    for expert in experts:
        record = state.answer(query.id, expert)
        if record is None or record.get("error") is not None:
            cells.append(None)
        elif query.kind == "multiple_choice":
            cells.append(record.get("extracted"))
        else:
            cells.append(record.get("answer"))
    return cells


def _row_columns(queries: Sequence[LabelQuery]) -> dict[str, list[Any]]:
    """The non-expert columns both tables share, in table order."""
    present = {key for query in queries for key in query.extras}
    extras = [column for column in EXTRA_COLUMNS if column in present]
    return {
        "id": [q.id for q in queries],
        "dataset": [q.dataset for q in queries],
        **{column: [q.extras.get(column) for q in queries] for column in extras},
        "prompt": [q.prompt for q in queries],
        "answer": [q.answer_column for q in queries],
    }


def _frame(rows: dict[str, list[Any]], cells: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({**rows, **cells})
    for column in rows:
        # Explicit: an all-null column would otherwise be stored as a null-typed column.
        frame[column] = frame[column].astype(object)
    return frame


def assemble_table(
    queries: Sequence[LabelQuery], experts: Sequence[str], state: RunState
) -> pd.DataFrame:
    """The correctness table of ``queries`` (rows, in order) by ``experts`` (columns)."""
    import pandas as pd

    rows = [query_cells(query, experts, state) for query in queries]
    cells = {
        expert: pd.array([row[index] for row in rows], dtype="Int8")
        for index, expert in enumerate(experts)
    }
    return _frame(_row_columns(queries), cells)


def assemble_answers(
    queries: Sequence[LabelQuery], experts: Sequence[str], state: RunState
) -> pd.DataFrame:
    """The answers table of ``queries`` (rows, in order) by ``experts`` (columns)."""
    rows = [answer_cells(query, experts, state) for query in queries]
    cells = {expert: [row[index] for row in rows] for index, expert in enumerate(experts)}
    frame = _frame(_row_columns(queries), cells)
    for expert in experts:
        frame[expert] = frame[expert].astype(object)
    return frame


def judge_report(
    queries: Sequence[LabelQuery],
    experts: Sequence[str],
    state: RunState,
    *,
    judge: str | None = None,
) -> dict[str, Any] | None:
    """The judge's agreement with exact match on the multiple-choice answers it judged.

    Returns:
        The report, or ``None`` when the judge judged no multiple-choice answer.
    """
    labels: list[tuple[str, int, int]] = []
    unparseable = errors = judged = 0
    for query in queries:
        if query.kind != "multiple_choice" or query.gold is None:
            continue
        for expert in experts:
            record = state.answer(query.id, expert)
            verdict = state.verdict("mc_agreement", query.id, expert)
            if record is None or verdict is None or record.get("correct") is None:
                continue
            judged += 1
            status = verdict.get("status")
            if status == "unparseable":
                unparseable += 1
            elif status == "error":
                errors += 1
            else:
                labels.append((expert, int(record["correct"]), int(verdict["verdict"]["correct"])))
    if not judged:
        return None
    return agreement_report(labels, judge=judge, unparseable=unparseable, errors=errors)


def _write_parquet_atomic(frame: pd.DataFrame, path: Path, int_columns: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field(column, pa.int8() if column in int_columns else pa.string())
        for column in frame.columns
    ]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class RunTables(NamedTuple):
    """The two tables of a labeling run, as read back from their files."""

    correctness: pd.DataFrame
    """``correctness.parquet``: 0/1 per expert."""
    answers: pd.DataFrame
    """``answers.parquet``: the letter (or text) each expert answered."""


def build_tables(out_dir: str | Path) -> RunTables:
    """Rebuild ``correctness.parquet``, ``answers.parquet`` and ``judge_report.json``.

    Only ``run.json``, ``queries.jsonl`` and ``raw.jsonl`` are read, so the tables can be
    rebuilt at any time, also from a run that was killed (its unfinished cells are null),
    and a resumed run gives the tables of one never interrupted.

    Args:
        out_dir: the run folder.

    Returns:
        Both tables, as read back from the parquet files written.

    Raises:
        FileNotFoundError: the folder holds no labeling run.
        RawLogError: ``raw.jsonl`` is damaged before its last line.
    """
    import pandas as pd

    folder = Path(out_dir)
    info = load_run_info(folder)
    experts = [expert["name"] for expert in info["experts"]]
    queries = load_queries(folder)
    state = RunState.from_records(read_raw(folder / RAW_FILE))
    _write_parquet_atomic(assemble_table(queries, experts, state), folder / TABLE_FILE, experts)
    _write_parquet_atomic(assemble_answers(queries, experts, state), folder / ANSWERS_FILE, ())
    report = judge_report(queries, experts, state, judge=info.get("judge"))
    if report is not None:
        write_json_atomic(folder / REPORT_FILE, report)
    return RunTables(pd.read_parquet(folder / TABLE_FILE), pd.read_parquet(folder / ANSWERS_FILE))


def build_table(out_dir: str | Path) -> pd.DataFrame:
    """Rebuild a run folder's files (see :func:`build_tables`); return the correctness table.

    Raises:
        FileNotFoundError: the folder holds no labeling run.
        RawLogError: ``raw.jsonl`` is damaged before its last line.
    """
    return build_tables(out_dir).correctness
