"""Recorded answers of real models, for replaying a herd without running any model.

The package ships ``datasets/mmlu_pro_replay.parquet``: the 6,810 MMLU-origin questions of
MMLU-Pro (up to ten options, A-J) with the option each of 28 models chose in TIGER-AI-Lab's
5-shot chain-of-thought runs (null where no letter could be read from its output), and each
model's active parameters, the cost proxy (Apache-2.0; see ``datasets/ATTRIBUTION.md``).
:class:`ReplayTable` reads it and finds a question by its prompt text, which is what the
replay server (``herd serve --replay``) and ``herd demo --replay`` need. Reading it needs
pyarrow only (``pip install 'langchain-herd[data]'``).

Example:
    >>> from langchain_herd.replay import ReplayTable, reply_text
    >>> table = ReplayTable.load()  # doctest: +SKIP
    >>> row = table.find(table.prompts[0])  # doctest: +SKIP
    >>> reply_text(table.letter(row, "gemma-7b"))  # doctest: +SKIP
    'The answer is (I).'
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from langchain_herd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BUNDLED_REPLAY_PATH",
    "METADATA_KEY",
    "NO_LETTER_REPLY",
    "QUESTION_COLUMNS",
    "REPLAY_MODEL_ID",
    "ModelInfo",
    "ReplayTable",
    "estimate_tokens",
    "normalise",
    "reply_text",
]

BUNDLED_REPLAY_PATH = Path(__file__).parent / "datasets" / "mmlu_pro_replay.parquet"
"""The replay table installed with the package."""

METADATA_KEY = "langchain_herd.replay"
"""Schema metadata key of a replay table: JSON with ``models`` (name -> ``active_params_b``,
``open_weights``) and the table's provenance."""

QUESTION_COLUMNS: tuple[str, ...] = ("id", "subject", "group", "category", "prompt", "answer")
"""The columns before the model columns; every other column is one model's letters."""

NO_LETTER_REPLY = "No answer was recorded for this question."
"""What a model says where its recorded output held no readable letter (it counts as wrong,
as it did in the recorded run): a reply from which no option letter can be read."""

REPLAY_MODEL_ID = "mmlu-pro-replay"
"""The name a replay server reports for itself (``/info``); its recorded models are listed as
its adapters in ``/v1/models``, so a herd expert on it has ``model_id: mmlu-pro-replay`` and
``adapter_id: <recorded model>``, as on a multi-LoRA server."""

MAX_TRIMMED_LINES = 4
"""How many leading and trailing lines :meth:`ReplayTable.find` may drop to find a question
(a system text in front of it, an instruction after it)."""

_OPTION_LINE = re.compile(r"^([A-Z])\. ", re.MULTILINE)


def normalise(text: str) -> str:
    """The text as matched: runs of whitespace become one space, ends are stripped."""
    return " ".join(text.split())


def reply_text(letter: str | None) -> str:
    """A replayed answer: ``"The answer is (C)."`` (MMLU-Pro's own answer phrase), or
    :data:`NO_LETTER_REPLY` when the model's output held no letter."""
    return f"The answer is ({letter})." if letter else NO_LETTER_REPLY


