"""MMLU helpers: load the bundled questions, format prompts, read answer letters, sample.

MMLU (Hendrycks et al., MIT licence; see ``datasets/ATTRIBUTION.md``) ships with the
package as ``datasets/mmlu.parquet``: 14,042 test and 285 dev questions over 57 subjects,
each tagged with one of four groups (:data:`MMLU_GROUPS`), the experts of the demo herd.
pandas and pyarrow are needed only to load it (``pip install 'langchain-herd[data]'``).

Example:
    >>> from langchain_herd.mmlu import extract_letter, format_question
    >>> prompt = format_question("What is 2 + 2?", ["3", "4", "5", "6"])
    >>> prompt.splitlines()[2]
    'B. 4'
    >>> extract_letter("The answer is B.")
    'B'
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from langchain_herd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BUNDLED_MMLU_PATH",
    "MMLU_COLUMNS",
    "MMLU_GROUPS",
    "extract_letter",
    "format_question",
    "load_mmlu",
    "sample_questions",
]

MMLU_GROUPS: tuple[str, ...] = ("stem", "humanities", "social_sciences", "other")
"""The MMLU authors' four subject categories, in a fixed order (the demo's four experts)."""

MMLU_COLUMNS: tuple[str, ...] = (
    "id",
    "split",
    "subject",
    "group",
    "question",
    "A",
    "B",
    "C",
    "D",
    "answer",
)
"""Columns every MMLU frame returned by :func:`load_mmlu` has."""

BUNDLED_MMLU_PATH = Path(__file__).parent / "datasets" / "mmlu.parquet"
"""The copy of MMLU installed with the package."""

_LETTERS = string.ascii_uppercase
_INSTRUCTION = "Answer with the letter only ({letters})."


def load_mmlu(path: str | Path | None = None) -> pd.DataFrame:
    """Load MMLU questions as a DataFrame (default: the copy bundled with the package).

    Args:
        path: a parquet file with the columns of :data:`MMLU_COLUMNS`; ``None`` loads
            the bundled copy.

    Returns:
        One row per question: ``id``, ``split`` (``test``/``dev``), ``subject``,
        ``group`` (one of :data:`MMLU_GROUPS`), ``question``, choices ``A``-``D`` and the
        gold letter ``answer``.

    Raises:
        ImportError: pandas or pyarrow is not installed.
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file lacks some of the MMLU columns.

    Example:
        >>> df = load_mmlu()  # doctest: +SKIP
        >>> df.groupby("group").size()["stem"]  # doctest: +SKIP
        3108
    """
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas needs it to read parquet)
    except ImportError as exc:
        raise ImportError(
            f"load_mmlu needs pandas and pyarrow ({exc.name} is missing); install them "
            "with `pip install 'langchain-herd[data]'`"
        ) from exc
    file = BUNDLED_MMLU_PATH if path is None else Path(path)
    if not file.is_file():
        hint = (
            "the package was installed without its data files; reinstall langchain-herd"
            if path is None
            else "pass the path of an MMLU parquet file, or None for the bundled copy"
        )
        raise FileNotFoundError(f"{file}: no such MMLU file ({hint})")
    # pandas' default NA handling only: some MMLU choices are the literal string "None".
    df = pd.read_parquet(file)
    missing = [column for column in MMLU_COLUMNS if column not in df.columns]
    if missing:
        raise ConfigError(
            f"{file}: not an MMLU table, it lacks the column(s) {', '.join(missing)} "
            f"(expected {', '.join(MMLU_COLUMNS)})"
        )
    return df


def format_question(question: str, choices: Sequence[str]) -> str:
    """Build the multiple-choice prompt the demo sends to experts (and routes on).

    The question, a blank line, one ``"A. ..."`` line per choice, a blank line, then an
    instruction to answer with the letter only.

    Args:
        question: the question text.
        choices: the answer options, lettered in order from ``A`` (at most 26).

    Raises:
        ValueError: no choices, or more than 26.

    Example:
        >>> print(format_question("2 + 2 =", ["3", "4"]))
        2 + 2 =
        <BLANKLINE>
        A. 3
        B. 4
        <BLANKLINE>
        Answer with the letter only (A or B).
    """
    if not 1 <= len(choices) <= len(_LETTERS):
        raise ValueError(f"format_question takes 1 to 26 choices, got {len(choices)}")
    letters = _LETTERS[: len(choices)]
    lines = [question.strip(), ""]
    lines += [
        f"{letter}. {str(choice).strip()}" for letter, choice in zip(letters, choices, strict=True)
    ]
    listed = letters[0] if len(letters) == 1 else ", ".join(letters[:-1]) + f" or {letters[-1]}"
    lines += ["", _INSTRUCTION.format(letters=listed)]
    return "\n".join(lines)


_THINK_END = re.compile(r"</think>", re.IGNORECASE)
# Markdown emphasis and code marks carry no meaning for the letter and break simple patterns.
_MARKUP = re.compile(r"[*_`#]+")
# A lower-case word after "A"/"I" ("A cell", "I think") makes them article or pronoun.
_WORD_AFTER = re.compile(r"\s+(?!(?:or|and|nor)\b)[a-z]")


def _letter_patterns(letters: str) -> list[re.Pattern[str]]:
    cls = f"[{letters}]"
    lower = f"[{letters.lower()}]"
    # A lower-case letter counts only where it cannot be the article "a" or a word.
    letter = rf"(?:({cls})(?![\w'])|({lower})(?=\s*[\)\]]|\s*[.!]?\s*$))"
    return [
        # The whole reply is the letter, maybe wrapped: "C", "c.", "(C)", "[C]", "Option C".
        re.compile(
            rf"^\W*(?:(?:answer|option|choice)\s*:?\s*)?[\(\[]?({cls})[\)\]]?\W*$",
            re.IGNORECASE,
        ),
        # "The answer is C", "Answer: (C)", "correct option would be C", "answer is: c)".
        re.compile(
            r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be|must\s+be))?"
            rf"\s*[:=]?\s*(?:option|choice|letter)?)\s*[\(\[]?{letter}"
        ),
        # Leads with the letter: "C. Paris", "C) Paris", "(C) Paris", "C: Paris", "C - Paris".
        re.compile(rf"^\s*[\(\[]?({cls})(?:[\)\]\.:]|\s+-)(?!\w)"),
    ]


def extract_letter(text: str, n_choices: int = 4) -> str | None:
    """Read the answer letter out of a model's reply, or ``None`` if it names none clearly.

    Accepts the forms small models usually produce: ``"C"``, ``"C."``, ``"(C)"``,
    ``"**C**"``, ``"C. Paris"``, ``"Answer: C"``, ``"The answer is C"``, and reads only
    the part after a closing ``</think>`` when there is one. Failing those, a capital
    letter standing alone counts if it is the only such letter in the reply. Only the
    first ``n_choices`` letters are returned, in upper case.

    Args:
        text: the model's reply.
        n_choices: how many choices the question had (``A`` up to the ``n_choices``-th letter).

    Raises:
        ValueError: ``n_choices`` is not between 1 and 26.

    Example:
        >>> extract_letter("**Answer: (c)**")
        'C'
        >>> extract_letter("E", n_choices=4) is None
        True
    """
    if not 1 <= n_choices <= len(_LETTERS):
        raise ValueError(f"n_choices must be 1 to 26, got {n_choices}")
    letters = _LETTERS[:n_choices]
    reply = _MARKUP.sub(" ", _THINK_END.split(text)[-1]).strip()
    if not reply:
        return None
    # Compiled per call: microseconds, nothing next to the LLM call that made the reply.
    for pattern in _letter_patterns(letters):
        match = pattern.search(reply)
        if match:
            return next(g for g in match.groups() if g).upper()
    found = set()
    for match in re.finditer(rf"(?<![\w'])([{letters}])(?![\w'])", reply):
        if match.group(1) in "AI" and _WORD_AFTER.match(reply, match.end()):
            continue
        found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def sample_questions(
    df: pd.DataFrame,
    n: int,
    seed: int = 0,
    *,
    allocation: Literal["equal", "proportional"] = "equal",
) -> pd.DataFrame:
    """Draw ``n`` questions stratified over the ``group`` column, deterministically.

    Args:
        df: an MMLU frame (as from :func:`load_mmlu`), or any frame with a ``group`` column.
        n: how many rows to draw (at most ``len(df)``).
        seed: the random seed; the same frame, ``n`` and seed always give the same rows.
        allocation: ``"equal"`` gives every group the same share (so each expert of the demo
            herd gets work; a group too small gives its surplus to the others), and
            ``"proportional"`` follows the groups' sizes in ``df`` (largest remainder).

    Returns:
        The sampled rows (original index kept), in a seeded shuffled order so groups interleave.

    Raises:
        ValueError: ``n`` is negative or larger than ``df``, ``df`` has no ``group`` column,
            or ``allocation`` is unknown.

    Example:
        >>> sample = sample_questions(load_mmlu(), 8, seed=0)  # doctest: +SKIP
        >>> sample["group"].value_counts().tolist()  # doctest: +SKIP
        [2, 2, 2, 2]
    """
    if "group" not in df.columns:
        raise ValueError("sample_questions needs a 'group' column to stratify on")
    if not 0 <= n <= len(df):
        raise ValueError(f"cannot sample {n} rows from a frame of {len(df)}")
    present = set(df["group"].unique())
    groups = [g for g in MMLU_GROUPS if g in present] + sorted(present - set(MMLU_GROUPS))
    sizes = np.array([int((df["group"] == g).sum()) for g in groups])
    if allocation == "equal":
        counts = _equal_allocation(sizes, n)
    elif allocation == "proportional":
        counts = _proportional_allocation(sizes, n)
    else:
        raise ValueError(f"allocation must be 'equal' or 'proportional', got {allocation!r}")
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = []
    for group, count in zip(groups, counts, strict=True):
        members = np.flatnonzero((df["group"] == group).to_numpy())
        positions.append(rng.permutation(members)[:count])
    chosen = np.concatenate(positions) if positions else np.array([], dtype=np.int64)
    return df.iloc[rng.permutation(chosen)]


def _equal_allocation(sizes: np.ndarray, n: int) -> list[int]:
    counts = [0] * len(sizes)
    left = n
    open_groups = [i for i in range(len(sizes)) if sizes[i] > 0]
    # Hand out equal shares, capping groups at their size and re-sharing what they can't take.
    while left > 0 and open_groups:
        share, extra = divmod(left, len(open_groups))
        for rank, i in enumerate(list(open_groups)):
            take = min(share + (1 if rank < extra else 0), int(sizes[i]) - counts[i])
            counts[i] += take
            left -= take
        open_groups = [i for i in open_groups if counts[i] < sizes[i]]
    return counts


def _proportional_allocation(sizes: np.ndarray, n: int) -> list[int]:
    total = int(sizes.sum())
    if total == 0:
        return [0] * len(sizes)
    exact = sizes * n / total
    counts = np.floor(exact).astype(int)
    # Largest remainder; ties go to the earlier group, so the result is deterministic.
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]
