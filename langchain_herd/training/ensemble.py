"""Train a cascade or a learned vote from a correctness table plus an answers table.

``herd train --kind cascade|learned-vote`` lands here. The fitting itself, with every choice
made out-of-fold, is :mod:`langchain_herd.ensembles.training`; this module reads and lines up
the two tables, picks the rows, resolves costs and the optional text scores, saves the JSON
artifact (what a config's ``router.ensemble.scorer`` points at) and reports what was chosen.

Example:
    .. code-block:: python

        result = train_cascade(
            "correctness.parquet", "answers.parquet", out="cascade.json",
            weak="llama-8b", strong="llama-70b", costs={"llama-8b": 8, "llama-70b": 70},
        )
        print(result.report())
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd.errors import ArtifactError, ConfigError
from langchain_herd.tables import (
    AnswersTable,
    CorrectnessTable,
    TableError,
    read_answers_table,
    read_correctness_table,
)
from langchain_herd.training.progress import Progress, SilentProgress

__all__ = [
    "EnsembleTrainResult",
    "TextScoresHow",
    "text_scores_from_router",
    "train_cascade",
    "train_learned_vote",
]

RowsChoice = Literal["all", "train"]
TextScoresHow = Literal["auto", "artifact", "refit"]
KeepChoice = Literal["first", "vote", "auto"]
ObjectiveChoice = Literal["auto", "frontier", "apgr"]

# Escalation shares whose out-of-fold operating points the report shows, besides the default.
_SHOWN_SHARES = (0.25, 0.5)
# Five folds need rows on both sides of each; fewer than this and out-of-fold figures are noise.
_MIN_ROWS = 20


@dataclass
class EnsembleTrainResult:
    """What :func:`train_cascade` or :func:`train_learned_vote` did.

    Example:
        >>> result = train_learned_vote("c.parquet", "a.parquet", out="vote.json")  # doctest: +SKIP
        >>> print(result.report())  # doctest: +SKIP
    """

    out: Path
    """The JSON artifact written."""
    kind: Literal["cascade", "learned-vote"]
    """What was trained."""
    data: dict[str, Any]
    """The two tables (files, sha256), the rows used and those dropped."""
    text: dict[str, Any] | None
    """Where the text scores came from (router, how, experts), or None without them."""
    summary: dict[str, Any]
    """The figures :meth:`report` prints (chosen helpers, out-of-fold accuracy, ...)."""
    notes: list[str] = field(default_factory=list)
    """Warnings worth reading (e.g. costs of one call each)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["out"] = str(self.out)
        return out

    def report(self) -> str:
        """A short human-readable summary (what ``herd train --kind`` prints)."""
        d, s = self.data, self.summary
        lines = [
            f"trained a {self.kind} on {d['rows']} questions of {d['table']['file']} "
            f"(answers: {d['answers']['file']})"
            + (
                f"; {d['rows_dropped']} without a result from every model left out"
                if d["rows_dropped"]
                else ""
            )
        ]
        if self.kind == "cascade":
            helpers = ", ".join(s["helpers"]) or "none"
            weak_cost, strong_cost = s["costs"][s["weak"]], s["costs"][s["strong"]]
            lines += [
                f"  tier 0   {s['weak']} + helpers [{helpers}], keeps "
                + ("the weak model's answer" if s["keep"] == "first" else "the tier's vote"),
                f"  tier 1   {s['strong']}",
                f"  costs    {s['costs_source']}: "
                + ", ".join(f"{m} {c:g}" for m, c in s["costs"].items()),
                f"  out-of-fold at the default threshold {s['threshold']:.3f}: accuracy "
                f"{s['accuracy']:.4f}, escalate share {s['escalate_share']:.3f}, average cost "
                f"{s['cost']:.4g} per query (every call counted)",
                *(
                    f"  escalating at most {p['asked_share']:.0%}: threshold {p['threshold']:.3f}, "
                    f"escalate share {p['escalate_share']:.3f}, accuracy {p['accuracy']:.4f}, "
                    f"average cost {p['cost']:.4g}"
                    for p in s["operating_points"]
                ),
                f"  alone    {s['weak']} {s['weak_accuracy']:.4f} (cost {weak_cost:g}), "
                f"{s['strong']} {s['strong_accuracy']:.4f} (cost {strong_cost:g})",
            ]
        else:
            oof = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
            lines += [
                f"  members  {', '.join(s['members'])} (best first: ties go to the earlier)",
                f"  out-of-fold accuracy {oof} (C={s['c']}); best member "
                f"{s['best_member']} {s['best_member_accuracy']:.4f} on the same rows",
            ]
        if self.text is not None:
            t = self.text
            how = (
                f"refit out-of-fold with its {t['backend']} settings"
                if t["how"] == "refit"
                else "its predictions as they are"
            )
            lines.append(f"  text     {t['router']} for {', '.join(t['experts'])}: {how}")
        lines += [f"  note     {note}" for note in self.notes]
        lines.append(f"artifact {self.out}  (point a config's router.ensemble.scorer at it)")
        return "\n".join(lines)


