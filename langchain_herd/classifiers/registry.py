"""Resolve the classifier a herd config names: a folder, or one bundled with the package."""

from __future__ import annotations

from pathlib import Path

from langchain_herd.classifiers.base import SavedClassifier, load_classifier
from langchain_herd.config import BUNDLED_PREFIX
from langchain_herd.errors import ArtifactError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "router_models"


def bundled_classifiers() -> list[str]:
    """Names of the classifiers shipped with the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_classifier(reference: str, base_dir: Path | None = None) -> SavedClassifier:
    """Load ``bundled:<name>`` or a classifier folder (relative to ``base_dir``)."""
    if reference.startswith(BUNDLED_PREFIX):
        name = reference[len(BUNDLED_PREFIX) :]
        if name not in bundled_classifiers():
            raise ArtifactError(f"no bundled classifier {name!r}; bundled: {bundled_classifiers()}")
        return load_classifier(BUNDLED_DIR / name)
    path = Path(reference).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return load_classifier(path)
