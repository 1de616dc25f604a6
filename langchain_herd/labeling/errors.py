"""Errors of the labeling run; each also subclasses the built-in a caller would catch."""

from __future__ import annotations

from langchain_herd.errors import HerdError


class DatasetError(HerdError, ValueError):
    """A dataset file cannot be read as a labeling dataset; the message names the file, the
    line or row, and what is wrong."""


class OutputDirError(HerdError, FileExistsError):
    """The output folder already holds a run and ``resume`` was not asked for."""


class ResumeMismatchError(HerdError, ValueError):
    """``resume`` was asked for, but the herd, the dataset or the judge differ from the run
    recorded in ``run.json``; the message lists what changed."""


class RawLogError(HerdError, ValueError):
    """``raw.jsonl`` holds a damaged line before its last one (a torn last line is expected
    after a kill and is tolerated; damage elsewhere is not)."""


class JudgeParseError(HerdError, ValueError):
    """A judge's reply holds no verdict of the expected shape."""
