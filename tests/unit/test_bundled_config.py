"""Herd configs shipped inside the package: ``load_config("bundled:<name>")`` from any folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_herd import ConfigError, load_config
from langchain_herd.config import BUNDLED_CONFIG_DIR, bundled_configs

ROOT = Path(__file__).resolve().parents[2]
PACKAGED_LOCAL = ROOT / "langchain_herd" / "configs" / "local.yaml"
REPO_LOCAL = ROOT / "tgi_configs" / "local.yaml"


def test_local_is_bundled_inside_the_package() -> None:
    assert "local" in bundled_configs()
    assert BUNDLED_CONFIG_DIR.resolve() == PACKAGED_LOCAL.parent.resolve()


def test_bundled_local_loads_the_four_subject_herd() -> None:
    config = load_config("bundled:local")
    assert sorted(config.route_labels()) == ["humanities", "other", "social_sciences", "stem"]
    assert config.router.classifier.path == "bundled:mmlu-group-tfidf"
    assert config.local_servers[0].model == "smollm2"
    # Relative paths in a bundled config resolve inside the package, never against the cwd.
    assert config.base_dir == BUNDLED_CONFIG_DIR.resolve()


def test_repository_copy_is_identical_to_the_packaged_config() -> None:
    assert REPO_LOCAL.read_bytes() == PACKAGED_LOCAL.read_bytes(), (
        "tgi_configs/local.yaml is a copy of the packaged default; edit "
        "langchain_herd/configs/local.yaml, then: cp langchain_herd/configs/local.yaml "
        "tgi_configs/local.yaml"
    )


def test_unknown_bundled_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("bundled:locall")
    message = str(info.value)
    assert "no bundled config 'locall'" in message
    assert "bundled:local" in message


def test_missing_file_points_at_the_bundled_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such config file.*bundled:local"):
        load_config(tmp_path / "nope.yaml")


def test_package_data_ships_the_configs() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["langchain_herd"]
    assert "configs/*.yaml" in patterns


def test_bundled_config_and_its_classifier_load_outside_the_repository(tmp_path: Path) -> None:
    """A fresh interpreter in a folder that is not the repository root, as a new user runs it."""
    code = (
        "import json\n"
        "from langchain_herd.config import load_config\n"
        "from langchain_herd.classifiers.registry import resolve_classifier\n"
        "config = load_config('bundled:local')\n"
        "classifier = resolve_classifier(config.router.classifier.path, config.base_dir)\n"
        "print(json.dumps({'experts': [e.name for e in config.experts],"
        " 'labels': classifier.labels}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["experts"] == ["stem", "humanities", "social_sciences", "other"]
    assert sorted(out["labels"]) == ["humanities", "other", "social_sciences", "stem"]
