"""Multiple-choice question sets for training, merging, swarming and comparing LoRA experts.

Two sets, both split into ``train`` / ``dev`` / ``test`` by a hash of each question's id, so a
question is in the same split for every command and the held-out ``test`` questions are never
trained on, used to pick merge weights, or scored by the swarm:

- ``mmlu``: the bundled MMLU test questions (the Hivemind herd's four groups). SmolLM2-135M is
  near chance on it.
- ``skills``: generated questions in four groups that a 135M model can learn and that need
  different skills, so subject experts are distinct (Hivemind's lesson): ``stem`` two-number
  arithmetic, ``humanities`` antonyms, ``social_sciences`` capitals, ``other`` which item
  belongs to a category. SmolLM2-135M is above chance on most of them before any training,
  and a small adapter moves it further.

Questions are scored as cloze: the log-likelihood of each choice's text after
:func:`cloze_prompt` (see :mod:`langchain_herd.choice_scoring`), the formulation on which small
models show signal; with lettered options SmolLM2-135M answers at chance.

Example:
    >>> questions = load_questions("skills", "dev", groups=["stem"])
    >>> q = questions[0]
    >>> q.group, len(q.choices), q.choices[q.answer] == q.gold
    ('stem', 4, True)
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langchain_herd.errors import ConfigError

__all__ = [
    "QUESTION_SETS",
    "SPLITS",
    "ChoiceQuestion",
    "Split",
    "cloze_prompt",
    "load_questions",
    "read_question_file",
    "resolve_questions",
    "sample_per_group",
    "split_of",
]

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
QUESTION_SETS: tuple[str, ...] = ("skills", "mmlu")
GROUPS: tuple[str, ...] = ("stem", "humanities", "social_sciences", "other")

# Shares of each set by id hash: train 60%, dev 15%, test 25%.
_SPLIT_BOUNDS: tuple[tuple[Split, int], ...] = (("train", 60), ("dev", 75), ("test", 100))


@dataclass(frozen=True)
class ChoiceQuestion:
    """One multiple-choice question.

    Attributes:
        id: stable id (the split is a hash of it).
        group: its subject group (the expert it belongs to).
        question: the question text.
        choices: the options' texts.
        answer: index of the gold choice.
    """

    id: str
    group: str
    question: str
    choices: tuple[str, ...]
    answer: int

    @property
    def gold(self) -> str:
        """The gold choice's text."""
        return self.choices[self.answer]


def cloze_prompt(question: str) -> str:
    """The prompt a choice's text follows (after one space) when scoring and training."""
    return f"Question: {question.strip()}\nAnswer:"


def split_of(question_id: str) -> Split:
    """The split a question id falls in (fixed for ever: a hash, not a random draw).

    Only the part before ``#`` counts: variants of one fact (the same capital asked with other
    distractors) share a split, so no test fact is seen in training.
    """
    fact = question_id.split("#", 1)[0]
    bucket = int(hashlib.sha256(fact.encode()).hexdigest()[:8], 16) % 100
    return next(split for split, bound in _SPLIT_BOUNDS if bucket < bound)


