"""Train a router classifier on a correctness table, evaluate it on held-out rows, save it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from langchain_herd._version import __version__
from langchain_herd.classifiers.base import SavedClassifier, load_classifier
from langchain_herd.errors import ArtifactError, ConfigError
from langchain_herd.tables import CorrectnessTable, TableError, read_correctness_table
from langchain_herd.training.backends import BACKENDS, get_backend
from langchain_herd.training.data import MODES, Mode, TrainingData, build_data
from langchain_herd.training.metrics import category_metrics, correctness_metrics, decision_time
from langchain_herd.training.progress import Progress, SilentProgress

__all__ = [
    "BackendName",
    "TrainResult",
    "backend_settings",
    "check_classifier_fits",
    "evaluate_router",
    "train_router",
]

BackendName = Literal["tfidf", "embedding", "finetune"]
# How closely the reloaded artifact must reproduce the in-memory scores: float32 weights
# (tfidf) move them by ~1e-7; torch models by batch composition (padding) by ~1e-6.
_ROUND_TRIP_TOLERANCE = 1e-4
_ROUND_TRIP_ROWS = 64


@dataclass
class TrainResult:
    """What :func:`train_router` did: where the artifact is and how it scored on held-out rows.

    Attributes:
        out_dir: the saved artifact.
        mode: ``correctness`` or ``category``.
        backend: ``tfidf``, ``embedding`` or ``finetune``.
        kind: the artifact's classifier kind (e.g. ``tfidf-correctness``).
        labels: expert names (correctness) or route labels (category).
        heldout: metrics on the held-out split (see ``training.metrics``).
        train_time_s: wall time of fitting (tuning and early stopping included).
        decision_time: ``single_ms_median``/``single_ms_p95`` (one query per call) and
            ``batch_ms_per_query`` (the whole held-out set in one call).
        split: how the rows were divided and how many fell on each side.
        params: the backend settings used.
        data: the table's file, its sha256, rows and models.
        artifact_check: the reloaded artifact's largest score difference on held-out rows.

    Example:
        >>> result = train_router("table.parquet", mode="correctness", backend="tfidf",
        ...                       out_dir="router")  # doctest: +SKIP
        >>> print(result.report())  # doctest: +SKIP
    """

    out_dir: Path
    mode: Mode
    backend: str
    kind: str
    labels: list[str]
    heldout: dict[str, Any]
    train_time_s: float
    decision_time: dict[str, Any]
    split: dict[str, Any]
    params: dict[str, Any]
    data: dict[str, Any]
    artifact_check: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out

    def report(self) -> str:
        """A human-readable summary (what ``herd train`` prints)."""
        lines = [
            f"trained a {self.mode} router: backend {self.backend}, kind {self.kind}, "
            f"{len(self.labels)} labels",
            f"  data   {self.data['file']} ({self.data['rows']} rows)"
            + "".join(
                f"\n  (column {name!r} not used as a model: {why})"
                for name, why in self.data.get("ignored_columns", {}).items()
            ),
            "  split  "
            + (
                f"column {self.split['column']!r}"
                if self.split["method"] == "column"
                else f"seeded by {self.split['unit']} (seed {self.split['seed']}, test share "
                f"{self.split['test_share']})"
            )
            + f": train {self.split['n_train']} (fit {self.split['n_fit']} + validation "
            f"{self.split['n_val']}), held-out {self.split['n_test']}"
            + (
                f"; training capped at {self.split['max_train_rows']} rows"
                if self.split.get("max_train_rows")
                else ""
            ),
        ]
        h = self.heldout
        if self.mode == "correctness":
            lines.append(
                f"held-out ({h['n']} questions with a result from every expert"
                + (
                    f"; {h['n_incomplete']} others only in per-expert figures"
                    if h["n_incomplete"]
                    else ""
                )
                + "):"
            )
            if h["n"]:
                lines += [
                    f"  routed accuracy      {h['routed_accuracy']:.4f}  (the expert with the "
                    f"highest predicted correctness)",
                    f"  best single expert   {h['best_single_accuracy']:.4f}  "
                    f"({h['best_single']}, chosen on train)",
                    f"  oracle               {h['oracle_accuracy']:.4f}  (right if any expert is)",
                    f"  random expert        {h['random_accuracy']:.4f}",
                    f"  routed - best single {h['routed_minus_best_single']:+.4f}",
                ]
            width = max(len(name) for name in self.labels)
            lines.append(f"  {'expert':<{width}}  test acc    AUC   Brier  (base)  routed share")
            for name, m in h["per_model"].items():
                auc = "   -  " if m["auc"] is None else f"{m['auc']:.4f}"
                brier = "   -  " if m["brier"] is None else f"{m['brier']:.4f}"
                base = "   -  " if m["brier_base"] is None else f"{m['brier_base']:.4f}"
                acc = "   -  " if m["accuracy"] is None else f"{m['accuracy']:.4f}"
                lines.append(
                    f"  {name:<{width}}  {acc}  {auc}  {brier}  ({base})  {m['routed_share']:.3f}"
                )
        else:
            lines += [
                f"held-out ({h['n']} questions):",
                f"  accuracy   {h['accuracy']:.4f}   macro-F1 {h['macro_f1']:.4f}",
                f"  majority   {h['majority_accuracy']:.4f}  (always {h['majority_label']!r})",
            ]
            for name, recall in h["per_label_recall"].items():
                lines.append(f"  {name:<20} {recall:.4f}")
        t = self.decision_time
        lines += [
            f"training time  {self.train_time_s:.1f} s",
            f"decision time  one query: median {t['single_ms_median']:.3f} ms "
            f"(p95 {t['single_ms_p95']:.3f} ms); batched: {t['batch_ms_per_query']:.3f} "
            f"ms/query ({t['batch_n']} queries)",
            f"artifact       {self.out_dir}",
        ]
        return "\n".join(lines)


def train_router(
    table_path: str | Path | CorrectnessTable,
    *,
    mode: Mode,
    backend: BackendName,
    out_dir: str | Path,
    label_column: str = "group",
    seed: int = 0,
    test_share: float = 0.2,
    val_share: float = 0.15,
    models: Sequence[str] | None = None,
    max_train_rows: int | None = None,
    use_split_column: bool | None = None,
    params: BaseModel | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a router classifier, score it on held-out rows, and save it to ``out_dir``.

    Args:
        table_path: a correctness table file (see :mod:`langchain_herd.tables`) or one read.
        mode: ``correctness`` (per expert, the probability that it answers right; labels
            are the model columns) or ``category`` (a route label from ``label_column``).
        backend: ``tfidf``, ``embedding`` or ``finetune``.
        out_dir: the artifact directory (created; files of the same names are replaced).
        label_column: the label column for ``category`` mode.
        seed: seed of the split (tables without a ``split`` column), of the validation
            split carved from the training rows, and of training.
        test_share: held-out share for the seeded split.
        val_share: share of the training rows used for tuning / early stopping.
        models: restrict correctness mode to these model columns.
        max_train_rows: train on at most this many (seeded sample of the) training rows;
            the held-out rows are not affected.
        use_split_column: see :meth:`CorrectnessTable.split`.
        params: the backend's settings: its params model (``TfidfParams``,
            ``EmbeddingParams``, ``FinetuneParams``) or a dict of its fields.
        progress: receives phases and advances (default: silent).

    Returns:
        The :class:`TrainResult`; the same figures are in the artifact's ``metadata``.

    Raises:
        TableError: the table cannot be read or split, or lacks what the mode needs.
        ConfigError: unknown mode, backend or backend setting.
        ImportError: the backend's libraries (scikit-learn, torch, transformers) are missing.
    """
    progress = progress or SilentProgress()
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if not 0.0 < val_share < 1.0:
        raise ConfigError(f"val_share must be between 0 and 1, got {val_share}")
    if max_train_rows is not None and max_train_rows < 2:
        raise ConfigError(f"max_train_rows must be at least 2, got {max_train_rows}")
    engine = get_backend(backend)
    settings = backend_settings(engine.params_model, params, backend)
    out = Path(out_dir)

    with progress.phase("reading the table"):
        if isinstance(table_path, CorrectnessTable):
            table = table_path.select_models(models) if models else table_path
        else:
            table = read_correctness_table(table_path, models=models or None)
        if mode == "correctness" and len(table.model_columns) < 2:
            raise TableError(
                f"{table.source}: correctness routing needs at least two model columns, found "
                f"{table.model_columns}"
            )
        train_frame, test_frame = table.split(
            seed=seed, test_share=test_share, use_split_column=use_split_column
        )
        capped = max_train_rows is not None and len(train_frame) > max_train_rows
        if capped:
            train_frame = train_frame.sample(n=max_train_rows, random_state=seed).sort_index()
        train, dropped_train = build_data(table, train_frame, mode, label_column=label_column)
        test, dropped_test = build_data(
            table, test_frame, mode, label_column=label_column, labels=train.labels
        )
        _check_trainable(train, test, table.source, label_column)
        fit, val = train.carve(val_share, seed)
    split = {
        **table.split_description(seed, test_share, use_split_column=use_split_column),
        "n_train": len(train),
        "n_fit": len(fit),
        "n_val": len(val),
        "n_test": len(test),
        "val_share": val_share,
        "val_seed": seed,
        "max_train_rows": max_train_rows if capped else None,
        "rows_without_target": {"train": dropped_train, "test": dropped_test},
    }
    data = _data_info(table, mode, label_column, train.labels)
    progress.note(
        f"{len(train)} training rows (fit {len(fit)} + validation {len(val)}), "
        f"{len(test)} held-out; {len(train.labels)} labels"
    )

    start = time.perf_counter()
    classifier = engine.fit(train, fit, val, settings, seed=seed, progress=progress)
    train_time = time.perf_counter() - start

    with progress.phase(f"scoring {len(test)} held-out questions"):
        start = time.perf_counter()
        proba = _score(classifier, test.texts, progress)
        batch_s = time.perf_counter() - start
    if mode == "correctness":
        heldout = correctness_metrics(
            proba,
            np.asarray(test.targets, dtype=np.float64),
            np.asarray(train.targets, dtype=np.float64),
            train.labels,
        )
    else:
        heldout = category_metrics(
            proba,
            np.asarray(test.targets, dtype=np.int64),
            np.asarray(train.targets, dtype=np.int64),
            train.labels,
        )
    with progress.phase("timing single-query decisions"):
        timing = decision_time(classifier, test.texts, 200 if backend == "tfidf" else 30)
    timing.update({"batch_ms_per_query": batch_s * 1e3 / max(len(test), 1), "batch_n": len(test)})

    fit_info = dict(getattr(classifier, "metadata", {}))
    params_dump = settings.model_dump(mode="json")
    metadata = {
        "trainer": "langchain_herd.training.train_router",
        "mode": mode,
        "backend": backend,
        "data": data,
        "split": split,
        "seed": seed,
        "params": params_dump,
        "fit": fit_info,
        "heldout": heldout,
        "train_time_s": round(train_time, 3),
        "decision_time": timing,
        "versions": _versions(),
    }
    classifier.metadata = metadata  # type: ignore[attr-defined]
    with progress.phase(f"saving to {out}"):
        engine.save(classifier, out, settings)
        check = _round_trip(classifier, out, test.texts, proba)
    return TrainResult(
        out_dir=out,
        mode=mode,
        backend=backend,
        kind=classifier.kind,
        labels=list(train.labels),
        heldout=heldout,
        train_time_s=train_time,
        decision_time=timing,
        split=split,
        params=params_dump,
        data=data,
        artifact_check=check,
    )