# ---------------------------------------------------------------- shared steps


def _sha256(path: str) -> str | None:
    file = Path(path)
    return hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None


def _read_tables(
    table: str | Path | CorrectnessTable, answers: str | Path | AnswersTable
) -> tuple[CorrectnessTable, AnswersTable]:
    correct = table if isinstance(table, CorrectnessTable) else read_correctness_table(table)
    answered = answers if isinstance(answers, AnswersTable) else read_answers_table(answers)
    return correct, answered


def _check_models(
    table: CorrectnessTable, answers: AnswersTable, named: Mapping[str, Sequence[str]]
) -> None:
    """Every model named by an option is a column of both tables (the option is named)."""
    for option, models in named.items():
        missing = [m for m in models if m not in table.model_columns]
        if missing:
            raise TableError(
                f"{table.source}: {option} names {missing}, not model column(s) of the "
                f"correctness table; its model columns are {table.model_columns}"
            )
        unanswered = [m for m in models if m not in answers.model_columns]
        if unanswered:
            raise TableError(
                f"{answers.source}: {option} names {unanswered}, which have no answer column; "
                f"its answer columns are {answers.model_columns}"
            )
        if len(set(models)) != len(models):
            raise ConfigError(f"{option} names a model twice: {list(models)}")


def _rows(
    table: CorrectnessTable,
    models: Sequence[str],
    rows: RowsChoice,
    *,
    seed: int,
    test_share: float,
    use_split_column: bool | None,
) -> tuple[CorrectnessTable, dict[str, Any]]:
    """The rows to fit on: all, or a split's training side; only those where every model
    has a result (a cascade or vote is trained on what each member did)."""
    if rows not in ("all", "train"):
        raise ConfigError(f"rows must be 'all' or 'train', got {rows!r}")
    frame = table.frame
    split: dict[str, Any] = {"rows": rows}
    if rows == "train":
        frame = table.split(
            seed=seed, test_share=test_share, use_split_column=use_split_column
        ).train
        split.update(table.split_description(seed, test_share, use_split_column=use_split_column))
    complete = ~np.isnan(table.with_frame(frame).correctness(models)).any(axis=1)
    kept = table.with_frame(frame[complete].reset_index(drop=True))
    if len(kept) < _MIN_ROWS:
        raise TableError(
            f"{table.source}: only {len(kept)} rows have a result from every model of "
            f"{list(models)}"
            + (" among the training rows" if rows == "train" else "")
            + f"; fitting needs at least {_MIN_ROWS}"
        )
    split.update({"n_rows": len(kept), "n_dropped": int((~complete).sum())})
    return kept, split


def _data_info(
    table: CorrectnessTable, answers: AnswersTable, split: dict[str, Any]
) -> dict[str, Any]:
    return {
        "table": {"file": table.source, "sha256": _sha256(table.source)},
        "answers": {"file": answers.source, "sha256": _sha256(answers.source)},
        "rows": split["n_rows"],
        "rows_dropped": split["n_dropped"],
        "split": split,
    }


