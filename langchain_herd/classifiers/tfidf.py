"""TF-IDF + multinomial logistic regression, trained with scikit-learn, run in pure numpy.

Training (:meth:`TfidfClassifier.fit`, :meth:`TfidfClassifier.from_sklearn`) needs
scikit-learn (``pip install 'langchain-herd[train]'``); inference does not: the word
analyzer of scikit-learn's ``TfidfVectorizer`` (lower-casing, a token regex, word
n-grams), the idf weights, sublinear tf, the row norm and the softmax over
``coef @ x + intercept`` are reimplemented here, and the tests check the result equals
scikit-learn's ``predict_proba`` to about 1e-12.

Two kinds share the features and the file format: ``tfidf-logreg``
(:class:`TfidfClassifier`, ``category`` mode: a softmax over route labels) and
``tfidf-correctness`` (:class:`TfidfCorrectnessClassifier`, ``correctness`` mode: one
sigmoid per expert, the probability that it answers correctly). They are separate kinds,
not a flag, so a loader that predates correctness routers refuses such an artifact instead
of reading its scores as a softmax.

An artifact is a directory: ``config.json`` (kind, labels, tokenizer settings,
metadata), ``vocab.json`` (the terms, in feature order) and ``model.safetensors``
(``idf``, ``coef``, ``intercept``). No pickle, so loading one runs none of its author's code.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd._version import __version__
from langchain_herd.artifact_files import check_folder, load_safetensors, read_json
from langchain_herd.classifiers.base import CONFIG_FILE, SavedClassifier
from langchain_herd.errors import ArtifactError, InputError

__all__ = ["DEFAULT_TOKEN_PATTERN", "TfidfClassifier", "TfidfCorrectnessClassifier"]

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""scikit-learn's default word pattern: runs of two or more word characters."""

MAX_PATTERN_LENGTH = 256
"""Longest token regex an artifact may carry."""
MAX_NGRAM = 5
"""Largest word n-gram: each query emits up to ``MAX_NGRAM`` terms per token."""
MAX_FEATURES = 5_000_000
"""Most vocabulary terms an artifact may hold (the weights grow with labels x terms)."""
MAX_LABELS = 10_000
"""Most labels an artifact may hold."""

WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
FORMAT_VERSION = 1

Norm = Literal["l1", "l2"] | None
_NORMS = ("l1", "l2", None)
_DTYPES = ("float32", "float64")


