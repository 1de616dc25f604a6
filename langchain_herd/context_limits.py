"""Context limits: skip the experts a query would overflow, before calling anyone.

Each expert's input limit is its config's ``max_input_tokens``, else what its endpoint
reports (TGI's ``/info``: ``max_input_tokens`` and ``max_total_tokens``; vLLM's and SGLang's
``/v1/models``: ``max_model_len``; see :mod:`langchain_herd.probes`). A total limit leaves room
for the answer: the call's ``max_tokens``, else the expert's ``max_new_tokens``. Endpoints
are asked lazily, once per expert, with a short timeout; a failed probe is retried at most
every ``PROBE_RETRY_S`` seconds, and meanwhile the expert is not checked (the decision's
``notes`` say so) rather than skipped.

The query is measured as the expert will receive it: its system prompt merged in, rendered
with its ``prompt_format`` on the TGI route or the model's chat template on the OpenAI route.

**Counted** with the expert's tokenizer when one is on this machine: the config's
``tokenizer`` (a folder or a hub id in the local cache), else its ``model_id`` in the local hub
cache, else the local server's converted copy of that model. The ``tokenizers`` library reads
``tokenizer.json`` and jinja2 renders the chat template the way TGI and transformers do
(transformers is the fallback for a tokenizer without ``tokenizer.json``). Nothing is
downloaded.

**Estimated** otherwise, by a stated rule meant to over-count ordinary text:

- 1 token per 3 ASCII characters (English prose averages about 4 per token with BPE
  tokenizers) and 1 token per other character (most tokenizers give CJK text about one token
  per character or less);
- plus ``TEMPLATE_TOKENS_PER_MESSAGE`` tokens per message and ``TEMPLATE_TOKENS_FIXED`` for the
  chat template on the OpenAI route (role markers, a default system prompt), or the estimate
  of the rendered prompt format's own text on the TGI route.

It is not a bound: digit runs, code and unusual scripts can take more tokens than it says, and
an expert that then overflows answers 422, which falls back as before. Set ``tokenizer`` for
an exact count. The decision says which it was: ``input ~N tokens (counted ...)`` or
``(estimated ...)``.

Keeping it cheap on the request path: no tokenizer runs while a query is obviously short. Every
tokenizer in use emits at most one token per UTF-8 byte (byte-level BPE, SentencePiece with
byte fallback, word-level), so a query whose bytes plus the template allowance fit the
smallest limit is passed without counting. Tokenizers are loaded once per process; a long
message is tokenized once per tokenizer and shared by every expert using it, each expert
adding the count of its own template skeleton (its prompt with the message texts left out);
near a limit the expert's whole prompt is tokenized, so the decision there is exact.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import BaseMessage
from pydantic import SecretStr

from langchain_herd.config import ExpertConfig, PromptFormat
from langchain_herd.config import Protocol as WireProtocol
from langchain_herd.errors import ContextLengthError
from langchain_herd.probes import INFO, MODELS, PROBE_TIMEOUT_S, EndpointLimits, probe_endpoint
from langchain_herd.prompt_formats import message_role, render_prompt

if TYPE_CHECKING:
    from langchain_herd.decision import RouteDecision

logger = logging.getLogger(__name__)

ASCII_CHARS_PER_TOKEN = 3
"""The estimate's rule for ASCII text (every other character counts as one token)."""
TEMPLATE_TOKENS_PER_MESSAGE = 8
"""The estimate's allowance for a chat template's markers around one message."""
TEMPLATE_TOKENS_FIXED = 32
"""The estimate's allowance for a chat template's fixed text (generation prompt, a default
system prompt)."""
SPECIAL_TOKENS_ALLOWANCE = 2
"""Tokens a tokenizer may add around a prompt (BOS/EOS) on the TGI route."""
PROBE_RETRY_S = 60.0
"""Seconds before an endpoint whose limit could not be read is asked again."""


