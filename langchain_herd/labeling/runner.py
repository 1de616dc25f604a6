"""``label_dataset``: every question through every expert, scored, logged, resumable.

Each expert is called directly (``expert.model.ainvoke(expert.prepare(messages))``): no
router, no fallback, no circuit breaker, because a label must come from the expert it
names. A failed call is recorded in ``raw.jsonl`` with its failure kind and leaves the
cell null; it never stops the run.

Concurrency: a fixed pool of workers takes questions in dataset order; each question's
experts are called at once, each expert behind its own semaphore of
``concurrency_per_expert`` slots, and judge calls behind the judge's own semaphore. The
pool holds twice as many questions as an expert has slots, so every expert stays busy
without the whole dataset being turned into tasks up front.

Resume: results are appended to ``raw.jsonl`` as they arrive and fsync'ed
(:class:`~langchain_herd.labeling.store.RawLog`). With ``resume=True`` the run reads it
back, skips every (question, expert) pair that has an answer and every verdict already
given for the current answers, and redoes failed calls (``retry_errors``). The tables
(correctness and answers) are built from ``raw.jsonl`` alone, so a run killed at any moment
and resumed produces the same tables as one that was never interrupted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_herd.config import HerdConfig
from langchain_herd.errors import ConfigError, EmptyAnswerError
from langchain_herd.experts import Expert, build_expert
from langchain_herd.failures import classify_failure
from langchain_herd.labeling.datasets import LabelDataset, LabelQuery, load_dataset
from langchain_herd.labeling.judge import judge_answer, judge_pair
from langchain_herd.labeling.letters import extract_choice
from langchain_herd.labeling.records import RunState, answer_sha
from langchain_herd.labeling.replies import reply_text, reply_usage
from langchain_herd.labeling.scoring import exact_match_cell
from langchain_herd.labeling.store import (
    ANSWERS_FILE,
    RAW_FILE,
    REPORT_FILE,
    RUN_FILE,
    TABLE_FILE,
    RawLog,
    RunLock,
    prepare_out_dir,
    read_raw,
    run_info,
    write_queries,
)
from langchain_herd.labeling.table import RESERVED_COLUMNS, build_tables

if TYPE_CHECKING:
    import pandas as pd
    from tqdm import tqdm

__all__ = ["LabelResult", "label_dataset"]


@dataclass(frozen=True)
class LabelResult:
    """What a labeling run produced.

    Example:
        .. code-block:: python

            result = await label_dataset(config, "mmlu.parquet", "runs/x", limit=100)
            print(result.accuracy(), result.table_path)
    """

    out_dir: Path
    """The run folder."""
    table: pd.DataFrame
    """The correctness table (as written to ``correctness.parquet``)."""
    experts: tuple[str, ...]
    """Expert columns, in herd order."""
    calls: int
    """Expert calls made by this run."""
    failed: int
    """Of those, calls that failed (their cells are null)."""
    reused: int
    """(question, expert) answers found in ``raw.jsonl`` and not asked again."""
    judge_questions: int
    """Verdicts asked of the judge by this run (each pairwise order counts once)."""
    judge_unparseable: int
    """Of those, verdicts still unreadable after every retry (their cells are null)."""
    resumed: bool
    """Whether an earlier run in the folder was continued."""
    judge_report: dict[str, Any] | None = None
    """The judge's agreement with exact match (``judge_report.json``), if any."""
    answers: pd.DataFrame | None = None
    """The answers table (as written to ``answers.parquet``): per expert, the option letter
    it chose (multiple choice) or its reply (open-ended)."""

    @property
    def raw_path(self) -> Path:
        """``raw.jsonl``."""
        return self.out_dir / RAW_FILE

    @property
    def table_path(self) -> Path:
        """``correctness.parquet``."""
        return self.out_dir / TABLE_FILE

    @property
    def answers_path(self) -> Path:
        """``answers.parquet``."""
        return self.out_dir / ANSWERS_FILE

    def accuracy(self) -> dict[str, float | None]:
        """Per expert, the share of its labeled questions that are correct (None if none)."""
        out: dict[str, float | None] = {}
        for expert in self.experts:
            column = self.table[expert].dropna()
            out[expert] = float(column.mean()) if len(column) else None
        return out


@dataclass
class _Counters:
    calls: int = 0
    failed: int = 0
    judge_questions: int = 0
    judge_unparseable: int = 0


