"""Merging full checkpoints with mergekit.

mergekit reads the experts tensor by tensor (never a whole model in memory), writes sharded
safetensors and copies the tokenizer, so its output is a model folder ``herd serve --model``
and TGI load as they are. This module only turns a :class:`MergeRequest` into mergekit's
configuration, which is written next to the merge as ``herd-merge.yaml`` for the record.
"""

from __future__ import annotations

from typing import Any

import yaml

from langchain_herd.errors import ConfigError
from langchain_herd.merging.methods import MergeRequest

#: Our method names in mergekit's, with whether the weights are normalised: off for sums
#: of task vectors (task arithmetic, DARE) and for linear (the caller's weights, as given);
#: on for TIES, whose merge is the mean of the values that agree with the elected sign.
_MERGEKIT: dict[str, tuple[str, bool | None]] = {
    "linear": ("linear", False),
    "task_arithmetic": ("task_arithmetic", False),
    "ties": ("ties", True),
    "dare": ("dare_linear", False),
    "slerp": ("slerp", None),
}


def mergekit_config(request: MergeRequest) -> dict[str, Any]:
    """mergekit's merge configuration for ``request``.

    Raises:
        ConfigError: a method that needs a base model has none.
    """
    method, normalize = _MERGEKIT[request.method]
    weights = request.expert_weights()
    config: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if request.method == "slerp":
        first, second = (str(path) for path in request.experts)
        config["base_model"] = first
        config["models"] = [{"model": first}, {"model": second}]
        config["parameters"] = {"t": request.t}
        return config
    models = []
    for path, weight in zip(request.experts, weights, strict=True):
        parameters: dict[str, Any] = {"weight": weight}
        if request.method in ("ties", "dare"):
            parameters["density"] = request.density
        models.append({"model": str(path), "parameters": parameters})
    config["models"] = models
    config["parameters"] = {"normalize": normalize}
    if request.method != "linear":
        if request.base is None:
            raise ConfigError(
                f"{request.method} merges task vectors: give the experts' base model with --base"
            )
        config["base_model"] = request.base
    return config


def merge_checkpoints(request: MergeRequest) -> dict[str, Any]:
    """Run the merge with mergekit; returns the configuration it ran.

    Raises:
        ConfigError: mergekit is missing, or the experts do not merge (different
            architectures or shapes).
    """
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError as exc:
        raise ConfigError(
            "merging checkpoints needs mergekit: pip install 'langchain-herd[merge]'"
        ) from exc
    config = mergekit_config(request)
    options = MergeOptions(random_seed=request.seed, write_model_card=False, quiet=True)
    try:
        run_merge(MergeConfiguration.model_validate(config), str(request.out), options)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ConfigError(
            f"mergekit could not merge {[str(p) for p in request.experts]}: {exc}; the experts "
            "must share an architecture and tensor shapes"
        ) from exc
    (request.out / "herd-merge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config