def load_questions(
    name: str,
    split: Split | None = None,
    *,
    groups: Iterable[str] | None = None,
    per_group: int | None = None,
    seed: int = 0,
) -> list[ChoiceQuestion]:
    """Questions of a named set.

    Args:
        name: ``skills`` or ``mmlu``.
        split: ``train``, ``dev``, ``test``, or None for all.
        groups: only these groups (default all four).
        per_group: at most this many per group, a seeded sample in a stable order.
        seed: the sample's seed.

    Raises:
        ConfigError: an unknown set, split or group.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    wanted = tuple(groups) if groups is not None else GROUPS
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        raise ConfigError(f"unknown group(s) {unknown}; the groups are {', '.join(GROUPS)}")
    if name == "skills":
        pool = _skills_questions()
    elif name == "mmlu":
        pool = _mmlu_questions()
    else:
        raise ConfigError(
            f"unknown question set {name!r}; use one of {', '.join(QUESTION_SETS)} or a "
            ".jsonl / .parquet file of questions"
        )
    chosen = [q for q in pool if q.group in wanted and (split is None or split_of(q.id) == split)]
    if per_group is None:
        return chosen
    return sample_per_group(chosen, per_group, seed=seed, groups=wanted)


def sample_per_group(
    questions: Sequence[ChoiceQuestion],
    per_group: int,
    *,
    seed: int = 0,
    groups: Iterable[str] | None = None,
) -> list[ChoiceQuestion]:
    """At most ``per_group`` questions of each group (``groups``' order, default sorted), a
    seeded sample kept in id order, so the same seed gives the same questions anywhere."""
    out: list[ChoiceQuestion] = []
    for group in groups if groups is not None else sorted({q.group for q in questions}):
        members = [q for q in questions if q.group == group]
        random.Random(f"{seed}:{group}").shuffle(members)
        out.extend(sorted(members[:per_group], key=lambda q: q.id))
    return out


def resolve_questions(
    source: str,
    split: Split | None = None,
    *,
    per_group: int | None = None,
    seed: int = 0,
) -> list[ChoiceQuestion]:
    """Questions from ``SET``, ``SET:GROUP[+GROUP...]`` or a ``.jsonl`` / ``.parquet`` file.

    Files are taken whole (their split is the caller's business); named sets honour ``split``.

    Raises:
        ConfigError: the source names nothing known, or the file is malformed.
    """
    path = Path(source)
    if path.suffix in (".jsonl", ".parquet") or path.exists():
        return read_question_file(path)
    name, _, group_part = source.partition(":")
    groups = group_part.split("+") if group_part else None
    return load_questions(name, split, groups=groups, per_group=per_group, seed=seed)


def read_question_file(path: str | Path) -> list[ChoiceQuestion]:
    """Read questions from JSON lines or parquet.

    Each row has ``question``, the choices as ``choices`` (a list) or columns ``A``..``D``,
    and ``answer`` as an index or a letter; ``id`` and ``group`` are optional.

    Raises:
        ConfigError: the file is missing or a row lacks what a question needs.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such question file (.jsonl or .parquet)")
    if file.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(file).to_dict("records")
    else:
        try:
            rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: line {exc.lineno} is not JSON: {exc.msg}") from None
    return [_row_question(row, f"{file}:{n + 1}") for n, row in enumerate(rows)]


def _row_question(row: dict[str, object], where: str) -> ChoiceQuestion:
    if not isinstance(row, dict) or "question" not in row or "answer" not in row:
        raise ConfigError(f"{where}: a question row needs 'question', choices and 'answer'")
    raw_choices = row.get("choices")
    if raw_choices is None:
        raw_choices = [row[letter] for letter in "ABCD" if letter in row]
    choices = tuple(str(c) for c in raw_choices)  # type: ignore[attr-defined]
    if len(choices) < 2:
        raise ConfigError(f"{where}: a question needs at least two choices")
    answer = row["answer"]
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
        index = ord(answer.upper()) - ord("A")
    elif isinstance(answer, int):
        index = answer
    else:
        raise ConfigError(f"{where}: 'answer' must be a choice index or a letter, got {answer!r}")
    if not 0 <= index < len(choices):
        raise ConfigError(f"{where}: answer {answer!r} is not one of its {len(choices)} choices")
    return ChoiceQuestion(
        id=str(row.get("id", where)),
        group=str(row.get("group", "all")),
        question=str(row["question"]),
        choices=choices,
        answer=index,
    )


def _mmlu_questions() -> list[ChoiceQuestion]:
    from langchain_herd.mmlu import load_mmlu

    df = load_mmlu()
    df = df[df["split"] == "test"]
    return [
        ChoiceQuestion(
            id=str(row.id),
            group=str(row.group),
            question=str(row.question),
            choices=(str(row.A), str(row.B), str(row.C), str(row.D)),
            answer="ABCD".index(str(row.answer)),
        )
        for row in df.itertuples(index=False)
    ]


# --- the generated "skills" set -------------------------------------------------------------

_SKILLS_PER_GROUP = 600


def _pairs(text: str, items: str, pair: str) -> tuple[tuple[str, str], ...]:
    """``a/b c/d`` as ``(("a", "b"), ("c", "d"))``: word lists stay readable in the source."""
    out = []
    for item in text.split(items):
        left, right = item.split(pair)
        out.append((left, right))
    return tuple(out)


_ANTONYMS = _pairs(
    (
        "hot/cold big/small fast/slow happy/sad light/dark up/down open/closed rich/poor "
        "early/late full/empty hard/soft high/low long/short old/young strong/weak wet/dry "
        "thick/thin loud/quiet clean/dirty heavy/light cheap/expensive deep/shallow "
        "wide/narrow sharp/dull true/false win/lose buy/sell push/pull give/take love/hate "
        "begin/end brave/afraid day/night friend/enemy inside/outside above/below "
        "accept/refuse arrive/leave asleep/awake best/worst before/after build/destroy "
        "careful/careless cause/effect safe/dangerous laugh/cry question/answer remember/forget "
        "sweet/sour tall/short victory/defeat visible/invisible wild/tame wise/foolish "
        "polite/rude public/private ancient/modern increase/decrease maximum/minimum "
        "north/south east/west first/last entrance/exit gentle/rough generous/selfish "
        "guilty/innocent huge/tiny import/export include/exclude major/minor male/female "
        "noisy/silent odd/even often/seldom patient/impatient permanent/temporary "
        "positive/negative present/absent pretty/ugly raise/lower rare/common right/wrong "
        "rough/smooth shut/open simple/complex strict/lenient success/failure"
    ),
    " ",
    "/",
)

_COUNTRIES = _pairs(
    (
        "France=Paris|Germany=Berlin|Italy=Rome|Spain=Madrid|Portugal=Lisbon|"
        "United Kingdom=London|Ireland=Dublin|Netherlands=Amsterdam|Belgium=Brussels|"
        "Austria=Vienna|Switzerland=Bern|Poland=Warsaw|Czech Republic=Prague|Hungary=Budapest|"
        "Greece=Athens|Sweden=Stockholm|Norway=Oslo|Denmark=Copenhagen|Finland=Helsinki|"
        "Russia=Moscow|Ukraine=Kyiv|Romania=Bucharest|Bulgaria=Sofia|Serbia=Belgrade|"
        "Croatia=Zagreb|Turkey=Ankara|Egypt=Cairo|Kenya=Nairobi|Nigeria=Abuja|Ghana=Accra|"
        "Ethiopia=Addis Ababa|Morocco=Rabat|Algeria=Algiers|Tunisia=Tunis|South Africa=Pretoria|"
        "China=Beijing|Japan=Tokyo|South Korea=Seoul|India=New Delhi|Pakistan=Islamabad|"
        "Bangladesh=Dhaka|Thailand=Bangkok|Vietnam=Hanoi|Indonesia=Jakarta|Philippines=Manila|"
        "Malaysia=Kuala Lumpur|Iran=Tehran|Iraq=Baghdad|Saudi Arabia=Riyadh|Israel=Jerusalem|"
        "Afghanistan=Kabul|Nepal=Kathmandu|Australia=Canberra|New Zealand=Wellington|"
        "Canada=Ottawa|United States=Washington|Mexico=Mexico City|Cuba=Havana|Brazil=Brasilia|"
        "Argentina=Buenos Aires|Chile=Santiago|Peru=Lima|Colombia=Bogota|Venezuela=Caracas|"
        "Ecuador=Quito|Uruguay=Montevideo|Iceland=Reykjavik|Lebanon=Beirut|Syria=Damascus|"
        "Jordan=Amman|Qatar=Doha|Mongolia=Ulaanbaatar|Sri Lanka=Colombo|Cambodia=Phnom Penh"
    ),
    "|",
    "=",
)

_CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "orange", "grape", "pear", "cherry", "mango", "peach", "lemon"),
    "animal": ("dog", "cat", "horse", "lion", "tiger", "rabbit", "elephant", "mouse", "cow"),
    "color": ("red", "blue", "green", "yellow", "purple", "black", "white", "brown", "pink"),
    "vehicle": ("car", "bus", "truck", "bicycle", "train", "airplane", "boat", "motorcycle"),
    "piece of furniture": ("chair", "table", "sofa", "bed", "desk", "shelf", "wardrobe"),
    "piece of clothing": ("shirt", "jacket", "sock", "hat", "coat", "dress", "skirt", "scarf"),
    "musical instrument": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "cello"),
    "tool": ("hammer", "saw", "wrench", "screwdriver", "drill", "shovel", "axe", "pliers"),
    "body part": ("hand", "foot", "head", "knee", "elbow", "finger", "shoulder", "ear"),
    "drink": ("water", "coffee", "tea", "milk", "juice", "lemonade", "cocoa"),
}


