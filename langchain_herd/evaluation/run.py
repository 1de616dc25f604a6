"""Run every router on every split of an evaluation and gather the figures.

:func:`evaluate` returns one JSON-ready dict: per router, the figures of each seed and
their mean, spread and range; the per-split baselines; the majority vote when predictions
are given. :mod:`langchain_herd.evaluation.report` turns it into Markdown and plots.
"""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd._version import __version__
from langchain_herd.errors import ArtifactError, ConfigError
from langchain_herd.evaluation.data import EvalData, finite, splits
from langchain_herd.evaluation.embeddings import table_embeddings
from langchain_herd.evaluation.ensembles import (
    ENSEMBLES,
    EnsembleContext,
    EnsembleOptions,
    run_ensemble,
    select_ensembles,
)
from langchain_herd.evaluation.metrics import oracle_gap_closed
from langchain_herd.evaluation.routers import (
    ROUTERS,
    RouterContext,
    default_routers,
    run_router,
)
from langchain_herd.evaluation.scoring import (
    COST_WEIGHTS,
    majority_vote,
    score_output,
    split_baselines,
)
from langchain_herd.training.progress import Progress, SilentProgress

__all__ = ["EvalOptions", "evaluate"]

_SCALARS = (
    "accuracy",
    "cost",
    "oracle_gap_closed",
    "aiq",
    "ece",
    "apgr",
    "cpt50",
    "cpt80",
    "strong_share",
    "apgr_router",
)


@dataclass
class EvalOptions:
    """How to evaluate (see ``herd eval --help``).

    Example:
        >>> EvalOptions(seeds=[0, 1], routers=["best-single", "knn"]).test_share
        0.2
    """

    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    test_share: float = 0.2
    use_split_column: bool | None = None
    routers: Sequence[str] | None = None
    """Router names (default: every router the data supports, fine-tuning ones excluded)."""
    include_slow: bool = False
    """Add the fine-tuning routers to the default set."""
    pair: tuple[str, str] | None = None
    """``(strong, weak)`` model names: adds PGR, APGR and CPT."""
    encoder: str | None = None
    """Encoder folder for the embedding routers (default: all-MiniLM-L6-v2)."""
    finetune: dict[str, Any] = field(default_factory=dict)
    """``FinetuneParams`` fields and ``max_train_rows`` for the fine-tuning routers."""
    ensembles: EnsembleOptions = field(default_factory=EnsembleOptions)
    """How cascades choose their helpers (cascades and votes are named in ``routers``)."""


