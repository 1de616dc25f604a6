"""A swarm's state after each step, saved so a killed run resumes exactly where it stopped.

``DIR/state/`` holds ``state.json`` (scalars, the RNG's state, the history) and
``step-NNNNNN.safetensors`` (every particle's position x, velocity v and personal best p,
and the global best g and global worst g_w). Both are written to a temporary file and moved
into place with ``os.replace``; ``state.json`` is written last and names its tensor file,
so a kill at any moment leaves a consistent previous step. Older tensor files are removed
once the new ``state.json`` is in place.

Example:
    >>> import tempfile, torch
    >>> folder = Path(tempfile.mkdtemp())
    >>> one = {"w": torch.ones(2)}
    >>> state = SwarmState(step=0, step_size=0.5, since_improved=0, rng={}, scalars={},
    ...     x=[one], v=[one], p=[one], g=one, g_worst=one)
    >>> save_state(folder, state)
    >>> load_state(folder).step
    0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_herd.atomic_files import write_atomically
from langchain_herd.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["STATE_DIR", "SwarmState", "load_state", "save_state"]

STATE_DIR = "state"
_STATE_JSON = "state.json"
_TENSORS = ("x", "v", "p")


@dataclass
class SwarmState:
    """Everything a step needs to continue.

    Attributes:
        step: steps done (0: the starting particles are evaluated).
        step_size: lambda for the next step (already decayed).
        since_improved: steps since the global best last improved.
        rng: the ``numpy.random.Generator``'s ``bit_generator.state``.
        scalars: utilities, metrics, history and run identity (JSON-ready).
        x: positions, one per particle.
        v: velocities.
        p: personal bests.
        g: the global best.
        g_worst: the global worst.
        finished: no step is left (patience or the step limit reached).
    """

    step: int
    step_size: float
    since_improved: int
    rng: dict[str, Any]
    scalars: dict[str, Any]
    x: list[dict[str, torch.Tensor]]
    v: list[dict[str, torch.Tensor]]
    p: list[dict[str, torch.Tensor]]
    g: dict[str, torch.Tensor]
    g_worst: dict[str, torch.Tensor]
    finished: bool = False


def save_state(out: Path, state: SwarmState) -> None:
    """Save ``state`` under ``out/state/`` (tensors first, then the JSON that commits them)."""
    from safetensors.torch import save

    folder = out / STATE_DIR
    # Positions share storage (a personal best is a position): safetensors wants copies.
    tensors: dict[str, torch.Tensor] = {}
    for kind in _TENSORS:
        for index, particle in enumerate(getattr(state, kind)):
            for key, value in particle.items():
                tensors[f"{kind}.{index}.{key}"] = value.clone()
    for key, value in state.g.items():
        tensors[f"g.{key}"] = value.clone()
    for key, value in state.g_worst.items():
        tensors[f"w.{key}"] = value.clone()
    tensor_file = f"step-{state.step:06d}.safetensors"
    write_atomically(folder / tensor_file, save(tensors))
    record = {
        "step": state.step,
        "step_size": state.step_size,
        "since_improved": state.since_improved,
        "finished": state.finished,
        "particles": len(state.x),
        "tensors": tensor_file,
        "rng": state.rng,
        "scalars": state.scalars,
    }
    write_atomically(folder / _STATE_JSON, json.dumps(record, indent=1).encode())
    for old in folder.glob("step-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


def load_state(out: Path) -> SwarmState | None:
    """The state saved under ``out/state/``, or None when there is none.

    Raises:
        ConfigError: the state is unreadable (not written by this version, or edited).
    """
    from safetensors.torch import load_file

    folder = out / STATE_DIR
    file = folder / _STATE_JSON
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text("utf-8"))
        tensors = load_file(folder / record["tensors"])
        count = int(record["particles"])
        per_kind: dict[str, list[dict[str, torch.Tensor]]] = {
            kind: [{} for _ in range(count)] for kind in _TENSORS
        }
        g: dict[str, torch.Tensor] = {}
        g_worst: dict[str, torch.Tensor] = {}
        for name, value in tensors.items():
            kind, _, rest = name.partition(".")
            if kind == "g":
                g[rest] = value
            elif kind == "w":
                g_worst[rest] = value
            else:
                index, _, key = rest.partition(".")
                per_kind[kind][int(index)][key] = value
        return SwarmState(
            step=int(record["step"]),
            step_size=float(record["step_size"]),
            since_improved=int(record["since_improved"]),
            rng=record["rng"],
            scalars=record["scalars"],
            x=per_kind["x"],
            v=per_kind["v"],
            p=per_kind["p"],
            g=g,
            g_worst=g_worst,
            finished=bool(record["finished"]),
        )
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ConfigError(
            f"{folder}: the saved swarm state is unreadable ({exc}); remove {folder} to start "
            "the search again, or give another --out"
        ) from exc