@dataclass
class _Labeler:
    experts: Sequence[Expert]
    state: RunState
    log: RawLog
    concurrency: int
    judge: Runnable[Any, Any] | None
    judge_retries: int
    judge_timeout_s: float | None
    judge_concurrency: int
    retry_errors: bool
    bar: tqdm[Any]
    counters: _Counters = field(default_factory=_Counters)

    def __post_init__(self) -> None:
        self.slots = {e.name: asyncio.Semaphore(self.concurrency) for e in self.experts}
        self.judge_slots = asyncio.Semaphore(self.judge_concurrency)

    def needs_answer(self, query_id: str, expert: str) -> bool:
        return _needs_answer(self.state, query_id, expert, self.retry_errors)

    def needs_verdict(self, record: dict[str, Any] | None) -> bool:
        return record is None or (self.retry_errors and record.get("status") == "error")

    async def run(self, queries: Iterable[LabelQuery]) -> None:
        pending = deque(queries)

        async def worker() -> None:
            while pending:
                await self.label(pending.popleft())

        workers = [asyncio.ensure_future(worker()) for _ in range(2 * self.concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            # A failure here is the run's own (the disk, a bug), not an expert's: stop all.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    async def label(self, query: LabelQuery) -> None:
        todo = [e for e in self.experts if self.needs_answer(query.id, e.name)]
        await asyncio.gather(*(self.answer(query, expert) for expert in todo))
        if self.judge is None:
            return
        answered = [e.name for e in self.experts if self.state.answer_ok(query.id, e.name)]
        if query.kind == "multiple_choice":
            if query.gold is not None:
                await asyncio.gather(*(self.verdict(query, e, "mc_agreement") for e in answered))
        elif query.reference is not None:
            await asyncio.gather(*(self.verdict(query, e, "reference") for e in answered))
        else:
            await asyncio.gather(*(self.pair(query, a, b) for a, b in combinations(answered, 2)))

    async def answer(self, query: LabelQuery, expert: Expert) -> None:
        messages = expert.prepare([HumanMessage(content=query.prompt)])
        config: RunnableConfig = {
            "run_name": f"herd-label:{expert.name}",
            "tags": ["herd:label", f"expert:{expert.name}"],
            "metadata": {"herd_label_id": query.id},
        }
        text: str | None = None
        usage: dict[str, int] | None = None
        error: str | None = None
        error_kind: str | None = None
        async with self.slots[expert.name]:
            started = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    expert.model.ainvoke(messages, config=config), expert.timeout_s
                )
                text, usage = reply_text(reply), reply_usage(reply)
                if not text.strip():
                    raise EmptyAnswerError(f"expert {expert.name!r} answered with no text")
            except Exception as exc:  # the expert's failure: recorded, never raised
                failure = classify_failure(exc)
                error = failure.message if failure else f"{type(exc).__name__}: {exc}"
                error_kind = failure.kind if failure else "error"
            latency_ms = (time.perf_counter() - started) * 1000
        ok = error is None and text is not None
        extracted = extract_choice(text, query.choices) if ok and text and query.choices else None
        record = {
            "type": "answer",
            "id": query.id,
            "expert": expert.name,
            "prompt": query.prompt,
            "answer": text,
            "answer_sha": answer_sha(text) if ok and text is not None else None,
            "latency_ms": round(latency_ms, 1),
            "usage": usage,
            "extracted": extracted,
            "gold": query.gold,
            "correct": exact_match_cell(extracted, query.gold) if ok and query.choices else None,
            "error": error,
            "error_kind": error_kind,
            "ts": time.time(),
        }
        await self.log.append(record)
        self.state.add(record)
        self.counters.calls += 1
        self.counters.failed += 0 if ok else 1
        self.bar.update(1)
        if not ok:
            self.bar.set_postfix(failed=self.counters.failed, refresh=False)

    async def verdict(self, query: LabelQuery, expert: str, purpose: str) -> None:
        if not self.needs_verdict(self.state.verdict(purpose, query.id, expert)):
            return
        answer = self.state.answer(query.id, expert)
        assert answer is not None and self.judge is not None
        if purpose == "reference":
            reference = query.reference or ""
        else:
            gold = query.gold or ""
            # The judge grades against the gold option's letter and text, as a person would.
            reference = f"{gold}. {query.choices[ord(gold) - ord('A')]}"
        call = await judge_answer(
            self.judge,
            query.prompt,
            reference,
            answer["answer"],
            retries=self.judge_retries,
            timeout_s=self.judge_timeout_s,
            semaphore=self.judge_slots,
        )
        record = {
            "type": "judge",
            "purpose": purpose,
            "id": query.id,
            "expert": expert,
            "answer_sha": answer["answer_sha"],
            **call.to_json(),
            "ts": time.time(),
        }
        await self.log.append(record)
        self.state.add(record)
        self.counters.judge_questions += 1
        self.counters.judge_unparseable += call.status == "unparseable"

    async def pair(self, query: LabelQuery, a: str, b: str) -> None:
        if not self.needs_verdict(self.state.pair(query.id, a, b)):
            return
        first, second = self.state.answer(query.id, a), self.state.answer(query.id, b)
        assert first is not None and second is not None and self.judge is not None
        judgement = await judge_pair(
            self.judge,
            query.prompt,
            (a, first["answer"]),
            (b, second["answer"]),
            retries=self.judge_retries,
            timeout_s=self.judge_timeout_s,
            semaphore=self.judge_slots,
        )
        record = {
            "type": "pairwise",
            "id": query.id,
            "a": a,
            "b": b,
            "a_sha": first["answer_sha"],
            "b_sha": second["answer_sha"],
            "outcome": judgement.outcome,
            "status": judgement.status,
            "a_first": judgement.a_first.to_json(),
            "b_first": judgement.b_first.to_json(),
            "ts": time.time(),
        }
        await self.log.append(record)
        self.state.add(record)
        self.counters.judge_questions += 2
        self.counters.judge_unparseable += sum(
            call.status == "unparseable" for call in (judgement.a_first, judgement.b_first)
        )


def _check_expert_names(config: HerdConfig) -> None:
    clashes = [e.name for e in config.experts if e.name in RESERVED_COLUMNS]
    if clashes:
        raise ConfigError(
            f"expert name(s) {clashes} clash with the correctness table's own columns "
            f"({', '.join(sorted(RESERVED_COLUMNS))}); rename the expert(s)"
        )


def _default_judge_id(judge: Runnable[Any, Any]) -> str:
    # Only stable facts: reprs of clients carry memory addresses that differ per process.
    name = next(
        (
            str(getattr(judge, attr))
            for attr in ("model_name", "model", "model_id", "repo_id")
            if isinstance(getattr(judge, attr, None), str)
        ),
        None,
    )
    return f"{type(judge).__name__}:{name}" if name else type(judge).__name__


def _needs_answer(state: RunState, query_id: str, expert: str, retry_errors: bool) -> bool:
    record = state.answer(query_id, expert)
    return record is None or (retry_errors and record.get("error") is not None)


def _open_run(
    config: HerdConfig,
    dataset: LabelDataset | str | Path,
    folder: Path,
    limit: int | None,
    judge_id: str | None,
    resume: bool,
) -> tuple[LabelDataset, LabelDataset, bool, RunState, RunLock]:
    data = dataset if isinstance(dataset, LabelDataset) else load_dataset(dataset)
    selection = data.head(limit) if limit is not None else data
    info = run_info(config, data, judge=judge_id, limit=limit)
    # Locked before anything is written: a second run must not touch a running one's files.
    lock = RunLock(folder)
    try:
        resumed = prepare_out_dir(folder, info, resume=resume)
        write_queries(folder, selection)
        state = RunState.from_records(read_raw(folder / RAW_FILE))
    except BaseException:
        lock.release()
        if not (folder / RUN_FILE).exists():
            lock.path.unlink(missing_ok=True)  # refused: leave a foreign folder as it was
        raise
    return data, selection, resumed, state, lock


def _finish_run(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    tables = build_tables(folder)
    report_path = folder / REPORT_FILE
    report = json.loads(report_path.read_text("utf-8")) if report_path.is_file() else None
    return tables.correctness, tables.answers, report


async def label_dataset(
    config: HerdConfig,
    dataset: LabelDataset | str | Path,
    out_dir: str | Path,
    *,
    concurrency_per_expert: int = 2,
    resume: bool = False,
    judge: Runnable[Any, Any] | None = None,
    limit: int | None = None,
    progress: bool = True,
    judge_id: str | None = None,
    judge_retries: int = 2,
    judge_concurrency: int | None = None,
    judge_timeout_s: float | None = None,
    retry_errors: bool = True,
) -> LabelResult:
    """Label a dataset: every question through every expert of the herd, scored.

    Multiple-choice questions are scored by exact match of the extracted option letter;
    open-ended questions with a reference by the judge; open-ended questions without one by
    the judge comparing the experts' answers pairwise, in both orders (see
    :mod:`langchain_herd.labeling.scoring`). With a judge and gold letters, the judge also
    grades the multiple-choice answers and ``judge_report.json`` says how far it agrees
    with exact match.

    Args:
        config: the herd; every expert is labeled, in config order.
        dataset: a :class:`LabelDataset` or a file for :func:`load_dataset`.
        out_dir: the run folder (created; must be empty unless ``resume``).
        concurrency_per_expert: calls in flight per expert.
        resume: continue the run in ``out_dir``: finished answers and verdicts are kept.
        judge: the judge chat model (any runnable from messages to a message); without
            one, open-ended questions get null cells.
        limit: label only the first ``limit`` questions (a resumed run may raise it).
        progress: show a progress bar on stderr.
        judge_id: names the judge in ``run.json`` (resuming with another is refused);
            default: its class and model name.
        judge_retries: extra attempts after an unreadable verdict, before it is recorded
            as ``judge_unparseable``.
        judge_concurrency: judge calls in flight (default ``concurrency_per_expert``).
        judge_timeout_s: deadline of each judge call.
        retry_errors: on resume, call again where the last attempt failed (an expert
            that was down); otherwise failures are final.

    Returns:
        The tables (``correctness.parquet``, ``answers.parquet``) and what the run did.

    Raises:
        OutputDirError: ``out_dir`` is not empty and ``resume`` is false.
        ResumeMismatchError: resuming with another herd, dataset or judge.
        DatasetError: the dataset file cannot be read.
        ConfigError: an expert is named like one of the table's own columns.
        ValueError: ``concurrency_per_expert`` or ``limit`` is out of range.

    Example:
        .. code-block:: python

            import asyncio
            from langchain_herd.config import load_config
            from langchain_herd.labeling import label_dataset

            result = asyncio.run(
                label_dataset(load_config("herd.yaml"), "mmlu.parquet", "runs/mmlu", limit=200)
            )
            print(result.accuracy())
    """
    if concurrency_per_expert < 1:
        raise ValueError(f"concurrency_per_expert must be >= 1, got {concurrency_per_expert}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if judge_concurrency is not None and judge_concurrency < 1:
        raise ValueError(f"judge_concurrency must be >= 1, got {judge_concurrency}")
    _check_expert_names(config)
    if judge is not None and judge_id is None:
        judge_id = _default_judge_id(judge)
    folder = Path(out_dir)
    experts = [build_expert(e, config.token_for(e.name)) for e in config.experts]
    # Reading a big dataset and raw.jsonl blocks: done off the event loop.
    data, selection, resumed, state, lock = await asyncio.to_thread(
        _open_run, config, dataset, folder, limit, judge_id if judge is not None else None, resume
    )
    try:
        from tqdm import tqdm

        reused = sum(
            1
            for q in selection
            for e in experts
            if not _needs_answer(state, q.id, e.name, retry_errors)
        )
        log = await asyncio.to_thread(RawLog, folder / RAW_FILE)
        bar = tqdm(
            total=len(selection) * len(experts),
            initial=reused,
            desc=f"labeling {data.name}",
            unit="answer",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        labeler = _Labeler(
            experts=experts,
            state=state,
            log=log,
            concurrency=concurrency_per_expert,
            judge=judge,
            judge_retries=judge_retries,
            judge_timeout_s=judge_timeout_s,
            judge_concurrency=judge_concurrency or concurrency_per_expert,
            retry_errors=retry_errors,
            bar=bar,
        )
        try:
            await labeler.run(selection)
        finally:
            log.close()
            bar.close()
        table, answers, report = await asyncio.to_thread(_finish_run, folder)
    finally:
        lock.release()
    return LabelResult(
        out_dir=folder,
        table=table,
        experts=tuple(e.name for e in experts),
        calls=labeler.counters.calls,
        failed=labeler.counters.failed,
        reused=reused,
        judge_questions=labeler.counters.judge_questions,
        judge_unparseable=labeler.counters.judge_unparseable,
        resumed=resumed,
        judge_report=report,
        answers=answers,
    )
