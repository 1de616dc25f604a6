"""Model Swarms (arXiv 2410.11163): ``herd swarm``, a particle swarm search over LoRA experts.

- :mod:`~langchain_herd.swarm.update`: the update of one particle (pure, on dicts of tensors).
- :mod:`~langchain_herd.swarm.state`: the state saved after every step, for exact resumes.
- :mod:`~langchain_herd.swarm.search`: the search (:func:`run_swarm`, :class:`SwarmSettings`).
- :mod:`~langchain_herd.swarm.cli`: ``herd swarm CONFIG --utility DATASET --out DIR``.

Torch, PEFT and the model load only when a search runs.
"""

from langchain_herd.swarm.search import MIN_QUESTIONS, SwarmResult, SwarmSettings, run_swarm
from langchain_herd.swarm.update import SwarmWeights, step_particle

__all__ = [
    "MIN_QUESTIONS",
    "SwarmResult",
    "SwarmSettings",
    "SwarmWeights",
    "run_swarm",
    "step_particle",
]