def estimate_tokens(text: str) -> int:
    """Token count the replay reports: one token per 3 ASCII characters, one per other
    character, the router's stated estimate (``context_limits.estimate_tokens``; repeated here
    because that module imports langchain_core, which the server does not need)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 3) + len(text) - ascii_chars


def _model_key(name: str) -> str:
    # "meta-llama/Meta-Llama-3_1-8B-Instruct" and "meta-llama-3.1-8b-instruct" name one model.
    return name.rsplit("/", 1)[-1].lower().replace(".", "_")


@dataclass(frozen=True)
class ModelInfo:
    """One recorded model."""

    name: str
    """Its column name, e.g. ``Meta-Llama-3_1-8B-Instruct``."""
    active_params_b: float | None
    """Billions of parameters used per token (the cost proxy); None for closed models."""
    open_weights: bool
    """Whether its weights are public."""


class ReplayTable:
    """Questions, gold letters and every recorded model's chosen letter.

    Rows keep the file's order. Some questions appear twice under two ids (159 prompts in
    the bundled table); :meth:`find` answers the first, and :attr:`unique_rows` lists the
    rows :meth:`find` can return.

    Args:
        columns: the table's columns (:data:`QUESTION_COLUMNS`, then one per model).
        models: every model column's :class:`ModelInfo`, in column order.
        source: the file read, for messages.

    Example:
        >>> table = ReplayTable.load()  # doctest: +SKIP
        >>> table.cost("Meta-Llama-3_1-70B-Instruct")  # doctest: +SKIP
        70.6
    """

    def __init__(
        self,
        columns: dict[str, list[str | None]],
        models: Sequence[ModelInfo],
        source: str = "(in memory)",
    ) -> None:
        missing = [c for c in QUESTION_COLUMNS if c not in columns]
        if missing:
            raise ConfigError(f"{source}: not a replay table, it lacks {missing}")
        self.source = source
        self.ids: list[str] = [str(v) for v in columns["id"]]
        self.prompts: list[str] = [str(v) for v in columns["prompt"]]
        self.answers: list[str] = [str(v) for v in columns["answer"]]
        self.subjects: list[str] = [str(v) for v in columns["subject"]]
        self.groups: list[str] = [str(v) for v in columns["group"]]
        self.categories: list[str] = [str(v) for v in columns["category"]]
        self.info: dict[str, ModelInfo] = {m.name: m for m in models}
        absent = [m.name for m in models if m.name not in columns]
        if absent:
            raise ConfigError(f"{source}: the metadata names models without a column: {absent}")
        self._letters = {m.name: columns[m.name] for m in models}
        self._by_key = {_model_key(name): name for name in self.info}
        self._rows: dict[str, int] = {}
        for row, prompt in enumerate(self.prompts):
            self._rows.setdefault(normalise(prompt), row)
        self.unique_rows: list[int] = sorted(self._rows.values())
        """Rows :meth:`find` can return: the first of each distinct prompt."""

    @classmethod
    def load(cls, path: str | Path | None = None) -> ReplayTable:
        """Read a replay table (default: the bundled one, :data:`BUNDLED_REPLAY_PATH`).

        Raises:
            ImportError: pyarrow is not installed.
            FileNotFoundError: no such file.
            ConfigError: the file is not a replay table.
        """
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError(
                "the replay table needs pyarrow; install it with "
                "`pip install 'langchain-herd[data]'`"
            ) from exc
        file = BUNDLED_REPLAY_PATH if path is None else Path(path)
        if not file.is_file():
            hint = "reinstall langchain-herd (its data files are missing)" if path is None else ""
            raise FileNotFoundError(f"{file}: no such replay table {hint}".rstrip())
        table = pq.read_table(file)
        raw = (table.schema.metadata or {}).get(METADATA_KEY.encode())
        if raw is None:
            raise ConfigError(
                f"{file}: not a replay table (no {METADATA_KEY!r} schema metadata naming its "
                "models; see scripts/build_replay_data.py)"
            )
        described = json.loads(raw)["models"]
        absent = [name for name in described if name not in table.column_names]
        if absent:
            raise ConfigError(f"{file}: the metadata names models without a column: {absent}")
        models = [  # in column order (the metadata's JSON keys are sorted)
            ModelInfo(
                name,
                None if m.get("active_params_b") is None else float(m["active_params_b"]),
                bool(m.get("open_weights", True)),
            )
            for name in table.column_names
            if (m := described.get(name)) is not None
        ]
        return cls(table.to_pydict(), models, source=str(file))

    @property
    def models(self) -> list[str]:
        """Every recorded model, in column order."""
        return list(self.info)

    def __len__(self) -> int:
        return len(self.ids)

    def cost(self, model: str) -> float | None:
        """The model's active parameters in billions (None for closed models)."""
        return self.info[model].active_params_b

    def resolve_model(self, name: str) -> str | None:
        """The recorded model ``name`` means, or None: the column name, any case, with or
        without an ``org/`` prefix, ``.`` or ``_`` alike (``Meta-Llama-3.1-8B-Instruct``)."""
        if name in self.info:
            return name
        return self._by_key.get(_model_key(name))

    def find(self, text: str) -> int | None:
        """The row whose prompt ``text`` is, or None.

        Matched on :func:`normalise`d text; failing that, with up to
        :data:`MAX_TRIMMED_LINES` lines dropped at either end (fewest first), so a system
        text in front of the question or an instruction after it still finds it. A dict
        lookup per try: microseconds.
        """
        row = self._rows.get(normalise(text))
        if row is not None:
            return row
        lines = [line for line in text.splitlines() if line.strip()]
        most = min(MAX_TRIMMED_LINES, len(lines) - 1)
        for dropped in range(1, 2 * most + 1):
            for lead in range(max(0, dropped - most), min(dropped, most) + 1):
                tail = dropped - lead
                window = lines[lead : len(lines) - tail]
                if window:
                    row = self._rows.get(normalise("\n".join(window)))
                    if row is not None:
                        return row
        return None

    def letter(self, row: int, model: str) -> str | None:
        """The letter ``model`` chose on ``row``, or None where none was recorded."""
        return self._letters[model][row]

    def n_choices(self, row: int) -> int:
        """How many options the question lists (A up to J)."""
        letters = _OPTION_LINE.findall(self.prompts[row])
        return max((ord(c) - ord("A") + 1 for c in letters), default=4)

    def answers_matrix(self, models: Sequence[str], rows: Sequence[int]) -> npt.NDArray[np.str_]:
        """``(len(rows), len(models))`` letters, ``""`` where none was recorded."""
        return np.asarray(
            [[self._letters[m][r] or "" for m in models] for r in rows], dtype="<U1"
        ).reshape(len(rows), len(models))

    def correct_matrix(self, models: Sequence[str], rows: Sequence[int]) -> npt.NDArray[np.int8]:
        """``(len(rows), len(models))`` 1 where the recorded letter is the gold one, else 0."""
        answers = self.answers_matrix(models, rows)
        gold = np.asarray([self.answers[r] for r in rows], dtype="<U1")[:, None]
        return (answers == gold).astype(np.int8)

    def to_frame(self, models: Sequence[str] | None = None) -> pd.DataFrame:
        """The table as a correctness table (``id``, question columns, one 0/1 column per
        model), the shape ``herd train`` and ``herd eval`` read. Needs pandas."""
        import pandas as pd

        chosen = list(models) if models is not None else self.models
        rows = list(range(len(self)))
        frame = pd.DataFrame(
            {
                "id": self.ids,
                "subject": self.subjects,
                "group": self.groups,
                "category": self.categories,
                "prompt": self.prompts,
                "answer": self.answers,
            }
        )
        correct = self.correct_matrix(chosen, rows)
        for j, model in enumerate(chosen):
            frame[model] = pd.array(correct[:, j], dtype="Int8")
        return frame
