"""Router ground truth: run a dataset through every expert and record who answered right.

``label_dataset`` calls each expert of a herd directly on every question (no routing, no
fallback), scores the answers (exact match of the option letter for multiple choice; an
LLM judge for open-ended questions, pairwise in both orders when there is no reference),
logs every attempt and verdict to ``raw.jsonl`` as it arrives, and builds
``correctness.parquet``: one row per question, one nullable ``Int8`` column per expert,
the table routers are trained on, and ``answers.parquet``: the same rows, per expert the
option letter it chose (or its reply to an open-ended question), the table cascades and
learned votes are trained on. Runs resume after a kill with the same result.

Example:
    .. code-block:: python

        import asyncio
        from langchain_herd.config import load_config
        from langchain_herd.labeling import label_dataset

        result = asyncio.run(
            label_dataset(load_config("herd.yaml"), "mmlu.parquet", "runs/mmlu", limit=100)
        )
        print(result.table.head())
"""

from langchain_herd.labeling.agreement import Agreement, agreement, cohen_kappa
from langchain_herd.labeling.datasets import (
    LabelDataset,
    LabelQuery,
    load_dataset,
    read_correctness_questions,
    read_jsonl,
    read_mmlu,
)
from langchain_herd.labeling.errors import (
    DatasetError,
    JudgeParseError,
    OutputDirError,
    RawLogError,
    ResumeMismatchError,
)
from langchain_herd.labeling.judge import (
    JudgeCall,
    JudgeVerdict,
    PairJudgement,
    PairwiseVerdict,
    judge_answer,
    judge_pair,
    pair_outcome,
    parse_pairwise_verdict,
    parse_verdict,
)
from langchain_herd.labeling.letters import extract_choice, parse_lettered_choices
from langchain_herd.labeling.runner import LabelResult, label_dataset
from langchain_herd.labeling.scoring import exact_match_cell, pairwise_cells
from langchain_herd.labeling.table import RunTables, build_table, build_tables

__all__ = [
    "Agreement",
    "DatasetError",
    "JudgeCall",
    "JudgeParseError",
    "JudgeVerdict",
    "LabelDataset",
    "LabelQuery",
    "LabelResult",
    "OutputDirError",
    "PairJudgement",
    "PairwiseVerdict",
    "RawLogError",
    "ResumeMismatchError",
    "RunTables",
    "agreement",
    "build_table",
    "build_tables",
    "cohen_kappa",
    "exact_match_cell",
    "extract_choice",
    "judge_answer",
    "judge_pair",
    "label_dataset",
    "load_dataset",
    "pair_outcome",
    "pairwise_cells",
    "parse_lettered_choices",
    "parse_pairwise_verdict",
    "parse_verdict",
    "read_correctness_questions",
    "read_jsonl",
    "read_mmlu",
]
