"""The runtime strategies (cascade, vote, mixture-of-agents) and how a config builds them.

Each strategy is its logic written once as a plan (see ``runner.py``): the runner executes
it sync, async or streaming, through the engine's breakers and fallbacks.

- :class:`CascadeStrategy`: tier by tier, call the tier's experts concurrently, read their
  answers, build the agreement matrix with the configured measure, score it with the
  trained :class:`~langchain_herd.ensembles.scorers.CascadeModel` (agreement features plus
  the router's scores of its text experts) and keep the tier's answer when the score is at
  most the threshold, else escalate. A failed member is a missing answer; when the last tier
  fails entirely, the best answer already in hand is returned (the verdict says so).
- :class:`VoteStrategy`: the members (or the router's top ``k``) answer concurrently, their
  answers are read and grouped, and the majority, weighted or learned vote picks one. A
  failed member's slot falls back to the next expert of the ranking not already voting
  (the learned vote excepted: its weights belong to its members).
- :class:`MixtureOfAgentsStrategy`: proposers answer concurrently (in ``layers`` rounds,
  each later one seeing the previous answers), then the aggregator writes the final answer
  from theirs with the MoA prompt.

Example:
    >>> from langchain_herd.config import EnsembleConfig
    >>> build_ensemble(EnsembleConfig(kind="moa", k=2, layers=2), [])
    EnsembleRunner(MixtureOfAgentsStrategy(proposers=[], k=2, aggregator=None, layers=2))
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from langchain_herd.config import EnsembleConfig
from langchain_herd.ensembles.agreement import (
    AgreementMeasure,
    EmbeddingAgreement,
    ExactAgreement,
    JudgeAgreement,
    LetterAgreement,
    Matrix,
    answer_labels,
    equal_matrix,
)
from langchain_herd.ensembles.moa import with_references
from langchain_herd.ensembles.runner import (
    Answered,
    Calls,
    Compute,
    EnsembleRunner,
    Final,
    Plan,
    Run,
    Slot,
)
from langchain_herd.ensembles.scorers import CascadeModel, LearnedVote, load_ensemble_artifact
from langchain_herd.ensembles.votes import VoteResult, majority_vote, weighted_vote
from langchain_herd.errors import AllExpertsFailedError, ConfigError
from langchain_herd.experts import Expert

__all__ = [
    "CascadeStrategy",
    "MixtureOfAgentsStrategy",
    "VoteStrategy",
    "build_ensemble",
    "measure_for",
]

Measured = Generator[Any, Any, tuple[list[str | None], Matrix]]


def measure_answers(measure: AgreementMeasure, run: Run, answered: Sequence[Answered]) -> Measured:
    """Sub-plan: read each answer and compare them pairwise (judge calls and embeddings are
    steps of the plan, so they run concurrently / off the event loop like the rest).

    Returns:
        ``(extracted, agreement)``: what each answer says (None: nothing read) and the
        ``(k, k)`` agreement matrix.
    """
    texts = [a.text for a in answered]
    extracted = [measure.extract(t, run.question) if t else None for t in texts]
    for item, value in zip(answered, extracted, strict=True):
        if item.record is not None:
            item.record.extracted = value
    if isinstance(measure, EmbeddingAgreement):
        readable = [t if e else None for t, e in zip(texts, extracted, strict=True)]
        agreement: Matrix = yield Compute(lambda: measure.matrix(readable))
    elif isinstance(measure, JudgeAgreement):
        agreement = equal_matrix(extracted)
        pairs = [
            (i, j)
            for i in range(len(texts))
            for j in range(i + 1, len(texts))
            if extracted[i] and extracted[j] and extracted[i] != extracted[j]
        ]
        slots = [
            Slot(
                f"judge ({i + 1}, {j + 1})",
                [measure.expert],
                measure.messages(run.question, str(texts[i]), str(texts[j])),
            )
            for i, j in pairs
        ]
        verdicts: list[Answered] = (yield Calls(slots)) if slots else []
        for (i, j), verdict in zip(pairs, verdicts, strict=True):
            # An unreadable or failed judgement counts as disagreement: escalating is safer.
            same = JudgeAgreement.read(verdict.text or "") or 0.0
            if verdict.record is not None:
                verdict.record.extracted = "yes" if same else "no"
            agreement[i, j] = agreement[j, i] = same
    else:
        agreement = equal_matrix(extracted)
    return extracted, agreement


def _show(answered: Sequence[Answered], extracted: Sequence[str | None]) -> str:
    parts = []
    for item, value in zip(answered, extracted, strict=True):
        name = item.expert or item.slot.names[0]
        said = "failed" if item.answer is None else repr(value) if value else "unreadable"
        parts.append(f"{name}={said}")
    return ", ".join(parts)


@dataclass
class CascadeStrategy:
    """An escalation cascade (see the module docstring).

    Args:
        model: the trained cascade (its tiers, scorers and calibration).
        tiers: the herd's experts per tier, aligned with ``model.tiers``.
        keep: what a tier keeps: its main expert's answer or the tier's majority vote.
        threshold: escalate past a tier when its escalation score exceeds this.
        measure: how answers are read and compared.
        text_experts: the model's text experts -> the herd's experts whose router scores
            are their text scores.
    """

    kind: ClassVar[str] = "cascade"
    model: CascadeModel = field(repr=False)
    tiers: list[list[str]]
    keep: Literal["first", "vote"]
    threshold: float
    measure: AgreementMeasure
    text_experts: dict[str, str] = field(default_factory=dict)

    def plan(self, run: Run) -> Plan:
        decision = run.decision
        decision.ensemble_scores["threshold"] = self.threshold
        said: list[str] = []
        in_hand: tuple[Answered, str] | None = None
        for t, tier in enumerate(self.tiers):
            role, last = f"tier {t + 1}", t == len(self.tiers) - 1
            if last and len(tier) == 1:
                said.append(f"{role} answers with {tier[0]}")
                decision.verdict = "; ".join(said)
                yield Final(slot=Slot(role, list(tier), run.messages), **_fallback(in_hand))
                return
            answered: list[Answered] = yield Calls([Slot(role, [n], run.messages) for n in tier])
            extracted, agreement = yield from measure_answers(self.measure, run, answered)
            labels = answer_labels(extracted, agreement, self.measure.same_at)
            kept, why = self._kept(answered, labels)
            if kept is not None:
                in_hand = (kept, f"{role}'s answer from {kept.expert}")
            shown = _show(answered, extracted)
            if last:
                if kept is None and in_hand is None:
                    decision.verdict = "; ".join([*said, f"{role} (last) failed ({shown})"])
                    raise AllExpertsFailedError(decision)
                if kept is None:
                    assert in_hand is not None
                    said.append(_fallback(in_hand)["fallback_why"])
                    kept = in_hand[0]
                else:
                    said.append(f"{role} (last) answers: {why} ({shown})")
                decision.verdict = "; ".join(said)
                yield Final(kept=kept)
                return
            if all(a.answer is None for a in answered):
                said.append(f"{role} escalated: no member answered ({shown})")
                continue
            for i, j in combinations(range(len(tier)), 2):
                pair = f"{role} agreement {tier[i]}~{tier[j]}"
                decision.ensemble_scores[pair] = float(agreement[i, j])
            missing = np.asarray([value is None for value in extracted])
            score = self.model.escalation_score(t, agreement, missing, self._text_scores(run))
            decision.ensemble_scores[f"{role} score"] = score
            if score <= self.threshold and kept is not None:
                said.append(
                    f"{role} kept {kept.expert}'s answer: escalation score {score:.3f} <= "
                    f"threshold {self.threshold:.3f}; {why} ({shown})"
                )
                decision.verdict = "; ".join(said)
                yield Final(kept=kept)
                return
            reason = (
                f"escalation score {score:.3f} > threshold {self.threshold:.3f}"
                if score > self.threshold
                else "nothing to keep"
            )
            said.append(f"{role} escalated: {reason} ({shown})")
        raise AssertionError("a cascade's last tier always ends the plan")  # pragma: no cover

    def _kept(
        self, answered: Sequence[Answered], labels: Sequence[str | None]
    ) -> tuple[Answered | None, str]:
        """The tier's answer under ``keep``, and why it is that one."""
        main = answered[0]
        if self.keep == "first" and main.answer is not None:
            return main, f"keeps the main expert {main.expert}"
        result = majority_vote(labels)
        if result.winner is not None:
            index = labels.index(result.winner)
            lead = "the main expert failed; " if self.keep == "first" else ""
            return answered[index], f"{lead}tier vote: {result.why}"
        first = next((a for a in answered if a.answer is not None), None)
        if first is None:
            return None, "no member answered"
        return first, f"no readable answer to vote on; keeps {first.expert}'s"

    def _text_scores(self, run: Run) -> dict[str, float]:
        scores = run.decision.expert_scores
        return {
            trained: scores[expert]
            for trained, expert in self.text_experts.items()
            if expert in scores
        }


