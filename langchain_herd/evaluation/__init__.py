"""Offline evaluation of routers on correctness tables (``herd eval``).

- ``metrics``: oracle gap closed, RouteLLM PGR/APGR/CPT, RouterBench AIQ, ECE.
- ``data``: the table, herd, costs, votes and splits an evaluation runs on.
- ``routers``: the routers and baselines compared, by name (``ROUTERS``).
- ``scoring``: policies applied offline to a router's utilities, and the figures.
- ``run``: every router on every seed, summarised (``evaluate``).
- ``report``: Markdown, plots, and merging runs on the same splits.
- ``cli``: the ``herd eval`` command.
"""

from langchain_herd.evaluation.metrics import (
    aiq,
    apgr,
    cpt,
    expected_calibration_error,
    oracle_gap_closed,
    pgr_curve,
)

__all__ = [
    "aiq",
    "apgr",
    "cpt",
    "expected_calibration_error",
    "oracle_gap_closed",
    "pgr_curve",
]
