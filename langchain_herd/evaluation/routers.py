"""The routers ``herd eval`` compares: bounds, baselines, published routers and this project's.

Every router trains on a split's training rows only (tuning on a validation share carved
from them; the margin policy on out-of-fold predictions over all of them) and returns, for
the held-out rows, a utility per herd model: its predicted correctness where the router
predicts one. The scorer then applies the policies (argmax,
cost-weighted, strong/weak threshold) to those utilities. Routers are looked up by name in
:data:`ROUTERS`; each declares what it needs (embeddings, a label column, a strong/weak
pair, a GPU-sized budget) so the harness can skip the ones a table cannot support.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_herd.evaluation.data import EvalData, EvalSplit
from langchain_herd.training.data import Mode, TrainingData
from langchain_herd.training.progress import Progress

__all__ = [
    "ROUTERS",
    "RouterContext",
    "RouterOutput",
    "RouterSpec",
    "default_routers",
    "tune_margin",
]

Array = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]

_SHRINK = 5.0  # pseudo-questions pulling a small group's accuracy toward the overall rate
_KNN_GRID = (5, 10, 20, 50, 100)
_MARGIN_GRID = tuple(round(x, 3) for x in np.arange(0.0, 0.31, 0.02))
_MARGIN_FOLDS = 5


@dataclass
class RouterContext:
    """What a router sees: the data, which rows to train on and which to score.

    Example:
        >>> ctx = RouterContext(data, split, split.train, split.test,  # doctest: +SKIP
        ...                     embeddings=lambda: vectors, progress=SilentProgress())
        >>> ROUTERS["knn"].run(ctx).utilities.shape  # doctest: +SKIP
        (1362, 8)
    """

    data: EvalData
    split: EvalSplit
    train: Rows
    predict: Rows
    embeddings: Callable[[], npt.NDArray[np.float32]]
    progress: Progress
    pair: tuple[int, int] | None = None
    """``(strong, weak)`` herd indices for a strong/weak evaluation."""
    finetune: dict[str, Any] = field(default_factory=dict)
    """Settings for the fine-tuning routers (``FinetuneParams`` fields, ``max_train_rows``)."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """Hyperparameters an earlier fit of the same router chose (its ``details``), reused
    instead of selected again: the margin policy's out-of-fold refits."""

    @property
    def seed(self) -> int:
        return self.split.seed

    def carve(self, share: float = 0.15) -> tuple[Rows, Rows]:
        """Seeded ``(fit, validation)`` rows from the training rows."""
        order = np.random.default_rng([self.seed, 7]).permutation(self.train)
        n_val = max(1, round(share * len(order)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def narrowed(
        self, train: Rows, predict: Rows, fixed: dict[str, Any] | None = None
    ) -> RouterContext:
        """The same context over other training and scored rows (and ``fixed``, if given)."""
        return RouterContext(
            self.data,
            self.split,
            train,
            predict,
            self.embeddings,
            self.progress,
            self.pair,
            self.finetune,
            self.fixed if fixed is None else fixed,
        )

    def folds(self, k: int = 5) -> list[Rows]:
        """``k`` seeded, disjoint, sorted folds covering the training rows."""
        order = np.random.default_rng([self.seed, 17]).permutation(self.train)
        return [np.sort(part) for part in np.array_split(order, k)]

    def texts(self, rows: Rows) -> list[str]:
        all_texts = self.data.texts
        return [all_texts[i] for i in rows]


@dataclass
class RouterOutput:
    """A router's verdict on the scored rows.

    Example:
        >>> RouterOutput(np.array([[0.7, 0.4]]), probabilities=True).utilities.argmax()
        np.int64(0)
    """

    utilities: Array
    """``(rows, models)``: higher is better; predicted correctness where ``probabilities``."""
    probabilities: bool
    """Whether ``utilities`` are predicted probabilities of a correct answer (for ECE)."""
    pair_score: Array | None = None
    """For strong/weak pairs: need for the strong model (default: utility difference)."""
    details: dict[str, Any] = field(default_factory=dict)


RouterFn = Callable[[RouterContext], RouterOutput]


@dataclass(frozen=True)
class RouterSpec:
    """A router by name: what it is, what it needs, and how to run it.

    Example:
        >>> ROUTERS["mf"].family, sorted(ROUTERS["mf"].needs)
        ('published', ['embeddings'])
    """

    name: str
    family: str
    """``bound``, ``baseline``, ``published`` (from the routing literature) or ``project``."""
    description: str
    run: RouterFn
    needs: frozenset[str] = frozenset()
    """Of ``embeddings``, ``label:<column>``, ``pair``, ``slow`` (fine-tuning: opt-in)."""


# ---------------------------------------------------------------- bounds and baselines


def _oracle(ctx: RouterContext) -> RouterOutput:
    y = ctx.data.correct[ctx.predict]
    # Among correct models the cheapest; the tiny cost term never outweighs correctness.
    u = y - 1e-6 * ctx.data.costs / ctx.data.costs.max()
    pair = None
    if ctx.pair is not None:
        pair = y[:, ctx.pair[0]] - y[:, ctx.pair[1]]
    return RouterOutput(u, probabilities=False, pair_score=pair)


def _random(ctx: RouterContext) -> RouterOutput:
    rng = np.random.default_rng([ctx.seed, 11])
    u = rng.random((len(ctx.predict), len(ctx.data.models)))
    return RouterOutput(u, probabilities=False)


def _train_rates(ctx: RouterContext) -> Array:
    return np.asarray(ctx.data.correct[ctx.train].mean(axis=0), dtype=np.float64)


def _best_single(ctx: RouterContext) -> RouterOutput:
    rates = _train_rates(ctx)
    u = np.tile(rates, (len(ctx.predict), 1))
    return RouterOutput(u, probabilities=True, details={"train_accuracy": rates.tolist()})


def _rates_by_label(ctx: RouterContext, column: str) -> dict[str, Array]:
    """Each model's training accuracy per label value, shrunk toward its overall rate
    (a label seen in few training questions says little)."""
    labels = ctx.data.labels[column][ctx.train]
    overall = _train_rates(ctx)
    y = ctx.data.correct[ctx.train]
    rates: dict[str, Array] = {}
    for value in np.unique(labels):
        rows = labels == value
        rates[str(value)] = (y[rows].sum(axis=0) + _SHRINK * overall) / (rows.sum() + _SHRINK)
    return rates


def _label_rates(ctx: RouterContext, column: str) -> Array:
    """Per scored row, the rates of its label (the overall rate for a label unseen in train)."""
    rates, overall = _rates_by_label(ctx, column), _train_rates(ctx)
    return np.vstack([rates.get(str(v), overall) for v in ctx.data.labels[column][ctx.predict]])


def _per_label(column: str) -> RouterFn:
    def run(ctx: RouterContext) -> RouterOutput:
        return RouterOutput(_label_rates(ctx, column), probabilities=True)

    return run


# ---------------------------------------------------------------- embedding routers


def _knn(ctx: RouterContext) -> RouterOutput:
    """Mean correctness of the k most similar training questions (k by validation Brier)."""
    x = ctx.embeddings()
    y = ctx.data.correct
    fit, val = ctx.carve()
    prior = y[fit].mean(axis=0)
    briers = [
        float(np.mean((_knn_predict(x[fit], y[fit], x[val], k, prior) - y[val]) ** 2))
        for k in _KNN_GRID
    ]
    k = _KNN_GRID[int(np.argmin(briers))]
    u = _knn_predict(x[ctx.train], y[ctx.train], x[ctx.predict], k, y[ctx.train].mean(axis=0))
    return RouterOutput(u, probabilities=True, details={"k": k, "val_brier": briers})


def _knn_predict(
    x_train: npt.NDArray[np.float32],
    y_train: Array,
    x_query: npt.NDArray[np.float32],
    k: int,
    prior: Array,
) -> Array:
    k = min(k, len(x_train))
    out = np.empty((len(x_query), y_train.shape[1]))
    for start in range(0, len(x_query), 1024):  # bounded memory: 1024 x n_train similarities
        sims = x_query[start : start + 1024] @ x_train.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        # One pseudo-neighbour at the prior keeps tiny k from predicting hard 0s and 1s.
        out[start : start + 1024] = (y_train[nearest].sum(axis=1) + prior) / (k + 1)
    return out


def _matrix_factorisation(ctx: RouterContext) -> RouterOutput:
    """RouteLLM's MF router: ``w . (normalize(v_model) * W q) + b_model``, trained with
    binary cross-entropy on per-model correctness, early-stopped on validation loss."""
    import torch

    x = torch.from_numpy(ctx.embeddings())
    y = torch.from_numpy(ctx.data.correct).float()
    fit, val = ctx.carve()
    torch.manual_seed(ctx.seed)
    n_models, dim = len(ctx.data.models), 128
    proj = torch.nn.Linear(x.shape[1], dim, bias=False)
    model_vectors = torch.nn.Parameter(torch.randn(n_models, dim) * 0.1)
    head = torch.nn.Linear(dim, 1, bias=False)
    prior = y[torch.from_numpy(fit)].mean(dim=0).clamp(1e-3, 1 - 1e-3)
    bias = torch.nn.Parameter(torch.log(prior / (1 - prior)))
    parameters = [*proj.parameters(), model_vectors, *head.parameters(), bias]
    optimiser = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=1e-4)

    def logits(rows: torch.Tensor) -> torch.Tensor:
        q = proj(x[rows])  # (n, dim)
        v = torch.nn.functional.normalize(model_vectors, dim=1)  # (m, dim)
        return head(q[:, None, :] * v[None, :, :]).squeeze(-1) + bias

    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    fit_t, val_t = torch.from_numpy(fit), torch.from_numpy(val)
    best, best_state, stale, epochs = float("inf"), None, 0, 0
    generator = torch.Generator().manual_seed(ctx.seed)
    for epoch in range(1, 301):
        epochs = epoch
        for rows in fit_t[torch.randperm(len(fit_t), generator=generator)].split(256):
            optimiser.zero_grad()
            loss_fn(logits(rows), y[rows]).backward()
            optimiser.step()
        with torch.no_grad():
            val_loss = float(loss_fn(logits(val_t), y[val_t]))
        if val_loss < best - 1e-5:
            best, stale = val_loss, 0
            best_state = [p.detach().clone() for p in parameters]
        else:
            stale += 1
            if stale >= 10:
                break
    assert best_state is not None
    with torch.no_grad():
        for p, saved in zip(parameters, best_state, strict=True):
            p.copy_(saved)
        u = torch.sigmoid(logits(torch.from_numpy(ctx.predict))).double().numpy()
    return RouterOutput(u, probabilities=True, details={"epochs": epochs, "val_loss": best})


def _embedding_head(ctx: RouterContext) -> RouterOutput:
    """The project's ``embedding`` backend: a head on frozen MiniLM embeddings (linear or
    MLP, whichever has the lower validation loss), per-model correctness."""
    import torch

    from langchain_herd.classifiers.embedding import scores_to_proba
    from langchain_herd.training.embedding import train_head
    from langchain_herd.training.params import EmbeddingParams

    x = ctx.embeddings()
    y = ctx.data.correct
    fit, val = ctx.carve()
    params = EmbeddingParams()
    best: tuple[float, str, Any] | None = None
    # A refit with the head already chosen trains that head only.
    for head_type in [ctx.fixed["head"]] if "head" in ctx.fixed else ["linear", "mlp"]:
        module, info = train_head(
            x[fit], y[fit], x[val], y[val], "correctness", y.shape[1], head_type, params, ctx.seed
        )
        if best is None or info["best_val_loss"] < best[0]:
            best = (info["best_val_loss"], head_type, module)
    assert best is not None
    with torch.no_grad():
        logits = best[2](torch.from_numpy(x[ctx.predict])).numpy()
    return RouterOutput(
        scores_to_proba(logits, "correctness"), probabilities=True, details={"head": best[1]}
    )


# ---------------------------------------------------------------- project backends


def _fit_backend(
    ctx: RouterContext,
    backend: str,
    targets: npt.NDArray[Any],
    labels: list[str],
    params: Any,
    mode: Mode = "correctness",
) -> Any:
    """Train one of the project's backends on the training rows (``targets`` per row)."""
    from langchain_herd.training.backends import get_backend

    fit, val = ctx.carve()
    rows = {int(r): i for i, r in enumerate(ctx.train)}
    train_data = TrainingData(ctx.texts(ctx.train), targets, labels, mode)
    fit_data = train_data.subset(np.asarray([rows[int(r)] for r in fit], dtype=np.intp))
    val_data = train_data.subset(np.asarray([rows[int(r)] for r in val], dtype=np.intp))
    engine = get_backend(backend)
    return engine.fit(train_data, fit_data, val_data, params, seed=ctx.seed, progress=ctx.progress)


def _tfidf_correctness(ctx: RouterContext) -> RouterOutput:
    """The project's ``tfidf`` backend: per-model logistic regression on TF-IDF features
    (C per model chosen on validation rows, or ``ctx.fixed["C"]`` when refitting)."""
    from langchain_herd.classifiers.tfidf import TfidfCorrectnessClassifier
    from langchain_herd.training.params import TfidfParams

    params = TfidfParams()
    y = ctx.data.correct[ctx.train]
    if "C" in ctx.fixed:
        # The same fit the backend's final refit makes, without its C search.
        classifier: Any = TfidfCorrectnessClassifier.fit(
            ctx.texts(ctx.train),
            y,
            ctx.data.models,
            C=ctx.fixed["C"],
            max_features=params.max_features,
            ngram_range=params.ngram_range,
            sublinear_tf=params.sublinear_tf,
            min_df=params.min_df,
            max_iter=params.max_iter,
        )
        chosen = list(ctx.fixed["C"])
    else:
        classifier = _fit_backend(ctx, "tfidf", y, ctx.data.models, params)
        selection = classifier.metadata["selection"]
        grid = selection["C_grid"]
        chosen = [
            float(grid[int(np.argmin(selection["val_log_loss"][m]))]) for m in ctx.data.models
        ]
    return RouterOutput(
        classifier.predict_proba(ctx.texts(ctx.predict)),
        probabilities=True,
        details={"C": chosen},
    )


def _hivemind_tfidf(ctx: RouterContext) -> RouterOutput:
    """Hivemind: a TF-IDF classifier predicts the MMLU group; each model's expected
    correctness is its per-group training accuracy weighted by the group probabilities."""
    from langchain_herd.training.backends import get_backend
    from langchain_herd.training.params import TfidfParams

    labels = ctx.data.labels["group"]
    names = sorted({str(v) for v in labels[ctx.train]})
    index = {name: i for i, name in enumerate(names)}
    fit, val = ctx.carve()

    def data(rows: Rows) -> TrainingData:
        targets = np.asarray([index[str(v)] for v in labels[rows]], dtype=np.int64)
        return TrainingData(ctx.texts(rows), targets, names, "category")

    classifier = get_backend("tfidf").fit(
        data(ctx.train), data(fit), data(val), TfidfParams(), seed=ctx.seed, progress=ctx.progress
    )
    proba = classifier.predict_proba(ctx.texts(ctx.predict))  # (n, groups)
    rates = _rates_by_label(ctx, "group")
    return RouterOutput(proba @ np.vstack([rates[name] for name in names]), probabilities=True)


def _finetune_params(ctx: RouterContext) -> Any:
    from langchain_herd.training.params import FinetuneParams

    settings = {k: v for k, v in ctx.finetune.items() if k != "max_train_rows"}
    return FinetuneParams(**settings)


def _capped(ctx: RouterContext) -> RouterContext:
    cap = ctx.finetune.get("max_train_rows")
    if cap is None or len(ctx.train) <= cap:
        return ctx
    rng = np.random.default_rng([ctx.seed, 13])
    return ctx.narrowed(np.sort(rng.choice(ctx.train, size=int(cap), replace=False)), ctx.predict)


def _finetune_correctness(ctx: RouterContext) -> RouterOutput:
    """Herd's router: a fine-tuned encoder predicting each model's correctness."""
    ctx = _capped(ctx)
    classifier = _fit_backend(
        ctx, "finetune", ctx.data.correct[ctx.train], ctx.data.models, _finetune_params(ctx)
    )
    return RouterOutput(classifier.predict_proba(ctx.texts(ctx.predict)), probabilities=True)


def _strong_wins(backend: str) -> RouterFn:
    """RouteLLM's classifier routers: predict P(strong right and weak wrong) per query."""

    def run(ctx: RouterContext) -> RouterOutput:
        pair = ctx.pair
        assert pair is not None, "the harness runs pair routers only with a pair"
        if backend == "finetune":
            ctx = _capped(ctx)
            params: Any = _finetune_params(ctx)
        else:
            from langchain_herd.training.params import TfidfParams

            params = TfidfParams()
        strong, weak = pair
        y = ctx.data.correct[ctx.train]
        # A two-class classifier, as RouteLLM's BERT router (soft labels are rounded).
        wins = (y[:, strong] * (1.0 - y[:, weak]) >= 0.5).astype(np.int64)
        classifier = _fit_backend(
            ctx, backend, wins, ["no_gain", "strong_wins"], params, mode="category"
        )
        p = classifier.predict_proba(ctx.texts(ctx.predict))[:, 1]
        u = np.zeros((len(p), len(ctx.data.models)))
        u[:, strong], u[:, weak] = p, 1.0 - p
        return RouterOutput(u, probabilities=False, pair_score=p)

    return run


# ---------------------------------------------------------------- policies


def _with_margin(base: RouterFn, folds: int = _MARGIN_FOLDS) -> RouterFn:
    """The project's margin policy on a router: stay on the best single model (chosen on
    train) unless another model's predicted correctness beats it by more than the margin.

    The margin is tuned on out-of-fold predictions over every training row (``folds``
    refits, each with the hyperparameters the full fit chose), and the router that scores
    the held-out rows is the one fitted on all training rows. A 15% validation carve, the
    earlier way, tunes on a sixth as many rows and scores with a router fitted on fewer.
    """

    def run(ctx: RouterContext) -> RouterOutput:
        full = base(ctx)
        default = int(np.argmax(_train_rates(ctx)))
        oof = np.empty((len(ctx.train), len(ctx.data.models)))
        position = {int(r): i for i, r in enumerate(ctx.train)}
        for fold in ctx.folds(folds):
            rest = np.setdiff1d(ctx.train, fold, assume_unique=True)
            held = base(ctx.narrowed(rest, fold, fixed=full.details))
            oof[[position[int(r)] for r in fold]] = held.utilities
        margin, accuracies = tune_margin(oof, ctx.data.correct[ctx.train], default)
        u = full.utilities.copy()
        u[:, default] += margin
        return RouterOutput(
            u,
            probabilities=False,
            pair_score=full.pair_score,
            details={
                **full.details,
                "margin": margin,
                "default": ctx.data.models[default],
                "margin_tuning": f"{folds}-fold out-of-fold over the training rows",
                "oof_accuracy": [round(a, 5) for a in accuracies],
            },
        )

    return run


def tune_margin(
    utilities: Array, correct: Array, default: int, grid: Sequence[float] = _MARGIN_GRID
) -> tuple[float, list[float]]:
    """The margin of ``grid`` whose policy is most accurate on these rows, and every
    margin's accuracy. Ties go to the larger margin: leaving the default should need
    evidence.

    Example:
        >>> u = np.array([[0.5, 0.6], [0.5, 0.9]]); y = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> tune_margin(u, y, default=0, grid=[0.0, 0.2, 0.5])[0]
        0.2
    """
    rows = np.arange(len(utilities))
    accuracies = []
    for margin in grid:
        boosted = utilities.copy()
        boosted[:, default] += margin
        accuracies.append(float(correct[rows, boosted.argmax(axis=1)].mean()))
    best = max(accuracies)
    margin = max(m for m, a in zip(grid, accuracies, strict=True) if a == best)
    return float(margin), accuracies


ROUTERS: dict[str, RouterSpec] = {
    spec.name: spec
    for spec in [
        RouterSpec("oracle", "bound", "a correct model whenever one exists (upper bound)", _oracle),
        RouterSpec("random", "baseline", "a model drawn at random per query", _random),
        RouterSpec("best-single", "baseline", "always the model best on train", _best_single),
        RouterSpec(
            "group-best",
            "baseline",
            "per MMLU group, the model best on train (Hivemind, true group)",
            _per_label("group"),
            frozenset({"label:group"}),
        ),
        RouterSpec(
            "subject-best",
            "baseline",
            "per subject, the model best on train (true subject)",
            _per_label("subject"),
            frozenset({"label:subject"}),
        ),
        RouterSpec(
            "knn",
            "published",
            "kNN over MiniLM embeddings: neighbours' mean correctness",
            _knn,
            frozenset({"embeddings"}),
        ),
        RouterSpec(
            "mf",
            "published",
            "matrix factorisation over (query embedding, model), RouteLLM",
            _matrix_factorisation,
            frozenset({"embeddings"}),
        ),
        RouterSpec(
            "strong-wins-tfidf",
            "published",
            "P(strong wins) by TF-IDF logistic regression (RouteLLM-style classifier)",
            _strong_wins("tfidf"),
            frozenset({"pair"}),
        ),
        RouterSpec(
            "strong-wins-finetune",
            "published",
            "P(strong wins) by a fine-tuned MiniLM (RouteLLM's BERT router)",
            _strong_wins("finetune"),
            frozenset({"pair", "slow"}),
        ),
        RouterSpec(
            "hivemind-tfidf",
            "published",
            "TF-IDF group classifier, then per-group accuracy (Hivemind)",
            _hivemind_tfidf,
            frozenset({"label:group"}),
        ),
        RouterSpec(
            "tfidf",
            "project",
            "tfidf backend: per-model correctness (Herd-style), argmax",
            _tfidf_correctness,
        ),
        RouterSpec(
            "tfidf+margin",
            "project",
            "tfidf backend with the margin policy (margin tuned out-of-fold on train)",
            _with_margin(_tfidf_correctness),
        ),
        RouterSpec(
            "embedding",
            "project",
            "embedding backend: MiniLM + head, per-model correctness (Herd-style), argmax",
            _embedding_head,
            frozenset({"embeddings"}),
        ),
        RouterSpec(
            "embedding+margin",
            "project",
            "embedding backend with the margin policy (margin tuned out-of-fold on train)",
            _with_margin(_embedding_head),
            frozenset({"embeddings"}),
        ),
        RouterSpec(
            "finetune",
            "project",
            "finetune backend: fine-tuned MiniLM per-model correctness (Herd's router)",
            _finetune_correctness,
            frozenset({"slow"}),
        ),
    ]
}
"""Every router by name, in report order."""


def default_routers(*, include_slow: bool = False) -> list[str]:
    """The routers run when none are named (the fine-tuning ones only when asked)."""
    return [name for name, spec in ROUTERS.items() if include_slow or "slow" not in spec.needs]


def run_router(spec: RouterSpec, ctx: RouterContext) -> tuple[RouterOutput, float]:
    """Run one router; return its output and the seconds it took (training included)."""
    start = time.perf_counter()
    output = spec.run(ctx)
    return output, time.perf_counter() - start
