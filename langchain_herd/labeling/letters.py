"""Reading the chosen option out of a model's free-text reply to a multiple-choice question.

Small models answer in many shapes: ``"C"``, ``"**C**"``, ``"(c)"``, ``"Answer: C"``,
``"The answer is (C)."``, ``"C) Paris"``, ``"\\boxed{C}"``, the option's text alone
(``"Paris"``), or a chain of thought that weighs several options before concluding.
:func:`extract_choice` tries rules from the most to the least explicit and returns
``None`` rather than guess when the reply is ambiguous, because a wrong letter would turn
into a wrong ground-truth label.

Example:
    >>> extract_choice("After some thought, the answer is (c).")
    'C'
    >>> extract_choice("Paris", ["London", "Paris", "Rome", "Berlin"])
    'B'
    >>> extract_choice("A or B, hard to say") is None
    True
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["MAX_CHOICES", "extract_choice", "parse_lettered_choices"]

MAX_CHOICES = 26
"""Most options a question may have (letters ``A`` to ``Z``; MMLU-Pro uses ``A``-``J``)."""

_LETTERS = string.ascii_uppercase
#: Replies longer than this (normalized) are not searched for an option's text: in a long
#: chain of thought, one option's words turning up alone is chance, not an answer.
_TEXT_MATCH_MAX_CHARS = 200

_THINK_END = re.compile(r"</think>", re.IGNORECASE)
# The instruction format_question appends; models sometimes echo it, and its letters are noise.
_INSTRUCTION_ECHO = re.compile(r"answer with the letter only\s*\([^)]*\)\.?", re.IGNORECASE)
# Markdown emphasis and code marks carry no meaning for the letter and break simple patterns.
_MARKUP = re.compile(r"\*+|`+|#+|(?<!\w)_+|_+(?!\w)")
# A model that goes on to invent the next few-shot question has answered before it.
_NEXT_QUESTION = re.compile(r"\n\s*(?:question|q)\s*\d*\s*[:.]", re.IGNORECASE)
_LEADING_ITEM = re.compile(r"(?m)^\s*[\(\[]?([A-Z])\s*[\)\]\.:]\s")
# A lower-case word after "A"/"I" makes them the article or the pronoun ("A cell", "I think").
_WORD_AFTER = re.compile(r"\s+(?!(?:or|and|nor)\b)[a-z]")
_NEGATED = re.compile(r"\bnot\s+(?:option\s+|choice\s+)?[\(\[]?\s*$", re.IGNORECASE)
_LETTERED_LINE = re.compile(r"(?m)^[ \t]*([A-Z])[\.\)][ \t]+(.*?)[ \t]*$")


def parse_lettered_choices(prompt: str) -> list[str]:
    """The options of a prompt that lists them as ``A. text`` lines (``A) text`` also works).

    The last run of consecutive letters starting at ``A`` is taken, so numbered statements
    in the question (``I. ...``, ``II. ...``) or a stray ``A.`` line before the options are
    not mistaken for them.

    Args:
        prompt: the question with its lettered options.

    Returns:
        The option texts in letter order; empty when the prompt lists none.

    Example:
        >>> parse_lettered_choices("2 + 2 =\\nA. 3\\nB. 4")
        ['3', '4']
    """
    items = [(m.group(1), m.group(2)) for m in _LETTERED_LINE.finditer(prompt)]
    starts = [i for i, (letter, _) in enumerate(items) if letter == "A"]
    if not starts:
        return []
    choices: list[str] = []
    for letter, text in items[starts[-1] :]:
        if letter != _LETTERS[len(choices)]:
            break
        choices.append(text)
    return choices


def _clean(text: str) -> str:
    reply = _THINK_END.split(text)[-1]
    reply = _INSTRUCTION_ECHO.sub(" ", reply)
    reply = _MARKUP.sub("", reply)
    cut = _NEXT_QUESTION.search(reply)
    if cut and cut.start() > 0:
        reply = reply[: cut.start()]
    return reply.strip()


def _letter_group(letters: str) -> str:
    # Capitals always; "a" and "i" (English words) only when no word follows; other small
    # letters whenever they stand alone ("answer: c because ...").
    lower_words = "".join(c for c in letters.lower() if c in "ai")
    lower_other = "".join(c for c in letters.lower() if c not in "ai")
    parts = [f"[{letters}](?![\\w'])"]
    if lower_other:
        parts.append(f"[{lower_other}](?![\\w'])")
    if lower_words:
        parts.append(f"[{lower_words}](?![\\w'])(?!\\s+[a-z])")
    return "(" + "|".join(parts) + ")"


def _strong_patterns(letters: str) -> list[re.Pattern[str]]:
    letter = _letter_group(letters)
    opener = r"[\(\[]?\s*"
    return [
        # "The answer is C", "Answer: (C)", "final answer: c", "correct answer would be C".
        re.compile(
            r"(?i:\banswer\s*(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:|-)?\s*"
            r"(?::\s*)?(?:option|choice|letter)?\s*[:\-]?)\s*" + opener + letter
        ),
        # "The correct option is C", "best choice: C".
        re.compile(
            r"(?i:\b(?:correct|right|best)\s+(?:option|choice|letter)\s*(?:is|would\s+be|:)?)"
            r"\s*" + opener + letter
        ),
        # "Option C is correct", "choice (c) is the right one".
        re.compile(
            r"(?i:\b(?:option|choice|letter))\s*"
            + opener
            + letter
            + r"\s*[\)\]]?\s*(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))\b"
        ),
        # "C is correct", "C is the correct answer" (capital only: "a is correct" is prose).
        re.compile(
            rf"(?<![\w'])([{letters}])\s*[\)\]]?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))\b"
        ),
        # "I choose C", "I'd go with option C", "I will pick (C)".
        re.compile(
            r"(?i:\bi(?:'d|\s+would|\s+will)?\s+(?:choose|pick|select|go\s+with)\s+"
            r"(?:option\s+|choice\s+)?)" + opener + letter
        ),
        # LaTeX: "\boxed{C}", "\boxed{\text{(C)}}".
        re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*" + opener + letter),
    ]


def _hedged(reply: str, end: int, letters: str) -> bool:
    """Whether the letter ending at ``end`` is followed by another ("A or B", "A/B", "A, C")."""
    follow = re.compile(rf"\s*[\)\]]?\s*(?:or|and|/|,|&)\s*[\(\[]?\s*[{letters}](?![\w'])")
    return follow.match(reply, end) is not None


def _explicit_letter(reply: str, letters: str) -> tuple[bool, str | None]:
    """(found any explicit statement, the letter it settles on or None when it hedges)."""
    hits: list[tuple[int, str, bool]] = []
    for pattern in _strong_patterns(letters):
        for match in pattern.finditer(reply):
            group = next(g for g in match.groups() if g)
            hits.append((match.start(), group.upper(), _hedged(reply, match.end(), letters)))
    if not hits:
        return False, None
    hits.sort()
    # The last statement wins: models revise ("the answer is A... no, the answer is B").
    _, letter, hedged = hits[-1]
    return True, None if hedged else letter


def _whole_reply_letter(reply: str, letters: str) -> str | None:
    whole = re.compile(
        r"^\W*(?:(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|option|choice|letter)"
        r"(?:\s+is)?\s*[:=\-]?\s*)?[\(\[]?\s*([" + letters + r"])\s*[\)\]]?\W*$",
        re.IGNORECASE,
    )
    match = whole.match(reply)
    return match.group(1).upper() if match else None


def _leading_letter(reply: str, letters: str) -> str | None:
    # A reply listing several lettered lines is an echo of the options, not a choice.
    listed = {m.group(1) for m in _LEADING_ITEM.finditer(reply) if m.group(1) in letters}
    if len(listed) > 1:
        return None
    upper = re.compile(rf"^\s*[\(\[]?([{letters}])(?:\s*[\)\]\.:]|\s+-\s)(?=\s|$)")
    lower = re.compile(rf"^\s*(?:\(([{letters.lower()}])\)|([{letters.lower()}])[\)\]])(?=\s|$)")
    match = upper.match(reply) or lower.match(reply)
    if not match:
        return None
    return next(g for g in match.groups() if g).upper()


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _choice_by_text(reply: str, choices: Sequence[str], letters: str) -> str | None:
    norm_reply = _normalize(reply)
    norm_choices = [_normalize(str(choice)) for choice in choices[: len(letters)]]
    if not norm_reply:
        return None
    exact = [i for i, text in enumerate(norm_choices) if text and text == norm_reply]
    if exact:
        return letters[exact[0]] if len(exact) == 1 else None
    if len(norm_reply) > _TEXT_MATCH_MAX_CHARS:
        return None
    padded = f" {norm_reply} "
    found = [
        i
        for i, text in enumerate(norm_choices)
        # A one-letter option ("a", "b") would match articles and option letters.
        if text and not (len(text) == 1 and text.isalpha()) and f" {text} " in padded
    ]
    # "True" inside a matched "True, True" is part of that option, not a second one.
    found = [
        i
        for i in found
        if not any(j != i and f" {norm_choices[i]} " in f" {norm_choices[j]} " for j in found)
    ]
    distinct = {norm_choices[i] for i in found}
    return letters[found[0]] if len(distinct) == 1 and len(found) == 1 else None


def _lone_capital(reply: str, letters: str) -> str | None:
    found = set()
    for match in re.finditer(rf"(?<![\w'.])([{letters}])(?![\w'])(?!\.\w)", reply):
        # "A cell ...", "I think ...": the article and the pronoun, not options.
        if match.group(1) in "AI" and _WORD_AFTER.match(reply, match.end()):
            continue
        # "not A" rules an option out; it does not choose it.
        if _NEGATED.search(reply, 0, match.start()):
            continue
        found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def extract_choice(
    text: str,
    choices: Sequence[str] | None = None,
    *,
    n_choices: int | None = None,
) -> str | None:
    """The option letter a reply chooses, or ``None`` when it names none unambiguously.

    Rules, first decisive one wins (only the part after a closing ``</think>`` is read, an
    echoed "Answer with the letter only (...)" and markdown marks are dropped, and a reply
    that goes on to invent a next ``Question:`` is cut there):

    1. The whole reply is a letter, maybe wrapped: ``"C"``, ``"c."``, ``"(C)"``,
       ``"Answer: C"``, ``"Option c"``.
    2. Explicit statements: ``"the answer is (C)"``, ``"correct option: C"``,
       ``"C is correct"``, ``"I'd go with C"``, ``"\\boxed{C}"``. With several, the last
       wins (models revise themselves); if it hedges (``"A or B"``) the result is ``None``.
    3. The reply leads with a lettered option: ``"C. Paris"``, ``"C) Paris"``, ``"(c) Paris"``,
       unless it lists several lettered lines (an echo of the options).
    4. The option's text (when ``choices`` are given): the reply equals exactly one option
       (ignoring case and punctuation), or, in a reply of at most 200 characters, exactly one
       option's text occurs as whole words (an option inside a longer matched option counts
       as that one).
    5. Exactly one capital option letter stands alone somewhere (``"A"``/``"I"`` followed by
       a lower-case word are the article and the pronoun, not options).

    Lower-case letters count where they cannot be words: as the whole reply, after "answer
    is", in ``"(c)"`` or ``"c)"``; ``"a"`` and ``"i"`` only when no word follows them.

    Args:
        text: the model's reply.
        choices: the option texts in letter order; enables rule 4 and sets the letters.
        n_choices: how many options there are, when ``choices`` is not given (default 4).

    Returns:
        The upper-case letter, or ``None``.

    Raises:
        ValueError: the number of options is not between 1 and 26, or ``choices`` and
            ``n_choices`` disagree.

    Example:
        >>> extract_choice("**Answer:** (d)")
        'D'
        >>> extract_choice("I think it is J", n_choices=10)
        'J'
    """
    if choices is not None and n_choices is not None and len(choices) != n_choices:
        raise ValueError(f"{len(choices)} choices given but n_choices={n_choices}")
    count = len(choices) if choices is not None else (4 if n_choices is None else n_choices)
    if not 1 <= count <= MAX_CHOICES:
        raise ValueError(f"a question has 1 to {MAX_CHOICES} options, got {count}")
    letters = _LETTERS[:count]
    reply = _clean(text)
    if not reply:
        return None
    whole = _whole_reply_letter(reply, letters)
    if whole:
        return whole
    found, letter = _explicit_letter(reply, letters)
    if found:
        return letter
    leading = _leading_letter(reply, letters)
    if leading:
        return leading
    if choices is not None:
        by_text = _choice_by_text(reply, choices, letters)
        if by_text:
            return by_text
    return _lone_capital(reply, letters)