def _fallback(in_hand: tuple[Answered, str] | None) -> dict[str, Any]:
    if in_hand is None:
        return {}
    answered, what = in_hand
    return {
        "fallback": answered,
        "fallback_why": f"the last tier failed entirely: returned {what}, the best in hand",
    }


@dataclass
class VoteStrategy:
    """A vote over several experts' answers (see the module docstring).

    Args:
        method: ``majority`` (one vote each), ``weighted`` (``weights``) or ``learned``.
        measure: how answers are read and grouped.
        members: the voters; empty: the router's top ``k`` for each query.
        k: voters taken from the ranking when ``members`` is empty.
        weights: each expert's weight (``weighted``); unlisted experts weigh 1.
        learned: the trained vote (``learned``); its members are the voters, in its order.
        text_experts: the learned vote's text experts -> the herd's experts.
    """

    kind: ClassVar[str] = "vote"
    method: Literal["majority", "weighted", "learned"]
    measure: AgreementMeasure
    members: list[str] = field(default_factory=list)
    k: int = 3
    weights: dict[str, float] = field(default_factory=dict)
    learned: LearnedVote | None = field(default=None, repr=False)
    text_experts: dict[str, str] = field(default_factory=dict)

    def plan(self, run: Run) -> Plan:
        decision = run.decision
        members = self.members or decision.ranking[: self.k]
        # A learned vote's weights belong to its members: a stand-in would be misread.
        pool = self.learned is None
        answered: list[Answered] = yield Calls(
            [Slot("voter", [name], run.messages, pool=pool) for name in members]
        )
        extracted, agreement = yield from measure_answers(self.measure, run, answered)
        labels = answer_labels(extracted, agreement, self.measure.same_at)
        result = self._vote(run, answered, labels)
        for answer, value in result.tally.items():
            decision.ensemble_scores[f"vote {answer}"] = value
        shown = _show(answered, extracted)
        if result.winner is not None:
            winner = answered[labels.index(result.winner)]
            tie = "tie broken by member order: " if result.tie else ""
            decision.verdict = (
                f"{self.method} vote: {tie}{result.why}; {winner.expert}'s answer returned "
                f"({shown})"
            )
            yield Final(kept=winner)
            return
        first = next((a for a in answered if a.answer is not None), None)
        if first is None:
            decision.verdict = f"{self.method} vote: no voter answered ({shown})"
            raise AllExpertsFailedError(decision)
        decision.verdict = (
            f"{self.method} vote: {result.why}; no vote possible, {first.expert}'s answer "
            f"(the first voter that answered) returned unvoted ({shown})"
        )
        yield Final(kept=first)

    def _vote(
        self, run: Run, answered: Sequence[Answered], labels: Sequence[str | None]
    ) -> VoteResult:
        if self.learned is not None:
            scores = run.decision.expert_scores
            text = {t: scores[e] for t, e in self.text_experts.items() if e in scores}
            return self.learned.pick(labels, text)
        if self.method == "weighted":
            weights = [self.weights.get(a.expert or a.slot.names[0], 1.0) for a in answered]
            return weighted_vote(labels, weights)
        return majority_vote(labels)


