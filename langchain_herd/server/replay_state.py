"""What the replay server knows and decides: which recorded model a request names, which
recorded question it asks, and the reply that model gave, cut into tokens.

No model runs: a reply is the recorded letter as text (:func:`~langchain_herd.replay.reply_text`),
so answering costs a dict lookup. Token counts use the router's stated estimate (there is no
tokenizer), and limits are enforced on that estimate the way TGI enforces them on tokens.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal

from langchain_herd.replay import ReplayTable, estimate_tokens, reply_text
from langchain_herd.server.faults import FaultInjector
from langchain_herd.server.metrics import ServerMetrics
from langchain_herd.server.tgi_errors import TGIError
from langchain_herd.server.validation import ServerLimits

ReplayFinish = Literal["eos_token", "length", "stop_sequence"]

MODEL_NAMES_DEFAULT = ("tgi", "dummy", "")
"""``model`` values clients send when they do not mean a model; they name the only model of a
one-model replay server and are refused by a server of several."""

# The last user turn of a prompt rendered by langchain_herd.prompt_formats (TGI's generate
# route takes rendered text; the question is looked up in the user's turn).
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL),  # chatml
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.DOTALL),
    re.compile(r"\[INST\] (.*?) \[/INST\]", re.DOTALL),  # mistral
    re.compile(r"(?:^|\n)User: (.*?)(?=\n(?:Assistant|User|System|Tool):|\Z)", re.DOTALL),
)
_PIECE = re.compile(r"\s*\S+")


def last_user_turn(prompt: str) -> str:
    """The text of the last user turn of a rendered prompt (chatml, llama3, mistral or
    plain), or the whole prompt when it has no turn markers."""
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return str(turns[-1])
    return prompt


@dataclass(frozen=True)
class ReplayReply:
    """One replayed answer, ready to send.

    Attributes:
        model: the recorded model that answers.
        question_id: the recorded question's id.
        pieces: the reply's tokens (words with their leading space); the text is their join.
        finish: why it ended (``eos_token`` after a whole reply).
        input_tokens: the prompt's estimated tokens.
    """

    model: str
    question_id: str
    pieces: tuple[str, ...]
    finish: ReplayFinish
    input_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def generated_tokens(self) -> int:
        """Pieces sent, plus the end-of-sequence token when the reply ended by itself."""
        return len(self.pieces) + (1 if self.finish == "eos_token" else 0)


@dataclass
class ReplayState:
    """The shared state of one replay app.

    Attributes:
        table: the recorded answers.
        models: the recorded models this server answers for.
        model_id: the name the server reports for itself (``/info``, ``/v1/models``).
        limits: TGI's router limits, enforced on estimated tokens.
        faults: the injected faults (``/_herd/faults``), as on the model server.
        metrics: the Prometheus metrics.
        compat_return_full_text: ``POST /``'s default for ``return_full_text`` (TGI: true).
    """

    table: ReplayTable
    models: tuple[str, ...]
    model_id: str
    limits: ServerLimits
    faults: FaultInjector
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    compat_return_full_text: bool = True
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def in_flight(self) -> int:
        """Requests currently admitted."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Admit one request, or say no when ``max_concurrent_requests`` are in."""
        with self._lock:
            if self._in_flight >= self.limits.max_concurrent_requests:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Free the slot of a finished request."""
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)

    def model_for(self, requested: str | None) -> str:
        """The served model a request names (``model`` or ``adapter_id``).

        Raises:
            TGIError: 404 for a model this server does not replay, or for no name when it
                replays several (``error_type`` ``model_not_found``: a configuration fault,
                so the herd does not retry it on another expert).
        """
        name = (requested or "").strip()
        if name in (*MODEL_NAMES_DEFAULT, self.model_id):
            if len(self.models) == 1:
                return self.models[0]
            raise TGIError(
                f"this replay server answers for {len(self.models)} recorded models; name one "
                f"as `model` (OpenAI route) or `adapter_id` (generate routes): "
                f"{', '.join(self.models)}",
                "model_not_found",
                404,
            )
        resolved = self.table.resolve_model(name)
        if resolved is None or resolved not in self.models:
            raise TGIError(
                f"model {name!r} is not replayed here; this replay server answers for "
                f"{', '.join(self.models)}",
                "model_not_found",
                404,
            )
        return resolved

    def reply(
        self,
        model: str,
        user_text: str,
        *,
        prompt: str,
        max_new_tokens: int | None,
        stop: list[str],
    ) -> ReplayReply:
        """The recorded reply of ``model`` to the question in ``user_text``.

        Args:
            model: a served model (from :meth:`model_for`).
            user_text: the last user message, where the question is looked up.
            prompt: the whole prompt, whose estimated tokens are checked and reported.
            max_new_tokens: most tokens to send (None: the server default).
            stop: stop sequences; the reply ends after the first one it contains.

        Raises:
            TGIError: 422 ``validation`` for a prompt over the limits or a question with no
                recorded answer.
        """
        input_tokens = estimate_tokens(prompt)
        limits = self.limits
        if input_tokens > limits.max_input_tokens:
            raise TGIError.validation(
                f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: "
                f"{input_tokens} (estimated: 3 characters a token)"
            )
        budget = limits.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if budget < 1:
            raise TGIError.validation(f"`max_new_tokens` must be strictly positive, got {budget}")
        if input_tokens + budget > limits.max_total_tokens:
            raise TGIError.validation(
                f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                f"Given: {input_tokens} `inputs` tokens and {budget} `max_new_tokens`"
            )
        row = self.table.find(user_text)
        if row is None:
            preview = " ".join(user_text.split())[:80]
            raise TGIError.validation(
                f"replay: no recorded question matches the last user message ({preview!r}); "
                f"this server replays recorded answers to the {len(self.table.unique_rows)} "
                "MMLU-origin questions of MMLU-Pro: send one of their prompts, as given in "
                "langchain_herd/datasets/mmlu_pro_replay.parquet"
            )
        pieces = _PIECE.findall(reply_text(self.table.letter(row, model)))
        finish: ReplayFinish = "eos_token"
        text = ""
        for index, piece in enumerate(pieces):
            text += piece
            if any(s and s in text for s in stop):
                pieces, finish = pieces[: index + 1], "stop_sequence"
                break
        if finish == "eos_token" and len(pieces) + 1 > budget:
            pieces, finish = pieces[:budget], "length"
        return ReplayReply(model, self.table.ids[row], tuple(pieces), finish, input_tokens)
