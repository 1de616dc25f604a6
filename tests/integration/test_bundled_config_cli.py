"""The README's quick start from a folder that is not the repository: ``bundled:local``.

Every command runs in a fresh interpreter whose working directory is a temporary folder, as
for a user who installed the package, so nothing can be found through the repository root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERD = [sys.executable, "-m", "langchain_herd.cli"]
STEM_Q = "Compute the derivative of the polynomial x^3 + 2x with respect to x."


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_router_from_bundled_config_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "from langchain_herd import HerdRouter\n"
        "router = HerdRouter.from_config('bundled:local')\n"
        f"print(router.route({STEM_Q!r}).ranking[0])\n"
    )
    result = run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stem"


def test_route_accepts_a_bundled_config(tmp_path: Path) -> None:
    result = run([*HERD, "route", "bundled:local", STEM_Q, "--decision-only"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ranking:  stem >" in result.stdout


def test_unknown_bundled_config_names_the_known_ones(tmp_path: Path) -> None:
    for command in (["up", "bundled:nope"], ["route", "bundled:nope", "hi"]):
        result = run([*HERD, *command], tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "no bundled config 'nope'" in result.stderr
        assert "bundled:local" in result.stderr


def test_help_names_the_bundled_configs(tmp_path: Path) -> None:
    for command in ("up", "route", "demo"):
        result = run([*HERD, command, "--help"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert "bundled:local" in result.stdout, command
