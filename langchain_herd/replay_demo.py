"""``herd demo --replay``: a herd of real models, replayed from their recorded answers.

Six real models (five 4-9B ones and Llama-3.1-70B-Instruct, the strong one), each an expert
on the local replay server (:mod:`langchain_herd.server.replay_app`), which answers with the
letter that model chose in TIGER-AI-Lab's MMLU-Pro runs. On a seeded training split of the
bundled MMLU-origin questions the demo trains a TF-IDF correctness router, a cascade and a
learned vote (everything tuned on training rows only, out-of-fold); it then routes, votes and
cascades held-out questions through :class:`~langchain_herd.chat_models.HerdRouter` over the
real HTTP path, and prints accuracy and average cost per query (cost = active parameters in
billions, every call paid) beside the herd's best small member and the strong model on the
same questions. It is a REPLAY: no model runs, so it takes about a minute on two cores.

Needs the ``data``, ``train`` and ``server`` extras' libraries (pyarrow, scikit-learn,
starlette, uvicorn); torch is not loaded.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from langchain_herd.errors import ConfigError, HerdError
from langchain_herd.replay import REPLAY_MODEL_ID, ReplayTable

__all__ = ["REPLAY_HERD", "STRONG_MODEL", "ReplayDemoResult", "run_replay_demo"]

REPLAY_HERD: tuple[str, ...] = (
    "Meta-Llama-3_1-8B-Instruct",
    "Mistral-7B-Instruct-v0.2",
    "Qwen1.5-7B-Chat",
    "gemma-7b",
    "Phi-3-mini-4k-instruct",
    "Meta-Llama-3_1-70B-Instruct",
)
"""The demo herd's models (expert names are the recorded models' names)."""

STRONG_MODEL = "Meta-Llama-3_1-70B-Instruct"
"""The strong, expensive member: the cascade escalates to it."""

TEST_SHARE = 0.2
"""Share of the distinct questions held out; the rest is the training split."""

TEXT_FOLDS = 3
"""Folds of the out-of-fold router scores the cascade, the learned vote and the cost policy
are fitted on (in-sample TF-IDF scores are over-confident; these match what the router gives
on unseen questions)."""

TFIDF_C = 1.0
"""Regularisation of the demo's TF-IDF router: fixed, where ``herd train`` searches a grid
(five times the fits; the demo keeps to a minute)."""

CONCURRENCY = 8
"""Questions in flight at once through each router."""


@dataclass
class Strategy:
    """One way the herd answers, and what it did on the held-out questions."""

    key: str
    label: str
    config: Path | None = None
    correct: list[bool] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    strong: list[bool] = field(default_factory=list)
    answered_by: list[str | None] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        """The summary line as JSON."""
        return {
            "strategy": self.key,
            "label": self.label,
            "accuracy": statistics.fmean(self.correct) if self.correct else 0.0,
            "avg_cost": statistics.fmean(self.cost) if self.cost else 0.0,
            "calls_per_query": statistics.fmean(self.calls) if self.calls else 0.0,
            "strong_share": statistics.fmean(self.strong) if self.strong else 0.0,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class ReplayDemoResult:
    """What :func:`run_replay_demo` measured (also written by ``--out``)."""

    questions: int
    seed: int
    budget: float
    train_rows: int
    train_seconds: float
    route_seconds: float
    strategies: list[dict[str, Any]]
    notes: list[str]
    rows: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-question rows."""
        return {k: v for k, v in self.__dict__.items() if k != "rows"}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _one_thread() -> Iterator[None]:
    # BLAS / OpenMP threads that spin while other processes hold the cores make scikit-learn's
    # logistic regressions up to 20x slower on a small, busy machine (measured: 0.7 s vs 15 s).
    try:
        # Loaded first: a thread pool loaded after the limit is set escapes it (scipy's
        # OpenBLAS comes with the solvers, measured at 12 ms per L-BFGS step unlimited).
        import sklearn.linear_model  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings threadpoolctl; without them, run as configured
        yield
        return
    with threadpool_limits(limits=1):
        yield