def check_classifier_fits(
    classifier: SavedClassifier | Any,
    table: CorrectnessTable,
    *,
    label_column: str = "group",
    where: str = "the classifier",
) -> str:
    """Check a classifier can be evaluated on a table; return its mode.

    Raises:
        ArtifactError: correctness labels that are not model columns of the table, or a
            category classifier none of whose labels occur in ``label_column``.
    """
    mode = str(getattr(classifier, "mode", "category"))
    labels = list(classifier.labels)
    if mode == "correctness":
        missing = [label for label in labels if label not in table.model_columns]
        if missing:
            raise ArtifactError(
                f"{where} predicts correctness for experts {labels}, but {table.source} has no "
                f"model column for {missing} (its model columns: {table.model_columns}); "
                f"evaluate it on a table labelled by the same herd, or train a router on this one"
            )
        return mode
    values = {v for v in table.category_labels(label_column) if v is not None}
    if not values & set(labels):
        raise ArtifactError(
            f"{where} is a category router with labels {labels}, but column {label_column!r} of "
            f"{table.source} holds {sorted(values)[:20]}; none match (wrong --label-column, or "
            f"a router trained for another label set)"
        )
    return mode


def evaluate_router(
    artifact: str | Path | SavedClassifier,
    table_path: str | Path | CorrectnessTable,
    *,
    label_column: str = "group",
    seed: int = 0,
    test_share: float = 0.2,
    use_split_column: bool | None = None,
    rows: Literal["test", "train", "all"] = "test",
) -> dict[str, Any]:
    """Score a saved router on a correctness table's held-out rows (or other rows).

    Best single expert is chosen on the table's training rows, as in :func:`train_router`.

    Raises:
        ArtifactError: the artifact's mode or labels do not fit the table
            (see :func:`check_classifier_fits`).
    """
    classifier = artifact if isinstance(artifact, SavedClassifier) else load_classifier(artifact)
    table = (
        table_path
        if isinstance(table_path, CorrectnessTable)
        else read_correctness_table(table_path)
    )
    mode = check_classifier_fits(classifier, table, label_column=label_column, where=f"{artifact}")
    labels = list(classifier.labels)
    if mode == "correctness":
        table = table.select_models(labels)
    train_frame, test_frame = table.split(
        seed=seed, test_share=test_share, use_split_column=use_split_column
    )
    chosen = {"test": test_frame, "train": train_frame, "all": table.frame}[rows]
    kind: Mode = "correctness" if mode == "correctness" else "category"
    train, _ = build_data(table, train_frame, kind, label_column=label_column, labels=labels)
    data, _ = build_data(table, chosen, kind, label_column=label_column, labels=labels)
    proba = classifier.predict_proba(data.texts)
    if kind == "correctness":
        return correctness_metrics(
            proba,
            np.asarray(data.targets, dtype=np.float64),
            np.asarray(train.targets, dtype=np.float64),
            labels,
        )
    return category_metrics(
        proba,
        np.asarray(data.targets, dtype=np.int64),
        np.asarray(train.targets[train.targets >= 0], dtype=np.int64),
        labels,
    )


