"""The run folder: torn-line tolerance, durable appends, resume checks, and the table rebuilt
from raw records alone (real files in tmp; no servers)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.labeling import (
    LabelDataset,
    LabelQuery,
    OutputDirError,
    RawLogError,
    ResumeMismatchError,
    build_table,
)
from langchain_herd.labeling.records import answer_sha
from langchain_herd.labeling.store import (
    RawLog,
    prepare_out_dir,
    read_raw,
    run_info,
    write_queries,
)


def herd(url_b: str = "http://127.0.0.1:9002", max_new_tokens: int = 8) -> HerdConfig:
    return parse_config(
        {
            "experts": [
                {"name": "small", "url": "http://127.0.0.1:9001"},
                {"name": "big", "url": url_b, "generation": {"max_new_tokens": max_new_tokens}},
            ]
        }
    )


def dataset(prompt: str = "Q\nA. x\nB. y") -> LabelDataset:
    return LabelDataset(
        "toy",
        [
            LabelQuery(
                "mc1", prompt, dataset="toy", gold="B", choices=("x", "y"), extras={"group": "stem"}
            ),
            LabelQuery("ref1", "Explain tides.", dataset="toy", reference="The moon."),
            LabelQuery("open1", "Write a haiku.", dataset="toy"),
        ],
    )


def test_read_raw_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text('{"type": "answer", "n": 1}\n{"type": "answer", "n": 2}\n{"type": "ans')
    assert [r["n"] for r in read_raw(path)] == [1, 2]
    path.write_text('{"type": "answer", "n": 1}\n{"type": "answer", "n": 2}')  # no newline yet
    assert [r["n"] for r in read_raw(path)] == [1]
    assert read_raw(tmp_path / "absent.jsonl") == []


def test_read_raw_refuses_damage_before_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text('{"type": "answer"}\n{"type": "ans\n{"type": "answer"}\n')
    with pytest.raises(RawLogError, match=r"raw\.jsonl:2: damaged line"):
        read_raw(path)
    path.write_text('{"no": "type"}\n')
    with pytest.raises(RawLogError, match=r"raw\.jsonl:1: not a raw record"):
        read_raw(path)


async def test_raw_log_cuts_a_torn_tail_and_appends_durably(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text('{"type": "answer", "n": 0}\n{"type": "answer", "n": 1')
    log = RawLog(path)
    await asyncio.gather(*(log.append({"type": "answer", "n": n}) for n in range(1, 51)))
    log.close()
    records = read_raw(path)
    assert sorted(r["n"] for r in records) == list(range(51))
    assert path.read_bytes().endswith(b"\n")


def test_a_non_empty_folder_needs_resume(tmp_path: Path) -> None:
    info = run_info(herd(), dataset(), judge=None, limit=None)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="pass --resume") as caught:
        prepare_out_dir(tmp_path, info, resume=False)
    assert isinstance(caught.value, FileExistsError)


def test_resume_refuses_another_herd_dataset_or_judge(tmp_path: Path) -> None:
    info = run_info(herd(), dataset(), judge="expert:big", limit=None)
    assert prepare_out_dir(tmp_path, info, resume=False) is False
    created = json.loads((tmp_path / "run.json").read_text())["created"]
    changed = run_info(
        herd(url_b="http://127.0.0.1:9999", max_new_tokens=4),
        dataset(prompt="Q2\nA. x\nB. y"),
        judge="expert:small",
        limit=None,
    )
    with pytest.raises(ResumeMismatchError) as caught:
        prepare_out_dir(tmp_path, changed, resume=True)
    message = str(caught.value)
    assert "expert 'big': url was 'http://127.0.0.1:9002', now 'http://127.0.0.1:9999'" in message
    assert "expert 'big': generation was" in message
    assert "the dataset's content differs" in message
    assert "the judge was 'expert:big', now 'expert:small'" in message
    # the same settings (another limit is fine) resume, keeping the creation time
    again = run_info(herd(), dataset(), judge="expert:big", limit=2)
    assert prepare_out_dir(tmp_path, again, resume=True) is True
    assert json.loads((tmp_path / "run.json").read_text())["created"] == created


def test_a_raw_log_without_run_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "raw.jsonl").write_text('{"type": "answer"}\n')
    info = run_info(herd(), dataset(), judge=None, limit=None)
    with pytest.raises(OutputDirError, match=r"no run\.json"):
        prepare_out_dir(tmp_path, info, resume=True)


def _answer(qid: str, expert: str, text: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "answer",
        "id": qid,
        "expert": expert,
        "answer": text,
        "answer_sha": answer_sha(text) if text is not None else None,
        "error": None,
        "correct": None,
        **extra,
    }


def _judge(purpose: str, qid: str, expert: str, text: str, status: str, correct: bool | None):
    verdict = None if correct is None else {"correct": correct, "score": float(correct)}
    return {
        "type": "judge",
        "purpose": purpose,
        "id": qid,
        "expert": expert,
        "answer_sha": answer_sha(text),
        "status": status,
        "verdict": verdict,
    }


def test_table_is_rebuilt_from_raw_records(tmp_path: Path) -> None:
    config, data = herd(), dataset()
    prepare_out_dir(tmp_path, run_info(config, data, judge="j", limit=None), resume=False)
    write_queries(tmp_path, data)
    records = [
        # multiple choice: a failed first attempt, redone; exact match decides
        _answer("mc1", "small", None, error="HfHubHTTPError: 503", error_kind="server_error"),
        _answer("mc1", "small", "B", correct=1),
        _answer("mc1", "big", "A", correct=0),
        _judge("mc_agreement", "mc1", "small", "B", "ok", True),
        _judge("mc_agreement", "mc1", "big", "A", "ok", True),
        # reference: a verdict for an older answer text does not count
        _answer("ref1", "small", "The sun."),
        _answer("ref1", "big", "The moon pulls."),
        _judge("reference", "ref1", "small", "old text", "ok", True),
        _judge("reference", "ref1", "big", "The moon pulls.", "ok", True),
        # pairwise: big won both orders
        _answer("open1", "small", "short"),
        _answer("open1", "big", "a longer haiku"),
        {
            "type": "pairwise",
            "id": "open1",
            "a": "small",
            "b": "big",
            "a_sha": answer_sha("short"),
            "b_sha": answer_sha("a longer haiku"),
            "outcome": "big",
            "status": "ok",
        },
    ]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = build_table(tmp_path)
    assert list(table.columns) == ["id", "dataset", "group", "prompt", "answer", "small", "big"]
    assert str(table["small"].dtype) == "Int8" and str(table["big"].dtype) == "Int8"
    assert table["id"].tolist() == ["mc1", "ref1", "open1"]
    assert table["answer"].tolist()[:2] == ["B", "The moon."] and pd.isna(table["answer"][2])
    assert table["small"].tolist() == [1, pd.NA, 0]
    assert table["big"].tolist() == [0, 1, 1]
    assert pd.read_parquet(tmp_path / "correctness.parquet").equals(table)
    report = json.loads((tmp_path / "judge_report.json").read_text())
    assert report["judge"] == "j"
    assert report["overall"] == {
        "n": 2,
        "accuracy": 0.5,
        "kappa": 0.0,
        "both_correct": 1,
        "exact_only": 0,
        "judge_only": 1,
        "both_wrong": 0,
    }
