"""What an expert can honour, and what a request needs: tools, structured output.

The router ranks only experts that can honour what was bound to a request (tools, a
``response_format``); the others are recorded in the decision as excluded, with why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]
"""How structured output is produced: a JSON schema grammar (``response_format`` of type
``json_schema``), any JSON object (``json_object``), or a forced tool call."""

ALL_STRUCTURED: frozenset[StructuredMethod] = frozenset(
    {"json_schema", "json_mode", "function_calling"}
)


@dataclass(frozen=True)
class Capabilities:
    """What one expert's endpoint can do beyond plain chat.

    Example:
        >>> Capabilities(tools=True).can(Requirements(tools=True))
        True
    """

    tools: bool = False
    """Tool calling (``tools``/``tool_choice``, tool-call histories)."""
    structured_output: frozenset[StructuredMethod] = field(default_factory=frozenset)
    """Structured output methods honoured."""

    def can(self, needs: Requirements) -> bool:
        """Whether this expert can honour every requirement."""
        return self.missing(needs) is None

    def missing(self, needs: Requirements) -> str | None:
        """Why this expert cannot honour ``needs``, or None if it can."""
        if needs.tools and not self.tools:
            return "cannot call tools"
        if needs.structured is not None and needs.structured not in self.structured_output:
            return f"does not support structured output by {needs.structured}"
        return None


@dataclass(frozen=True)
class Requirements:
    """What one request needs of the expert that answers it."""

    tools: bool = False
    """Tools are bound (and tool_choice is not ``none``)."""
    structured: StructuredMethod | None = None
    """The structured output method bound, if any."""

    def describe(self) -> list[str]:
        """Short names for the decision trail."""
        out = ["tools"] if self.tools else []
        if self.structured:
            out.append(f"structured_output:{self.structured}")
        return out

    @classmethod
    def of(cls, bound: Mapping[str, Any]) -> Requirements:
        """Read the requirements from a request's bound arguments."""
        tools = bool(bound.get("tools")) and bound.get("tool_choice") != "none"
        structured: StructuredMethod | None = None
        response_format = bound.get("response_format")
        if isinstance(response_format, Mapping):
            kind = response_format.get("type")
            structured = "json_mode" if kind == "json_object" else "json_schema"
        elif response_format is not None:
            structured = "json_schema"
        return cls(tools=tools, structured=structured)