# ---------------------------------------------------------------- helpers


def backend_settings(model: type[BaseModel], params: Any, backend: str) -> BaseModel:
    """A backend's settings from its params model, a dict of its fields, or None (defaults).

    Raises:
        ConfigError: settings of another backend, or fields it does not have.
    """
    if params is None:
        return model()
    if isinstance(params, model):
        return params
    if isinstance(params, BaseModel):
        raise ConfigError(
            f"backend {backend!r} takes {model.__name__}, got {type(params).__name__}"
        )
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        fields = ", ".join(model.model_fields)
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(params)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"bad {backend} setting(s): {problems} (settings of {backend}: {fields})"
        ) from exc


def _check_trainable(
    train: TrainingData, test: TrainingData, source: str, label_column: str
) -> None:
    if len(train) < 4:
        raise TableError(f"{source}: only {len(train)} usable training rows; a router needs more")
    if not len(test):
        raise TableError(f"{source}: no usable held-out rows to evaluate on")
    if train.mode == "category":
        if len(train.labels) < 2:
            raise TableError(
                f"{source}: column {label_column!r} has fewer than two distinct values in the "
                f"training rows ({train.labels}); category routing needs at least two"
            )
    else:
        seen = ~np.isnan(np.asarray(train.targets, dtype=np.float64))
        empty = [m for m, n in zip(train.labels, seen.sum(axis=0), strict=True) if n == 0]
        if empty:
            raise TableError(
                f"{source}: model column(s) {empty} have no result in the training rows; drop "
                f"them (--models) or label them"
            )


