"""The command-line flags each inference server documents, at the version the herd pins.

The lists are data (``deploy/flags/<launcher>.json``), each with the exact version, image and
source it was read from, so a flag ``herd compose`` writes can be checked against what that
server version accepts instead of against memory:

- ``tgi``: ``text-generation-launcher`` 3.3.6, from ``docs/source/reference/launcher.md`` at
  tag v3.3.6 of huggingface/text-generation-inference (cross-checked with the launcher's
  clap ``struct Args``).
- ``vllm``: ``vllm serve`` 0.33.0, the parser of ``vllm/entrypoints/common/cli_args.py`` and
  ``vllm/engine/arg_utils.py`` in the vllm 0.33.0 wheel.
- ``sglang``: ``python -m sglang.launch_server`` 0.5.23, the parser of
  ``sglang/srt/server_args.py`` in the sglang 0.5.23 wheel.

Each file's ``source`` and ``method`` keys say exactly how it was obtained. A server run
from another image than the pinned one may accept other flags: the check is only as good as
the match between the image and the list.

Example:
    .. code-block:: python

        from langchain_herd.deploy.launcher_flags import check_command, documented_flags

        print(documented_flags("vllm").version)  # 0.33.0
        print(check_command("vllm", ["model", "--max-model-len", "8192", "--bogus"]))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Launcher = Literal["tgi", "vllm", "sglang"]
#: The launchers the herd can deploy, in the order the docs present them.
LAUNCHERS: tuple[Launcher, ...] = ("tgi", "vllm", "sglang")
FLAGS_DIR = Path(__file__).resolve().parent / "flags"
Arity = Literal["none", "one", "optional", "many"]


@dataclass(frozen=True)
class FlagDoc:
    """One documented flag."""

    name: str
    """The long option, e.g. ``--max-model-len``."""
    values: Arity
    """How many values follow it: ``none`` (a switch), ``one``, ``optional`` or ``many``."""
    choices: tuple[str, ...] | None = None
    """The values it accepts, where the documentation lists them."""


@dataclass(frozen=True)
class LauncherFlags:
    """A launcher's documented flags at one version."""

    launcher: Launcher
    """``tgi``, ``vllm`` or ``sglang``."""
    program: str
    """The command the flags belong to, e.g. ``vllm serve``."""
    version: str
    """The server version the list was read from."""
    image: str
    """The container image of that version."""
    source: str
    """Where the list comes from (repository, tag or wheel, file)."""
    flags: dict[str, FlagDoc]
    """Long option -> its documentation."""

    def __contains__(self, flag: object) -> bool:
        return flag in self.flags


@cache
def documented_flags(launcher: Launcher) -> LauncherFlags:
    """The documented flags of ``launcher`` (read once from the package data)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    data = json.loads((FLAGS_DIR / f"{launcher}.json").read_text(encoding="utf-8"))
    flags = {
        name: FlagDoc(
            name,
            entry["values"],
            tuple(entry["choices"]) if "choices" in entry else None,
        )
        for name, entry in data["flags"].items()
    }
    return LauncherFlags(
        launcher=launcher,
        program=data["program"],
        version=data["version"],
        image=data["image"],
        source=data["source"],
        flags=flags,
    )


def _is_flag(token: str) -> bool:
    # "-1" is a value (vLLM's --max-model-len accepts it), not an option.
    return token.startswith("--") or (token.startswith("-") and not token[1:2].isdigit())


def check_command(launcher: Launcher, args: list[str]) -> list[str]:
    """Problems with a launcher's argument list; empty when every flag is documented, has
    the number of values it takes, and each value is among the documented choices.

    Positional tokens before the first flag (``vllm serve MODEL``) are allowed; ``--flag=value``
    is read as the flag and its value.
    """
    doc = documented_flags(launcher)
    where = f"{doc.program} {doc.version}"
    problems: list[str] = []
    index = 0
    while index < len(args) and not _is_flag(args[index]):
        index += 1
    while index < len(args):
        token = args[index]
        index += 1
        if not _is_flag(token):
            problems.append(f"{token!r} is a value that follows no flag taking one")
            continue
        name, eq, inline = token.partition("=")
        flag = doc.flags.get(name)
        if flag is None:
            problems.append(
                f"{name} is not a documented flag of {where} (the list: "
                f"langchain_herd/deploy/flags/{launcher}.json)"
            )
            continue
        values = [inline] if eq else []
        if not eq and flag.values != "none":
            while index < len(args) and not _is_flag(args[index]):
                values.append(args[index])
                index += 1
                if flag.values in ("one", "optional"):
                    break
        if flag.values == "none" and values:
            problems.append(f"{name} is a switch in {where}; it takes no value")
        elif flag.values in ("one", "many") and not values:
            problems.append(f"{name} needs a value in {where}")
        for value in values:
            if value == "":
                problems.append(f"{name} has an empty value")
            elif flag.choices is not None and value not in flag.choices:
                problems.append(
                    f"{name} {value!r} is not one of {where}'s documented choices: "
                    f"{', '.join(flag.choices)}"
                )
    return problems


def launcher_provenance(launchers: list[Launcher]) -> list[str]:
    """One line per launcher: the version its flags were checked against, and where the list
    lives (for the header of a generated file)."""
    lines = []
    for launcher in launchers:
        doc = documented_flags(launcher)
        lines.append(
            f"{doc.program} flags checked against version {doc.version}'s documented list "
            f"(langchain_herd/deploy/flags/{launcher}.json)"
        )
    return lines
