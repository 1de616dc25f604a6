"""Training routers with the tfidf backend: metrics, soft labels, missing results, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
import pandas as pd

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.classifiers.tfidf import TfidfClassifier, TfidfCorrectnessClassifier
from langchain_herd.errors import ArtifactError, ConfigError
from langchain_herd.tables import TableError, read_correctness_table
from langchain_herd.training import (
    TrainResult,
    check_classifier_fits,
    evaluate_router,
    train_router,
)
from langchain_herd.training.metrics import auc, category_metrics, correctness_metrics

TOPICS = {
    "math": "integral derivative equation algebra matrix prime polynomial theorem",
    "history": "empire treaty revolution dynasty war king medieval parliament",
    "cooking": "recipe oven flour sauce simmer garlic bake butter",
}
PICKLE_SUFFIXES = {".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib"}


def synthetic_frame(n_per_topic: int = 40, seed: int = 0) -> pd.DataFrame:
    """Questions on three topics; each specialist model is right on its own topic."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(n_per_topic):
            picked = " ".join(rng.choice(vocab, size=4))
            rows.append({"id": f"{topic}-{i}", "group": topic, "prompt": f"About {picked}?"})
    df = pd.DataFrame(rows)
    right = {"math-7b": "math", "history-7b": "history"}
    for model, topic in right.items():
        p = np.where(df["group"] == topic, 0.95, 0.1)
        df[model] = pd.array((rng.random(len(df)) < p).astype(int), dtype="Int8")
    df["generalist-7b"] = pd.array((rng.random(len(df)) < 0.5).astype(int), dtype="Int8")
    return df


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    path = tmp_path / "table.parquet"
    synthetic_frame().to_parquet(path)
    return path


def assert_no_pickle(directory: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            assert file.suffix not in PICKLE_SUFFIXES, file
            assert not file.read_bytes()[:2].startswith(b"\x80"), f"{file} looks like a pickle"


# ---------------------------------------------------------------- metrics


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [
        1.0 if a > b else 0.5 if a == b else 0.0
        for a in scores[positive]
        for b in scores[~positive]
    ]
    assert auc(scores, positive) == pytest.approx(np.mean(pairs))
    assert auc(scores, np.ones(60, dtype=bool)) is None


def test_correctness_metrics_by_hand() -> None:
    # 4 questions x 2 experts; expert "a" is best on train.
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.5], [0.5, 0.6]])
    train = np.array([[1, 0], [1, 0], [1, 1]], dtype=float)
    m = correctness_metrics(proba, y, train, ["a", "b"])
    assert m["routed_accuracy"] == 0.75  # picks a, b, a, b -> 1, 1, 1, 0
    assert m["best_single"] == "a" and m["best_single_accuracy"] == 0.5
    assert m["oracle_accuracy"] == 0.75
    assert m["gap_closed"] == 1.0
    assert m["per_model"]["a"]["routed_share"] == 0.5
    assert m["per_model"]["a"]["brier"] == pytest.approx(np.mean((proba[:, 0] - y[:, 0]) ** 2))
    # A missing result leaves the routing figures to complete rows, not the per-expert ones.
    y[3, 0] = np.nan
    m = correctness_metrics(proba, y, train, ["a", "b"])
    assert (m["n"], m["n_incomplete"]) == (3, 1)
    assert m["per_model"]["a"]["n"] == 3 and m["per_model"]["b"]["n"] == 4


def test_category_metrics_by_hand() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = category_metrics(proba, np.array([0, 1, 1, -1]), np.array([1, 1, 0]), ["x", "y"])
    assert m["accuracy"] == 0.5 and m["n_unknown_label"] == 1
    assert m["majority_label"] == "y" and m["majority_accuracy"] == 0.5
    assert m["per_label_recall"] == {"x": 1.0, "y": 0.5}


# ---------------------------------------------------------------- the correctness kind


