"""The output folder of a labeling run: its files, crash-safe writes, and resume checks.

Files:

- ``run.json``: what the run labels with (the experts' endpoints, models, prompts and
  decoding), a fingerprint of the dataset's content, and the judge. Resuming with a
  different herd, dataset or judge is refused, since its labels would mix with the old ones.
- ``queries.jsonl``: the questions being labeled (after ``limit``), so the table can be
  rebuilt from the folder alone.
- ``raw.jsonl``: one line per answer attempt and per verdict, appended as they arrive and
  fsync'ed (:class:`RawLog`). The only file results live in: everything else is derived.
- ``correctness.parquet``, ``answers.parquet`` and ``judge_report.json``: built from the
  three above.

Metadata files are written to a temporary name and renamed, so a kill leaves the old or the
new file, never half of one. A kill can tear only the last line of ``raw.jsonl``; reading
skips it and the next run cuts it off before appending.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from langchain_herd.atomic_files import write_atomically
from langchain_herd.config import HerdConfig
from langchain_herd.labeling.datasets import LabelDataset, LabelQuery
from langchain_herd.labeling.errors import OutputDirError, RawLogError, ResumeMismatchError

__all__ = [
    "ANSWERS_FILE",
    "QUERIES_FILE",
    "RAW_FILE",
    "REPORT_FILE",
    "RUN_FILE",
    "TABLE_FILE",
    "RawLog",
    "RunLock",
    "load_queries",
    "load_run_info",
    "prepare_out_dir",
    "read_raw",
    "run_info",
    "write_json_atomic",
    "write_queries",
]

RUN_FILE = "run.json"
QUERIES_FILE = "queries.jsonl"
RAW_FILE = "raw.jsonl"
TABLE_FILE = "correctness.parquet"
ANSWERS_FILE = "answers.parquet"
REPORT_FILE = "judge_report.json"
LOCK_FILE = ".herd-label.lock"
FORMAT_VERSION = 1

#: What of an expert's config decides its answers (and so its labels).
_EXPERT_FIELDS = (
    "name",
    "url",
    "protocol",
    "model_id",
    "adapter_id",
    "openai_model",
    "prompt_format",
    "system_prompt",
    "generation",
)


class RunLock:
    """An exclusive lock on a run folder, so two runs never append to one ``raw.jsonl``.

    The operating system drops the lock when its process dies, however it dies, so a
    killed run never leaves a stale lock behind. (No-op where ``fcntl`` is missing.)

    Raises:
        OutputDirError: another run holds the folder.

    Example:
        .. code-block:: python

            lock = RunLock(out_dir)
            try:
                ...
            finally:
                lock.release()
    """

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / LOCK_FILE
        self._handle: IO[bytes] | None = self.path.open("ab")
        try:
            import fcntl
        except ImportError:
            return
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise OutputDirError(
                f"another herd label run is using {out_dir} (it holds {self.path}); wait for "
                "it to finish or stop it, then resume"
            ) from None

    def release(self) -> None:
        """Let the folder go (closing the file drops the lock)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a kill leaves either the old file or the complete new one."""
    write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_queries(out_dir: Path, queries: Iterable[LabelQuery]) -> None:
    """Store the questions being labeled (``queries.jsonl``), atomically."""
    lines = [json.dumps(q.to_json(), ensure_ascii=False) for q in queries]
    write_atomically(out_dir / QUERIES_FILE, "".join(f"{line}\n" for line in lines))


def load_queries(out_dir: Path) -> list[LabelQuery]:
    """The questions stored by :func:`write_queries`.

    Raises:
        FileNotFoundError: the folder holds no labeling run.
    """
    path = out_dir / QUERIES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {out_dir} does not hold a herd label run")
    text = path.read_text(encoding="utf-8")
    return [LabelQuery.from_json(json.loads(line)) for line in text.splitlines() if line]


def expert_identities(config: HerdConfig) -> list[dict[str, Any]]:
    """The part of each expert's config that decides its answers, JSON-ready."""
    return [e.model_dump(include=set(_EXPERT_FIELDS), mode="json") for e in config.experts]


def run_info(
    config: HerdConfig,
    dataset: LabelDataset,
    *,
    judge: str | None,
    limit: int | None,
) -> dict[str, Any]:
    """The content of ``run.json`` for a run of ``config`` over ``dataset``.

    The dataset fingerprint covers the whole dataset, not just the first ``limit``
    questions, so a resumed run may raise ``limit`` to label more of it.
    """
    return {
        "format": FORMAT_VERSION,
        "herd": config.name,
        "experts": expert_identities(config),
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "queries": len(dataset),
            "fingerprint": dataset.fingerprint(),
        },
        "judge": judge,
        "limit": limit,
    }


