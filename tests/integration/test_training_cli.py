"""`herd train` as a user runs it: a real subprocess, a real table file, a real artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.training.cli import train_main
from tests.unit.test_training import synthetic_frame

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-m", "langchain_herd.training.cli"]


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    path = tmp_path / "table.parquet"
    synthetic_frame().to_parquet(path)
    return path


def test_train_command_prints_a_report_and_saves(table_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "router"
    run = subprocess.run(
        [
            *TRAIN,
            str(table_path),
            "--mode",
            "correctness",
            "--backend",
            "tfidf",
            "--out",
            str(out),
            "--models",
            "math-7b,history-7b",
            "--models",
            "generalist-7b",
            "--param",
            "C_grid=[0.3, 3]",
            "--json",
            str(tmp_path / "result.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "routed accuracy" in run.stdout and "best single expert" in run.stdout
    assert "oracle" in run.stdout and "decision time" in run.stdout
    assert "tfidf: C=0.3 on the fit split" in run.stderr  # progress goes to stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["labels"] == ["math-7b", "history-7b", "generalist-7b"]
    assert result["params"]["C_grid"] == [0.3, 3.0]
    assert load_classifier(out).labels == result["labels"]


def test_train_command_errors(
    table_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.parquet"
    code = train_main(
        [str(missing), "--mode", "correctness", "--backend", "tfidf", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "missing.parquet: no such file" in capsys.readouterr().err
    code = train_main(
        [
            str(table_path),
            "--mode",
            "category",
            "--backend",
            "tfidf",
            "--out",
            str(tmp_path),
            "--label-column",
            "topic",
            "--quiet",
        ]
    )
    assert code == 2
    assert "no label column 'topic'" in capsys.readouterr().err
    code = train_main(
        [
            str(table_path),
            "--mode",
            "correctness",
            "--backend",
            "tfidf",
            "--out",
            str(tmp_path),
            "--param",
            "learning_rate=3",
            "--quiet",
        ]
    )
    assert code == 2
    assert "learning_rate: Extra inputs are not permitted" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train_main(
            [
                str(table_path),
                "--mode",
                "correctness",
                "--backend",
                "tfidf",
                "--out",
                "x",
                *["--epochs", "2"],
            ]
        )
    assert info.value.code == 2
    assert "--epochs does not apply to --backend tfidf" in capsys.readouterr().err
