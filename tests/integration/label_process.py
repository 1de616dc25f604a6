"""``herd label`` in a process of its own, started from a forkserver that has imported it.

A kill-and-resume test starts ``herd label`` a dozen times; a fresh interpreter would spend
seconds importing each time (and the test would mostly catch the run at startup). A
forkserver child is still a real process: it opens its own files and connections, runs the
command's ``__main__`` as ``python -m`` does, and SIGKILL ends it at whatever instruction
it is on.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import warnings
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

# What `herd label` imports lazily, imported once here so each child starts warm.
import huggingface_hub  # noqa: F401
import langchain_huggingface  # noqa: F401
import langchain_openai  # noqa: F401
import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401
import tqdm  # noqa: F401

import langchain_herd.labeling.cli
import langchain_herd.labeling.runner  # noqa: F401

COMMAND = "langchain_herd.labeling.cli"
"""The module ``herd label`` runs as (``python -m langchain_herd.labeling.cli``)."""


def run_label(argv: list[str], log_path: str) -> None:
    """Run ``herd label argv`` with stdout and stderr appended to ``log_path``; the
    command's exit status is the process's."""
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.argv = [COMMAND, *argv]
    with warnings.catch_warnings():
        # Imported already (that is the point of the forkserver): running it as __main__
        # again is what `python -m` does, minus the import.
        warnings.filterwarnings("ignore", "'langchain_herd.labeling.cli' found in sys.modules")
        runpy.run_module(COMMAND, run_name="__main__", alter_sys=True)


def label_context() -> ForkServerContext:
    """A multiprocessing context whose forkserver has ``herd label`` imported already
    (started now, so its imports overlap whatever the caller does next)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    forkserver.ensure_running()
    return context
