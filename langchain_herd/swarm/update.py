"""The Model Swarms update of one particle (arXiv 2410.11163, Algorithm 1), on dicts of tensors.

A particle is an expert's LoRA weights, one tensor per adapter key. Each step moves it by

    v <- (1/C) [phi_v r_v v + phi_p r_p (p - x) + phi_g r_g (g - x) - phi_w r_w (g_w - x)]
    x <- x + lambda v,     C = phi_v r_v + phi_p r_p + phi_g r_g + phi_w r_w

with ``p`` its personal best, ``g`` the swarm's global best, ``g_w`` the global worst and
``r_*`` uniform random factors drawn per particle and step. Kept pure (no model, no RNG) so
a test can check it against a hand-computed case.

Example:
    >>> import torch
    >>> one = {"w": torch.tensor([1.0])}
    >>> x, v = step_particle(
    ...     x=one, v={"w": torch.tensor([0.0])}, personal=one, best=one,
    ...     worst={"w": torch.tensor([0.0])}, factors=(1.0, 1.0, 1.0, 1.0),
    ...     weights=SwarmWeights(1.0, 1.0, 1.0, 1.0), step_size=1.0,
    ... )
    >>> float(x["w"][0]), float(v["w"][0])
    (1.25, 0.25)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Particle", "SwarmWeights", "step_particle"]

Particle = Mapping[str, "torch.Tensor"]
"""One point of the search: adapter key -> tensor (every particle has the same keys and shapes)."""

# Guards 1/C when every random factor happens to be 0 (probability zero, but not impossible).
_MIN_NORMALIZER = 1e-12


@dataclass(frozen=True)
class SwarmWeights:
    """The update's four weights: phi_v, phi_p, phi_g, phi_w.

    Attributes:
        inertia: keep moving the way the particle moved (phi_v).
        personal: pull towards the particle's own best position (phi_p).
        social: pull towards the swarm's global best (phi_g).
        repel: push away from the global worst (phi_w).
    """

    inertia: float
    personal: float
    social: float
    repel: float


def step_particle(
    *,
    x: Particle,
    v: Particle,
    personal: Particle,
    best: Particle,
    worst: Particle,
    factors: tuple[float, float, float, float],
    weights: SwarmWeights,
    step_size: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One particle's new position and velocity.

    Args:
        x: its position.
        v: its velocity.
        personal: its personal best position.
        best: the global best position.
        worst: the global worst position.
        factors: the random factors ``(r_v, r_p, r_g, r_w)``, each in [0, 1).
        weights: the update's weights.
        step_size: lambda, how far along the new velocity the particle moves.

    Returns:
        ``(x + lambda v', v')`` with ``v'`` the new velocity.
    """
    r_v, r_p, r_g, r_w = factors
    a_v = weights.inertia * r_v
    a_p = weights.personal * r_p
    a_g = weights.social * r_g
    a_w = weights.repel * r_w
    scale = 1.0 / max(a_v + a_p + a_g + a_w, _MIN_NORMALIZER)
    new_x: dict[str, torch.Tensor] = {}
    new_v: dict[str, torch.Tensor] = {}
    for key, here in x.items():
        velocity = scale * (
            a_v * v[key]
            + a_p * (personal[key] - here)
            + a_g * (best[key] - here)
            - a_w * (worst[key] - here)
        )
        new_v[key] = velocity
        new_x[key] = here + step_size * velocity
    return new_x, new_v
