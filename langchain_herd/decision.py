"""The routing decision: what the classifier said, what the policy chose, what happened.

A ``RouteDecision`` is filled in as the router works. It is returned by
``HerdRouter.route``, attached to every answer as ``response_metadata["herd"]``, put in
the router's run metadata, and carried by ``AllExpertsFailedError``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Attempt(BaseModel):
    """One call to one expert."""

    model_config = ConfigDict(extra="forbid")

    expert: str
    """The expert called."""
    ok: bool
    """Whether it produced a usable answer."""
    latency_ms: float
    """Wall time of the call, including any streamed tokens up to the outcome."""
    failure: str | None = None
    """Failure kind (``connection``, ``timeout``, ``server_error``, ...) when not ok."""
    error: str | None = None
    """The error's message when not ok."""
    status_code: int | None = None
    """HTTP status of the failure, when there was one."""


class EnsembleCall(BaseModel):
    """One expert's part in an ensemble answer (cascade tier, voter, proposer, aggregator)."""

    model_config = ConfigDict(extra="forbid")

    expert: str
    """The expert that answered (after any fallback within its slot)."""
    role: str
    """Its part: ``tier 1``, ``tier 2``, ``voter``, ``proposer (layer 1)``, ``aggregator``."""
    ok: bool
    """Whether it produced a usable answer."""
    answer: str | None = None
    """Its answer text (cut to ``ANSWER_CHARS`` characters), when it gave one."""
    extracted: str | None = None
    """What the agreement measure read from it (the option letter, the normalised text);
    None when nothing could be read (counts as no vote)."""
    cost: float = 0.0
    """The expert's configured ``cost`` for this call (paid whether or not it is kept)."""
    input_tokens: int | None = None
    """Prompt tokens the expert reported, when it did."""
    output_tokens: int | None = None
    """Generated tokens the expert reported, when it did."""
    latency_ms: float = 0.0
    """Wall time of the call."""
    error: str | None = None
    """Why it gave no answer, when it did not."""


ANSWER_CHARS = 2000
"""Longest answer text kept per ensemble call in a decision (decisions go into logs)."""


class RouteDecision(BaseModel):
    """Scores, ranking and every attempt for one request.

    Example:
        .. code-block:: python

            decision = router.route("What is the derivative of x**2?")
            decision.chosen, decision.scores
    """

    model_config = ConfigDict(extra="forbid")

    query: str
    """The text the classifier scored."""
    scores: dict[str, float]
    """Classifier score per route label."""
    expert_scores: dict[str, float]
    """Score per expert (the best score among the labels it serves)."""
    ranking: list[str]
    """Experts in the order the policy would try them."""
    policy: str
    """The policy that ranked them."""
    classify_ms: float
    """Time the classifier took."""
    requirements: list[str] = Field(default_factory=list)
    """What the request needed of its expert (``tools``, ``structured_output:<method>``)."""
    excluded: dict[str, str] = Field(default_factory=dict)
    """Experts left out of the ranking because they cannot honour the request, with why."""
    notes: dict[str, str] = Field(default_factory=dict)
    """Remarks that did not change the route, e.g. an input limit that could not be checked,
    or (``query``) that the classifier read only part of a very long query."""
    pinned: str | None = None
    """The expert pinned for this call (``configurable``), if any."""
    sticky: str | None = None
    """Why the route was held to an earlier expert (tool loop, thread), if it was."""
    skipped: dict[str, str] = Field(default_factory=dict)
    """Experts passed over without a call, with why (an open breaker, a back-off after 429)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every expert call in order."""
    streaming: str | None = None
    """The expert whose stream is being relayed, from its first token on (a surface can
    name it before the stream ends, e.g. in an HTTP response header)."""
    answered_by: str | None = None
    """The expert whose answer was returned, once there is one."""
    strategy: str | None = None
    """``cascade``, ``vote`` or ``moa`` when several experts answered this query; None for
    one routed expert."""
    calls: list[EnsembleCall] = Field(default_factory=list)
    """Every ensemble call with its answer, extracted answer, cost and tokens, in order."""
    verdict: str | None = None
    """Why the ensemble's answer is the one returned: kept (and on what score) or escalated,
    which answer won the vote and by how much, or what the aggregator saw."""
    ensemble_scores: dict[str, float] = Field(default_factory=dict)
    """The ensemble's numbers: the escalation score and threshold per tier, vote tallies."""
    total_cost: float | None = None
    """Summed ``cost`` of every call this query paid for (ensembles)."""

    @property
    def chosen(self) -> str | None:
        """The first expert the policy picked (before any fallback)."""
        return self.ranking[0] if self.ranking else None

    def metadata(self) -> dict[str, Any]:
        """A JSON-friendly summary for run metadata and logs."""
        return self.model_dump(mode="json")
