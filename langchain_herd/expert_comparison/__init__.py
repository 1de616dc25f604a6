"""Base model, subject adapters, a router over them, merges and the swarm's best, side by side.

``herd compare-experts CONFIG --questions SET --out DIR`` scores every contender on the same
held-out questions (the ``test`` split of :mod:`langchain_herd.choice_questions`, never used to
train, merge or swarm) and writes ``report.json``, ``report.md`` and plots.
"""

from langchain_herd.expert_comparison.contenders import Contender
from langchain_herd.expert_comparison.run import ComparisonSettings, compare_experts

__all__ = [
    "ComparisonSettings",
    "Contender",
    "compare_experts",
]