class _TfidfLinear(SavedClassifier):
    """TF-IDF features and one linear score per label, in numpy; subclasses pick the link.

    The shared half of :class:`TfidfClassifier` (softmax over the labels) and
    :class:`TfidfCorrectnessClassifier` (an independent sigmoid per label): the analyzer,
    the feature weights, ``decision_function`` and the artifact format.
    """

    mode: str = "category"
    """What the scores mean: ``category`` or ``correctness``; set by each subclass."""

    def __init__(
        self,
        *,
        labels: Sequence[str],
        vocabulary: Sequence[str],
        idf: npt.ArrayLike,
        coef: npt.ArrayLike,
        intercept: npt.ArrayLike,
        ngram_range: tuple[int, int] = (1, 2),
        lowercase: bool = True,
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        sublinear_tf: bool = False,
        norm: Norm = "l2",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Assemble a classifier from exported weights (see :meth:`fit` to train one).

        Args:
            labels: route labels, in the row order of ``coef``.
            vocabulary: the feature terms, in the column order of ``coef``.
            idf: inverse document frequencies, shape ``(n_features,)`` (ones for plain tf).
            coef: logistic-regression weights, shape ``(n_labels, n_features)``.
            intercept: biases, shape ``(n_labels,)``.
            ngram_range: smallest and largest word n-gram the tokenizer emits.
            lowercase: lower-case texts before tokenizing.
            token_pattern: the regex whose matches are the tokens (at most one group).
            sublinear_tf: use ``1 + log(count)`` instead of the raw count.
            norm: normalise each feature row to unit ``"l2"`` or ``"l1"`` norm, or not.
            metadata: JSON-serialisable training information kept with the artifact.

        Raises:
            ArtifactError: the pieces do not fit together (shapes, duplicates, settings).
        """
        self.labels = [str(label) for label in labels]
        self.vocabulary = list(vocabulary)
        self.lowercase = bool(lowercase)
        self.token_pattern = token_pattern
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.sublinear_tf = bool(sublinear_tf)
        self.norm: Norm = norm
        self.metadata: dict[str, Any] = dict(metadata or {})
        # C order matters: safetensors writes the raw buffer, and sklearn's coef_ is often F order.
        self.idf = np.ascontiguousarray(idf, dtype=np.float64)
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float64)
        _check_settings(self.token_pattern, self.ngram_range, self.norm)
        self._pattern = re.compile(self.token_pattern)
        _check_weights(self.labels, self.vocabulary, self.idf, self.coef, self.intercept)
        self._index = {term: i for i, term in enumerate(self.vocabulary)}
        # Row-gathers of (n_features, n_labels) touch one contiguous row per present term.
        self._weights = np.ascontiguousarray(self.coef.T)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(labels={self.labels}, n_features={len(self.vocabulary)}, "
            f"ngram_range={self.ngram_range}, sublinear_tf={self.sublinear_tf}, "
            f"norm={self.norm!r})"
        )

    # ------------------------------------------------------------------ inference

    def analyze(self, text: str) -> list[str]:
        """Split a text into the terms the model counts, as scikit-learn's word analyzer does.

        Example:
            >>> clf.analyze("Hello, big World")  # doctest: +SKIP
            ['hello', 'big', 'world', 'hello big', 'big world']
        """
        if self.lowercase:
            text = text.lower()
        tokens: list[str] = self._pattern.findall(text)
        low, high = self.ngram_range
        terms = list(tokens) if low == 1 else []
        if low <= 2 <= high:
            terms += [f"{a} {b}" for a, b in pairwise(tokens)]
        for n in range(max(low, 3), min(high, len(tokens)) + 1):
            terms += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return terms

    def decision_function(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return the linear scores ``coef @ x + intercept``, shape ``(len(texts), len(labels))``.

        Raises:
            InputError: ``texts`` is a single string, or holds something that is not one.
        """
        if isinstance(texts, str):
            raise InputError("predict_proba takes a sequence of texts; wrap one text in a list")
        rows, cols, counts = self._count_terms(texts)
        n = len(texts)
        tf = np.asarray(counts, dtype=np.float64)
        if self.sublinear_tf:
            tf = np.log(tf) + 1.0
        col = np.asarray(cols, dtype=np.intp)
        row = np.asarray(rows, dtype=np.intp)
        values = tf * self.idf[col]
        if self.norm is not None:
            mass = values * values if self.norm == "l2" else np.abs(values)
            norms = np.bincount(row, weights=mass, minlength=n)
            if self.norm == "l2":
                norms = np.sqrt(norms)
            norms[norms == 0.0] = 1.0
            values /= norms[row]
        contributions = self._weights[col] * values[:, None]
        scores = np.empty((n, len(self.labels)), dtype=np.float64)
        for k in range(len(self.labels)):
            scores[:, k] = np.bincount(row, weights=contributions[:, k], minlength=n)
        scores += self.intercept
        return scores

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Return the most probable label for each text."""
        proba = self.predict_proba(texts)
        return [self.labels[i] for i in proba.argmax(axis=1)]

    def _count_terms(self, texts: Iterable[str]) -> tuple[list[int], list[int], list[int]]:
        index = self._index
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        for r, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {r} is a {type(text).__name__}, not a str")
            for term, count in Counter(self.analyze(text)).items():
                j = index.get(term)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
                    counts.append(count)
        return rows, cols, counts

    # ------------------------------------------------------------------ persistence

    def save_pretrained(
        self, path: str | Path, *, dtype: Literal["float32", "float64"] = "float64"
    ) -> None:
        """Write ``config.json``, ``vocab.json`` and ``model.safetensors`` into ``path``.

        Args:
            path: the directory (created if missing; files of the same names are replaced).
            dtype: precision of the stored weights; ``"float32"`` halves the file, and
                shifts probabilities by about 1e-7. Scoring always runs in float64.
        """
        from safetensors.numpy import save

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "labels": self.labels,
            "n_features": len(self.vocabulary),
            "tokenizer": {
                "lowercase": self.lowercase,
                "token_pattern": self.token_pattern,
                "ngram_range": list(self.ngram_range),
            },
            "tfidf": {"sublinear_tf": self.sublinear_tf, "norm": self.norm},
            "weights_dtype": dtype,
            "langchain_herd_version": __version__,
            "metadata": self.metadata,
        }
        tensors = {
            name: np.ascontiguousarray(array, dtype=dtype)
            for name, array in (
                ("idf", self.idf),
                ("coef", self.coef),
                ("intercept", self.intercept),
            )
        }
        # save() + write_bytes rather than save_file, which creates the file mode 0600 and so
        # would ship an artifact other users of a shared install cannot read.
        (directory / WEIGHTS_FILE).write_bytes(save(tensors, metadata={"kind": self.kind}))
        (directory / VOCAB_FILE).write_text(
            json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8"
        )
        (directory / CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any]) -> _TfidfLinear:
        where = path / CONFIG_FILE
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: format_version {version!r} is not {FORMAT_VERSION}; "
                "was it saved by a different langchain-herd?"
            )
        if config.get("mode", cls.mode) != cls.mode:
            raise ArtifactError(
                f"{where}: mode {config.get('mode')!r} does not fit kind {cls.kind!r}, whose "
                f"mode is {cls.mode!r}; the config was edited or comes from another model"
            )
        try:
            tokenizer = config["tokenizer"]
            tfidf = config["tfidf"]
            settings = {
                "lowercase": _typed(tokenizer["lowercase"], bool, "tokenizer.lowercase"),
                "token_pattern": _typed(tokenizer["token_pattern"], str, "tokenizer.token_pattern"),
                "ngram_range": tuple(tokenizer["ngram_range"]),
                "sublinear_tf": _typed(tfidf["sublinear_tf"], bool, "tfidf.sublinear_tf"),
                "norm": tfidf["norm"],
            }
        except (KeyError, TypeError) as exc:
            raise ArtifactError(
                f"{where}: missing or malformed tokenizer/tfidf setting ({exc})"
            ) from exc
        ngrams = settings["ngram_range"]
        if len(ngrams) != 2 or not all(type(n) is int for n in ngrams):
            raise ArtifactError(
                f"{where}: tokenizer.ngram_range must be two integers, got {list(ngrams)!r}"
            )
        labels = config["labels"]
        if len(labels) > MAX_LABELS or not all(isinstance(label, str) for label in labels):
            raise ArtifactError(
                f"{where}: labels must be at most {MAX_LABELS} strings; the config is damaged"
            )
        check_folder(path)
        vocab_path = path / VOCAB_FILE
        weights_path = path / WEIGHTS_FILE
        for required in (vocab_path, weights_path):
            if not required.is_file():
                raise ArtifactError(
                    f"{path}: {required.name} is missing; a {cls.kind} artifact holds "
                    f"{CONFIG_FILE}, {VOCAB_FILE} and {WEIGHTS_FILE}"
                )
        vocabulary = read_json(vocab_path)
        if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
            raise ArtifactError(f"{vocab_path}: expected a JSON list of term strings")
        if len(vocabulary) > MAX_FEATURES:
            raise ArtifactError(
                f"{vocab_path}: {len(vocabulary)} terms, more than the {MAX_FEATURES} allowed; "
                "retrain with a smaller max_features"
            )
        tensors = load_safetensors(weights_path)
        missing = {"idf", "coef", "intercept"} - set(tensors)
        if missing:
            raise ArtifactError(f"{weights_path}: missing tensor(s) {', '.join(sorted(missing))}")
        n_features = config.get("n_features", len(vocabulary))
        if n_features != len(vocabulary):
            raise ArtifactError(
                f"{path}: config.json says n_features={n_features} but {VOCAB_FILE} holds "
                f"{len(vocabulary)} terms; the files come from different models"
            )
        try:
            return cls(
                labels=config["labels"],
                vocabulary=vocabulary,
                idf=tensors["idf"],
                coef=tensors["coef"],
                intercept=tensors["intercept"],
                metadata=config.get("metadata") or {},
                **settings,
            )
        except (ArtifactError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: {exc}") from exc


class TfidfClassifier(_TfidfLinear):
    """Scores texts with TF-IDF features and a multinomial logistic regression.

    Build one with :meth:`fit` (or :meth:`from_sklearn`), save it with
    :meth:`save_pretrained`, load it with :meth:`from_pretrained` or
    ``langchain_herd.classifiers.base.load_classifier``. Scoring is numpy only.

    Attributes:
        labels: the route labels, one per column of :meth:`predict_proba`.
        vocabulary: the feature terms (unigrams, or n-grams joined by one space), in order.
        metadata: free-form training information saved with the artifact (parameters,
            data sizes, held-out metrics).

    Example:
        >>> clf = TfidfClassifier.fit(  # doctest: +SKIP
        ...     ["integrate x squared", "derivative of sin x", "who wrote hamlet",
        ...      "the poetry of keats"],
        ...     ["stem", "stem", "humanities", "humanities"],
        ... )
        >>> clf.predict(["the integral of cos x"])  # doctest: +SKIP
        ['stem']
        >>> clf.save_pretrained("my-router")  # doctest: +SKIP
    """

    kind: ClassVar[str] = "tfidf-logreg"
    mode: str = "category"
    """What the scores mean: ``category`` (one route label per query, rows sum to 1)."""

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return label probabilities, shape ``(len(texts), len(labels))``, rows summing to 1.

        Raises:
            InputError: ``texts`` is a single string, or holds something that is not one.
        """
        scores = self.decision_function(texts)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    # ------------------------------------------------------------------ training

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        max_features: int | None = 50_000,
        C: float = 10.0,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 1,
        max_df: int | float = 1.0,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        norm: Norm = "l2",
        class_weight: Literal["balanced"] | Mapping[str, float] | None = None,
        max_iter: int = 2000,
        label_order: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> TfidfClassifier:
        """Train with scikit-learn's ``TfidfVectorizer`` + ``LogisticRegression`` and export.

        Args:
            texts: training texts.
            labels: one label per text.
            max_features: keep the most frequent terms only (``None``: all).
            C: inverse L2 regularisation strength of the logistic regression.
            ngram_range: word n-gram sizes, e.g. ``(1, 2)`` for unigrams and bigrams.
            min_df: drop terms in fewer documents than this (count, or share if a float).
            max_df: drop terms in more documents than this (count, or share if a float).
            sublinear_tf: use ``1 + log(count)`` as the term frequency.
            lowercase: lower-case texts before tokenizing.
            token_pattern: regex for tokens (at most one capture group).
            norm: row normalisation, ``"l2"``, ``"l1"`` or ``None``.
            class_weight: passed to ``LogisticRegression`` (``"balanced"`` for skewed labels).
            max_iter: lbfgs iterations.
            label_order: the label (column) order of the result; default sorted.
            metadata: extra information to save with the artifact, merged into the
                training metadata this method records.

        Raises:
            ImportError: scikit-learn is not installed.
            ValueError: ``texts`` and ``labels`` differ in length, or fewer than two labels.
        """
        try:
            import sklearn
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
        except ImportError as exc:
            raise ImportError(
                "TfidfClassifier.fit needs scikit-learn; install it with "
                "`pip install 'langchain-herd[train]'` (inference does not need it)"
            ) from exc
        if isinstance(texts, str) or len(texts) != len(labels):
            raise ValueError(
                f"fit needs one label per text, got {len(texts)} texts and {len(labels)} labels"
            )
        if len(set(labels)) < 2:
            raise ValueError("fit needs at least two distinct labels")
        vectorizer = _vectorizer(
            TfidfVectorizer,
            lowercase=lowercase,
            token_pattern=token_pattern,
            ngram_range=ngram_range,
            max_features=max_features,
            min_df=min_df,
            max_df=max_df,
            sublinear_tf=sublinear_tf,
            norm=norm,
        )
        features = vectorizer.fit_transform(list(texts))
        model = LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight)
        targets = np.asarray([str(label) for label in labels], dtype=object)
        model.fit(features, targets)
        train_accuracy = float((model.predict(features) == targets).mean())
        info: dict[str, Any] = {
            "trainer": "TfidfClassifier.fit",
            "sklearn_version": sklearn.__version__,
            "n_train": len(texts),
            "params": {
                "max_features": max_features,
                "C": C,
                "ngram_range": list(ngram_range),
                "min_df": min_df,
                "max_df": max_df,
                "sublinear_tf": sublinear_tf,
                "norm": norm,
                "class_weight": class_weight
                if class_weight is None or isinstance(class_weight, str)
                else dict(class_weight),
                "max_iter": max_iter,
            },
            "train_accuracy": train_accuracy,
            "converged": bool(np.all(np.asarray(model.n_iter_) < max_iter)),
        }
        info.update(metadata or {})
        return cls.from_sklearn(vectorizer, model, label_order=label_order, metadata=info)

    @classmethod
    def from_sklearn(
        cls,
        vectorizer: Any,
        model: Any,
        *,
        label_order: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> TfidfClassifier:
        """Export a fitted ``TfidfVectorizer`` and ``LogisticRegression`` to the numpy form.

        Only settings the numpy analyzer reproduces exactly are accepted: the word
        analyzer with a token pattern, optional lower-casing, no custom preprocessor,
        tokenizer, stop words or accent stripping, and a multinomial (softmax) model or
        a binary one.

        Args:
            vectorizer: a fitted ``sklearn.feature_extraction.text.TfidfVectorizer``.
            model: a fitted ``sklearn.linear_model.LogisticRegression`` on its output.
            label_order: the label (column) order of the result; default ``model.classes_``.
            metadata: saved with the artifact.

        Raises:
            ValueError: a setting cannot be reproduced, or the two do not fit together.
        """
        unsupported = {
            "analyzer": (vectorizer.analyzer, "word"),
            "input": (vectorizer.input, "content"),
            "preprocessor": (vectorizer.preprocessor, None),
            "tokenizer": (vectorizer.tokenizer, None),
            "stop_words": (vectorizer.stop_words, None),
            "strip_accents": (vectorizer.strip_accents, None),
            "binary": (vectorizer.binary, False),
        }
        for name, (value, wanted) in unsupported.items():
            if value != wanted:
                raise ValueError(
                    f"TfidfVectorizer({name}={value!r}) cannot be reproduced at inference; "
                    f"use {name}={wanted!r}"
                )
        classes = [str(c) for c in model.classes_]
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
        if len(classes) == 2 and coef.shape[0] == 1:
            # predict_proba is sigmoid(z) for the second class; softmax([-z/2, z/2]) is equal.
            coef = np.vstack([-coef / 2.0, coef / 2.0])
            intercept = np.concatenate([-intercept / 2.0, intercept / 2.0])
        elif len(classes) > 2 and (
            getattr(model, "multi_class", "auto") == "ovr"
            or getattr(model, "solver", "lbfgs") == "liblinear"
        ):
            raise ValueError(
                "one-vs-rest logistic regression is not supported; fit a multinomial model "
                "(the default lbfgs solver)"
            )
        if label_order is not None:
            if sorted(map(str, label_order)) != sorted(classes):
                raise ValueError(
                    f"label_order {list(label_order)} is not a permutation of the model's "
                    f"classes {classes}"
                )
            order = [classes.index(str(label)) for label in label_order]
            classes = [classes[i] for i in order]
            coef = coef[order]
            intercept = intercept[order]
        vocab = vectorizer.vocabulary_
        terms = [""] * len(vocab)
        for term, j in vocab.items():
            terms[j] = term
        idf = vectorizer.idf_ if vectorizer.use_idf else np.ones(len(terms))
        return cls(
            labels=classes,
            vocabulary=terms,
            idf=idf,
            coef=coef,
            intercept=intercept,
            ngram_range=tuple(vectorizer.ngram_range),
            lowercase=vectorizer.lowercase,
            token_pattern=vectorizer.token_pattern,
            sublinear_tf=vectorizer.sublinear_tf,
            norm=vectorizer.norm,
            metadata=metadata,
        )


class TfidfCorrectnessClassifier(_TfidfLinear):
    """Predicts, for each expert, the probability that it answers a query correctly.

    TF-IDF features (as :class:`TfidfClassifier`) and one binary logistic regression per
    expert: ``predict_proba`` returns an independent sigmoid per label, so rows do not sum
    to 1. The labels are expert (model) names; a router picks the expert with the highest
    predicted correctness, or weighs it against cost. Training takes soft labels (values
    in ``[0, 1]``, e.g. a judge's confidence) and skips missing results (NaN) per expert.

    Example:
        >>> clf = TfidfCorrectnessClassifier.fit(  # doctest: +SKIP
        ...     ["integrate x squared", "who wrote hamlet", "derivative of sin x"],
        ...     [[1, 0], [0, 1], [1, float("nan")]],
        ...     labels=["math-7b", "general-7b"],
        ... )
        >>> clf.predict_proba(["the integral of cos x"])  # doctest: +SKIP
        array([[0.71, 0.42]])
    """

    kind: ClassVar[str] = "tfidf-correctness"
    mode: str = "correctness"

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return, per text and expert, the probability of a correct answer (independent).

        Raises:
            InputError: ``texts`` is a single string, or holds something that is not one.
        """
        scores = self.decision_function(texts)
        # exp of a negative number only: no overflow warning for large |scores|.
        positive = scores >= 0.0
        out = np.empty_like(scores)
        out[positive] = 1.0 / (1.0 + np.exp(-scores[positive]))
        e = np.exp(scores[~positive])
        out[~positive] = e / (1.0 + e)
        return out

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        targets: npt.ArrayLike,
        labels: Sequence[str],
        *,
        C: float | Sequence[float] = 1.0,
        max_features: int | None = 50_000,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 1,
        max_df: int | float = 1.0,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        norm: Norm = "l2",
        max_iter: int = 2000,
        metadata: Mapping[str, Any] | None = None,
    ) -> TfidfCorrectnessClassifier:
        """Train one TF-IDF vocabulary and one logistic regression per expert (scikit-learn).

        Args:
            texts: training texts.
            targets: shape ``(len(texts), len(labels))``: 1 correct, 0 wrong, a value in
                between for a soft label, NaN for no result (that row is left out of that
                expert's fit only).
            labels: the expert names, one per column of ``targets``.
            C: inverse L2 regularisation strength, one for all experts or one per expert.
            max_features, ngram_range, min_df, max_df, sublinear_tf, lowercase,
                token_pattern, norm: TF-IDF settings, as in :meth:`TfidfClassifier.fit`.
            max_iter: lbfgs iterations per expert.
            metadata: extra information to save with the artifact.

        Raises:
            ImportError: scikit-learn is not installed.
            ValueError: shapes do not match, a target is outside ``[0, 1]``, or an expert
                has no observed row.
        """
        try:
            import sklearn
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
        except ImportError as exc:
            raise ImportError(
                "TfidfCorrectnessClassifier.fit needs scikit-learn; install it with "
                "`pip install 'langchain-herd[train]'` (inference does not need it)"
            ) from exc
        y = np.asarray(targets, dtype=np.float64)
        names = [str(label) for label in labels]
        if isinstance(texts, str) or y.ndim != 2 or y.shape != (len(texts), len(names)):
            raise ValueError(
                f"targets must have shape (texts, labels) = ({len(texts)}, {len(names)}), "
                f"got {y.shape}"
            )
        observed = ~np.isnan(y)
        if np.any((y[observed] < 0.0) | (y[observed] > 1.0)):
            raise ValueError("targets must lie in [0, 1] (or be NaN for no result)")
        empty = [name for name, n in zip(names, observed.sum(axis=0), strict=True) if n == 0]
        if empty:
            raise ValueError(f"no observed target for expert(s) {empty}; drop them or label them")
        costs = [float(C)] * len(names) if isinstance(C, int | float) else [float(c) for c in C]
        if len(costs) != len(names):
            raise ValueError(f"C has {len(costs)} values for {len(names)} labels")
        vectorizer = _vectorizer(
            TfidfVectorizer,
            lowercase=lowercase,
            token_pattern=token_pattern,
            ngram_range=ngram_range,
            max_features=max_features,
            min_df=min_df,
            max_df=max_df,
            sublinear_tf=sublinear_tf,
            norm=norm,
        )
        features = vectorizer.fit_transform(list(texts))
        coef = np.zeros((len(names), features.shape[1]))
        intercept = np.zeros(len(names))
        converged = []
        for j, c in enumerate(costs):
            rows = np.flatnonzero(observed[:, j])
            soft = y[rows, j]
            if np.all(soft == soft[0]) and soft[0] in (0.0, 1.0):
                # One class only: logistic regression is undefined; predict the (clipped) rate.
                rate = float(np.clip(soft[0], 1e-3, 1.0 - 1e-3))
                intercept[j] = np.log(rate / (1.0 - rate))
                converged.append(True)
                continue
            # A soft label y is the row twice: class 1 with weight y, class 0 with weight 1 - y,
            # which is exactly the cross-entropy against y. Zero-weight copies are dropped.
            weights = np.concatenate([soft, 1.0 - soft])
            keep = weights > 0.0
            doubled = np.concatenate([rows, rows])[keep]
            classes = np.concatenate([np.ones(len(rows)), np.zeros(len(rows))])[keep]
            model = LogisticRegression(C=c, max_iter=max_iter)
            model.fit(features[doubled], classes, sample_weight=weights[keep])
            coef[j] = model.coef_[0]
            intercept[j] = model.intercept_[0]
            converged.append(bool(np.all(np.asarray(model.n_iter_) < max_iter)))
        vocab = vectorizer.vocabulary_
        terms = [""] * len(vocab)
        for term, index in vocab.items():
            terms[index] = term
        info: dict[str, Any] = {
            "trainer": "TfidfCorrectnessClassifier.fit",
            "sklearn_version": sklearn.__version__,
            "n_train": len(texts),
            "n_observed": {
                name: int(n) for name, n in zip(names, observed.sum(axis=0), strict=True)
            },
            "params": {
                "max_features": max_features,
                "C": dict(zip(names, costs, strict=True)),
                "ngram_range": list(ngram_range),
                "min_df": min_df,
                "max_df": max_df,
                "sublinear_tf": sublinear_tf,
                "norm": norm,
                "max_iter": max_iter,
            },
            "converged": all(converged),
        }
        info.update(metadata or {})
        return cls(
            labels=names,
            vocabulary=terms,
            idf=vectorizer.idf_,
            coef=coef,
            intercept=intercept,
            ngram_range=ngram_range,
            lowercase=lowercase,
            token_pattern=token_pattern,
            sublinear_tf=sublinear_tf,
            norm=norm,
            metadata=info,
        )


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{name} should be a {kind.__name__}, got {value!r}")
    return value


def _check_settings(token_pattern: str, ngram_range: tuple[int, int], norm: Any) -> None:
    if not isinstance(token_pattern, str) or len(token_pattern) > MAX_PATTERN_LENGTH:
        raise ArtifactError(
            f"token_pattern must be a regex of at most {MAX_PATTERN_LENGTH} characters, got "
            f"{str(token_pattern)[:80]!r}...; use a simple word pattern such as "
            f"{DEFAULT_TOKEN_PATTERN!r}"
        )
    try:
        compiled = re.compile(token_pattern)
    except (re.error, TypeError, RecursionError, OverflowError) as exc:
        raise ArtifactError(
            f"token_pattern {token_pattern!r} is not a valid regex ({exc})"
        ) from exc
    if compiled.groups > 1:
        raise ArtifactError(
            f"token_pattern {token_pattern!r} has {compiled.groups} capture groups; at most "
            "one is allowed"
        )
    risk = _backtracking_risk(token_pattern)
    if risk:
        raise ArtifactError(
            f"token_pattern {token_pattern!r} {risk}, which can backtrack exponentially (one "
            f"query could take minutes); use a pattern without it, e.g. {DEFAULT_TOKEN_PATTERN!r}"
        )
    slow = _slow_probe(compiled)
    if slow:
        raise ArtifactError(
            f"token_pattern {token_pattern!r} took {slow} (linear patterns take well under a "
            "millisecond): its time grows faster than the text, and a query of 20,000 "
            f"characters would take seconds; use a pattern such as {DEFAULT_TOKEN_PATTERN!r}"
        )
    low, high = ngram_range
    if not 1 <= low <= high <= MAX_NGRAM:
        raise ArtifactError(
            f"ngram_range {ngram_range} must satisfy 1 <= min <= max <= {MAX_NGRAM}"
        )
    if norm not in _NORMS:
        raise ArtifactError(f"norm {norm!r} is not one of 'l1', 'l2' or None")


#: Texts the token pattern is timed on at load: runs of one character class, where patterns
#: such as ``\w+\d`` retry every start (quadratic) and ``\d+\w*x`` worse (cubic).
_PROBE_UNITS = ("a", "1", " ", "_", ".", "-", "\u00e9", "a1", "a ", "1 ", "a.")
_PROBE_LENGTHS = (512, 1024, 2048, 4096)
#: Seconds one probe may take (best of three, against a busy machine's pauses).
_PROBE_LIMIT_S = 0.02


def _slow_probe(compiled: re.Pattern[str]) -> str | None:
    """How long the pattern took on the first probe text over the limit, or None.

    The parse-tree check cannot see polynomial blow-up; timing can, cheaply: growing texts,
    stopping at the first that is slow, so a cubic pattern costs a fraction of a second.
    """
    for length in _PROBE_LENGTHS:
        for unit in _PROBE_UNITS:
            text = (unit * length)[:length]
            if _time_findall(compiled, text) > _PROBE_LIMIT_S:
                best = min(_time_findall(compiled, text) for _ in range(3))
                if best > _PROBE_LIMIT_S:
                    return f"{best * 1000:.0f} ms on {length} characters of {unit!r}"
    return None


def _time_findall(compiled: re.Pattern[str], text: str) -> float:
    start = time.perf_counter()
    compiled.findall(text)
    return time.perf_counter() - start


def _backtracking_risk(pattern: str) -> str | None:
    """What makes ``pattern`` prone to catastrophic backtracking, or None.

    Python's ``re`` backtracks, and no linear-time engine reproduces its Unicode ``\\b`` and
    ``\\w`` exactly (RE2's are ASCII), which scikit-learn equivalence needs. So the parse
    tree is checked for the constructs behind exponential blow-up instead: a quantifier
    inside a quantifier (``(a+)+``), an alternation under a quantifier (``(a|aa)+``) and
    backreferences. Single-level patterns such as the default are linear or polynomial.
    """
    try:
        import re._constants as sre_constants  # type: ignore[import-not-found]
        import re._parser as sre_parse  # type: ignore[import-not-found]
    except ImportError:  # Python 3.10
        import sre_constants
        import sre_parse
    repeats = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}
    repeats |= {getattr(sre_constants, "POSSESSIVE_REPEAT", sre_constants.MAX_REPEAT)}

    def walk(items: Any, under_repeat: bool) -> str | None:
        for op, arg in items:
            if op in repeats:
                _, high, body = arg
                if under_repeat and high > 1:
                    return "nests a quantifier inside a quantifier"
                found = walk(body, under_repeat or high > 1)
            elif op is sre_constants.SUBPATTERN:
                found = walk(arg[-1], under_repeat)
            elif op is sre_constants.BRANCH:
                if under_repeat:
                    return "repeats an alternation"
                found = next((r for b in arg[1] if (r := walk(b, under_repeat))), None)
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                found = walk(arg[1], under_repeat)
            elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
                return "uses a backreference"
            else:
                found = None
            if found:
                return found
        return None

    return walk(sre_parse.parse(pattern), False)


def _check_weights(
    labels: list[str],
    vocabulary: list[str],
    idf: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
) -> None:
    n_labels, n_features = len(labels), len(vocabulary)
    if n_labels < 2 or len(set(labels)) != n_labels:
        raise ArtifactError(f"labels must be at least two distinct names, got {labels}")
    if len(set(vocabulary)) != n_features:
        raise ArtifactError("the vocabulary repeats a term; each feature needs a distinct term")
    expected = {
        "idf": (idf, (n_features,)),
        "coef": (coef, (n_labels, n_features)),
        "intercept": (intercept, (n_labels,)),
    }
    for name, (array, shape) in expected.items():
        if array.shape != shape:
            raise ArtifactError(
                f"{name} has shape {array.shape}, expected {shape} for {n_labels} labels and "
                f"{n_features} vocabulary terms; the weights and vocabulary do not match"
            )
        if not np.all(np.isfinite(array)):
            raise ArtifactError(f"{name} holds NaN or infinite values")


def _vectorizer(factory: Any, **settings: Any) -> Any:
    """The sklearn vectorizer both TF-IDF kinds fit; float64 so numpy inference matches."""
    return factory(**settings, dtype=np.float64)