def load_run_info(out_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder.

    Raises:
        FileNotFoundError: there is none.
    """
    path = out_dir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {out_dir} does not hold a herd label run")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes: list[str] = []
    old_experts = {e["name"]: e for e in old.get("experts", [])}
    new_experts = {e["name"]: e for e in new["experts"]}
    for name in old_experts.keys() - new_experts.keys():
        changes.append(f"expert {name!r} was in the run and is not in the config now")
    for name in new_experts.keys() - old_experts.keys():
        changes.append(f"expert {name!r} is new (not in the run)")
    for name in old_experts.keys() & new_experts.keys():
        for key in _EXPERT_FIELDS:
            before, after = old_experts[name].get(key), new_experts[name].get(key)
            if before != after:
                changes.append(f"expert {name!r}: {key} was {before!r}, now {after!r}")
    if [e["name"] for e in old.get("experts", [])] != list(new_experts) and not changes:
        changes.append("the experts are listed in a different order")
    old_ds, new_ds = old.get("dataset", {}), new["dataset"]
    if old_ds.get("fingerprint") != new_ds["fingerprint"]:
        changes.append(
            f"the dataset's content differs ({old_ds.get('source')}, {old_ds.get('queries')} "
            f"questions then; {new_ds['source']}, {new_ds['queries']} now)"
        )
    if old.get("judge") != new["judge"]:
        changes.append(f"the judge was {old.get('judge')!r}, now {new['judge']!r}")
    return changes


def prepare_out_dir(out_dir: Path, info: Mapping[str, Any], *, resume: bool) -> bool:
    """Create or check the output folder and (re)write ``run.json``.

    Args:
        out_dir: the folder.
        info: this run's :func:`run_info`.
        resume: continue a run already in the folder.

    Returns:
        True when an earlier run is being continued.

    Raises:
        OutputDirError: the folder is not empty and ``resume`` is false, or it holds
            results but no ``run.json``.
        ResumeMismatchError: the folder's run used another herd, dataset or judge.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".")]
    run_file = out_dir / RUN_FILE
    if entries and not resume:
        raise OutputDirError(
            f"{out_dir} is not empty; pass --resume (resume=True) to continue the run in it, "
            "or choose another output folder"
        )
    resumed = run_file.is_file()
    record = dict(info)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if resumed:
        old = load_run_info(out_dir)
        changes = _differences(old, info)
        if changes:
            raise ResumeMismatchError(
                f"{out_dir} holds a run of another herd, dataset or judge, so its labels "
                "would mix with this one's:\n  - "
                + "\n  - ".join(changes)
                + "\nresume with the original settings, or choose another output folder"
            )
        record["created"] = old.get("created", now)
    else:
        if (out_dir / RAW_FILE).is_file() and (out_dir / RAW_FILE).stat().st_size > 0:
            raise OutputDirError(
                f"{out_dir} holds {RAW_FILE} but no {RUN_FILE}, so it cannot be checked "
                "against this run; choose another output folder"
            )
        record["created"] = now
    record["updated"] = now
    write_json_atomic(run_file, record)
    return resumed


def read_raw(path: Path) -> list[dict[str, Any]]:
    """The records of ``raw.jsonl``, skipping a torn last line (one without its newline).

    Raises:
        RawLogError: a line before the last is not a JSON object.
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a kill can leave the last line unfinished
    records = []
    for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RawLogError(
                f"{path}:{number}: damaged line ({exc}); only the last line may be torn. "
                "Remove or fix that line, or label into another folder"
            ) from None
        if not isinstance(record, dict) or "type" not in record:
            raise RawLogError(f"{path}:{number}: not a raw record (no 'type')")
        records.append(record)
    return records


class RawLog:
    """Appends records to ``raw.jsonl``, each one on disk (flushed and fsync'ed) before
    :meth:`append` returns.

    Concurrent appends are group-committed: whoever holds the lock writes every line queued
    so far in one write and one fsync, in a worker thread so the event loop never blocks on
    the disk.

    Example:
        .. code-block:: python

            log = RawLog(out_dir / "raw.jsonl")
            await log.append({"type": "answer", ...})
            log.close()
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cut_torn_tail()
        self._handle: IO[bytes] = path.open("ab")
        self._pending: list[bytes] = []
        self._lock = asyncio.Lock()
        self._failure: BaseException | None = None

    def _cut_torn_tail(self) -> None:
        # Appending after a torn line would glue the next record onto it.
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def _write(self, lines: Sequence[bytes]) -> None:
        self._handle.write(b"".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    async def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and return once it is durable."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._pending.append(line.encode("utf-8"))
        async with self._lock:
            if self._failure is not None:
                # The batch that carried this line may have been lost with it.
                raise RawLogError(f"{self.path}: an earlier write failed: {self._failure}")
            if not self._pending:
                return  # another append's batch carried this line
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, batch)
            except OSError as exc:
                self._failure = exc
                raise

    def close(self) -> None:
        """Close the file (records already appended are on disk)."""
        self._handle.close()