def _skills_questions() -> list[ChoiceQuestion]:
    rng = random.Random(20261130)
    makers = {
        "stem": _arithmetic,
        "humanities": _antonym,
        "social_sciences": _capital,
        "other": _category,
    }
    out: list[ChoiceQuestion] = []
    for group, make in makers.items():
        seen: set[tuple[str, ...]] = set()
        while len(seen) < _SKILLS_PER_GROUP:
            fact, question, gold, wrong = make(rng)
            choices = [gold, *wrong]
            rng.shuffle(choices)
            if (question, *choices) in seen:
                continue
            seen.add((question, *choices))
            out.append(
                ChoiceQuestion(
                    id=f"skills-{group}-{fact}#{len(seen) - 1}",
                    group=group,
                    question=question,
                    choices=tuple(choices),
                    answer=choices.index(gold),
                )
            )
    return out


def _distinct(rng: random.Random, pool: Sequence[str], avoid: set[str], k: int) -> list[str]:
    return rng.sample([item for item in pool if item not in avoid], k)


_Made = tuple[str, str, str, list[str]]
"""A generated question: its fact (the split key), text, gold choice and wrong choices."""


def _arithmetic(rng: random.Random) -> _Made:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    op = rng.choice("+-")
    if op == "-" and b > a:
        a, b = b, a
    value = a + b if op == "+" else a - b
    offsets = rng.sample([-10, -2, -1, 1, 2, 10], 3)
    return f"{a}{op}{b}", f"What is {a} {op} {b}?", str(value), [str(value + d) for d in offsets]