@dataclass
class MixtureOfAgentsStrategy:
    """Mixture-of-agents (see the module docstring and ``moa.py``).

    Args:
        proposers: the proposing experts; empty: the router's top ``k`` for each query.
        k: proposers taken from the ranking when ``proposers`` is empty.
        aggregator: the expert that writes the final answer; None: the top-ranked one. It
            falls back along the ranking.
        layers: proposal rounds; each later round sees the previous round's answers.
    """

    kind: ClassVar[str] = "moa"
    proposers: list[str] = field(default_factory=list)
    k: int = 3
    aggregator: str | None = None
    layers: int = 1

    def plan(self, run: Run) -> Plan:
        ranking = run.decision.ranking
        proposers = self.proposers or ranking[: self.k]
        references: list[Answered] = []
        notes: list[str] = []
        for layer in range(1, self.layers + 1):
            sent = with_references(run.messages, _texts(references)) if references else run.messages
            answered: list[Answered] = yield Calls(
                [Slot(f"proposer (layer {layer})", [p], sent, pool=True) for p in proposers]
            )
            got = [a for a in answered if a.answer is not None]
            if got:
                references = got
            else:
                notes.append(f"no proposal in layer {layer}")
        aggregator = self.aggregator or ranking[0]
        names = [aggregator, *(n for n in ranking if n != aggregator)]
        by = ", ".join(str(a.expert) for a in references)
        if references:
            verdict = f"{aggregator} aggregates {len(references)} proposals ({by})"
            sent = with_references(run.messages, _texts(references))
        else:
            verdict = f"no proposer answered; {aggregator} answers alone"
            sent = run.messages
        run.decision.verdict = "; ".join([verdict, *notes]) + f" after {self.layers} layer(s)"
        fallback = references[0] if references else None
        yield Final(
            slot=Slot("aggregator", names, sent),
            fallback=fallback,
            fallback_why=(
                f"every aggregator failed: returned {fallback.expert}'s proposal unaggregated"
                if fallback
                else ""
            ),
        )


