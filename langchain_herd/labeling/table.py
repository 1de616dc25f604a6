"""The correctness table and the judge report, rebuilt from a run folder's ``raw.jsonl``.

The table has the shape of the correctness tables routers are trained on: ``id``,
``dataset``, the descriptive columns the dataset had (``split``, ``source``, ``category``,
``subject``, ``group``), ``prompt`` (as the experts saw it), ``answer`` (gold letter, or the
reference text of an open-ended question), then one nullable ``Int8`` column per expert,
named exactly like the expert, in herd order: 1 correct, 0 wrong, ``<NA>`` no label (the
call failed, or no verdict could be had). :mod:`langchain_herd.labeling.scoring` holds the
rules.

Example:
    .. code-block:: python

        from langchain_herd.labeling import build_table

        table = build_table("runs/mmlu-herd")  # also rewrites correctness.parquet
        table.filter(like="stem").mean()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_herd.labeling.agreement import agreement_report
from langchain_herd.labeling.datasets import EXTRA_COLUMNS, LabelQuery
from langchain_herd.labeling.records import RunState
from langchain_herd.labeling.scoring import judge_cell, pairwise_cells
from langchain_herd.labeling.store import (
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

__all__ = ["RESERVED_COLUMNS", "assemble_table", "build_table", "judge_report", "query_cells"]

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


def assemble_table(
    queries: Sequence[LabelQuery], experts: Sequence[str], state: RunState
) -> pd.DataFrame:
    """The correctness table of ``queries`` (rows, in order) by ``experts`` (columns)."""
    import pandas as pd

    present = {key for query in queries for key in query.extras}
    extras = [column for column in EXTRA_COLUMNS if column in present]
    data: dict[str, Any] = {
        "id": [q.id for q in queries],
        "dataset": [q.dataset for q in queries],
        **{column: [q.extras.get(column) for q in queries] for column in extras},
        "prompt": [q.prompt for q in queries],
        "answer": [q.answer_column for q in queries],
    }
    rows = [query_cells(query, experts, state) for query in queries]
    for index, expert in enumerate(experts):
        data[expert] = pd.array([row[index] for row in rows], dtype="Int8")
    frame = pd.DataFrame(data)
    for column in ("id", "dataset", *extras, "prompt", "answer"):
        # Explicit: an all-null column would otherwise be stored as a null-typed column.
        frame[column] = frame[column].astype(object)
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


def _write_parquet_atomic(frame: pd.DataFrame, path: Path, experts: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field(column, pa.int8() if column in experts else pa.string())
        for column in frame.columns
    ]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def build_table(out_dir: str | Path) -> pd.DataFrame:
    """Rebuild ``correctness.parquet`` (and ``judge_report.json``) from a run folder.

    Only ``run.json``, ``queries.jsonl`` and ``raw.jsonl`` are read, so the table can be
    rebuilt at any time, also from a run that was killed (its unfinished cells are null).

    Args:
        out_dir: the run folder.

    Returns:
        The table, as read back from the parquet file it wrote.

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
    frame = assemble_table(queries, experts, state)
    _write_parquet_atomic(frame, folder / TABLE_FILE, experts)
    report = judge_report(queries, experts, state, judge=info.get("judge"))
    if report is not None:
        write_json_atomic(folder / REPORT_FILE, report)
    return pd.read_parquet(folder / TABLE_FILE)