def evaluate(
    data: EvalData, options: EvalOptions, progress: Progress | None = None
) -> dict[str, Any]:
    """Evaluate the routers on ``data``; return the figures (see the module docstring).

    Raises:
        ConfigError: unknown router names, seeds or a pair that is not in the herd.
    """
    progress = progress or SilentProgress()
    if not options.seeds:
        raise ConfigError("at least one seed is needed")
    pair = _pair_indices(data, options.pair)
    # Cascades and votes are asked for by name like routers, and run beside them.
    asked = list(dict.fromkeys(options.routers)) if options.routers else None
    ensemble_names, ensemble_skipped = select_ensembles(
        data, [n for n in asked if n in ENSEMBLES] if asked else None, pair
    )
    if asked:
        options = replace(options, routers=[n for n in asked if n not in ENSEMBLES])
    names, skipped = (
        _select_routers(data, options, pair) if not asked or options.routers else ([], {})
    )
    skipped.update(ensemble_skipped)
    if any("slow" in ROUTERS[n].needs for n in names):
        _check_finetune_settings(options.finetune)
    seed_splits = splits(
        data,
        options.seeds,
        test_share=options.test_share,
        use_split_column=options.use_split_column,
    )
    embeddings = _LazyEmbeddings(data, options.encoder, progress)
    if any("embeddings" in ROUTERS[n].needs for n in names):
        try:
            embeddings()
        except (ArtifactError, ImportError) as exc:
            for name in [n for n in names if "embeddings" in ROUTERS[n].needs]:
                skipped[name] = f"no sentence encoder: {exc}"
                names.remove(name)

    per_router: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    baselines, votes = [], []
    per_router.update({name: [] for name in ensemble_names})
    total = len(seed_splits) * (len(names) + len(ensemble_names))
    done = 0
    count = len(names) + len(ensemble_names)
    with progress.phase(f"evaluating {count} routers on {len(seed_splits)} split(s)"):
        for split in seed_splits:
            base = split_baselines(data, split)
            baselines.append(base)
            vote = majority_vote(data, split)
            if vote is not None:
                vote["oracle_gap_closed"] = finite(
                    oracle_gap_closed(
                        vote["accuracy"], base["best_single_accuracy"], base["oracle_accuracy"]
                    )
                )
                votes.append(vote)
            for name in names:
                ctx = RouterContext(
                    data=data,
                    split=split,
                    train=split.train,
                    predict=split.test,
                    embeddings=embeddings,
                    progress=SilentProgress(),
                    pair=pair,
                    finetune=dict(options.finetune),
                )
                output, seconds = run_router(ROUTERS[name], ctx)
                figures = score_output(data, split, output, base, pair=pair)
                figures["seconds"] = seconds
                per_router[name].append(figures)
                done += 1
                progress.update(done, total)
                progress.note(
                    f"seed {split.seed} {name:<20} accuracy {figures['accuracy']:.4f} "
                    f"cost {figures['cost']:.2f} ({seconds:.1f}s)"
                )
            shared = EnsembleContext(data, split, base, pair, options.ensembles)
            for name in ensemble_names:
                figures = run_ensemble(name, shared)
                per_router[name].append(figures)
                done += 1
                progress.update(done, total)
                progress.note(
                    f"seed {split.seed} {name:<20} accuracy {figures['accuracy']:.4f} "
                    f"cost {figures['cost']:.2f} ({figures['seconds']:.1f}s)"
                )

    entries = {name: ROUTERS[name] for name in names} | {
        name: ENSEMBLES[name] for name in ensemble_names
    }
    return {
        "herd_version": __version__,
        "python": platform.python_version(),
        "data": data.info,
        "split": {
            "method": seed_splits[0].method,
            "seeds": list(options.seeds),
            "test_share": options.test_share if seed_splits[0].method == "seeded" else None,
            "n_train": [len(s.train) for s in seed_splits],
            "n_test": [len(s.test) for s in seed_splits],
            # Identifies each split's held-out rows, so reports from two runs (e.g. a GPU
            # run of the fine-tuning routers) can be checked to be on the same questions.
            "test_sha256": [_rows_digest(data, s.test) for s in seed_splits],
        },
        "pair": {"strong": options.pair[0], "weak": options.pair[1]} if options.pair else None,
        "cost_weights": list(COST_WEIGHTS),
        "baselines": {"per_seed": baselines, "summary": _baseline_summary(baselines)},
        "majority_vote": _summarise_votes(votes),
        "routers": {
            name: {
                "family": spec.family,
                "description": spec.description,
                "summary": _summarise(per_router[name]),
                "per_seed": per_router[name],
            }
            for name, spec in entries.items()
        },
        "skipped": skipped,
    }


class _LazyEmbeddings:
    """The table's embeddings, computed (or read from the cache) on first use."""

    def __init__(self, data: EvalData, encoder: str | None, progress: Progress) -> None:
        self._data, self._encoder, self._progress = data, encoder, progress
        self._value: npt.NDArray[np.float32] | None = None

    def __call__(self) -> npt.NDArray[np.float32]:
        if self._value is None:
            self._value = table_embeddings(
                self._data.texts, encoder=self._encoder, progress=self._progress
            )
        return self._value


def _check_finetune_settings(settings: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from langchain_herd.training.params import FinetuneParams

    cap = settings.get("max_train_rows")
    if cap is not None and (not isinstance(cap, int) or cap < 10):
        raise ConfigError(f"finetune max_train_rows must be an integer >= 10, got {cap!r}")
    try:
        FinetuneParams(**{k: v for k, v in settings.items() if k != "max_train_rows"})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"bad fine-tuning setting(s): {problems} (settings: "
            f"{', '.join(FinetuneParams.model_fields)}, max_train_rows)"
        ) from exc


