"""The package's exceptions: one root, each subclass also a matching built-in.

Callers can catch ``HerdError`` for everything the library raises on purpose, or
the built-in (``ValueError``, ``ConnectionError``, ...) they already handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langchain_herd.decision import Attempt, RouteDecision


class HerdError(Exception):
    """Root of every error langchain-herd raises on purpose."""


class ConfigError(HerdError, ValueError):
    """A herd configuration (YAML file or Python object) is invalid."""


class ArtifactError(HerdError, ValueError):
    """A saved classifier artifact is missing, malformed or does not fit the herd."""


class InputError(HerdError, TypeError):
    """The router was given input of a shape it cannot turn into a query."""


class ExpertError(HerdError, RuntimeError):
    """One expert failed to produce a usable answer (the decision trail records why)."""


class EmptyAnswerError(ExpertError):
    """An expert answered with HTTP 200 but no text; counted as a failure so the herd falls back."""


class AllExpertsFailedError(HerdError, RuntimeError):
    """Every expert the router tried failed; ``attempts`` says why for each one.

    Attributes:
        attempts: every attempt in order, each with the expert, failure kind and message.
        decision: the full routing decision, including experts skipped by their breakers.
    """

    def __init__(self, decision: RouteDecision) -> None:
        self.decision = decision
        self.attempts: Sequence[Attempt] = decision.attempts
        lines = [f"all {len(decision.attempts)} expert attempt(s) failed"]
        for attempt in decision.attempts:
            lines.append(
                f"  - {attempt.expert}: {attempt.failure} after "
                f"{attempt.latency_ms:.0f} ms: {attempt.error}"
            )
        for name, reason in decision.skipped.items():
            lines.append(f"  - {name}: skipped ({reason})")
        if not decision.attempts and not decision.skipped:
            lines.append("  (no expert was eligible: check the herd's experts and routes)")
        super().__init__("\n".join(lines))


class ExpertsOverloadedError(AllExpertsFailedError):
    """Every expert that could answer is overloaded (429) or backing off after one: back-pressure,
    not an outage (no breaker counts it). Retry after ``retry_after_s``, or send less at once.

    Attributes:
        retry_after_s: seconds until the first expert's back-off ends (a hint for the caller's
            retry; ``serve-router`` sends it as ``Retry-After``).
    """

    def __init__(self, decision: RouteDecision, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(decision)
        self.args = (
            f"every expert is overloaded (HTTP 429) or backing off after one; retry in "
            f"{retry_after_s:.1f}s or lower the request rate\n{self.args[0]}",
        )


class StreamInterruptedError(HerdError, ConnectionError):
    """An expert's stream broke after tokens were already sent, so no fallback was possible.

    Attributes:
        expert: the expert whose stream broke.
        partial_text: everything streamed to the caller before the break.
    """

    def __init__(self, expert: str, partial_text: str, cause: BaseException) -> None:
        self.expert = expert
        self.partial_text = partial_text
        super().__init__(
            f"expert {expert!r} stream broke after {len(partial_text)} characters had been sent "
            f"({type(cause).__name__}: {cause}); streamed so far: {partial_text!r}"
        )


class CapabilityError(HerdError, ValueError):
    """No expert that may answer this request can honour what was bound (tools, a schema).

    Raised before any expert is called; the message lists each expert and why it was excluded.
    """


class ContextLengthError(CapabilityError):
    """The request is too long for every expert that could take it; no expert was called.

    Attributes:
        tokens: per expert, the input's tokens (counted or estimated) as it would receive it.
        limits: per expert, the longest input it accepts for this request's answer length.
    """

    def __init__(self, message: str, tokens: dict[str, int], limits: dict[str, int]) -> None:
        self.tokens = tokens
        self.limits = limits
        super().__init__(message)

    @classmethod
    def for_experts(
        cls,
        too_long: dict[str, tuple[int, int, str]],
        excluded: dict[str, str],
        *,
        pinned: bool = False,
    ) -> ContextLengthError:
        """The error for experts that each got ``(tokens, limit, why that limit)``."""
        each = "; ".join(
            f"{name}: ~{tokens} tokens, limit {limit} ({why})"
            for name, (tokens, limit, why) in too_long.items()
        )
        whom = "the pinned expert" if pinned else "every expert that could take it"
        others = {name: why for name, why in excluded.items() if name not in too_long}
        also = "; ".join(f"{name}: {why}" for name, why in others.items())
        return cls(
            f"the input is too long for {whom} ({each}). Shorten it (drop or summarise earlier "
            f"turns, retrieve less context), lower max_tokens where a limit counts the answer, "
            f"or add an expert with a longer context window"
            + (f". Other experts were excluded: {also}" if also else ""),
            tokens={name: entry[0] for name, entry in too_long.items()},
            limits={name: entry[1] for name, entry in too_long.items()},
        )
