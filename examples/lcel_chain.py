"""HerdRouter inside LCEL: a prompt, the router as the chain's LLM, a parser, streaming,
and `with_fallbacks` / `with_retry` around the whole herd. Starts the local SmolLM2 herd
(`bundled:local`, or the config in `$HERD_CONFIG`) unless it is already up, and stops what it
started.

    .venv/bin/python examples/lcel_chain.py
"""

from __future__ import annotations

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_herd import HerdRouter, load_config
from langchain_herd.local_servers import LocalHerd

CONFIG = os.environ.get("HERD_CONFIG", "bundled:local")


def main() -> None:
    config = load_config(CONFIG)
    with LocalHerd(config):
        router = HerdRouter.from_config(config)
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Answer in one short sentence."),
                ("user", "{question}"),
            ]
        )
        # If the whole herd is down, say so instead of raising.
        apology = RunnableLambda(lambda _: "The herd is unavailable right now.")
        chain = (
            prompt | router.with_retry(stop_after_attempt=2) | StrOutputParser()
        ).with_fallbacks([apology])
        print(chain.invoke({"question": "What is photosynthesis?"}))
        for piece in (prompt | router | StrOutputParser()).stream(
            {"question": "Name a famous philosopher."}
        ):
            print(piece, end="", flush=True)
        print()


if __name__ == "__main__":
    main()