def estimate_tokens(text: str) -> int:
    """The stated estimate: 1 token per 3 ASCII characters, 1 per other character.

    Example:
        >>> estimate_tokens("What is 2 + 2?"), estimate_tokens("日本語")
        (5, 3)
    """
    if text.isascii():
        return -(-len(text) // ASCII_CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + len(text) - ascii_chars


def token_bound(text: str) -> int:
    """At most this many tokens for ``text``: one per UTF-8 byte."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class ContextSpec:
    """What the router needs to check that a query fits one expert.

    Example:
        .. code-block:: python

            Expert("long", chat, context=ContextSpec(max_input_tokens=32_000))
    """

    max_input_tokens: int | None = None
    """The configured input limit; None asks ``url``."""
    url: str | None = None
    """The endpoint asked for its limits when none is configured; None: no check."""
    protocol: WireProtocol = "openai"
    """``tgi``: the prompt is rendered with ``prompt_format``; ``openai``: the chat template."""
    served_model: str | None = None
    """Which ``/v1/models`` entry is this expert's (its ``model`` on the OpenAI route)."""
    tokenizer: str | None = None
    """Where its tokenizer is (a folder or a hub id in the local cache); None tries
    ``model_id``."""
    model_id: str | None = None
    """The model it serves."""
    prompt_format: PromptFormat = "chatml"
    """The TGI route's prompt format."""
    max_new_tokens: int = 256
    """Answer tokens requested when a call does not say (room left by a total limit)."""
    token: SecretStr | None = field(default=None, repr=False)
    """Bearer token of this endpoint, for the probe."""

    @classmethod
    def from_config(cls, config: ExpertConfig, token: SecretStr | None = None) -> ContextSpec:
        """The spec of a configured expert."""
        return cls(
            max_input_tokens=config.max_input_tokens,
            url=config.url,
            protocol=config.protocol,
            served_model=config.openai_model or config.adapter_id or config.model_id,
            tokenizer=config.tokenizer,
            model_id=None if config.model_id == "tgi" else config.model_id,
            prompt_format=config.prompt_format,
            max_new_tokens=config.generation.max_new_tokens,
            token=token,
        )

    @property
    def probe_routes(self) -> tuple[str, ...]:
        """Routes that report this expert's limits (a TGI server answers ``/info`` whichever
        route the expert uses; ``/v1/models`` is vLLM's and SGLang's)."""
        return (INFO,) if self.protocol == "tgi" else (MODELS, INFO)


# -- counting ---------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Counts tokens with one tokenizer (or estimates them)."""

    key: str
    """Identity: experts whose counters share a key share counts."""
    exact: bool
    """False for the estimate."""

    @property
    def described(self) -> str:
        """How counts are made, for the decision (``counted with ...``, ``estimated ...``)."""
        ...

    def tokens(self, text: str, *, special: bool) -> int:
        """Tokens of ``text``; ``special`` adds the tokenizer's BOS/EOS as a prompt gets."""
        ...

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        """The chat template applied (generation prompt opened); None without a template."""
        ...


@dataclass
class Estimator:
    """The stated estimate (see the module's docstring), for experts without a tokenizer."""

    why: str
    """Why there is no tokenizer."""
    key: str = "estimate"
    exact: bool = False

    @property
    def described(self) -> str:
        return f"estimated: {self.why}"

    def tokens(self, text: str, *, special: bool) -> int:
        return estimate_tokens(text) + (SPECIAL_TOKENS_ALLOWANCE if special else 0)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        return None


@dataclass
class FastTokenizerCounter:
    """A ``tokenizers`` tokenizer and the chat template from its ``tokenizer_config.json``."""

    tokenizer: Any
    key: str
    render: Callable[[list[dict[str, str]]], str] | None = None
    exact: bool = True

    @property
    def described(self) -> str:
        return f"counted with {self.key}"

    def tokens(self, text: str, *, special: bool) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        return None if self.render is None else self.render(messages)


@dataclass
class TransformersCounter:
    """A transformers tokenizer (for tokenizers saved without ``tokenizer.json``)."""

    tokenizer: Any
    key: str
    exact: bool = True

    @property
    def described(self) -> str:
        return f"counted with {self.key}"

    def tokens(self, text: str, *, special: bool) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=special))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return str(text)


