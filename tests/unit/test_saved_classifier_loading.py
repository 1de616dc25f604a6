"""``SavedClassifier.from_pretrained`` on the base class works in a fresh interpreter.

The built-in kinds register themselves when their modules are imported; a process that only
imported the base class used to know no kinds at all ("known kinds: none").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_herd.classifiers.base import SavedClassifier
from langchain_herd.errors import ArtifactError

PACKAGE = Path(__file__).resolve().parents[2] / "langchain_herd"
BUNDLED_ROUTER = PACKAGE / "router_models" / "mmlu-group-tfidf"
STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."


def test_from_pretrained_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from langchain_herd.classifiers.base import SavedClassifier\n"
        "assert 'langchain_herd.classifiers.tfidf' not in sys.modules\n"
        f"classifier = SavedClassifier.from_pretrained({str(BUNDLED_ROUTER)!r})\n"
        f"scores = classifier.predict_proba([{STEM_Q!r}])\n"
        "print(json.dumps({'kind': classifier.kind, 'labels': classifier.labels,"
        " 'top': classifier.labels[int(scores[0].argmax())]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "tfidf-logreg"
    assert out["top"] == "stem"


def test_unknown_kind_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "martian", "labels": ["a"]}))
    with pytest.raises(ArtifactError, match=r"kind 'martian'.*known kinds: .*tfidf-logreg"):
        SavedClassifier.from_pretrained(tmp_path)
