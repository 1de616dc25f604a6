"""The public surface of ``langchain_herd.labeling`` and its error classes."""

from __future__ import annotations

from pathlib import Path

import pytest

import langchain_herd.labeling as labeling
from langchain_herd.errors import HerdError
from langchain_herd.labeling.store import RunLock

EXPECTED_ALL = [
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


def test_all_is_pinned_and_importable() -> None:
    assert sorted(labeling.__all__) == EXPECTED_ALL
    for name in labeling.__all__:
        assert getattr(labeling, name) is not None


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (labeling.DatasetError, ValueError),
        (labeling.OutputDirError, FileExistsError),
        (labeling.ResumeMismatchError, ValueError),
        (labeling.RawLogError, ValueError),
        (labeling.JudgeParseError, ValueError),
    ],
)
def test_errors_are_herd_errors_and_builtins(error: type, builtin: type) -> None:
    assert issubclass(error, HerdError) and issubclass(error, builtin)


def test_a_folder_is_locked_while_a_run_uses_it(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "run")
    with pytest.raises(labeling.OutputDirError, match="another herd label run"):
        RunLock(tmp_path / "run")
    first.release()
    RunLock(tmp_path / "run").release()  # free again once released