_COUNTERS: dict[tuple[str | None, str | None], TokenCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def token_counter(spec: ContextSpec) -> TokenCounter:
    """The counter for an expert's tokenizer, loaded once per process (the estimate when no
    tokenizer is on this machine). Nothing is downloaded."""
    cache_key = (spec.tokenizer, spec.model_id)
    with _COUNTERS_LOCK:
        counter = _COUNTERS.get(cache_key)
        if counter is None:
            counter = _load_counter(spec)
            _COUNTERS[cache_key] = counter
        return counter


def _load_counter(spec: ContextSpec) -> TokenCounter:
    if spec.tokenizer is not None:
        sources = [spec.tokenizer]
    else:
        sources = [source for source in (spec.model_id, _local_copy(spec.model_id)) if source]
    if not sources:
        return Estimator("no tokenizer configured and no model_id")
    failures = []
    for source in sources:
        try:
            counter = _load_source(source)
        except Exception as exc:  # recorded in the decision as the estimate's reason
            failures.append(f"{source}: {type(exc).__name__}: {exc}")
            continue
        if counter is not None:
            return counter
        failures.append(f"{source} not on this machine")
    logger.info("no local tokenizer for %s; estimating (%s)", sources, "; ".join(failures))
    return Estimator(f"tokenizer {' or '.join(sources)} not on this machine")


def _load_source(source: str) -> TokenCounter | None:
    files = _tokenizer_files(source)
    if "tokenizer.json" in files and importlib.util.find_spec("tokenizers") is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
        return FastTokenizerCounter(tokenizer, source, _chat_renderer(files))
    if files and importlib.util.find_spec("transformers") is not None:
        from transformers import AutoTokenizer

        return TransformersCounter(
            AutoTokenizer.from_pretrained(source, local_files_only=True), source
        )
    return None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _tokenizer_files(source: str) -> dict[str, Path]:
    folder = Path(source).expanduser()
    if folder.is_dir():
        return {name: folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()}
    if folder.is_absolute() or source.startswith(".") or source.count("/") > 1:
        return {}  # a path that is not there, not a hub id
    from huggingface_hub import try_to_load_from_cache

    files = {}
    for name in _TOKENIZER_FILES:
        try:
            found = try_to_load_from_cache(source, name)
        except Exception:  # an invalid repo id: not in the cache either
            return {}
        if isinstance(found, str):
            files[name] = Path(found)
    return files


def _local_copy(model_id: str | None) -> str | None:
    """The local server's converted copy of this model, when there is one (SmolLM2)."""
    if model_id is None:
        return None
    try:
        from langchain_herd.server.loading import SMOLLM2_MODEL_ID, default_cache_dir
    except ImportError:  # the server extra is not installed: it made no copy
        return None
    folder = default_cache_dir() / "smollm2"
    if model_id == SMOLLM2_MODEL_ID and (folder / "tokenizer.json").is_file():
        return str(folder)
    return None


def _chat_renderer(files: Mapping[str, Path]) -> Callable[[list[dict[str, str]]], str] | None:
    """The chat template, rendered like transformers and TGI do (sandboxed jinja2, trimmed
    blocks, ``raise_exception``, ``tojson``, the special tokens as variables)."""
    config: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        config = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: the default one
        named = {item.get("name"): item.get("template") for item in source}
        source = named.get("default")
    if not isinstance(source, str) and "chat_template.jinja" in files:
        source = files["chat_template.jinja"].read_text(encoding="utf-8")
    if not isinstance(source, str) or importlib.util.find_spec("jinja2") is None:
        return None
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        template = env.from_string(source)
    except TemplateError as exc:  # e.g. a tag only transformers defines: estimate the template
        logger.info("chat template not usable here (%s); its tokens are estimated", exc)
        return None
    special = {
        name: value.get("content") if isinstance(value, dict) else value
        for name, value in config.items()
        if name.endswith("_token") and isinstance(value, (str, dict))
    }

    def render(messages: list[dict[str, str]]) -> str:
        return template.render(messages=messages, add_generation_prompt=True, **special)

    return render


def _emptied(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    return [message.model_copy(update={"content": ""}) for message in messages]


class _Counts:
    """Token counts of one decision, shared by the experts that share a tokenizer."""

    def __init__(self) -> None:
        self._texts: dict[tuple[str, str], int] = {}

    def text(self, counter: TokenCounter, text: str) -> int:
        key = (counter.key, text)
        count = self._texts.get(key)
        if count is None:
            count = self._texts[key] = counter.tokens(text, special=False)
        return count


def prompt_bound(messages: Sequence[BaseMessage], spec: ContextSpec) -> int:
    """At most this many tokens for the prompt (a byte count; see the module docstring)."""
    if spec.protocol == "tgi":
        return token_bound(render_prompt(messages, spec.prompt_format)) + SPECIAL_TOKENS_ALLOWANCE
    body = sum(token_bound(message.text) for message in messages)
    return body + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_FIXED


def count_prompt(
    messages: Sequence[BaseMessage],
    spec: ContextSpec,
    counter: TokenCounter,
    *,
    near: int | None = None,
    counts: _Counts | None = None,
) -> tuple[int, str]:
    """Tokens of the prompt these messages make for this expert, and how they were had.

    The message texts are counted apart from the template (so experts that share a tokenizer
    share their counts); within a few tokens of ``near`` the whole prompt is tokenized,
    where joining texts and template could differ by a token or two at each seam.
    """
    counts = counts or _Counts()
    body = sum(counts.text(counter, message.text) for message in messages)
    skeleton, templated = _skeleton(messages, spec, counter)
    total = body + skeleton
    exact_template = templated or not counter.exact
    how = counter.described if exact_template else f"{counter.described}, template estimated"
    seams = 4 + 2 * len(messages)
    if counter.exact and templated and near is not None and abs(total - near) <= seams:
        total = _whole(messages, spec, counter)
    return total, how


def _skeleton(
    messages: Sequence[BaseMessage], spec: ContextSpec, counter: TokenCounter
) -> tuple[int, bool]:
    """Tokens of the prompt without its message texts; False when the template is guessed."""
    if spec.protocol == "tgi":
        return counter.tokens(
            render_prompt(_emptied(messages), spec.prompt_format), special=True
        ), True
    text = counter.chat_prompt([{"role": message_role(m), "content": ""} for m in messages])
    if text is None:
        return TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_FIXED, False
    return counter.tokens(text, special=False), True


def _whole(messages: Sequence[BaseMessage], spec: ContextSpec, counter: TokenCounter) -> int:
    if spec.protocol == "tgi":
        return counter.tokens(render_prompt(messages, spec.prompt_format), special=True)
    text = counter.chat_prompt([{"role": message_role(m), "content": m.text} for m in messages])
    assert text is not None  # only called when the template rendered
    # The chat route tokenizes the rendered template as is: the template placed BOS itself.
    return counter.tokens(text, special=False)


# -- the guard --------------------------------------------------------------------------


@dataclass
class _LimitState:
    limits: EndpointLimits | None = None
    error: str | None = None
    asked_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Measured(Protocol):
    """What the guard needs of an expert (``Expert`` is one): its limits and tokenizer, and
    the messages exactly as it would be sent them."""

    @property
    def context(self) -> ContextSpec | None: ...

    def prepare(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]: ...


class ContextGuard:
    """Knows each expert's input limit and drops the experts a request would overflow.

    Used by ``HerdEngine.decide``; experts without a ``context`` spec are never checked.

    Example:
        .. code-block:: python

            guard = ContextGuard({"small": small_expert, "big": big_expert})
            guard.apply(decision, messages, ["small", "big"], answer_tokens=None)
            decision.excluded  # {"small": "input ~900 tokens (counted with ...) exceeds ..."}
    """

    def __init__(
        self,
        experts: Mapping[str, Measured],
        *,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        retry_s: float = PROBE_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build the guard.

        Args:
            experts: the herd by name.
            probe_timeout_s: timeout of each request asking an endpoint for its limits.
            retry_s: seconds before an endpoint that gave no limit is asked again.
            clock: monotonic seconds (tests pass a fake).
        """
        self.experts = dict(experts)
        self.specs = {
            name: expert.context
            for name, expert in self.experts.items()
            if expert.context is not None
        }
        self.probe_timeout_s = probe_timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self._states = {name: _LimitState() for name in self.specs}

    def limits(self, name: str) -> tuple[EndpointLimits | None, str | None]:
        """The expert's limits, or None and why they are unknown (None: nothing to check).

        Asks the endpoint the first time (and again after a failure, at most every
        ``retry_s``); concurrent callers wait for that one request.
        """
        spec = self.specs.get(name)
        if spec is None:
            return None, None
        if spec.max_input_tokens is not None:
            return EndpointLimits(spec.max_input_tokens, None, "config"), None
        if spec.url is None:
            return None, None
        state = self._states[name]
        if state.limits is not None:  # learned: no lock on the request path
            return state.limits, None
        with state.lock:
            if state.limits is not None:
                return state.limits, None
            now = self.clock()
            if state.asked_at is not None and now - state.asked_at < self.retry_s:
                return None, state.error
            state.asked_at = now
            probe = probe_endpoint(
                spec.url, spec.probe_routes, timeout_s=self.probe_timeout_s, token=spec.token
            )
            state.limits = probe.limits(spec.served_model)
            if state.limits is None:
                state.error = probe.why_no_limits()
                logger.warning("input limit of expert %r unknown: %s", name, state.error)
            return state.limits, state.error

    def prepare(self) -> dict[str, str]:
        """Ask every endpoint for its limits and load every tokenizer now (e.g. at a
        server's start), instead of on the first request; returns what each expert knows."""
        report = {}
        for name, spec in self.specs.items():
            limits, unknown = self.limits(name)
            counter = token_counter(spec)
            if limits is None:
                report[name] = f"limit unknown ({unknown}); {counter.described}"
            else:
                budget, why = limits.input_budget(spec.max_new_tokens)
                report[name] = f"limit {budget} ({why}); {counter.described}"
        return report

    def apply(
        self,
        decision: RouteDecision,
        messages: Sequence[BaseMessage],
        candidates: Sequence[str],
        *,
        answer_tokens: int | None = None,
        pinned: bool = False,
    ) -> None:
        """Exclude the candidates the request would overflow, saying why in the decision.

        Args:
            decision: gets ``excluded[name]`` for each expert too small, ``notes[name]`` for
                each whose limit is unknown.
            messages: the conversation, before each expert's system prompt.
            candidates: the experts that may answer (the rest are not measured).
            answer_tokens: the call's ``max_tokens``; None: each expert's ``max_new_tokens``.
            pinned: the one candidate is pinned (for the error's wording).

        Raises:
            ContextLengthError: the request is too long for every candidate.
        """
        if not self.specs:
            return
        counts = _Counts()
        too_long: dict[str, tuple[int, int, str]] = {}
        for name in candidates:
            spec = self.specs.get(name)
            if spec is None:
                continue
            limits, unknown = self.limits(name)
            if limits is None:
                if unknown is not None:
                    decision.notes[name] = f"input limit unknown ({unknown}); not checked"
                continue
            answer = answer_tokens if answer_tokens is not None else spec.max_new_tokens
            budget, why = limits.input_budget(answer)
            if budget is None:
                continue
            prompt = self.experts[name].prepare(messages)
            if prompt_bound(prompt, spec) <= budget:
                continue  # obviously short: no tokenizer needed
            counter = token_counter(spec)
            try:
                tokens, how = count_prompt(prompt, spec, counter, near=budget, counts=counts)
            except Exception as exc:  # a template that raises: estimate, and say why
                failed = Estimator(f"{counter.described} failed ({type(exc).__name__}: {exc})")
                tokens, how = count_prompt(prompt, spec, failed, counts=counts)
            if tokens > budget:
                decision.excluded[name] = (
                    f"input ~{tokens} tokens ({how}) exceeds its limit of {budget} ({why})"
                )
                too_long[name] = (tokens, budget, why)
        if too_long and len(too_long) == len(candidates):
            raise ContextLengthError.for_experts(too_long, decision.excluded, pinned=pinned)
