"""YAML output for the deployment writers: block style, keys in the order written, multi-line
strings (the herd config in a ConfigMap) as literal blocks, and a comment header.

Example:
    >>> print(render_yaml([{"a": "x\\ny\\n"}], header=["made by hand"]), end="")
    # made by hand
    a: |
      x
      y
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def render_yaml(documents: list[dict[str, Any]], *, header: Sequence[str] = ()) -> str:
    """One or more YAML documents (``---`` between them) after ``# `` header lines."""
    text = yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
        explicit_start=len(documents) > 1,
    )
    lines = "".join(f"# {line}".rstrip() + "\n" for line in header)
    return lines + text