def _texts(answered: Sequence[Answered]) -> list[str]:
    return [a.text or "" for a in answered]


# ---------------------------------------------------------------- building


def measure_for(config: EnsembleConfig, base_dir: Path | None = None) -> AgreementMeasure:
    """The agreement measure a config names."""
    if config.agreement == "letters":
        return LetterAgreement()
    if config.agreement == "exact":
        return ExactAgreement()
    if config.agreement == "embedding":
        encoder = None
        if config.agreement_encoder:
            encoder = Path(config.agreement_encoder).expanduser()
            if not encoder.is_absolute() and base_dir is not None:
                encoder = base_dir / encoder
        return EmbeddingAgreement(encoder)
    assert config.judge_expert is not None  # the config checks it
    return JudgeAgreement(config.judge_expert)


def build_ensemble(
    config: EnsembleConfig, experts: Sequence[Expert], *, base_dir: Path | None = None
) -> EnsembleRunner:
    """The runtime ensemble of a config's ``router.ensemble`` section, for ``HerdEngine``.

    Artifacts (``scorer``) are loaded here, so a bad one fails when the herd is built.

    Raises:
        ConfigError: the section does not fit the herd or its artifact.
        ArtifactError: the scorer artifact is missing or malformed.
    """
    names = [expert.name for expert in experts]
    measure = measure_for(config, base_dir)
    if config.kind == "moa":
        return EnsembleRunner(
            MixtureOfAgentsStrategy(
                list(config.proposers), config.k, config.aggregator, config.layers
            )
        )
    artifact = _artifact(config, base_dir)
    if config.kind == "vote":
        learned = None
        members = list(config.members)
        text: dict[str, str] = {}
        if config.method == "learned":
            if not isinstance(artifact, LearnedVote):
                raise ConfigError(
                    f"vote method learned needs a learned-vote scorer, got {artifact}"
                )
            learned = artifact
            members = _aligned(config.members, artifact.members, "members")
            text = _renamed(artifact.text_experts, artifact.members, members)
        strategy: Any = VoteStrategy(
            config.method, measure, members, config.k, dict(config.weights), learned, text
        )
    else:
        if not isinstance(artifact, CascadeModel):
            raise ConfigError(
                f"ensemble kind cascade needs a cascade scorer (herd train --kind cascade), "
                f"got {type(artifact).__name__}"
            )
        tiers = _tiers(config.tiers, artifact.tiers)
        keep = config.keep if "keep" in config.model_fields_set else artifact.keep
        threshold = artifact.threshold_for(
            threshold=config.threshold,
            escalate_share=config.escalate_share,
            budget=config.budget,
        )
        text = _renamed(
            artifact.text_experts,
            [n for tier in artifact.tiers for n in tier],
            [n for tier in tiers for n in tier],
        )
        strategy = CascadeStrategy(artifact, tiers, keep, threshold, measure, text)
    unknown = sorted({n for n in _named(strategy) if n not in names})
    if unknown:
        raise ConfigError(
            f"the ensemble's scorer names experts {unknown} that are not in the herd "
            f"({names}); name the herd's experts like the scorer's models, or map them with "
            f"router.ensemble.tiers / members"
        )
    return EnsembleRunner(strategy)


