"""Property-based tests over the herd config schema: every invalid config is a ConfigError.

Mutations of the bundled and shipped configs (unknown keys, wrong types, out-of-range
values, missing required keys) must each give a ``ConfigError`` that names the offending
key, never a raw pydantic ``ValidationError``, ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_herd.config import BUNDLED_CONFIG_DIR, load_config, parse_config
from langchain_herd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(BUNDLED_CONFIG_DIR.glob("*.yaml")) + sorted((ROOT / "tgi_configs").glob("*.yaml"))
VALID = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in SOURCES}
# Small and derandomized: a fixed, fast CI run (well under 10 s); raise max_examples locally.
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Path_ = tuple[str | int, ...]


def _leaves(node: Any, path: Path_ = ()) -> list[Path_]:
    """Every key path below a mapping/list, mappings' keys included."""
    out: list[Path_] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*path, key))
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _leaves(value, (*path, index))
    return out


def _mappings(node: Any, path: Path_ = ()) -> list[Path_]:
    out: list[Path_] = [path] if isinstance(node, dict) else []
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in children:
        out += _mappings(value, (*path, key))
    return out


def _get(node: Any, path: Path_) -> Any:
    for part in path:
        node = node[part]
    return node


def _check(data: Any, named: Path_, original: Any) -> None:
    """Valid, or a ConfigError naming the key, its section, or (for a cross-field rule
    such as "this expert's url does not reach its server") the entry it sits in."""
    try:
        parse_config(data, source="mutant.yaml", resolve_secrets=False)
    except ConfigError as exc:
        message = str(exc)
        names = [str(part) for part in named if not isinstance(part, int)]
        entry = _get(original, named[:-1])
        if isinstance(entry, dict):
            names += [str(v) for v in entry.values() if isinstance(v, str | int) and str(v)]
        assert any(name in message for name in names), (named, message)
        assert "mutant.yaml" in message


WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@FAST
@given(st.sampled_from(sorted(VALID)), st.data(), WRONG_VALUES)
def test_a_wrong_value_anywhere_is_a_config_error(
    name: str, data: st.DataObject, value: Any
) -> None:
    config = copy.deepcopy(VALID[name])
    target = data.draw(st.sampled_from(_leaves(config)))
    _get(config, target[:-1])[target[-1]] = value
    _check(config, target, VALID[name])


@FAST
@given(st.sampled_from(sorted(VALID)), st.data(), st.text(min_size=1, max_size=12))
def test_an_unknown_key_is_named(name: str, data: st.DataObject, key: str) -> None:
    config = copy.deepcopy(VALID[name])
    where = data.draw(st.sampled_from(_mappings(config)))
    mapping = _get(config, where)
    if key in mapping:
        return
    mapping[key] = 1
    with pytest.raises(ConfigError) as info:
        parse_config(config, source="mutant.yaml", resolve_secrets=False)
    assert key in str(info.value) and "unknown key" in str(info.value)


@FAST
@given(st.sampled_from(sorted(VALID)), st.data())
def test_a_removed_key_is_valid_or_named(name: str, data: st.DataObject) -> None:
    config = copy.deepcopy(VALID[name])
    target = data.draw(st.sampled_from([p for p in _leaves(config) if isinstance(p[-1], str)]))
    del _get(config, target[:-1])[target[-1]]
    _check(config, target, VALID[name])


@FAST
@given(
    st.sampled_from(sorted(VALID)),
    st.sampled_from(
        [
            ("fallback", "max_attempts"),
            ("fallback", "breaker", "failure_threshold"),
            ("fallback", "breaker", "cooldown_s"),
            ("router", "policy", "margin"),
            ("router", "sticky", "margin"),
            ("router", "sticky", "max_threads"),
        ]
    ),
    st.one_of(st.integers(max_value=-1), st.floats(min_value=1.01, max_value=1e300)),
)
def test_out_of_range_numbers_name_the_key(name: str, path: Path_, value: float) -> None:
    config = copy.deepcopy(VALID[name])
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    if path[-1] in {"max_attempts", "failure_threshold", "max_threads", "cooldown_s"} and value > 1:
        return  # > 1 is in range for counts and durations
    with pytest.raises(ConfigError, match=str(path[-1])):
        parse_config(config, source="mutant.yaml", resolve_secrets=False)


def test_the_sources_are_valid() -> None:
    assert len(VALID) >= 2
    for name, data in VALID.items():
        parse_config(data, source=name, resolve_secrets=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"experts: " + b"[" * 3_000 + b"]" * 3_000, "nested too deeply"),
        (b"name: \xff\xfe herd\n", "not UTF-8"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"experts: [\n", "not valid YAML"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "herd.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path, resolve_secrets=False)