def test_correctness_classifier_round_trip(tmp_path: Path) -> None:
    df = synthetic_frame()
    y = df[["math-7b", "history-7b", "generalist-7b"]].to_numpy(dtype=float, na_value=np.nan)
    clf = TfidfCorrectnessClassifier.fit(
        df["prompt"].tolist(), y, ["math-7b", "history-7b", "generalist-7b"], C=3.0
    )
    assert clf.mode == "correctness" and clf.kind == "tfidf-correctness"
    proba = clf.predict_proba(["About integral matrix prime theorem?", "About treaty king?"])
    assert proba.shape == (2, 3)
    assert proba[0, 0] > proba[0, 1] and proba[1, 1] > proba[1, 0]  # specialists win at home
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    clf.save_pretrained(tmp_path)
    loaded = load_classifier(tmp_path)
    assert isinstance(loaded, TfidfCorrectnessClassifier) and not isinstance(
        loaded, TfidfClassifier
    )
    texts = df["prompt"].tolist()
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert json.loads((tmp_path / "config.json").read_text())["mode"] == "correctness"
    # The softmax kind refuses it, rather than reading its scores as a softmax.
    with pytest.raises(ArtifactError, match="kind 'tfidf-correctness'"):
        TfidfClassifier.from_pretrained(tmp_path)
    assert_no_pickle(tmp_path)


def test_missing_results_are_left_out_of_that_expert_only() -> None:
    df = synthetic_frame()
    texts = df["prompt"].tolist()
    labels = ["math-7b", "history-7b"]
    y = df[labels].to_numpy(dtype=float, na_value=np.nan)
    full = TfidfCorrectnessClassifier.fit(texts, y, labels)
    hidden = y.copy()
    hidden[::3, 1] = np.nan  # history-7b has no result on a third of the questions
    masked = TfidfCorrectnessClassifier.fit(texts, hidden, labels)
    np.testing.assert_array_equal(masked.coef[0], full.coef[0])  # math-7b: untouched
    assert not np.array_equal(masked.coef[1], full.coef[1])
    assert masked.metadata["n_observed"] == {"math-7b": 120, "history-7b": 80}
    # history-7b's model is the plain logistic regression on its observed rows.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
    x = features.fit_transform(texts)
    seen = ~np.isnan(hidden[:, 1])
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(x[seen], hidden[seen, 1])
    np.testing.assert_allclose(masked.coef[1], reference.coef_[0], atol=1e-4)


def test_soft_labels_are_probabilities_not_classes() -> None:
    df = synthetic_frame()
    texts = df["prompt"].tolist()
    soft = np.column_stack([np.full(len(texts), 0.7), np.where(df["group"] == "math", 0.9, 0.3)])
    clf = TfidfCorrectnessClassifier.fit(texts, soft, ["steady", "mathy"], C=1.0)
    proba = clf.predict_proba(texts)
    assert proba[:, 0] == pytest.approx(0.7, abs=0.02)  # a constant soft label is its rate
    is_math = (df["group"] == "math").to_numpy()
    assert proba[is_math, 1].mean() > 0.75 > 0.45 > proba[~is_math, 1].mean()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TfidfCorrectnessClassifier.fit(texts, soft * 2, ["steady", "mathy"])


def test_expert_with_one_outcome_predicts_its_rate() -> None:
    texts = [f"question {i} about things" for i in range(10)]
    y = np.column_stack([np.ones(10), np.arange(10) % 2])
    clf = TfidfCorrectnessClassifier.fit(texts, y, ["always", "half"])
    assert clf.predict_proba(["anything"])[0, 0] > 0.99


# ---------------------------------------------------------------- train_router