def _artifact(config: EnsembleConfig, base_dir: Path | None) -> CascadeModel | LearnedVote | None:
    if not config.scorer:
        return None
    path = Path(config.scorer).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return load_ensemble_artifact(path)


def _aligned(given: Sequence[str], trained: Sequence[str], what: str) -> list[str]:
    if not given:
        return list(trained)
    if len(given) != len(trained):
        raise ConfigError(
            f"router.ensemble.{what} lists {len(given)} experts but the scorer was trained "
            f"for {len(trained)} ({list(trained)}); list one herd expert per trained model, "
            f"in order, or leave it unset"
        )
    return _by_name(list(given), list(trained), f"router.ensemble.{what}")


def _by_name(given: list[str], trained: list[str], where: str) -> list[str]:
    """Map herd experts onto trained models by position, but never let a trained model's own
    name stand for another model: the same names in another order mean those models."""
    if set(given) == set(trained):
        return trained
    misplaced = [
        f"{name} (trained position {trained.index(name) + 1}, listed {i + 1})"
        for i, name in enumerate(given)
        if name in trained and trained.index(name) != i
    ]
    if misplaced:
        raise ConfigError(
            f"{where} lists trained models at other positions: {', '.join(misplaced)}; the "
            f"scorer's models are {trained}: list one herd expert per trained model, in that "
            f"order, or leave it unset"
        )
    return given


def _tiers(given: Sequence[Sequence[str]], trained: Sequence[Sequence[str]]) -> list[list[str]]:
    if not given:
        return [list(tier) for tier in trained]
    if [len(t) for t in given] != [len(t) for t in trained]:
        raise ConfigError(
            f"router.ensemble.tiers {list(map(list, given))} do not fit the scorer's tiers "
            f"{list(map(list, trained))}: list one herd expert per trained model, tier by "
            f"tier, or leave tiers unset"
        )
    flat = _by_name(
        [n for tier in given for n in tier],
        [n for tier in trained for n in tier],
        "router.ensemble.tiers",
    )
    sizes = iter(flat)
    return [[next(sizes) for _ in tier] for tier in given]


def _renamed(
    text_experts: Sequence[str], trained: Sequence[str], herd: Sequence[str]
) -> dict[str, str]:
    """Each trained text expert -> the herd expert that stands for it (itself if unmapped)."""
    mapping: Mapping[str, str] = dict(zip(trained, herd, strict=True))
    return {name: mapping.get(name, name) for name in text_experts}


def _named(strategy: CascadeStrategy | VoteStrategy) -> list[str]:
    if isinstance(strategy, CascadeStrategy):
        return [n for tier in strategy.tiers for n in tier]
    return list(strategy.members)
