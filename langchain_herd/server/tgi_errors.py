"""TGI's error replies: the ``{"error", "error_type"}`` body and the status code that goes with it.

huggingface_hub maps ``error_type`` to its exception classes (``ValidationError``,
``OverloadedError``, ``GenerationError``, ``IncompleteGenerationError``, else ``UnknownError``),
so the type strings must be TGI's exactly.
"""

from __future__ import annotations

from typing import Literal

from langchain_herd.errors import HerdError

ErrorType = Literal[
    "validation",
    "overloaded",
    "generation",
    "incomplete_generation",
    "template_error",
    "tool_error",
]
"""The ``error_type`` values TGI sends (``template_error`` and ``tool_error`` only on the chat
route)."""

STATUS_FOR_ERROR_TYPE: dict[str, int] = {
    "validation": 422,
    "template_error": 422,
    "tool_error": 422,
    "overloaded": 429,
    "generation": 424,  # TGI answers generation failures with 424 Failed Dependency, not 500.
    "incomplete_generation": 500,
}


class TGIError(HerdError):
    """An error the server reports to the client in TGI's shape.

    Attributes:
        message: the ``error`` text.
        error_type: the ``error_type`` text.
        status_code: the HTTP status (used when the error is not inside an SSE stream).

    Example:
        >>> err = TGIError.validation("`temperature` must be strictly positive")
        >>> err.status_code, err.to_json()["error_type"]
        (422, 'validation')
    """

    def __init__(self, message: str, error_type: str, status_code: int | None = None) -> None:
        self.message = message
        self.error_type = error_type
        self.status_code = status_code or STATUS_FOR_ERROR_TYPE.get(error_type, 500)
        super().__init__(message)

    def to_json(self) -> dict[str, str]:
        """TGI's ``ErrorResponse`` body."""
        return {"error": self.message, "error_type": self.error_type}

    @classmethod
    def validation(cls, detail: str) -> TGIError:
        """An input validation error, prefixed the way TGI prefixes them (422)."""
        return cls(f"Input validation error: {detail}", "validation")

    @classmethod
    def overloaded(cls) -> TGIError:
        """More requests in flight than ``max_concurrent_requests`` (429)."""
        return cls("Model is overloaded", "overloaded")

    @classmethod
    def generation(cls, detail: str) -> TGIError:
        """The model failed while generating (424)."""
        return cls(f"Request failed during generation: {detail}", "generation")

    @classmethod
    def template(cls, detail: str) -> TGIError:
        """The chat template could not be applied (422)."""
        return cls(f"Template error: {detail}", "template_error")

    @classmethod
    def tool(cls, detail: str) -> TGIError:
        """Tools that cannot be used as asked, or output that is no tool call (422)."""
        return cls(f"Tool error: {detail}", "tool_error")
