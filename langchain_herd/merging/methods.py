"""What a merge asks for, checked before any weight is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langchain_herd.errors import ConfigError

#: Merge methods, each with what it needs. ``base``: a base model the experts' task vectors
#: are taken against (TIES, DARE, task arithmetic; SLERP interpolates two experts).
MERGE_METHODS: dict[str, str] = {
    "linear": "weighted average of the experts' weights (weights default to equal)",
    "task_arithmetic": "base + sum of weight x (expert - base)",
    "ties": "task vectors trimmed to --density, signs elected, agreeing values averaged",
    "dare": "task vectors randomly dropped to --density and rescaled, then summed",
    "slerp": "spherical interpolation of two experts at --t (0: the first, 1: the second)",
}


@dataclass(frozen=True)
class MergeRequest:
    """One merge: ``method`` over ``experts`` (folders), written to ``out``.

    Attributes:
        method: one of :data:`MERGE_METHODS`.
        experts: model folders, or LoRA adapter folders of one base model.
        out: the new expert's folder.
        base: the base model (a folder, or for adapters anything ``herd serve --model``
            takes); adapters default to their ``base_model_name_or_path``.
        weights: one per expert (default: 1/n for linear, 1 otherwise).
        density: share of task-vector values kept (TIES, DARE).
        t: SLERP's interpolation factor.
        seed: DARE's random drops.
    """

    method: str
    experts: tuple[Path, ...]
    out: Path
    base: str | None = None
    weights: tuple[float, ...] | None = None
    density: float = 0.5
    t: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in MERGE_METHODS:
            raise ConfigError(
                f"unknown merge method {self.method!r}; choose one of {sorted(MERGE_METHODS)}"
            )
        if self.method == "slerp" and len(self.experts) != 2:
            raise ConfigError(f"slerp merges exactly two experts, got {len(self.experts)}")
        if not self.experts:
            raise ConfigError("name at least one expert folder to merge")
        if self.weights is not None and len(self.weights) != len(self.experts):
            raise ConfigError(
                f"--weights has {len(self.weights)} values for {len(self.experts)} experts"
            )
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"--density must be in (0, 1], got {self.density}")
        if not 0.0 <= self.t <= 1.0:
            raise ConfigError(f"--t must be in [0, 1], got {self.t}")
        for folder in self.experts:
            if not folder.is_dir():
                raise ConfigError(f"expert {folder} is not a folder")
        if self.out.exists() and any(self.out.iterdir()):
            raise ConfigError(f"--out {self.out} exists and is not empty; choose a new folder")

    def expert_weights(self) -> list[float]:
        """The weights, with the method's default."""
        if self.weights is not None:
            return list(self.weights)
        if self.method == "linear":
            return [1.0 / len(self.experts)] * len(self.experts)
        return [1.0] * len(self.experts)
