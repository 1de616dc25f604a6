"""The classifier interface: a classifier only scores, it never decides.

A classifier maps query texts to one score per route label (``predict_proba``). The
policy turns scores into a ranking of experts; the router runs the experts. Saved
classifiers are a directory holding ``config.json`` plus ``*.safetensors`` (and
vocabulary/tokenizer files), never pickle, so loading one someone sent you runs none
of their code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from langchain_herd.artifact_files import read_json
from langchain_herd.errors import ArtifactError

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A config.json larger than this is refused before it is parsed."""


@runtime_checkable
class Classifier(Protocol):
    """Scores queries against route labels.

    ``labels`` names the columns of ``predict_proba``'s output; they are the route
    labels of a herd config (e.g. ``stem``) or, for correctness routers, expert names.
    """

    labels: list[str]

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Return an array of shape ``(len(texts), len(labels))`` with one score per label."""
        ...


class SavedClassifier:
    """Base for classifiers saved as ``config.json`` + safetensors; subclasses register a kind.

    Subclasses set ``kind`` and implement ``save_pretrained`` and ``_load``; the registry
    lets ``load_classifier(path)`` pick the class named by the artifact's config.
    """

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[SavedClassifier]]] = {}
    labels: list[str]
    mode: str = "category"
    """``category``: one score per route label (softmax); ``correctness``: per expert, the
    probability it answers correctly."""
    calibration: dict[str, Any] | None = None
    """A policy value chosen by ``herd calibrate`` (``{"policy", "value", ...}``), if any."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            SavedClassifier.registry[cls.kind] = cls

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load(cls, path: Path, config: dict[str, Any]) -> SavedClassifier:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SavedClassifier:
        """Load a classifier directory; on the base class, dispatch on the saved ``kind``."""
        directory = Path(path)
        config = read_artifact_config(directory)
        kind = config.get("kind")
        if cls is SavedClassifier:
            _register_builtin_kinds()
        target = cls.registry.get(str(kind)) if cls is SavedClassifier else cls
        if target is None or (cls is not SavedClassifier and kind != cls.kind):
            known = ", ".join(sorted(cls.registry)) or "none"
            raise ArtifactError(
                f"{directory / CONFIG_FILE}: classifier kind {kind!r} is not one this loader "
                f"knows (known kinds: {known}); was it saved by a newer langchain-herd?"
            )
        classifier = target._load(directory, config)
        classifier.mode = str(config.get("mode", classifier.mode))
        calibration = config.get("calibration")
        classifier.calibration = calibration if isinstance(calibration, dict) else None
        return classifier


def read_artifact_config(directory: Path) -> dict[str, Any]:
    """Read and sanity-check an artifact's ``config.json``."""
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ArtifactError(
            f"{directory}: no {CONFIG_FILE} found; a classifier artifact is a directory with "
            f"{CONFIG_FILE} and *.safetensors files (made by save_pretrained or `herd train`)"
        )
    config = read_json(config_path, limit=MAX_CONFIG_BYTES)
    if not isinstance(config, dict) or not isinstance(config.get("labels"), list):
        raise ArtifactError(f"{config_path}: expected an object with a 'labels' list")
    return config


def _register_builtin_kinds() -> None:
    """Import the built-in kinds so their classes are in ``SavedClassifier.registry``."""
    # Imported here, not at the top: each of these modules imports this one, and a process
    # that only imported the base class would otherwise know no kinds. None loads torch.
    from langchain_herd.classifiers import embedding, finetuned, tfidf  # noqa: F401


def load_classifier(path: str | Path) -> SavedClassifier:
    """Load any registered classifier artifact from ``path``.

    The same as ``SavedClassifier.from_pretrained(path)``.
    """
    return SavedClassifier.from_pretrained(path)
