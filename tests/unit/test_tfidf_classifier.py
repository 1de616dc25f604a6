"""TfidfClassifier: numpy scoring equals scikit-learn, artifacts round-trip, bad ones fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import langchain_herd.mmlu as mmlu_module
from langchain_herd.classifiers.base import SavedClassifier, load_classifier
from langchain_herd.classifiers.tfidf import TfidfClassifier
from langchain_herd.errors import ArtifactError, HerdError, InputError
from langchain_herd.mmlu import MMLU_GROUPS, format_question, load_mmlu, sample_questions

BUNDLED = Path(mmlu_module.__file__).parent / "router_models" / "mmlu-group-tfidf"

# The held-out floor for the shipped router. On its seeded 20% held-out split it scores about
# 0.88; every configuration of the tuning grid scored 0.86-0.87 on validation, so a retrain with
# another grid pick stays above 0.85 (the held-out 95% interval is about +-0.012). 0.85 is also
# above what routing on the bare question reaches (about 0.81), so a retrain whose training text
# drifts from the prompt the demo routes (format_question with choices) fails here, as does
# anything broken (a majority-class model gets 0.33).
HELDOUT_ACCURACY_FLOOR = 0.85

STEM_QUESTION = format_question(
    "Find the derivative of f(x) = 3x^2 + 2x with respect to x.",
    ["6x + 2", "3x + 2", "6x^2", "x^3 + x^2"],
)
# Humanities in MMLU's sense (philosophy, history, law, religion, logic). Literary trivia
# ("who kills Polonius?") is MMLU "miscellaneous", i.e. group "other", and routes there.
HUMANITIES_QUESTION = format_question(
    "Which philosopher argued that we should act only according to that maxim which we can "
    "will to become a universal law?",
    ["Immanuel Kant", "John Stuart Mill", "Aristotle", "Thomas Hobbes"],
)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str], list[str]]:
    """Real MMLU prompts: 480 to train on (120 per group) and 80 other ones to score."""
    pytest.importorskip("pandas")
    df = sample_questions(load_mmlu(), 560, seed=11)
    texts = [
        format_question(q, [a, b, c, d])
        for q, a, b, c, d in df[["question", "A", "B", "C", "D"]].itertuples(index=False)
    ]
    return texts[:480], df["group"].tolist()[:480], texts[480:]


@pytest.fixture(scope="module")
def trained(corpus: tuple[list[str], list[str], list[str]]) -> TfidfClassifier:
    pytest.importorskip("sklearn")
    texts, labels, _ = corpus
    return TfidfClassifier.fit(texts, labels, max_features=3000, C=10.0)


def _sklearn_pipeline(texts: list[str], labels: list[str], **vectorizer_kw: object):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(**vectorizer_kw)  # type: ignore[arg-type]
    model = LogisticRegression(C=10.0, max_iter=2000).fit(vectorizer.fit_transform(texts), labels)
    return vectorizer, model


# ---------------------------------------------------------------- equivalence with sklearn


@pytest.mark.parametrize(
    "settings",
    [
        {"ngram_range": (1, 1)},
        {"ngram_range": (1, 2)},
        {"ngram_range": (1, 3)},
        {"ngram_range": (2, 3)},
        {"ngram_range": (1, 2), "lowercase": False},
        {"ngram_range": (1, 2), "token_pattern": r"(?u)\b\w+\b"},
        {"ngram_range": (1, 1), "token_pattern": r"\b(\w+)ing\b"},  # one capture group
    ],
)
def test_analyzer_matches_sklearn(settings: dict, corpus: tuple[list[str], ...]) -> None:
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    reference = sklearn_text.TfidfVectorizer(**settings).build_analyzer()
    ours = TfidfClassifier(
        labels=["a", "b"],
        vocabulary=[],
        idf=np.zeros(0),
        coef=np.zeros((2, 0)),
        intercept=np.zeros(2),
        **settings,
    )
    texts = [
        *corpus[0][:150],
        "Ünïcode Straße ÉCOLE naïve café",
        "x",
        "",
        "It's e-mail: foo_bar42 and 3.14!",
    ]
    for text in texts:
        assert ours.analyze(text) == reference(text)


@pytest.mark.parametrize(
    "vectorizer_kw",
    [
        {"ngram_range": (1, 2), "sublinear_tf": True},
        {"ngram_range": (1, 2), "sublinear_tf": False, "max_features": 500},
        {"ngram_range": (1, 1), "norm": "l1", "min_df": 2},
        {"ngram_range": (1, 2), "norm": None, "use_idf": False},
        {"ngram_range": (1, 3), "lowercase": False, "token_pattern": r"(?u)\b\w+\b"},
    ],
)
def test_numpy_predict_proba_equals_sklearn(
    vectorizer_kw: dict, corpus: tuple[list[str], list[str], list[str]]
) -> None:
    pytest.importorskip("sklearn")
    texts, labels, unseen = corpus
    vectorizer, model = _sklearn_pipeline(texts, labels, **vectorizer_kw)
    clf = TfidfClassifier.from_sklearn(vectorizer, model)
    assert clf.labels == list(model.classes_)
    probe = [*unseen, *texts[:40], "", "zzzz qqqq"]  # incl. no text and no known term
    expected = model.predict_proba(vectorizer.transform(probe))
    np.testing.assert_allclose(clf.predict_proba(probe), expected, rtol=0, atol=1e-9)


def test_fit_equals_the_sklearn_pipeline_it_wraps(
    trained: TfidfClassifier, corpus: tuple[list[str], list[str], list[str]]
) -> None:
    texts, labels, unseen = corpus
    vectorizer, model = _sklearn_pipeline(
        texts, labels, ngram_range=(1, 2), sublinear_tf=True, max_features=3000
    )
    expected = model.predict_proba(vectorizer.transform(unseen))
    np.testing.assert_allclose(trained.predict_proba(unseen), expected, rtol=0, atol=1e-9)
    assert trained.metadata["n_train"] == 480
    assert trained.metadata["params"]["max_features"] == 3000
    assert 0.0 <= trained.metadata["train_accuracy"] <= 1.0


def test_binary_model_equals_sklearn(corpus: tuple[list[str], list[str], list[str]]) -> None:
    pytest.importorskip("sklearn")
    texts, labels, unseen = corpus
    binary = ["stem" if label == "stem" else "not_stem" for label in labels]
    vectorizer, model = _sklearn_pipeline(texts, binary, ngram_range=(1, 2))
    clf = TfidfClassifier.from_sklearn(vectorizer, model)
    assert clf.coef.shape == (2, len(clf.vocabulary))
    expected = model.predict_proba(vectorizer.transform(unseen))
    np.testing.assert_allclose(clf.predict_proba(unseen), expected, rtol=0, atol=1e-9)


def test_label_order_permutes_columns(
    trained: TfidfClassifier, corpus: tuple[list[str], list[str], list[str]]
) -> None:
    texts, labels, unseen = corpus
    ordered = TfidfClassifier.fit(texts, labels, max_features=3000, C=10.0, label_order=MMLU_GROUPS)
    assert ordered.labels == list(MMLU_GROUPS)
    columns = [trained.labels.index(label) for label in MMLU_GROUPS]
    np.testing.assert_allclose(
        ordered.predict_proba(unseen), trained.predict_proba(unseen)[:, columns], atol=1e-12
    )
    with pytest.raises(ValueError, match="permutation"):
        TfidfClassifier.fit(texts, labels, label_order=["stem", "humanities"])


def test_from_sklearn_rejects_what_numpy_cannot_reproduce(
    corpus: tuple[list[str], list[str], list[str]],
) -> None:
    pytest.importorskip("sklearn")
    texts, labels, _ = corpus
    for kw in ({"stop_words": "english"}, {"analyzer": "char"}, {"strip_accents": "unicode"}):
        vectorizer, model = _sklearn_pipeline(texts[:100], labels[:100], **kw)
        with pytest.raises(ValueError, match="cannot be reproduced"):
            TfidfClassifier.from_sklearn(vectorizer, model)


def test_fit_argument_errors(corpus: tuple[list[str], list[str], list[str]]) -> None:
    pytest.importorskip("sklearn")
    texts, labels, _ = corpus
    with pytest.raises(ValueError, match="one label per text"):
        TfidfClassifier.fit(texts, labels[:-1])
    with pytest.raises(ValueError, match="two distinct labels"):
        TfidfClassifier.fit(texts[:3], ["stem"] * 3)


# ---------------------------------------------------------------- inference behaviour


def test_predict_proba_shape_and_rows(
    trained: TfidfClassifier, corpus: tuple[list[str], list[str], list[str]]
) -> None:
    unseen = corpus[2]
    proba = trained.predict_proba(unseen)
    assert proba.shape == (len(unseen), 4) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    # Batched and one-at-a-time scoring agree.
    singles = np.vstack([trained.predict_proba([text]) for text in unseen[:10]])
    np.testing.assert_allclose(singles, proba[:10], atol=1e-12)
    assert trained.predict(unseen[:3]) == [trained.labels[i] for i in proba[:3].argmax(axis=1)]
    assert trained.predict_proba([]).shape == (0, 4)


def test_text_without_known_terms_scores_the_intercept(trained: TfidfClassifier) -> None:
    expected = np.exp(trained.intercept) / np.exp(trained.intercept).sum()
    np.testing.assert_allclose(trained.predict_proba(["", "qqqq zzzz"]), [expected] * 2)


def test_predict_proba_rejects_a_bare_string(trained: TfidfClassifier) -> None:
    with pytest.raises(InputError, match="wrap one text in a list"):
        trained.predict_proba("What is 2 + 2?")
    with pytest.raises(InputError, match="not a str"):
        trained.predict_proba(["fine", 3])  # type: ignore[list-item]


def test_constructor_checks_shapes() -> None:
    with pytest.raises(ArtifactError, match=r"coef has shape \(2, 3\), expected \(2, 2\)"):
        TfidfClassifier(
            labels=["a", "b"],
            vocabulary=["x", "y"],
            idf=np.ones(2),
            coef=np.zeros((2, 3)),
            intercept=np.zeros(2),
        )
    with pytest.raises(ArtifactError, match="repeats a term"):
        TfidfClassifier(
            labels=["a", "b"],
            vocabulary=["x", "x"],
            idf=np.ones(2),
            coef=np.zeros((2, 2)),
            intercept=np.zeros(2),
        )
    with pytest.raises(ArtifactError, match="capture groups"):
        TfidfClassifier(
            labels=["a", "b"],
            vocabulary=[],
            idf=np.ones(0),
            coef=np.zeros((2, 0)),
            intercept=np.zeros(2),
            token_pattern=r"(a)(b)",
        )


# ---------------------------------------------------------------- save / load


def test_round_trip_gives_identical_probabilities(
    trained: TfidfClassifier, corpus: tuple[list[str], list[str], list[str]], tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
        "vocab.json",
    ]
    # Same permissions as the JSON files (safetensors' save_file would make it 0600).
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert len(modes) == 1
    loaded = TfidfClassifier.from_pretrained(tmp_path / "model")
    via_registry = load_classifier(tmp_path / "model")
    assert isinstance(loaded, TfidfClassifier) and isinstance(via_registry, TfidfClassifier)
    unseen = corpus[2]
    np.testing.assert_array_equal(loaded.predict_proba(unseen), trained.predict_proba(unseen))
    np.testing.assert_array_equal(via_registry.predict_proba(unseen), trained.predict_proba(unseen))
    assert loaded.labels == trained.labels
    assert loaded.vocabulary == trained.vocabulary
    assert loaded.metadata == json.loads(json.dumps(trained.metadata))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["kind"] == "tfidf-logreg"
    assert config["tokenizer"] == {
        "lowercase": True,
        "token_pattern": r"(?u)\b\w\w+\b",
        "ngram_range": [1, 2],
    }
    assert config["tfidf"] == {"sublinear_tf": True, "norm": "l2"}


def test_float32_artifact_is_close(
    trained: TfidfClassifier, corpus: tuple[list[str], list[str], list[str]], tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path, dtype="float32")
    assert load_file(str(tmp_path / "model.safetensors"))["coef"].dtype == np.float32
    loaded = load_classifier(tmp_path)
    proba = loaded.predict_proba(corpus[2])
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, trained.predict_proba(corpus[2]), atol=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        trained.save_pretrained(tmp_path, dtype="float16")  # type: ignore[arg-type]


def test_fortran_ordered_weights_round_trip(tmp_path: Path) -> None:
    # sklearn's coef_ is often Fortran-ordered; safetensors writes raw buffers.
    rng = np.random.default_rng(0)
    coef = np.asfortranarray(rng.normal(size=(3, 5)))
    clf = TfidfClassifier(
        labels=["a", "b", "c"],
        vocabulary=["v", "w", "x", "y", "z"],
        idf=np.ones(5),
        coef=coef,
        intercept=np.zeros(3),
    )
    np.testing.assert_array_equal(clf.coef, coef)
    clf.coef = np.asfortranarray(clf.coef)  # also when someone swaps the array in afterwards
    clf.save_pretrained(tmp_path)
    loaded = TfidfClassifier.from_pretrained(tmp_path)
    assert isinstance(loaded, TfidfClassifier)
    np.testing.assert_array_equal(loaded.coef, coef)


def test_non_ascii_vocabulary_round_trips(tmp_path: Path) -> None:
    clf = TfidfClassifier(
        labels=["a", "b"],
        vocabulary=["straße", "café noir"],
        idf=[1.0, 2.0],
        coef=[[1.0, -1.0], [-1.0, 1.0]],
        intercept=[0.0, 0.0],
    )
    clf.save_pretrained(tmp_path)
    loaded = load_classifier(tmp_path)
    np.testing.assert_array_equal(
        loaded.predict_proba(["Straße", "Café noir"]), clf.predict_proba(["Straße", "Café noir"])
    )


@pytest.fixture
def saved(trained: TfidfClassifier, tmp_path: Path) -> Path:
    trained.save_pretrained(tmp_path)
    return tmp_path


def _edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_config(saved: Path) -> None:
    (saved / "config.json").unlink()
    with pytest.raises(ArtifactError, match=r"no config\.json"):
        load_classifier(saved)


def test_wrong_kind(saved: Path) -> None:
    _edit_config(saved, kind="knn-embeddings")
    with pytest.raises(ArtifactError, match="kind 'knn-embeddings'"):
        load_classifier(saved)
    with pytest.raises(ArtifactError, match="kind 'knn-embeddings'"):
        TfidfClassifier.from_pretrained(saved)


def test_wrong_format_version(saved: Path) -> None:
    _edit_config(saved, format_version=99)
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_classifier(saved)


def test_missing_tokenizer_settings(saved: Path) -> None:
    path = saved / "config.json"
    config = json.loads(path.read_text())
    del config["tokenizer"]
    path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="tokenizer/tfidf setting"):
        load_classifier(saved)


def test_mistyped_setting(saved: Path) -> None:
    _edit_config(saved, tfidf={"sublinear_tf": "yes", "norm": "l2"})
    with pytest.raises(ArtifactError, match="sublinear_tf should be a bool"):
        load_classifier(saved)


def test_vocabulary_of_another_model(saved: Path) -> None:
    vocab = json.loads((saved / "vocab.json").read_text())
    (saved / "vocab.json").write_text(json.dumps(vocab[:-1]))
    with pytest.raises(ArtifactError, match=r"n_features=.* holds .* terms"):
        load_classifier(saved)
    _edit_config(saved, n_features=len(vocab) - 1)
    with pytest.raises(ArtifactError, match=r"idf has shape .* the weights and vocabulary"):
        load_classifier(saved)


def test_labels_do_not_match_weights(saved: Path) -> None:
    _edit_config(saved, labels=["stem", "humanities", "other"])
    with pytest.raises(ArtifactError, match=r"coef has shape \(4, \d+\), expected \(3, \d+\)"):
        load_classifier(saved)


def test_tensor_shape_mismatch(saved: Path) -> None:
    tensors = load_file(str(saved / "model.safetensors"))
    tensors["intercept"] = tensors["intercept"][:3].copy()
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"intercept has shape \(3,\), expected \(4,\)"):
        load_classifier(saved)


def test_missing_tensor(saved: Path) -> None:
    tensors = load_file(str(saved / "model.safetensors"))
    del tensors["idf"]
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ArtifactError, match="missing tensor"):
        load_classifier(saved)


def test_non_finite_weights(saved: Path) -> None:
    tensors = load_file(str(saved / "model.safetensors"))
    tensors["coef"][0, 0] = np.nan
    save_file(tensors, str(saved / "model.safetensors"))
    with pytest.raises(ArtifactError, match="NaN"):
        load_classifier(saved)


@pytest.mark.parametrize("name", ["model.safetensors", "vocab.json"])
def test_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(ArtifactError, match=f"{name} is missing"):
        load_classifier(saved)


def test_corrupt_files(saved: Path) -> None:
    (saved / "vocab.json").write_text('{"not": "a list"}')
    with pytest.raises(ArtifactError, match="JSON list of term strings"):
        load_classifier(saved)
    (saved / "vocab.json").write_text("[oops")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_classifier(saved)


def test_corrupt_weights(trained: TfidfClassifier, tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a readable safetensors file") as info:
        load_classifier(tmp_path)
    assert isinstance(info.value, HerdError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------- the bundled router


@pytest.fixture(scope="module")
def bundled() -> SavedClassifier:
    return load_classifier(BUNDLED)


def test_bundled_router_loads(bundled: SavedClassifier) -> None:
    assert isinstance(bundled, TfidfClassifier)
    assert sorted(bundled.labels) == sorted(MMLU_GROUPS)
    size = sum(f.stat().st_size for f in BUNDLED.iterdir())
    assert size < 5_000_000, f"bundled router grew to {size / 1e6:.1f} MB"


def test_bundled_router_scores_obvious_questions(bundled: SavedClassifier) -> None:
    proba = bundled.predict_proba([STEM_QUESTION, HUMANITIES_QUESTION])
    assert bundled.labels[int(proba[0].argmax())] == "stem"
    assert bundled.labels[int(proba[1].argmax())] == "humanities"


def test_bundled_router_heldout_metrics(bundled: SavedClassifier) -> None:
    assert isinstance(bundled, TfidfClassifier)
    meta = bundled.metadata
    # Trained by the pipeline (`train_router`, what `herd train` runs), on the table's split.
    assert (meta["mode"], meta["backend"]) == ("category", "tfidf")
    assert meta["split"]["method"] == "column"
    assert meta["heldout_split"]["seed"] == 0
    assert meta["heldout_split"]["share"] == 0.2
    choices = meta["heldout_by_form"]["choices"]
    assert choices["accuracy"] >= HELDOUT_ACCURACY_FLOOR
    assert set(choices["per_group_accuracy"]) == set(MMLU_GROUPS)
    assert choices["n"] == meta["heldout_split"]["n_questions"]
    # Each question is also used as bare text, so chat-style questions are placed too.
    assert meta["heldout_by_form"]["question"]["accuracy"] >= 0.8


def test_bundled_router_needs_no_sklearn() -> None:
    code = (
        "import sys\n"
        "from langchain_herd.classifiers.base import load_classifier\n"
        f"clf = load_classifier({str(BUNDLED)!r})\n"
        "clf.predict_proba(['What is the integral of x?'])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')], "
        "'inference imported sklearn/scipy'\n"
    )
    root = Path(mmlu_module.__file__).parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
