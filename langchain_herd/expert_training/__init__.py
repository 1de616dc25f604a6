"""Training subject experts: ``herd finetune-expert BASE DATA --out DIR``.

A LoRA adapter (PEFT) of a base model, trained on one group's multiple-choice questions with
the loss on the gold answer only, validated on held-back facts, stopped early and saved as a
folder ``herd serve --lora-adapters`` (and TGI) loads.

- :mod:`~langchain_herd.expert_training.data`: questions in, masked token sequences out.
- :mod:`~langchain_herd.expert_training.trainer`: the training loop and what it writes.

Example:
    >>> from pathlib import Path
    >>> from langchain_herd.expert_training import FinetuneSettings, finetune_expert
    >>> settings = FinetuneSettings(max_steps=40, eval_every=10)
    >>> finetune_expert("smollm2", "skills:stem", Path("stem"), settings)  # doctest: +SKIP
"""

from langchain_herd.expert_training.trainer import (
    RUN_FILE,
    FinetuneResult,
    FinetuneSettings,
    finetune_expert,
)

__all__ = ["RUN_FILE", "FinetuneResult", "FinetuneSettings", "finetune_expert"]
