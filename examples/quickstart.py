"""Route a few questions through the embedded local herd and show each decision.

Run after `herd up bundled:local` (in another terminal), or let this script start the
local server itself (and stop it at the end); `$HERD_CONFIG` names another herd config:

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import os

from langchain_herd import HerdRouter, load_config
from langchain_herd.local_servers import LocalHerd

CONFIG = os.environ.get("HERD_CONFIG", "bundled:local")
QUESTIONS = [
    "What is the derivative of x**3 with respect to x?",
    "Who wrote the Critique of Pure Reason?",
    "What does a central bank do when it raises interest rates?",
    "How many hours of sleep do adults need?",
]


def main() -> None:
    config = load_config(CONFIG)
    with LocalHerd(config):
        router = HerdRouter.from_config(config)
        for question in QUESTIONS:
            answer, decision = router.invoke_with_decision(question)
            best = max(decision.scores, key=lambda label: decision.scores[label])
            print(
                f"Q: {question}\n   route {best} ({decision.scores[best]:.2f}) -> "
                f"{decision.answered_by}: {answer.text.strip()[:80]!r}"
            )


if __name__ == "__main__":
    main()
