"""Merging LoRA adapters of one base model, with PEFT.

PEFT's ``add_weighted_adapter`` does the work where it has the method, on the adapters'
weight deltas (``B @ A x scaling``) so nothing is approximated that need not be:

- linear and task arithmetic: ``cat``, which stacks the adapters (rank = sum of ranks) and
  is exactly ``sum of weight x delta``;
- TIES and DARE: ``ties_svd`` and ``dare_linear_svd``, the method on the deltas, then an SVD
  back to an adapter of rank sum-of-ranks (the merged delta is generally of higher rank:
  this is its best approximation of that rank).

SLERP, which PEFT lacks, is written here: per module, ``s0 x delta0 + s1 x delta1`` with
mergekit's SLERP factors of the two deltas, which ``cat`` then holds exactly.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from langchain_herd.errors import ConfigError
from langchain_herd.merging.methods import MergeRequest
from langchain_herd.server.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

_PEFT_METHOD = {
    "linear": "cat",
    "task_arithmetic": "cat",
    "ties": "ties_svd",
    "dare": "dare_linear_svd",
    "slerp": "cat",
}
MERGED = "merged"


def is_adapter(folder: Path) -> bool:
    """Whether ``folder`` holds a PEFT adapter (rather than a full model)."""
    return (folder / ADAPTER_CONFIG).is_file()


def slerp_factors(t: float, v0: Any, v1: Any, dot_threshold: float = 0.9995) -> tuple[float, float]:
    """mergekit's SLERP as the factors ``(s0, s1)`` of ``s0 x v0 + s1 x v1``.

    Nearly parallel tensors fall back to linear interpolation, as mergekit does.

    Example:
        >>> import torch
        >>> s0, s1 = slerp_factors(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        >>> round(s0, 4), round(s1, 4)
        (0.7071, 0.7071)
    """
    import torch

    n0 = v0 / max(float(torch.linalg.vector_norm(v0)), 1e-8)
    n1 = v1 / max(float(torch.linalg.vector_norm(v1)), 1e-8)
    dot = float((n0 * n1).sum())
    if abs(dot) > dot_threshold:
        return 1.0 - t, t
    theta = math.acos(max(min(dot, 1.0), -1.0))
    return math.sin((1.0 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def merge_adapters(request: MergeRequest) -> dict[str, Any]:
    """Merge the request's adapters into a new adapter folder; returns what was run.

    Raises:
        ConfigError: adapters of different base models, no base model known, peft missing,
            or adapters PEFT cannot combine.
    """
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError(
            "merging adapters needs peft: pip install 'langchain-herd[lora]'"
        ) from exc
    import torch

    configs = [json.loads((path / ADAPTER_CONFIG).read_text("utf-8")) for path in request.experts]
    for path in request.experts:
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise ConfigError(f"adapter {path} has no {ADAPTER_WEIGHTS} (safetensors only)")
    bases = {c.get("base_model_name_or_path") for c in configs}
    base = request.base or (bases.pop() if len(bases) == 1 else None)
    if base is None:
        raise ConfigError(
            f"the adapters name base models {sorted(map(str, bases))}: give the one they share "
            "with --base (tiny, smollm2 or a model folder)"
        )
    from langchain_herd.server.loading import load_backend

    model = load_backend(base).model
    names = [f"expert{i}" for i in range(len(request.experts))]
    peft_model = PeftModel.from_pretrained(model, str(request.experts[0]), adapter_name=names[0])
    for name, path in zip(names[1:], request.experts[1:], strict=True):
        peft_model.load_adapter(str(path), adapter_name=name)
    ranks = [int(c["r"]) for c in configs]
    combination = _PEFT_METHOD[request.method]
    weights = [1.0, 1.0] if request.method == "slerp" else request.expert_weights()
    extra: dict[str, Any] = {}
    if combination.endswith("svd"):
        extra = {"svd_rank": sum(ranks), "density": request.density}
    torch.manual_seed(request.seed)  # DARE's drops
    try:
        peft_model.add_weighted_adapter(
            names, weights, MERGED, combination_type=combination, **extra
        )
    except ValueError as exc:
        raise ConfigError(f"PEFT could not merge these adapters: {exc}") from exc
    if request.method == "slerp":
        _apply_slerp(peft_model, names, ranks, request.t)
    with tempfile.TemporaryDirectory() as scratch:
        peft_model.save_pretrained(scratch, selected_adapters=[MERGED])
        request.out.mkdir(parents=True, exist_ok=True)
        for item in (Path(scratch) / MERGED).iterdir():
            shutil.move(str(item), request.out / item.name)
    record = {
        "method": request.method,
        "peft_combination": combination,
        "experts": [str(p) for p in request.experts],
        "weights": weights,
        "base": base,
        **({"density": request.density} if combination.endswith("svd") else {}),
        **({"t": request.t} if request.method == "slerp" else {}),
        "seed": request.seed,
    }
    (request.out / "herd-merge.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return record


def _apply_slerp(peft_model: Any, names: list[str], ranks: list[int], t: float) -> None:
    """Scale each module's two stacked blocks (``cat``, weights 1) by its SLERP factors."""
    import torch
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for layer in peft_model.modules():
            if not isinstance(layer, LoraLayer):
                continue
            module: Any = layer  # its ModuleDicts are untyped in torch's stubs
            if MERGED not in module.lora_A:
                continue
            if any(name not in module.lora_A for name in names):
                continue  # a module only one adapter targets keeps its delta (PEFT's cat)
            deltas = [
                module.lora_B[n].weight @ module.lora_A[n].weight * module.scaling[n] for n in names
            ]
            s0, s1 = slerp_factors(t, deltas[0].flatten(), deltas[1].flatten())
            merged = module.lora_A[MERGED].weight
            merged[: ranks[0]] *= s0
            merged[ranks[0] : ranks[0] + ranks[1]] *= s1
