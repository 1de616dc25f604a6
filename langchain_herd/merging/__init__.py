"""Merging experts in weight space: ``herd merge``.

- :mod:`~langchain_herd.merging.checkpoints`: full checkpoints, with mergekit (the maintained
  merge toolkit: linear, SLERP, TIES, DARE, task arithmetic, memory-lean and sharded).
- :mod:`~langchain_herd.merging.adapters`: LoRA adapters of one base model, with PEFT's
  ``add_weighted_adapter`` (exact ``cat`` for linear / task arithmetic, TIES and DARE on the
  adapters' weight deltas); SLERP, which PEFT lacks, is written here on the same deltas.

Either way the result is a new expert folder that ``herd serve`` (and TGI) loads: a model
folder, or an adapter folder for ``--lora-adapters``.
"""

from langchain_herd.merging.methods import MERGE_METHODS, MergeRequest

__all__ = ["MERGE_METHODS", "MergeRequest"]