def _antonym(rng: random.Random) -> _Made:
    word, opposite = rng.choice(_ANTONYMS)
    fact = "-".join(sorted((word, opposite)))
    if rng.random() < 0.5:
        word, opposite = opposite, word
    words = sorted({w for pair in _ANTONYMS for w in pair})
    return (
        fact,
        f"What is the opposite of '{word}'?",
        opposite,
        _distinct(rng, words, {word, opposite}, 3),
    )


def _capital(rng: random.Random) -> _Made:
    country, capital = rng.choice(_COUNTRIES)
    capitals = [c for _, c in _COUNTRIES]
    others = _distinct(rng, capitals, {capital}, 3)
    template = rng.choice(
        ("What is the capital of {c}?", "Which city is the capital of {c}?", "{c}'s capital is?")
    )
    return country.replace(" ", "_"), template.format(c=country), capital, others


def _category(rng: random.Random) -> _Made:
    category = rng.choice(sorted(_CATEGORIES))
    gold = rng.choice(_CATEGORIES[category])
    others = [c for c in sorted(_CATEGORIES) if c != category]
    wrong = [rng.choice(_CATEGORIES[c]) for c in rng.sample(others, 3)]
    article = "an" if category[0] in "aeiou" else "a"
    template = rng.choice(("Which of these is {a} {c}?", "Which one is {a} {c}?"))
    return gold, template.format(a=article, c=category), gold, wrong
