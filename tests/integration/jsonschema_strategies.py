"""Request bodies drawn from a pydantic model's JSON schema.

Two generators read the same schema. :func:`compiled_bodies` turns the subset pydantic emits
(``$ref``, ``anyOf``, ``enum``, objects, arrays, bounded numbers, patterns) into one hypothesis
strategy up front, so a draw costs microseconds; hypothesis-jsonschema (:func:`bodies_of`)
covers all of JSON Schema but rebuilds strategies inside every draw (about half a second per
body here), so it only runs in the long fuzzing run.

hypothesis-jsonschema 0.23.1 (the latest) calls ``many.more()``, which hypothesis 6.150+
replaced by iterating ``many``; :func:`_install_many_more` adds the old method back for it
alone (hypothesis itself is not touched), until a release of hypothesis-jsonschema catches up.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import hypothesis_jsonschema._from_schema as _from_schema
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as _cu
from hypothesis_jsonschema import from_schema
from pydantic import BaseModel


def _install_many_more() -> None:
    if hasattr(_cu.many, "more"):
        return

    class _ManyWithMore(_cu.many):
        """``many`` driven by ``while elements.more():``, as hypothesis-jsonschema does."""

        def __init__(self, data: Any, **kwargs: Any) -> None:
            super().__init__(data, **kwargs)
            self._depth = data.depth  # what ``with many(...)`` would set on entering

        def more(self) -> bool:
            self._finish_element()
            if not self._decide():
                return False
            self.count += 1
            self._in_element = True
            self._rejected = False
            return True

    patched = types.SimpleNamespace(**vars(_cu))
    patched.many = _ManyWithMore
    _from_schema.cu = patched  # type: ignore[attr-defined]


_install_many_more()


def closed_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with no extra properties, so draws spend themselves on the
    fields the route reads (unknown fields are fuzzed by the mutations instead)."""
    schema = copy.deepcopy(model.model_json_schema())
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return schema


def bodies_of(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Bodies valid against ``model``'s (closed) JSON schema, by hypothesis-jsonschema."""
    return from_schema(closed_schema(model))


JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
"""Any JSON value (what a schema of ``{}`` allows)."""


def compiled_bodies(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Bodies valid against ``model``'s (closed) JSON schema, compiled once into a strategy."""
    schema = closed_schema(model)
    definitions: dict[str, Any] = schema.get("$defs", {})
    compiled: dict[str, st.SearchStrategy[Any]] = {}

    def ref(name: str) -> st.SearchStrategy[Any]:
        if name not in compiled:
            compiled[name] = st.deferred(lambda: build(definitions[name]))
        return compiled[name]

    def build(node: dict[str, Any]) -> st.SearchStrategy[Any]:
        if "$ref" in node:
            return ref(node["$ref"].rsplit("/", 1)[-1])
        for key in ("anyOf", "oneOf"):
            if key in node:
                return st.one_of([build(option) for option in node[key]])
        if "allOf" in node:
            return build(node["allOf"][0])
        if "const" in node:
            return st.just(node["const"])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        kind = node.get("type")
        if kind == "object":
            return _object(node, build)
        if kind == "array":
            items = build(node.get("items", {}))
            low = node.get("minItems", 0)
            return st.lists(items, min_size=low, max_size=max(node.get("maxItems", 4), low))
        if kind == "string":
            if "pattern" in node:
                return st.from_regex(node["pattern"], fullmatch=True)
            return st.text(min_size=node.get("minLength", 0), max_size=40)
        if kind == "integer":
            return st.integers(node.get("minimum"), node.get("maximum"))
        if kind == "number":
            return st.floats(
                node.get("minimum", node.get("exclusiveMinimum")),
                node.get("maximum", node.get("exclusiveMaximum")),
                exclude_min="exclusiveMinimum" in node,
                exclude_max="exclusiveMaximum" in node,
                allow_nan=False,
                allow_infinity=False,
            )
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return JSON_VALUES

    return build(schema)


def _object(
    node: dict[str, Any], build: Callable[[dict[str, Any]], st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = node.get("properties", {})
    required = set(node.get("required", ()))
    extra = node.get("additionalProperties", True)
    if not properties:
        values = build(extra) if isinstance(extra, dict) else JSON_VALUES
        return st.dictionaries(st.text(max_size=12), values, max_size=4)
    fields = {name: build(schema) for name, schema in properties.items()}

    @st.composite
    def draw_object(draw: st.DrawFn) -> dict[str, Any]:
        return {
            name: draw(strategy)
            for name, strategy in fields.items()
            if name in required or draw(st.booleans())
        }

    return draw_object()
