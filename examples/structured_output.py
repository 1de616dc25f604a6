"""Structured output from the herd: pydantic objects, by JSON schema and by function calling.

`herd.with_structured_output(Model, method=...)` ranks only the experts that can honour the
method, and the decision says who was left out:

- `json_schema`: the schema goes to the server as a grammar (constrained decoding), on the
  OpenAI chat route and on TGI's generate route alike, so every expert stays in the ranking.
- `function_calling`: a forced tool call, which only the OpenAI-route experts can make; the
  generate-route experts are listed in the decision's `excluded`.

String fields carry a `max_length`: the grammar enforces it, so SmolLM2 cannot ramble inside a
string past the token limit.

Starts the local SmolLM2 herd (`bundled:local`, or the config in `$HERD_CONFIG`) unless it is
already up, and stops what it started.

    .venv/bin/python examples/structured_output.py
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from langchain_herd import HerdRouter, load_config
from langchain_herd.local_servers import LocalHerd

CONFIG = os.environ.get("HERD_CONFIG", "bundled:local")


class Sum(BaseModel):
    """An addition and its result."""

    a: int
    b: int
    result: int


class Quantity(BaseModel):
    """A measured quantity."""

    value: int = Field(description="the number")
    unit: str = Field(max_length=20, description="the unit")


QUESTIONS: list[tuple[type[BaseModel], str]] = [
    (Sum, "What is 3 + 4?"),
    (Quantity, "What is the boiling point of water in Celsius?"),
]


def main() -> None:
    config = load_config(CONFIG)
    protocols = {expert.name: expert.protocol for expert in config.experts}
    with LocalHerd(config):
        herd = HerdRouter.from_config(config, max_tokens=40)
        for method in ("json_schema", "function_calling"):
            print(f"\nmethod={method}")
            for schema, question in QUESTIONS:
                structured = herd.with_structured_output(schema, method=method, include_raw=True)
                result = structured.invoke(question)
                assert isinstance(result, dict)  # include_raw: {"raw", "parsed", "parsing_error"}
                decision = result["raw"].response_metadata["herd"]
                answered = decision["answered_by"]
                print(f"  Q: {question}")
                print(f"     parsed: {result['parsed']!r}")
                if result["parsing_error"] is not None:
                    print(f"     parsing error: {result['parsing_error']}")
                print(
                    f"     chosen {decision['ranking'][0]}, answered_by {answered} "
                    f"({protocols[answered]} route), excluded {decision['excluded']}"
                )


if __name__ == "__main__":
    main()
