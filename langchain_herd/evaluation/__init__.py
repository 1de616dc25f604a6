"""Offline evaluation of routers: oracle gap, RouteLLM PGR/APGR/CPT, RouterBench AIQ, ECE."""

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
