"""`herd calibrate` on a real trained artifact, and the router picking the value up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from langchain_herd import HerdRouter, load_classifier
from langchain_herd.config import parse_config
from langchain_herd.training import train_router

ROOT = Path(__file__).resolve().parents[2]


def synthetic_table(path: Path, n: int = 240) -> Path:
    """`small` is right on the easy questions only; `big` on every hard one and about half
    of the easy ones, so its predicted correctness tells the two kinds apart."""
    rng = np.random.default_rng(0)
    hard = rng.random(n) < 0.5
    words = np.where(hard, "prove the theorem about eigenvalues", "what colour is the sky")
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "prompt": [f"{w} variant {i}" for i, w in enumerate(words)],
            "answer": "A",
            "big": pd.array((hard | (rng.random(n) < 0.5)).astype(int), dtype="Int8"),
            "small": pd.array((~hard).astype(int), dtype="Int8"),
        }
    )
    frame.to_parquet(path, index=False)
    return path


def test_calibrate_cli_writes_a_threshold_the_router_uses(tmp_path: Path) -> None:
    table = synthetic_table(tmp_path / "table.parquet")
    train_router(table, mode="correctness", backend="tfidf", out_dir=tmp_path / "router")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langchain_herd.cli",
            "calibrate",
            str(tmp_path / "router"),
            str(table),
            "--policy",
            "threshold",
            "--expert",
            "big",
            "--objective",
            "share",
            "--target-share",
            "0.5",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "share of strong expert" in result.stdout
    classifier = load_classifier(tmp_path / "router")
    assert classifier.calibration is not None
    assert classifier.calibration["policy"] == "threshold"
    # Two clusters of scores on ~30 validation questions: the share moves in big steps.
    assert abs(classifier.calibration["share"] - 0.5) < 0.2
    config = parse_config(
        {
            "experts": [
                {"name": "small", "url": "http://127.0.0.1:9"},
                {"name": "big", "url": "http://127.0.0.1:9"},
            ],
            "router": {"policy": {"name": "threshold", "strong_expert": "big"}},
        }
    )
    router = HerdRouter.from_config(config, classifier=classifier)
    assert router.policy.threshold == classifier.calibration["value"]  # type: ignore[attr-defined]
    assert router.route("prove the theorem about eigenvalues variant 999").chosen == "big"
    assert router.route("what colour is the sky variant 999").chosen == "small"
