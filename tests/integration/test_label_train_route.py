"""The router loop end to end on a small slice: label with a local herd (tiny-model
servers on loopback), train a correctness router, calibrate it, route with it. The example
script is what runs, so the example cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

from langchain_herd import HerdRouter, load_classifier, load_config
from tests.integration.test_cli import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def load_example() -> object:
    spec = importlib.util.spec_from_file_location(
        "label_train_route", ROOT / "examples" / "label_train_route.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_train_calibrate_route(tmp_path: Path, capsys: object) -> None:
    config_path, _ = tiny_config(tmp_path)
    example = load_example()
    out = tmp_path / "loop"
    example.run(config_path, 16, out)  # type: ignore[attr-defined]

    experts = [e.name for e in load_config(config_path).experts]
    table = pd.read_parquet(out / "labels" / "correctness.parquet")
    assert len(table) == 16
    assert [c for c in table.columns if c in experts] == experts
    assert all(str(table[name].dtype) == "Int8" for name in experts)

    classifier = load_classifier(out / "router")
    assert classifier.mode == "correctness"
    assert classifier.labels == experts
    stored = json.loads((out / "router" / "config.json").read_text())
    assert stored["calibration"]["policy"] == "margin"

    config = load_config(config_path)
    router = HerdRouter.from_config(config, classifier=classifier)
    decision = router.route("Compute the derivative of x^3.")
    assert set(decision.scores) == set(experts), "a correctness router scores experts"
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "trained a correctness router" in printed
    assert printed.count("->") == 4, "four held-out questions routed"