def split_rows(table: ReplayTable, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(train, held_out)`` rows over the distinct questions (a question asked under
    two ids is one question: the server answers the first, and it never straddles a split)."""
    rows = np.asarray(table.unique_rows)
    order = np.random.default_rng([seed, 10]).permutation(len(rows))
    n_test = round(TEST_SHARE * len(rows))
    return sorted(rows[order[n_test:]].tolist()), rows[order[:n_test]].tolist()


def _fit_router(texts: list[str], correct: npt.NDArray[Any], models: list[str]) -> Any:
    from langchain_herd.classifiers.tfidf import TfidfCorrectnessClassifier

    # Unigrams: bigrams cost five times the vectorising time here for no measured gain.
    return TfidfCorrectnessClassifier.fit(
        texts, correct.astype(np.float64), models, C=TFIDF_C, ngram_range=(1, 1)
    )


def oof_scores(
    texts: list[str], correct: npt.NDArray[Any], models: list[str], seed: int
) -> npt.NDArray[np.float64]:
    """Out-of-fold predicted correctness of every model on the training rows.

    The TF-IDF vocabulary is fitted once on all training texts (it reads no labels), then
    each fold's logistic regressions: a third of the work of refitting everything per fold.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from langchain_herd.classifiers.tfidf import DEFAULT_TOKEN_PATTERN

    features = TfidfVectorizer(
        ngram_range=(1, 1), sublinear_tf=True, token_pattern=DEFAULT_TOKEN_PATTERN
    ).fit_transform(texts)
    out = np.zeros(correct.shape, dtype=np.float64)
    fold = np.random.default_rng([seed, 11]).permutation(len(texts)) % TEXT_FOLDS
    for f in range(TEXT_FOLDS):
        held, kept = fold == f, fold != f
        for j in range(len(models)):
            y = correct[kept, j]
            if y.min() == y.max():  # one class only: predict its rate
                out[held, j] = float(y[0])
                continue
            model = LogisticRegression(C=TFIDF_C, max_iter=2000).fit(features[kept], y)
            out[held, j] = model.predict_proba(features[held])[:, 1]
    return out


def cost_weight_for(
    scores: npt.NDArray[np.float64],
    correct: npt.NDArray[Any],
    costs: npt.NDArray[np.float64],
    budget: float,
) -> float:
    """The ``cost`` policy's weight with the best accuracy whose average cost stays within
    ``budget``, on (out-of-fold) training scores."""
    best: tuple[float, float] | None = None
    for weight in np.round(np.linspace(0.0, 0.02, 81), 5):
        chosen = (scores - weight * costs).argmax(axis=1)
        if costs[chosen].mean() > budget:
            continue
        accuracy = float(correct[np.arange(len(chosen)), chosen].mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, float(weight))
    return best[1] if best is not None else 0.02


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def herd_config(
    table: ReplayTable,
    models: Sequence[str],
    port: int,
    classifier: Path,
    *,
    name: str,
    policy: dict[str, Any],
    ensemble: dict[str, Any] | None = None,
    default_expert: str,
) -> dict[str, Any]:
    """A herd config (as YAML data) of replayed experts on one local replay server; half the
    experts speak TGI's generate route and half the OpenAI chat route, as in ``bundled:local``."""
    url = f"http://127.0.0.1:{port}"
    experts = []
    for index, model in enumerate(models):
        expert: dict[str, Any] = {
            "name": model,
            "url": url,
            "protocol": "openai" if index % 2 == 0 else "tgi",
            # One replay server, the recorded model chosen by adapter, as on a multi-LoRA server.
            "model_id": REPLAY_MODEL_ID,
            "adapter_id": model,
            "description": f"REPLAY of {model}'s recorded MMLU-Pro answers",
            "generation": {"max_new_tokens": 16},
            "timeout_s": 30,
            "cost": table.cost(model),
        }
        if expert["protocol"] == "tgi":
            expert["prompt_format"] = "chatml"
        experts.append(expert)
    router: dict[str, Any] = {
        "classifier": {"path": str(classifier)},
        "policy": policy,
        "query": "last_user",
    }
    if ensemble is not None:
        router["ensemble"] = ensemble
    return {
        "name": name,
        "local_servers": [
            {
                "name": "replay",
                "model": "replay:" + ",".join(models),
                "port": port,
                "max_input_tokens": 8192,
                "max_total_tokens": 16384,
                "max_concurrent_requests": 64,
            }
        ],
        "experts": experts,
        "router": router,
        "fallback": {"default_expert": default_expert, "max_attempts": 2},
    }


@dataclass
class _Trained:
    classifier: Path
    cost_weight: float
    cascade: Path | None
    vote: Path | None
    best_small: str
    notes: list[str]


def _train(
    table: ReplayTable,
    models: list[str],
    train: list[int],
    budget: float,
    workdir: Path,
    seed: int,
) -> _Trained:
    costs = np.asarray([table.cost(m) for m in models], dtype=np.float64)
    texts = [table.prompts[r] for r in train]
    correct = table.correct_matrix(models, train)
    answers = table.answers_matrix(models, train)
    small = [m for m in models if m != STRONG_MODEL]
    accuracy = dict(zip(models, correct.mean(axis=0).tolist(), strict=True))
    # Ties (Llama-3.1-8B-Instruct and Phi-3-mini are level on the default split) go to the
    # cheaper model.
    best_small = max(small, key=lambda m: (accuracy[m], -float(table.cost(m) or 0.0)))
    notes: list[str] = []
    with _one_thread():
        _say(f"  tfidf router: {TEXT_FOLDS} out-of-fold fits, then one on all training rows")
        oof = oof_scores(texts, correct, models, seed)
        router = _fit_router(texts, correct, models)
        classifier = workdir / "router"
        router.save_pretrained(classifier)
        weight = cost_weight_for(oof, correct, costs, budget)
        cascade_path = vote_path = None
        try:
            from langchain_herd.ensembles.training import fit_cascade, fit_learned_vote
        except ImportError as exc:
            notes.append(f"cascade and learned vote skipped: {exc}")
        else:
            _say(f"  cascade: {best_small} and helpers, escalating to {STRONG_MODEL}")
            cascade = fit_cascade(
                correct,
                answers,
                models,
                {m: float(c) for m, c in zip(models, costs, strict=True)},
                weak=best_small,
                strong=STRONG_MODEL,
                helper_candidates=[m for m in small if m != best_small],
                text_scores=oof,
                text_experts=models,
                seed=seed,
            )
            cascade_path = cascade.save(workdir / "cascade.json")
            notes.append(
                f"cascade tiers {cascade.tiers} (keeps {cascade.keep}); text scores from the "
                "router as features"
            )
            _say(f"  learned vote over the {len(small)} small members")
            vote = fit_learned_vote(
                correct,
                answers,
                models,
                members=small,
                text_scores=oof,
                text_experts=models,
                seed=seed,
            )
            vote_path = vote.save(workdir / "learned-vote.json")
    return _Trained(classifier, weight, cascade_path, vote_path, best_small, notes)


def _strategies(
    table: ReplayTable,
    models: list[str],
    port: int,
    trained: _Trained,
    budget: float,
    workdir: Path,
) -> list[Strategy]:
    small = [m for m in models if m != STRONG_MODEL]
    default = trained.best_small

    def write(key: str, policy: dict[str, Any], ensemble: dict[str, Any] | None) -> Path:
        data = herd_config(
            table,
            models,
            port,
            trained.classifier,
            name=f"replay-{key}",
            policy=policy,
            ensemble=ensemble,
            default_expert=default,
        )
        path = workdir / f"{key}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    argmax = {"name": "argmax"}
    out = [
        Strategy("routed", "routed: tfidf router, argmax", write("routed", argmax, None)),
        Strategy(
            "routed-budget",
            f"routed: tfidf router, cost policy at the budget (w={trained.cost_weight:g})",
            write("routed-budget", {"name": "cost", "cost_weight": trained.cost_weight}, None),
        ),
        Strategy(
            "majority",
            f"majority vote: the {len(small)} small members",
            write("majority", argmax, {"kind": "vote", "method": "majority", "members": small}),
        ),
    ]
    if trained.vote is not None:
        # No `members`: the scorer's own (best first); a list would be matched by position.
        ensemble: dict[str, Any] = {
            "kind": "vote",
            "method": "learned",
            "scorer": str(trained.vote),
        }
        out.append(
            Strategy(
                "learned-vote",
                f"learned vote: the {len(small)} small members",
                write("learned-vote", argmax, ensemble),
            )
        )
    if trained.cascade is not None:
        ensemble = {"kind": "cascade", "scorer": str(trained.cascade), "budget": budget}
        out.append(
            Strategy(
                "cascade",
                "cascade at the budget: weak + helpers, escalating to strong",
                write("cascade", argmax, ensemble),
            )
        )
    return out


def _route_all(
    config: Path,
    prompts: list[str],
    on_done: Callable[[int, Any, Any, BaseException | None], None],
) -> None:
    """Answer every prompt through a router built from ``config``, a few at a time.

    Threads over the sync path rather than asyncio: one event loop per strategy would leave
    the async HTTP clients of the previous one to be closed on a loop already gone.
    """
    from langchain_herd.chat_models import HerdRouter
    from langchain_herd.config import load_config

    router = HerdRouter.from_config(load_config(config))

    def one(index: int) -> None:
        try:
            answer, decision = router.invoke_with_decision(prompts[index])
        except HerdError as exc:
            on_done(index, None, getattr(exc, "decision", None), exc)
        else:
            on_done(index, answer, decision, None)

    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="herd-replay") as pool:
        for future in [pool.submit(one, i) for i in range(len(prompts))]:
            future.result()