def _data_info(
    table: CorrectnessTable, mode: str, label_column: str, labels: list[str]
) -> dict[str, Any]:
    info: dict[str, Any] = {"file": table.source, "rows": len(table)}
    path = Path(table.source)
    if path.is_file():
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    if mode == "correctness":
        info["models"] = list(labels)
    else:
        info["label_column"] = label_column
    if table.ignored_columns:
        info["ignored_columns"] = dict(table.ignored_columns)
    return info


def _versions() -> dict[str, str]:
    versions = {"langchain_herd": __version__, "python": platform.python_version()}
    for module, dist in (
        ("numpy", "numpy"),
        ("sklearn", "scikit-learn"),
        ("torch", "torch"),
        ("transformers", "transformers"),
    ):
        if module in sys.modules:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[dist] = importlib.metadata.version(dist)
    return versions


def _score(
    classifier: SavedClassifier, texts: list[str], progress: Progress, chunk: int = 512
) -> np.ndarray:
    """predict_proba in chunks of ``chunk`` texts (batched calls), reporting the advance."""
    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(classifier.predict_proba(texts[start : start + chunk]))
        progress.update(min(start + chunk, len(texts)), len(texts))
    if not parts:
        return classifier.predict_proba([])
    return np.vstack(parts)


def _round_trip(
    classifier: SavedClassifier, out: Path, texts: list[str], proba: np.ndarray
) -> dict[str, Any]:
    """Reload the artifact and check it reproduces the held-out scores (fail loudly if not)."""
    loaded = load_classifier(out)
    n = min(_ROUND_TRIP_ROWS, len(texts))
    again = loaded.predict_proba(texts[:n])
    diff = float(np.abs(again - proba[:n]).max()) if n else 0.0
    if loaded.labels != classifier.labels or diff > _ROUND_TRIP_TOLERANCE:
        raise ArtifactError(
            f"{out}: the saved artifact does not reproduce the trained classifier (labels "
            f"{loaded.labels} vs {classifier.labels}, largest score difference {diff:.2e}); "
            f"this is a bug, please report it"
        )
    return {"rows": n, "max_abs_diff": diff, "kind": loaded.kind}