def text_scores_from_router(
    router: str | Path,
    table: CorrectnessTable,
    experts: Sequence[str],
    *,
    how: TextScoresHow = "auto",
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[npt.NDArray[np.float64], list[str], dict[str, Any]]:
    """A correctness router's predicted correctness on ``table``'s rows, as text features.

    The scorer of a cascade or learned vote must be fitted on text scores like those it will
    see at run time, where the router scores questions it never trained on. A router trained
    on this very table has seen these rows and is over-confident on them, so ``auto`` refits
    its backend with its own settings out-of-fold (5 folds) when the router's training file is
    the table's file (same sha256), and uses its predictions as they are otherwise.

    Args:
        router: a ``herd train --mode correctness`` artifact folder.
        table: the rows to score.
        experts: the models of the cascade or vote; the router's labels among them are used.
        how: ``auto``, ``artifact`` (predictions as they are) or ``refit`` (out-of-fold).
        seed: seeds the folds and the refits.
        progress: receives phases (default: silent).

    Returns:
        ``(scores (rows, T), text_experts, info)``.

    Raises:
        ArtifactError: not a classifier artifact, or one that cannot be refit.
        ConfigError: a category router, or none of its labels is among ``experts``.
    """
    from langchain_herd.classifiers.base import load_classifier, read_artifact_config

    progress = progress or SilentProgress()
    if how not in ("auto", "artifact", "refit"):
        raise ConfigError(f"text scores must be 'auto', 'artifact' or 'refit', got {how!r}")
    path = Path(router)
    classifier = load_classifier(path)
    if classifier.mode != "correctness":
        raise ConfigError(
            f"--text-router {path} is a {classifier.mode} router; text scores are each expert's "
            f"predicted correctness, from a router trained with --mode correctness"
        )
    chosen = [label for label in classifier.labels if label in experts]
    if not chosen:
        raise ConfigError(
            f"--text-router {path} scores {classifier.labels}, none of which is among the "
            f"models trained on ({list(experts)}); use a router trained on this herd's table"
        )
    metadata = read_artifact_config(path).get("metadata") or {}
    trained_on = (metadata.get("data") or {}).get("sha256")
    same_table = trained_on is not None and trained_on == _sha256(table.source)
    if how == "auto":
        how = "refit" if same_table else "artifact"
    info: dict[str, Any] = {
        "router": str(path),
        "experts": chosen,
        "how": how,
        "trained_on_this_table": same_table,
    }
    if how == "artifact":
        with progress.phase(f"scoring {len(table)} questions with {path}"):
            proba = classifier.predict_proba(table.prompts)
        columns = [classifier.labels.index(label) for label in chosen]
        return np.asarray(proba, dtype=np.float64)[:, columns], chosen, info
    backend, params = metadata.get("backend"), metadata.get("params")
    if not isinstance(backend, str) or not isinstance(params, dict):
        raise ArtifactError(
            f"{path}: its metadata records no training backend and settings, so it cannot be "
            f"refit out-of-fold; pass --text-scores artifact (its scores on rows it was trained "
            f"on are over-confident) or retrain it with `herd train --mode correctness`"
        )
    info["backend"] = backend
    with progress.phase(f"refitting {backend} out-of-fold for text scores (5 folds)"):
        scores = _refit_out_of_fold(table.select_models(chosen), backend, params, seed)
    return scores, chosen, info


def _refit_out_of_fold(
    table: CorrectnessTable, backend: str, params: dict[str, Any], seed: int
) -> npt.NDArray[np.float64]:
    from langchain_herd.ensembles.training import folds
    from langchain_herd.training.backends import get_backend
    from langchain_herd.training.data import build_data
    from langchain_herd.training.train import backend_settings

    engine = get_backend(backend)
    settings = backend_settings(engine.params_model, params, backend)
    data, _ = build_data(table, table.frame, "correctness")
    scores = np.empty((len(data), len(data.labels)))
    for held in folds(len(data), seed):
        mask = np.ones(len(data), dtype=bool)
        mask[held] = False
        train = data.subset(np.flatnonzero(mask))
        fit, val = train.carve(0.15, seed)
        classifier = engine.fit(train, fit, val, settings, seed=seed, progress=SilentProgress())
        scores[held] = classifier.predict_proba([data.texts[i] for i in held])
    return scores


def _save(model: Any, out: Path) -> None:
    """Write the artifact and read it back: a file that does not load must not be left."""
    from langchain_herd.ensembles.scorers import load_ensemble_artifact

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    loaded = load_ensemble_artifact(out)
    if json.dumps(loaded.to_dict(), sort_keys=True) != json.dumps(model.to_dict(), sort_keys=True):
        raise ArtifactError(
            f"{out}: the saved artifact does not read back as the trained one; this is a bug, "
            f"please report it"
        )


def _fit_error(exc: ValueError) -> ConfigError:
    return ConfigError(f"cannot fit: {exc}")


# ---------------------------------------------------------------- cascade


def train_cascade(
    table: str | Path | CorrectnessTable,
    answers: str | Path | AnswersTable,
    *,
    out: str | Path,
    weak: str,
    strong: str,
    helpers: Sequence[str] | None = None,
    candidates: Sequence[str] | None = None,
    max_helpers: int = 2,
    keep: KeepChoice = "auto",
    costs: Mapping[str, float | None] | None = None,
    costs_source: str | None = None,
    objective: ObjectiveChoice = "auto",
    text_router: str | Path | None = None,
    text_scores: TextScoresHow = "auto",
    rows: RowsChoice = "all",
    seed: int = 0,
    test_share: float = 0.2,
    use_split_column: bool | None = None,
    progress: Progress | None = None,
) -> EnsembleTrainResult:
    """Fit a two-tier escalation cascade ``[[weak, *helpers], [strong]]`` and save it.

    Args:
        table: the correctness table (0/1 per model).
        answers: its answers table (the letter or text per model, same ids).
        out: the JSON artifact to write.
        weak: the tier's main model. strong: the model escalated to.
        helpers: fixed helpers (``[]``: none); None chooses up to ``max_helpers`` among
            ``candidates`` out-of-fold.
        candidates: the models helpers are chosen from (default: every other model of both
            tables with a known cost, cheaper than ``strong`` when costs are known).
        max_helpers: most helpers chosen.
        keep: what the tier keeps: ``first`` (the weak model's answer), ``vote`` or ``auto``.
        costs: cost per call by model (e.g. active parameters); None: one per call.
        costs_source: where ``costs`` came from, for the report.
        objective: what helper choice maximises: ``frontier`` (accuracy over the cost range
            weak to strong, every call paid), ``apgr`` (RouteLLM's, helpers free), ``auto``
            (frontier with costs, apgr with one per call: with equal costs the frontier is
            one point).
        text_router: a correctness router whose scores join the agreement features.
        text_scores: how to get them (see :func:`text_scores_from_router`).
        rows: ``all`` rows, or the ``train`` side of the table's split (``seed``,
            ``test_share``, ``use_split_column`` as in ``herd train``).
        progress: receives phases (default: silent).

    Raises:
        TableError: tables that cannot be read or do not line up, too few complete rows.
        ConfigError: unknown or repeated models, a model without a cost, bad options.
        ArtifactError: a text router that cannot be used.
    """
    from langchain_herd.ensembles.training import fit_cascade

    progress = progress or SilentProgress()
    if max_helpers < 0:
        raise ConfigError(f"max_helpers must be >= 0, got {max_helpers}")
    if weak == strong:
        raise ConfigError(f"weak and strong must be different models, both are {weak!r}")
    with progress.phase("reading the tables"):
        correct_table, answers_table = _read_tables(table, answers)
    named: dict[str, Sequence[str]] = {"--weak": [weak], "--strong": [strong]}
    if helpers is not None:
        named["--helpers"] = list(helpers)
    if candidates is not None:
        named["--candidates"] = list(candidates)
    _check_models(correct_table, answers_table, named)
    clash = [m for m in [*(helpers or ()), *(candidates or ())] if m in (weak, strong)]
    if clash:
        raise ConfigError(
            f"helpers and candidates cannot include the weak or strong model: {clash}"
        )

    notes: list[str] = []
    unit_costs = costs is None
    cost_of: dict[str, float] = (
        {m: 1.0 for m in correct_table.model_columns}
        if costs is None
        else {m: float(c) for m, c in costs.items() if c is not None}
    )
    if unit_costs:
        notes.append("no costs given: every call costs 1 (give --costs models.json or --config)")
    fixed = [weak, strong, *(helpers or ())]
    no_cost = [m for m in fixed if m not in cost_of]
    if no_cost:
        raise ConfigError(
            f"no cost for {no_cost} in {costs_source or 'the costs given'}; add them (the "
            f"cascade pays every call it makes)"
        )
    if helpers is not None:
        pool: list[str] = []
    elif candidates is not None:
        pool = [m for m in candidates if m in cost_of]
        if len(pool) < len(candidates):
            notes.append(
                f"candidates without a cost left out: {[m for m in candidates if m not in cost_of]}"
            )
    else:
        pool = [
            m
            for m in correct_table.model_columns
            if m in answers_table.model_columns
            and m not in (weak, strong)
            and m in cost_of
            and (unit_costs or cost_of[m] < cost_of[strong])
        ]
    models = [*fixed, *pool]
    chosen_objective: Literal["frontier", "apgr"] = (
        ("apgr" if unit_costs else "frontier") if objective == "auto" else objective
    )
    if objective not in ("auto", "frontier", "apgr"):
        raise ConfigError(f"objective must be auto, frontier or apgr, got {objective!r}")

    rows_table, split = _rows(
        correct_table,
        models,
        rows,
        seed=seed,
        test_share=test_share,
        use_split_column=use_split_column,
    )
    answer_matrix = answers_table.aligned(rows_table, models)
    text, text_experts, text_info = _text(
        text_router, rows_table, models, text_scores, seed, progress, notes
    )
    with progress.phase(
        f"fitting the cascade on {len(rows_table)} rows ("
        + (f"helpers {list(helpers)}" if helpers is not None else f"{len(pool)} helper candidates")
        + ")"
    ):
        try:
            model = fit_cascade(
                rows_table.correctness(models),
                answer_matrix,
                models,
                {m: cost_of[m] for m in models},
                weak=weak,
                strong=strong,
                helpers=helpers,
                helper_candidates=None if helpers is not None else pool,
                max_helpers=max_helpers,
                text_scores=text,
                text_experts=text_experts,
                keep=keep,
                objective=chosen_objective,
                seed=seed,
            )
        except ValueError as exc:
            raise _fit_error(exc) from exc
    data = _data_info(rows_table, answers_table, split)
    model.metadata.update(
        {"trainer": "herd train --kind cascade", "data": data, "text": text_info, "seed": seed}
    )
    out_path = Path(out)
    with progress.phase(f"saving to {out_path}"):
        _save(model, out_path)
    point = _point_at(model.calibration, model.default_threshold)
    operating = [
        {
            "asked_share": share,
            **_point_at(model.calibration, model.threshold_for(escalate_share=share)),
        }
        for share in _SHOWN_SHARES
    ]
    summary = {
        "weak": weak,
        "strong": strong,
        "helpers": list(model.tiers[0][1:]),
        "keep": model.keep,
        "costs": dict(model.costs),
        "costs_source": costs_source or ("one per call" if unit_costs else "given"),
        "objective": chosen_objective,
        "threshold": model.default_threshold,
        "accuracy": point["accuracy"],
        "escalate_share": point["escalate_share"],
        "cost": point["cost"],
        "operating_points": operating,
        "weak_accuracy": model.metadata.get("weak_accuracy"),
        "strong_accuracy": model.metadata.get("strong_accuracy"),
    }
    return EnsembleTrainResult(out_path, "cascade", data, text_info, summary, notes)


def _point_at(points: Sequence[Mapping[str, float]], threshold: float) -> dict[str, float]:
    """The calibration point of ``threshold`` (the nearest one: thresholds come from them)."""
    return dict(min(points, key=lambda p: abs(p["threshold"] - threshold)))


def _text(
    router: str | Path | None,
    table: CorrectnessTable,
    models: Sequence[str],
    how: TextScoresHow,
    seed: int,
    progress: Progress,
    notes: list[str],
) -> tuple[npt.NDArray[np.float64] | None, list[str], dict[str, Any] | None]:
    if router is None:
        return None, [], None
    scores, experts, info = text_scores_from_router(
        router, table, models, how=how, seed=seed, progress=progress
    )
    if info["how"] == "artifact" and info["trained_on_this_table"]:
        notes.append(
            "the text router was trained on this table: its scores on its own training rows "
            "are over-confident, and the scorer may trust them too much (--text-scores refit)"
        )
    return scores, experts, info


# ---------------------------------------------------------------- learned vote


def train_learned_vote(
    table: str | Path | CorrectnessTable,
    answers: str | Path | AnswersTable,
    *,
    out: str | Path,
    members: Sequence[str] | None = None,
    text_router: str | Path | None = None,
    text_scores: TextScoresHow = "auto",
    rows: RowsChoice = "all",
    seed: int = 0,
    test_share: float = 0.2,
    use_split_column: bool | None = None,
    progress: Progress | None = None,
) -> EnsembleTrainResult:
    """Fit a learned vote over ``members`` and save it.

    Args:
        table: the correctness table. answers: its answers table.
        out: the JSON artifact to write.
        members: the voters (default: every model with a column in both tables).
        text_router, text_scores, rows, seed, test_share, use_split_column, progress: as in
            :func:`train_cascade`.

    Raises:
        TableError: tables that cannot be read or do not line up, too few complete rows.
        ConfigError: unknown or repeated members, fewer than two.
        ArtifactError: a text router that cannot be used.
    """
    from langchain_herd.ensembles.training import fit_learned_vote

    progress = progress or SilentProgress()
    with progress.phase("reading the tables"):
        correct_table, answers_table = _read_tables(table, answers)
    if members is None:
        voters = [m for m in correct_table.model_columns if m in answers_table.model_columns]
    else:
        voters = list(members)
        _check_models(correct_table, answers_table, {"--members": voters})
    if len(voters) < 2:
        raise ConfigError(
            f"a vote needs at least two members with a column in both tables, got {voters}"
        )
    rows_table, split = _rows(
        correct_table,
        voters,
        rows,
        seed=seed,
        test_share=test_share,
        use_split_column=use_split_column,
    )
    answer_matrix = answers_table.aligned(rows_table, voters)
    notes: list[str] = []
    text, text_experts, text_info = _text(
        text_router, rows_table, voters, text_scores, seed, progress, notes
    )
    with progress.phase(
        f"fitting the learned vote over {len(voters)} members on {len(rows_table)} rows"
    ):
        try:
            model = fit_learned_vote(
                rows_table.correctness(voters),
                answer_matrix,
                voters,
                members=voters,
                text_scores=text,
                text_experts=text_experts,
                seed=seed,
            )
        except ValueError as exc:
            raise _fit_error(exc) from exc
    data = _data_info(rows_table, answers_table, split)
    model.metadata.update(
        {"trainer": "herd train --kind learned-vote", "data": data, "text": text_info, "seed": seed}
    )
    out_path = Path(out)
    with progress.phase(f"saving to {out_path}"):
        _save(model, out_path)
    # Member accuracy on the same rows, measured here: the comparison the report makes.
    accuracy = np.nanmean(rows_table.correctness(voters), axis=0)
    best = voters[int(np.argmax(accuracy))]
    c = model.metadata.get("c")
    oof = model.metadata.get("oof_accuracy")
    # The fitter records out-of-fold accuracy per C tried (or one figure).
    oof_at_c = oof.get(c, oof.get(str(c))) if isinstance(oof, dict) else oof
    summary = {
        "members": list(model.members),
        "c": c,
        "accuracy": None if oof_at_c is None else float(oof_at_c),
        "best_member": best,
        "best_member_accuracy": float(np.max(accuracy)),
    }
    return EnsembleTrainResult(out_path, "learned-vote", data, text_info, summary, notes)