def _rows_digest(data: EvalData, rows: npt.NDArray[np.intp]) -> str:
    texts = data.texts
    digest = hashlib.sha256()
    for i in rows:
        digest.update(hashlib.sha256(texts[int(i)].encode("utf-8")).digest())
    return digest.hexdigest()[:16]


def _pair_indices(data: EvalData, pair: tuple[str, str] | None) -> tuple[int, int] | None:
    if pair is None:
        return None
    strong, weak = pair
    missing = [m for m in pair if m not in data.models]
    if missing or strong == weak:
        raise ConfigError(
            f"the strong/weak pair must be two different herd models; got {list(pair)}, herd "
            f"{data.models}"
        )
    return data.models.index(strong), data.models.index(weak)


def _select_routers(
    data: EvalData, options: EvalOptions, pair: tuple[int, int] | None
) -> tuple[list[str], dict[str, str]]:
    # A name given twice would run twice per seed and count every split twice.
    asked = list(dict.fromkeys(options.routers)) if options.routers else None
    if asked:
        unknown = [n for n in asked if n not in ROUTERS]
        if unknown:
            raise ConfigError(f"unknown router(s) {unknown}; known: {[*ROUTERS, *ENSEMBLES]}")
    candidates = asked or default_routers(include_slow=options.include_slow)
    names, skipped = [], {}
    for name in candidates:
        needs = ROUTERS[name].needs
        labels = [n.split(":", 1)[1] for n in needs if n.startswith("label:")]
        missing = [c for c in labels if c not in data.labels]
        if missing:
            skipped[name] = f"the table has no {missing[0]!r} column"
        elif "pair" in needs and pair is None:
            skipped[name] = "needs a strong/weak pair (--pair STRONG WEAK)"
        else:
            names.append(name)
    if not asked and not options.include_slow:
        for name in default_routers(include_slow=True):
            if (
                name not in names
                and name not in skipped
                and ("pair" not in ROUTERS[name].needs or pair is not None)
            ):
                skipped[name] = "fine-tuning: slow on a CPU; add --with-finetune (or --routers)"
    return names, skipped


def _stats(values: list[float | None]) -> dict[str, Any] | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return None
    array = np.asarray(known)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": len(array),
    }


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in (*_SCALARS, "seconds"):
        if any(key in run for run in runs):
            summary[key] = _stats([run.get(key) for run in runs])
    models = list(runs[0]["shares"])
    summary["shares"] = {m: float(np.mean([run["shares"][m] for run in runs])) for m in models}
    labels = sorted({label for run in runs for label in run["by_label"]})
    summary["by_label"] = {
        label: float(np.mean([run["by_label"][label] for run in runs if label in run["by_label"]]))
        for label in labels
    }
    summary["frontier"] = [
        {
            "cost_weight": point["cost_weight"],
            "cost": float(np.mean([run["frontier"][i]["cost"] for run in runs])),
            "accuracy": float(np.mean([run["frontier"][i]["accuracy"] for run in runs])),
        }
        for i, point in enumerate(runs[0]["frontier"])
    ]
    if "pgr_curve" in runs[0]:
        curves = np.asarray(
            [[np.nan if v is None else v for v in run["pgr_curve"]["pgr"]] for run in runs]
        )
        summary["pgr_curve"] = {
            "share": runs[0]["pgr_curve"]["share"],
            "pgr": [finite(v) for v in np.nanmean(curves, axis=0)],
        }
    return summary


def _baseline_summary(baselines: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("best_single_accuracy", "best_single_cost", "oracle_accuracy", "reference_accuracy")
    summary: dict[str, Any] = {
        key: _stats([b.get(key) for b in baselines]) for key in keys if key in baselines[0]
    }
    summary["best_single_chosen"] = sorted({b["best_single"] for b in baselines})
    summary["models"] = {
        m: {
            "accuracy": float(np.mean([b["models"][m]["accuracy"] for b in baselines])),
            "cost": baselines[0]["models"][m]["cost"],
        }
        for m in baselines[0]["models"]
    }
    return summary


def _summarise_votes(votes: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not votes:
        return None
    return {
        "accuracy": _stats([v["accuracy"] for v in votes]),
        "cost": votes[0]["cost"],
        "oracle_gap_closed": _stats([v["oracle_gap_closed"] for v in votes]),
        "per_seed": votes,
    }