def test_train_router_correctness_tfidf(table_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "router"
    result = train_router(
        table_path, mode="correctness", backend="tfidf", out_dir=out, seed=0, test_share=0.25
    )
    assert isinstance(result, TrainResult)
    assert result.kind == "tfidf-correctness"
    assert result.labels == ["math-7b", "history-7b", "generalist-7b"]
    h = result.heldout
    assert h["n"] == result.split["n_test"] == 30
    # Routing to the specialist beats any single model on this table.
    assert h["routed_accuracy"] > h["best_single_accuracy"]
    assert h["oracle_accuracy"] >= h["routed_accuracy"]
    assert set(h["per_model"]) == set(result.labels)
    assert result.decision_time["single_ms_median"] > 0
    assert result.artifact_check["max_abs_diff"] < 1e-5
    assert result.split["method"] == "seeded" and result.split["n_train"] == 90
    config = json.loads((out / "config.json").read_text())
    meta = config["metadata"]
    assert meta["heldout"]["routed_accuracy"] == h["routed_accuracy"]
    assert meta["data"]["file"] == str(table_path) and len(meta["data"]["sha256"]) == 64
    assert meta["split"]["seed"] == 0 and meta["params"]["weights_dtype"] == "float32"
    assert meta["fit"]["selection"]["by"].startswith("validation log loss")
    assert "train_time_s" in meta and "decision_time" in meta
    report = result.report()
    assert "routed accuracy" in report and "best single expert" in report
    assert_no_pickle(out)
    # The saved router re-scores to the same figures through evaluate_router.
    again = evaluate_router(out, table_path, seed=0, test_share=0.25)
    assert again["routed_accuracy"] == pytest.approx(h["routed_accuracy"])


def test_train_router_category_tfidf(table_path: Path, tmp_path: Path) -> None:
    result = train_router(
        table_path, mode="category", backend="tfidf", out_dir=tmp_path, label_column="group"
    )
    assert result.kind == "tfidf-logreg" and result.labels == ["cooking", "history", "math"]
    assert result.heldout["accuracy"] > 0.9
    clf = load_classifier(tmp_path)
    assert clf.predict_proba(["About oven garlic butter?"]).sum() == pytest.approx(1.0)
    assert "accuracy" in result.report()


def test_models_and_max_train_rows(table_path: Path, tmp_path: Path) -> None:
    result = train_router(
        table_path,
        mode="correctness",
        backend="tfidf",
        out_dir=tmp_path,
        models=["history-7b", "math-7b"],
        max_train_rows=40,
        params={"C_grid": [1.0]},
    )
    assert result.labels == ["history-7b", "math-7b"]
    assert result.split["n_train"] == 40 and result.split["max_train_rows"] == 40
    assert result.split["n_test"] == 24  # the held-out rows are not capped


def test_training_errors(table_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        train_router(table_path, mode="correctness", backend="knn", out_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"bad tfidf setting\(s\): C: Extra inputs.*max_features"):
        train_router(
            table_path, mode="correctness", backend="tfidf", out_dir=tmp_path, params={"C": 1}
        )
    with pytest.raises(TableError, match="no label column 'topic'"):
        train_router(
            table_path, mode="category", backend="tfidf", out_dir=tmp_path, label_column="topic"
        )
    with pytest.raises(TableError, match="at least two model columns"):
        train_router(
            table_path, mode="correctness", backend="tfidf", out_dir=tmp_path, models=["math-7b"]
        )


def test_artifact_that_does_not_fit_the_table(table_path: Path, tmp_path: Path) -> None:
    train_router(
        table_path,
        mode="correctness",
        backend="tfidf",
        out_dir=tmp_path / "c",
        params={"C_grid": [1.0]},
    )
    other = synthetic_frame().rename(columns={"math-7b": "algebra-13b"})
    other_path = tmp_path / "other.parquet"
    other.to_parquet(other_path)
    with pytest.raises(ArtifactError, match=r"no model column for \['math-7b'\].*algebra-13b"):
        evaluate_router(tmp_path / "c", other_path)
    train_router(table_path, mode="category", backend="tfidf", out_dir=tmp_path / "g")
    with pytest.raises(ArtifactError, match=r"category router with labels .* none match"):
        evaluate_router(tmp_path / "g", table_path, label_column="id")
    table = read_correctness_table(table_path)
    assert check_classifier_fits(load_classifier(tmp_path / "g"), table) == "category"


def test_labels_edited_in_config_are_refused(table_path: Path, tmp_path: Path) -> None:
    train_router(
        table_path, mode="correctness", backend="tfidf", out_dir=tmp_path, params={"C_grid": [1.0]}
    )
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["labels"] = config["labels"][:2]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"coef has shape \(3, \d+\), expected \(2, \d+\)"):
        load_classifier(tmp_path)
    config["labels"] = ["math-7b", "history-7b", "generalist-7b"]
    config["mode"] = "category"
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        ArtifactError, match="mode 'category' does not fit kind 'tfidf-correctness'"
    ):
        load_classifier(tmp_path)


def test_public_names_are_pinned() -> None:
    import langchain_herd.training as training

    assert sorted(training.__all__) == [
        "EmbeddingParams",
        "FinetuneParams",
        "PrintProgress",
        "Progress",
        "SilentProgress",
        "TfidfParams",
        "TrainResult",
        "check_classifier_fits",
        "evaluate_router",
        "train_router",
    ]
    for name in training.__all__:
        assert getattr(training, name) is not None
