"""Score every contender on the same held-out questions, resumably.

The base model is loaded once and every adapter (subject experts, merges, the swarm's best)
is attached to it with PEFT, each under its own name; a contender is scored with its adapter
active (:func:`~langchain_herd.server.adapters.adapter_in_use`), the base with all of them off.
Rows that choose an adapter per question (the router, the group oracle) cost no scoring:
they take the chosen adapter's result for that question.

Each scored contender's per-question results are cached in ``OUT/scores/`` under a key of
the question ids and the adapter folder's weights, so a rerun after a kill, or with one more
merge, scores only what is new.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from langchain_herd.atomic_files import write_atomically
from langchain_herd.choice_questions import ChoiceQuestion, resolve_questions
from langchain_herd.choice_scoring import ChoiceScores, score_questions
from langchain_herd.errors import ConfigError
from langchain_herd.expert_comparison.contenders import Contender
from langchain_herd.lora_herd import HerdAdapters, read_herd

__all__ = ["ComparisonSettings", "QuestionSetResult", "compare_experts", "route_questions"]


@dataclass(frozen=True)
class ComparisonSettings:
    """What ``herd compare-experts`` scores, and how.

    Attributes:
        question_sets: named sets (``skills``, ``mmlu``, ``skills:stem+other``) or question
            files; the named sets give their ``test`` split only, and ``SET@N`` at most N
            questions per group of that set.
        per_group: at most this many test questions per group and set (None: all).
        seed: the per-group sample's seed and the bootstrap's.
        batch_size: sequences per forward pass when scoring.
        bootstrap: resamples for the 95% intervals.
        merges: merged expert name -> adapter folder (``herd merge`` outputs).
        swarm: a ``herd swarm`` output folder (its ``best`` adapter and ``swarm.json``).
        server: the config's local server to read (when it has several with adapters).
    """

    question_sets: tuple[str, ...] = ("skills",)
    per_group: int | None = None
    seed: int = 0
    batch_size: int = 32
    bootstrap: int = 1000
    merges: dict[str, Path] = field(default_factory=dict)
    swarm: Path | None = None
    server: str | None = None


@dataclass(frozen=True)
class QuestionSetResult:
    """Every contender's per-question results on one question set.

    Attributes:
        name: the set (``skills``...).
        questions: the held-out questions, in order.
        scores: contender name -> its results (router and oracle rows included).
        routed: for the router row, the adapter chosen for each question.
    """

    name: str
    questions: list[ChoiceQuestion]
    scores: dict[str, ChoiceScores]
    routed: list[str]


def _contenders(herd: HerdAdapters, settings: ComparisonSettings) -> list[Contender]:
    rows = [Contender("base", "base")]
    rows += [Contender(name, "adapter", folder) for name, folder in herd.adapters.items()]
    rows += [
        Contender(f"merge:{name}", "merge", folder) for name, folder in settings.merges.items()
    ]
    if settings.swarm is not None:
        rows.append(Contender("swarm", "swarm", settings.swarm / "best"))
    for row in rows:
        if row.adapter is not None and not (row.adapter / "adapter_config.json").is_file():
            raise ConfigError(
                f"{row.name}: {row.adapter} is not a LoRA adapter folder (no adapter_config.json)"
            )
    return rows


def _weights_key(questions: Sequence[ChoiceQuestion], adapter: Path | None, base: str) -> str:
    digest = hashlib.sha256(base.encode())
    for question in questions:
        digest.update(question.id.encode())
    if adapter is not None:
        digest.update((adapter / "adapter_model.safetensors").read_bytes())
    return digest.hexdigest()[:20]


def _cached(path: Path, key: str) -> ChoiceScores | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("key") != key:
        return None
    return ChoiceScores(
        ids=tuple(data["ids"]),
        correct=np.array(data["correct"], dtype=bool),
        gold_loglik=np.array(data["gold_loglik"], dtype=np.float64),
        picked=np.array(data["picked"], dtype=np.int64),
    )


def _save(path: Path, key: str, scores: ChoiceScores) -> None:
    payload = {
        "key": key,
        "ids": list(scores.ids),
        "correct": scores.correct.tolist(),
        "gold_loglik": scores.gold_loglik.tolist(),
        "picked": scores.picked.tolist(),
    }
    write_atomically(path, json.dumps(payload))  # a kill mid-write leaves no half file


def route_questions(
    config: Any, questions: Sequence[ChoiceQuestion], herd: HerdAdapters
) -> list[str]:
    """The adapter the herd's router picks for each question (its text, as a user would ask).

    Raises:
        ConfigError: the router picks an expert that runs no adapter of the server.
    """
    from langchain_herd.chat_models import HerdRouter

    router = HerdRouter.from_config(config)
    chosen: list[str] = []
    for question in questions:
        expert = router.route(question.question).chosen
        adapter = herd.expert_adapter.get(expert or "")
        if adapter is None:
            raise ConfigError(
                f"the router chose expert {expert!r}, which runs none of the server's adapters "
                f"({', '.join(herd.adapters)}); give every expert an adapter_id on that server"
            )
        chosen.append(adapter)
    return chosen


def _pick(scores: dict[str, ChoiceScores], chosen: Sequence[str]) -> ChoiceScores:
    """Per question, the result of the adapter chosen for it."""
    rows = range(len(chosen))
    first = scores[chosen[0]] if chosen else next(iter(scores.values()))
    return ChoiceScores(
        ids=first.ids,
        correct=np.array([scores[c].correct[i] for i, c in zip(rows, chosen, strict=True)]),
        gold_loglik=np.array([scores[c].gold_loglik[i] for i, c in zip(rows, chosen, strict=True)]),
        picked=np.array([scores[c].picked[i] for i, c in zip(rows, chosen, strict=True)]),
    )


def compare_experts(
    config: str | Path,
    out: Path,
    settings: ComparisonSettings,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[QuestionSetResult]:
    """Score the base, each adapter, the router, the merges and the swarm's best.

    Args:
        config: a herd config whose local server carries the subject adapters, with a router.
        out: the output folder (the per-contender cache goes in ``out/scores``).
        settings: what to compare.
        progress: called with one line per step (default: print to stderr).

    Raises:
        ConfigError: no adapters, an adapter folder missing, or no question in a set.
    """
    from langchain_herd.server import load_backend
    from langchain_herd.server.adapters import AdapterSpec, adapter_in_use, attach_adapters

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    herd = read_herd(config, settings.server)
    contenders = _contenders(herd, settings)
    sets = []
    for source in settings.question_sets:
        questions = _test_questions(source, settings)
        sets.append((source, questions))
    say(f"compare-experts: loading {herd.base} with {len(contenders) - 1} adapters")
    backend = load_backend(herd.base)
    specs = [AdapterSpec(row.name, str(row.adapter)) for row in contenders if row.adapter]
    model = attach_adapters(backend.model, specs)
    results = []
    for source, questions in sets:
        scores: dict[str, ChoiceScores] = {}
        for row in contenders:
            key = _weights_key(questions, row.adapter, herd.base)
            cache = out / "scores" / _file_name(source) / f"{_file_name(row.name)}.json"
            found = _cached(cache, key)
            if found is not None:
                scores[row.name] = found
                say(f"  {source} {row.name}: cached, accuracy {found.accuracy:.3f}")
                continue
            began = time.perf_counter()
            with adapter_in_use(model, None if row.adapter is None else row.name):
                scores[row.name] = score_questions(
                    model, backend.tokenizer, questions, batch_size=settings.batch_size
                )
            _save(cache, key, scores[row.name])
            say(
                f"  {source} {row.name}: accuracy {scores[row.name].accuracy:.3f}, gold "
                f"log-likelihood {scores[row.name].mean_gold_loglik:.2f} "
                f"({len(questions)} questions, {time.perf_counter() - began:.0f} s)"
            )
        routed = route_questions(herd.config, questions, herd)
        scores["router"] = _pick(scores, routed)
        own = {q.group for q in questions}
        if own <= set(herd.adapters):  # each question to its own subject's adapter
            scores["oracle:group"] = _pick(scores, [q.group for q in questions])
        adapters = list(herd.adapters)
        best = [_best_adapter(scores, adapters, i) for i in range(len(questions))]
        scores["oracle:best-adapter"] = _pick(scores, best)
        say(
            f"  {source} router: accuracy {scores['router'].accuracy:.3f} "
            f"(picked its own group's adapter for "
            f"{np.mean([r == q.group for r, q in zip(routed, questions, strict=True)]):.0%})"
        )
        results.append(QuestionSetResult(source, questions, scores, routed))
    return results


def _test_questions(source: str, settings: ComparisonSettings) -> list[ChoiceQuestion]:
    """The test split of ``source``; ``SET@N`` takes at most N per group of that set."""
    name, at, count = source.rpartition("@")
    per_group = settings.per_group
    if at and count.isdigit():
        source, per_group = name, int(count)
    questions = resolve_questions(source, "test", per_group=per_group, seed=settings.seed)
    if not questions:
        raise ConfigError(f"{source}: no test questions")
    return questions


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _best_adapter(scores: dict[str, ChoiceScores], adapters: list[str], index: int) -> str:
    """The adapter that answers question ``index`` best (right first, then likelier gold)."""
    return max(adapters, key=lambda a: (scores[a].correct[index], scores[a].gold_loglik[index]))