def _paid(decision: Any, costs: dict[str, float]) -> tuple[float, list[str]]:
    """Every expert this query paid for, and their summed cost."""
    if decision is None:
        return 0.0, []
    calls = list(getattr(decision, "calls", []) or [])
    if calls:
        called = [c.expert for c in calls]
        total = getattr(decision, "total_cost", None)
        return (float(total) if total is not None else sum(costs[e] for e in called)), called
    called = [a.expert for a in decision.attempts]
    return sum(costs.get(e, 0.0) for e in called), called


def run_replay_demo(
    n: int = 200,
    seed: int = 0,
    out: Path | None = None,
    *,
    budget_share: float = 0.6,
    workdir: Path | None = None,
    max_train_rows: int | None = None,
) -> ReplayDemoResult:
    """Train on the training split, answer ``n`` held-out questions every way, print a summary.

    Args:
        n: held-out questions to answer (at most the held-out split, 1,330).
        seed: seeds the split, the sample and the training.
        out: write the summary and per-question rows here as JSON.
        budget_share: the cost budget per query of the cost policy and the cascade, as a
            share of the strong model's cost.
        workdir: keep the trained router, scorers and herd configs here (default: a
            temporary folder, removed afterwards).
        max_train_rows: train on a seeded sample of at most this many training rows
            (quicker, for tests; the held-out questions do not change).

    Returns:
        The measured :class:`ReplayDemoResult`.

    Raises:
        ConfigError: ``n`` or ``budget_share`` out of range, or a budget below the
            cascade's cheapest operating point.
    """
    from langchain_herd.local_servers import LocalHerd
    from langchain_herd.mmlu import extract_letter

    started = time.perf_counter()
    table = ReplayTable.load()
    models = list(REPLAY_HERD)
    costs = {m: float(table.cost(m) or 0.0) for m in models}
    budget = budget_share * costs[STRONG_MODEL]
    train, held_out = split_rows(table, seed)
    if max_train_rows is not None and len(train) > max_train_rows:
        picked = np.random.default_rng([seed, 12]).choice(len(train), max_train_rows, False)
        train = sorted(train[i] for i in picked.tolist())
    if not 1 <= n <= len(held_out):
        raise ConfigError(f"-n must be between 1 and {len(held_out)} (the held-out split)")
    if budget_share <= 0:
        raise ConfigError("--budget must be a positive share of the strong model's cost")
    sample = held_out[:n]
    _say(
        f"REPLAY demo: training on {len(train)} questions, answering {n} held-out ones "
        "with recorded answers (no model runs)"
    )
    with tempfile.TemporaryDirectory(prefix="herd-replay-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        trained = _train(table, models, train, budget, folder, seed)
        train_seconds = time.perf_counter() - started
        port = _free_port()
        strategies = _strategies(table, models, port, trained, budget, folder)
        prompts = [table.prompts[r] for r in sample]
        gold = [table.answers[r] for r in sample]
        choices = [table.n_choices(r) for r in sample]
        rows: list[dict[str, Any]] = [
            {"id": table.ids[r], "gold": gold[i], "answers": {}} for i, r in enumerate(sample)
        ]
        from langchain_herd.config import load_config

        routing_started = time.perf_counter()
        assert strategies[0].config is not None
        with LocalHerd(load_config(strategies[0].config), startup_timeout_s=120):
            for strategy in strategies:
                _say(f"  {strategy.label}: {n} questions over HTTP")
                strategy.correct = [False] * n
                strategy.cost = [0.0] * n
                strategy.calls = [0] * n
                strategy.strong = [False] * n
                strategy.answered_by = [None] * n

                def done(
                    index: int,
                    answer: Any,
                    decision: Any,
                    error: BaseException | None,
                    strategy: Strategy = strategy,
                ) -> None:
                    text = answer.text if answer is not None else ""
                    letter = extract_letter(text, choices[index]) if text else None
                    paid, called = _paid(decision, costs)
                    strategy.correct[index] = letter == gold[index]
                    strategy.cost[index] = paid
                    strategy.calls[index] = len(called)
                    strategy.strong[index] = STRONG_MODEL in called
                    by = getattr(decision, "answered_by", None)
                    strategy.answered_by[index] = by
                    strategy.errors += error is not None
                    rows[index]["answers"][strategy.key] = {
                        "letter": letter,
                        "answered_by": by,
                        "cost": paid,
                        "called": called,
                        "error": str(error) if error is not None else None,
                    }

                begun = time.perf_counter()
                assert strategy.config is not None
                _route_all(strategy.config, prompts, done)
                strategy.seconds = time.perf_counter() - begun
        route_seconds = time.perf_counter() - routing_started

    singles = _single_rows(table, models, sample, trained.best_small)
    result = ReplayDemoResult(
        questions=n,
        seed=seed,
        budget=budget,
        train_rows=len(train),
        train_seconds=train_seconds,
        route_seconds=route_seconds,
        strategies=[*singles, *(s.row() for s in strategies)],
        notes=trained.notes,
        rows=rows,
    )
    _print_summary(result, trained.best_small)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": result.summary(), "rows": rows}, indent=2))
        print(f"wrote {out}")
    return result


def _single_rows(
    table: ReplayTable, models: list[str], sample: list[int], best_small: str
) -> list[dict[str, Any]]:
    """The best small member, the strong model and the oracle on the same questions, read
    from the recorded answers (what the server would answer; no routing involved)."""
    correct = table.correct_matrix(models, sample)
    out = []
    for key, model in (("best-small", best_small), ("strong", STRONG_MODEL)):
        j = models.index(model)
        out.append(
            {
                "strategy": key,
                "label": f"{'best small member' if key == 'best-small' else 'strong model'} "
                f"alone: {model}",
                "accuracy": float(correct[:, j].mean()),
                "avg_cost": float(table.cost(model) or 0.0),
                "calls_per_query": 1.0,
                "strong_share": 1.0 if model == STRONG_MODEL else 0.0,
                "errors": 0,
                "seconds": 0.0,
            }
        )
    out.append(
        {
            "strategy": "oracle",
            "label": "oracle: any member right (a bound, not a strategy)",
            "accuracy": float(correct.max(axis=1).mean()),
            "avg_cost": float("nan"),
            "calls_per_query": float("nan"),
            "strong_share": float("nan"),
            "errors": 0,
            "seconds": 0.0,
        }
    )
    return out


def _shown(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)  # NaN: not applicable


def _print_summary(result: ReplayDemoResult, best_small: str) -> None:
    strong_cost = next(r["avg_cost"] for r in result.strategies if r["strategy"] == "strong")
    print()
    print(
        f"REPLAY of recorded answers (MMLU-Pro eval_results, Apache-2.0): {result.questions} "
        f"held-out MMLU-origin questions (seed {result.seed}), served by the local replay "
        "server over HTTP; no model ran."
    )
    print(
        f"Trained on {result.train_rows} training questions in {result.train_seconds:.1f} s; "
        f"cost = active parameters (billions) per call, every call paid; budget "
        f"{result.budget:.1f} per query ({result.budget / strong_cost:.2f} x the strong model)."
    )
    print()
    header = f"{'strategy':<62} {'accuracy':>8} {'cost/query':>10} {'calls':>6} {'strong':>7}"
    print(header)
    print("-" * len(header))
    for row in result.strategies:
        cost = _shown(row["avg_cost"], ".1f")
        calls = _shown(row["calls_per_query"], ".2f")
        strong = _shown(row["strong_share"], ".2f")
        errors = f"  ({row['errors']} failed)" if row["errors"] else ""
        print(
            f"{row['label'][:62]:<62} {row['accuracy']:>8.3f} {cost:>10} {calls:>6} "
            f"{strong:>7}{errors}"
        )
    print()
    per_strategy = len(result.strategies) - 3
    spread = 0.5 / result.questions**0.5
    print(
        f"One standard error of an accuracy on {result.questions} questions is up to "
        f"{spread:.3f}; -n 1330 answers the whole held-out split."
    )
    print(
        f"time: training {result.train_seconds:.1f} s; {per_strategy} strategies x "
        f"{result.questions} questions over HTTP in {result.route_seconds:.1f} s"
    )
    for note in result.notes:
        print(f"note: {note}")
