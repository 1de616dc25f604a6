"""The labeling loop's bookkeeping with stand-in experts: the per-expert concurrency bound,
and failures recorded instead of raised. (Real servers: tests/integration.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from tqdm import tqdm

from langchain_herd.experts import Expert
from langchain_herd.labeling import LabelQuery
from langchain_herd.labeling.records import RunState
from langchain_herd.labeling.runner import _Labeler
from langchain_herd.labeling.store import RawLog, read_raw


class InFlight:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def __call__(self, messages: Any) -> AIMessage:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        return AIMessage(content="The answer is B.")


async def test_concurrency_is_bounded_per_expert_and_failures_are_recorded(tmp_path: Path) -> None:
    fast, slow = InFlight(), InFlight()

    async def broken(messages: Any) -> AIMessage:
        raise RuntimeError("model blew up")

    experts = [
        Expert("fast", RunnableLambda(fast)),
        Expert("slow", RunnableLambda(slow)),
        Expert("broken", RunnableLambda(broken)),
    ]
    queries = [
        LabelQuery(f"q{i}", "Q\nA. x\nB. y", dataset="d", gold="B", choices=("x", "y"))
        for i in range(12)
    ]
    log = RawLog(tmp_path / "raw.jsonl")
    labeler = _Labeler(
        experts=experts,
        state=RunState(),
        log=log,
        concurrency=3,
        judge=None,
        judge_retries=0,
        judge_timeout_s=None,
        judge_concurrency=1,
        retry_errors=True,
        bar=tqdm(disable=True),
    )
    await labeler.run(queries)
    log.close()
    assert fast.most == 3 and slow.most == 3
    records = read_raw(tmp_path / "raw.jsonl")
    assert len(records) == 36 and labeler.counters.calls == 36
    assert labeler.counters.failed == 12
    broken_records = [r for r in records if r["expert"] == "broken"]
    assert all(r["error"] == "RuntimeError: model blew up" for r in broken_records)
    assert all(r["error_kind"] == "error" and r["correct"] is None for r in broken_records)
    fast_records = [r for r in records if r["expert"] == "fast"]
    assert all(r["correct"] == 1 and r["extracted"] == "B" for r in fast_records)
