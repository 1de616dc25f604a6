"""Constrained decoding: TGI's grammars (JSON schema, regex) compiled and enforced as a token mask.

A request's grammar is compiled to an llguidance grammar while the request is validated (so a
bad schema or regex is a 422 before anything runs); the backend then builds a
:class:`TokenConstraint` for the generation, which masks the logits of every step to the tokens
that keep the output inside the grammar and advances with each chosen token. Once the grammar
is complete only an end-of-sequence token is allowed, so the generation ends with
``eos_token`` like TGI's.

Why llguidance. Measured here (2 busy CPU cores) on SmolLM2-135M's 49,152-token tokenizer, two
runs each, for TGI's tool-call schema of ``add(a: int, b: int)`` plus ``no_tool`` and for an
object with a free-text string; "mask" is the median time to compute one step's token mask:

- llguidance 1.9.1: mask 36-91 us (tool) and 9-21 us (string); compile 0.8-2.1 ms per schema;
  tokenizer 0.8-0.9 s once. One 3.1 MB abi3 wheel, no dependencies.
- xgrammar 0.2.9: mask 25-40 us and 35-47 us; compile 3-13 ms (0.2 ms from its cache);
  tokenizer 1.0-1.2 s. 1.3 MB wheel plus apache-tvm-ffi, torch, transformers and, on Linux
  x86_64, triton: a 286 MB wheel this CPU server would never use.
- outlines-core 0.2.14 (what TGI uses): mask 6-10 us and 88-148 us; compile 48-119 ms per
  schema (a regex index over the vocabulary); 2.3 MB, no dependencies, but its vocabulary must
  be built by hand, and schemas become regexes, so recursive JSON (``json_object``) cannot be
  expressed.

Every mask costs well under a decode step (2-3 ms for the tiny model, about 120 ms for SmolLM2
on one thread here; in the server the mask is 2% and 0.2% of a step), so speed does not decide.
llguidance is the lightest, covers full JSON schema with recursion plus regex and Lark, names
what is wrong ("unclosed character class", "Pointer '/x' does not exist"), reads byte-level and
SentencePiece tokenizers itself and takes any other vocabulary as token bytes, which the tiny
word-level test model needs. It is maintained by guidance-ai and used by vLLM, SGLang and
llama.cpp. ``bench/constrained_decoding.py`` measures its cost inside this server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_herd.errors import HerdError

if TYPE_CHECKING:
    import torch
    from llguidance._lib import JsonCompileOptions

JSON_SEPARATORS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
"""JSON layout the grammar allows: Python's ``json.dumps`` default (``{"a": 1, "b": 2}``).

Free whitespace would let a small model pad the output with newlines until ``max_new_tokens``;
one fixed layout keeps the output short and the same across models.
"""

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_SINGLES = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
_OBJECT_HINTS = ("type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const")


class GrammarError(HerdError, ValueError):
    """A grammar (JSON schema or regex) that cannot be compiled; the message says why."""


def json_schema_grammar(schema: Any, *, require_properties: bool = True) -> str:
    """Compile a JSON schema the way TGI accepts it.

    Like TGI, the schema may be given as a JSON string, must be an object and (unless
    ``require_properties`` is false) must have a top-level ``properties`` field; like TGI's
    outlines-core, an object schema with ``properties`` is closed (no extra keys) unless it says
    ``additionalProperties``, and ``properties`` without a ``type`` means an object.

    Args:
        schema: the schema, as a dict or a JSON string.
        require_properties: enforce TGI's top-level ``properties`` rule.

    Returns:
        The llguidance grammar (a JSON string) for :class:`TokenConstraint`.

    Raises:
        GrammarError: the schema is not JSON, not an object, lacks ``properties``, or is not a
            valid schema (the message is llguidance's, e.g. ``Invalid type: objectx``).

    Example:
        >>> grammar = json_schema_grammar({"properties": {"a": {"type": "integer"}}})
        >>> isinstance(grammar, str)
        True
    """
    import llguidance

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise GrammarError(f"the schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}")
    if require_properties and "properties" not in schema:
        raise GrammarError("Grammar must have a 'properties' field")  # TGI's words
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            close_objects(schema), defaults=JSON_SEPARATORS
        )
    except ValueError as exc:
        raise GrammarError(str(exc)) from exc
    return _validated(grammar)


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's ``{"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"}, require_properties=False)


def regex_grammar(pattern: Any) -> str:
    """Compile a regular expression (Rust ``regex`` syntax, matched against the whole output).

    Raises:
        GrammarError: not a string, or not a valid regex.
    """
    import llguidance

    if not isinstance(pattern, str):
        raise GrammarError(f"a regex grammar needs a string, got {type(pattern).__name__}")
    return _validated(llguidance.LLMatcher.grammar_from_regex(pattern))


def _validated(grammar: str) -> str:
    import llguidance

    # No tokenizer needed: this runs on the event loop while the request is validated.
    message = llguidance.LLMatcher.validate_grammar(grammar)
    if message:
        raise GrammarError(_one_line(message))
    return grammar


def _one_line(message: str) -> str:
    # llguidance's regex errors span lines (a caret diagram, the grammar); keep what they say.
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = re.sub(r"^at \d+\(\d+\): ", "", lines[0]) if lines else message
    detail = next((line[len("error: ") :] for line in lines if line.startswith("error: ")), "")
    return f"{first} {detail}".strip() if detail else first


def close_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object with ``properties`` is closed, like outlines-core.

    TGI compiles schemas with outlines-core, which treats ``properties`` as the complete list of
    keys and as implying ``"type": "object"``. JSON Schema itself allows extra keys by default,
    and a small model given that freedom invents keys until ``max_new_tokens``.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        if not any(key in out for key in _OBJECT_HINTS):
            out["type"] = "object"
        out.setdefault("additionalProperties", False)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: close_objects(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [close_objects(sub) for sub in out[key]]
    for key in _SCHEMA_SINGLES:
        if isinstance(out.get(key), list):  # draft-4 tuple ``items``
            out[key] = [close_objects(sub) for sub in out[key]]
        elif isinstance(out.get(key), dict):
            out[key] = close_objects(out[key])
    return out


class GrammarVocabulary:
    """A tokenizer as llguidance sees it (each token's bytes); build once per model.

    Byte-level BPE and SentencePiece tokenizers are read by llguidance itself. Any other
    tokenizer (the tiny model's word-level one) is described token by token: a token's bytes
    are what decoding it after an anchor token adds to the text, which is exactly what the
    server's incremental decoder streams for it.

    Args:
        tokenizer: a transformers tokenizer.
        eos_token_ids: every id that ends a generation (allowed once the grammar is complete).

    Example:
        >>> from langchain_herd.server import load_backend
        >>> backend = load_backend("tiny")
        >>> vocabulary = GrammarVocabulary(backend.tokenizer, sorted(backend.eos_token_ids))
        >>> constraint = vocabulary.constraint(regex_grammar("[0-9]+"))
        >>> constraint.is_finished
        False
    """

    def __init__(self, tokenizer: Any, eos_token_ids: Sequence[int]) -> None:
        import llguidance
        import llguidance.hf

        eos: list[int] = list(eos_token_ids) or [int(tokenizer.eos_token_id)]
        try:
            self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=eos)
        except ValueError:  # a decoder llguidance does not know (WordPiece, ...)
            wrapper = llguidance.TokenizerWrapper(_DecodedTokens(tokenizer, eos[0]))
            self._tokenizer = llguidance.LLTokenizer(wrapper, eos_token=eos)

    @property
    def size(self) -> int:
        """How many token ids the masks cover."""
        return int(self._tokenizer.vocab_size)

    def constraint(self, grammar: str) -> TokenConstraint:
        """A fresh constraint for one generation under ``grammar`` (from the functions above).

        Raises:
            GrammarError: the grammar does not fit this tokenizer.
        """
        import llguidance

        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return TokenConstraint(matcher, self.size)


class _DecodedTokens:
    """The ``TokenizerWrapper`` input for a tokenizer llguidance cannot read by itself.

    llguidance also tokenizes text it forces (a fixed key, a literal); that must agree with the
    token bytes, which a word-level tokenizer's own ``encode`` does not (its ``-`` decodes as
    `` -``), so text is tokenized greedily, longest token bytes first.
    """

    def __init__(self, tokenizer: Any, eos_token_id: int) -> None:
        anchor_ids = tokenizer.encode("a", add_special_tokens=False) or [0]
        anchor = int(anchor_ids[0])
        prefix = tokenizer.decode([anchor])
        self.eos_token_id = eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = [int(i) for i in tokenizer.all_special_ids]
        special = set(self.special_token_ids)
        tokens: list[bytes] = []
        self._ids: dict[bytes, int] = {}
        for token_id in range(len(tokenizer)):
            if token_id in special:
                tokens.append(str(tokenizer.convert_ids_to_tokens(token_id)).encode())
                continue
            text = tokenizer.decode([anchor, token_id])
            piece = text[len(prefix) :].encode() if text.startswith(prefix) else b""
            tokens.append(piece)
            if piece:
                self._ids.setdefault(piece, token_id)
        self.tokens = tokens
        self._longest = max((len(piece) for piece in self._ids), default=1)

    def __call__(self, text: str | bytes) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        ids: list[int] = []
        start = 0
        while start < len(data):
            for end in range(min(len(data), start + self._longest), start, -1):
                token_id = self._ids.get(data[start:end])
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:
                start += 1  # a byte no token spells: nothing can produce it anyway
        return ids


class TokenConstraint:
    """Masks one generation's logits to its grammar; not thread-safe (one generation).

    Args:
        matcher: an ``llguidance.LLMatcher`` in its start state.
        size: the token ids its masks cover.
    """

    def __init__(self, matcher: Any, size: int) -> None:
        import numpy as np

        self._matcher = matcher
        self._size = size
        self._bitmask = np.zeros((size + 31) // 32, dtype=np.int32)
        self._penalty = np.array([-np.inf, 0.0], dtype=np.float32)  # indexed by "allowed"

    @property
    def is_finished(self) -> bool:
        """Whether the grammar is complete and only an end-of-sequence token may follow."""
        return bool(self._matcher.is_stopped())

    def mask(self, scores: torch.Tensor) -> None:
        """Set the scores of every token the grammar forbids next to ``-inf``, in place.

        Args:
            scores: ``[1, vocab]`` logits; ids past the tokenizer's vocabulary are forbidden.

        Raises:
            GrammarError: the matcher is in an error state (nothing can follow).
        """
        import numpy as np

        if self._matcher.is_error():
            raise GrammarError(self._matcher.get_error())
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        width = min(self._size, scores.shape[-1])
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=width, bitorder="little")
        # numpy, in place on the tensor's memory: one thread, so the mask does not wait on
        # torch's OpenMP pool, which spins for a core on a busy machine (see backend.py); adding
        # 0 or -inf from a two-entry table measured faster than boolean assignment.
        row = scores[0, :width].numpy()
        np.add(row, self._penalty[bits], out=row)
        if scores.shape[-1] > width:
            scores[0, width:] = -float("inf")

    def advance(self, token_id: int) -> None:
        """Move past the chosen token.

        Raises:
            GrammarError: the token breaks the grammar (it was not allowed).
        """
        if not self._matcher.consume_token(token_id):
            raise GrammarError(self._matcher.get_error() or f"token {token_id} is not allowed")


class GrammarVocabularies:
    """One :class:`GrammarVocabulary` per backend, built on first use (about a second)."""

    def __init__(self, tokenizer: Any, eos_token_ids: Iterable[int]) -> None:
        self._tokenizer = tokenizer
        self._eos = sorted(eos_token_ids)
        self._vocabulary: GrammarVocabulary | None = None
        self._lock = threading.Lock()

    def get(self) -> GrammarVocabulary:
        """The vocabulary, built now if this is the first grammar."""
        with self._lock:
            if self._vocabulary is None:
                self._vocabulary = GrammarVocabulary(self._tokenizer, self._eos)
            return self._vocabulary


def compile_grammar(kind: str, value: Any) -> str:
    """Compile a TGI ``grammar`` (``{"type", "value"}``) into an llguidance grammar.

    Args:
        kind: ``json`` (a schema), ``json_schema`` (``{"name", "schema"}``), ``regex``, or
            ``json_object`` (a schema, or none for any object).
        value: the ``value`` field.

    Raises:
        GrammarError: the value is not a valid grammar of that kind.
    """
    if kind == "regex":
        return regex_grammar(value)
    if kind == "json_object" and value is None:
        return json_object_grammar()
    if kind == "json_schema":
        if not isinstance(value, Mapping) or "schema" not in value:
            raise GrammarError('a json_schema grammar needs {"name": ..., "schema": {...}}')
        return json_schema_grammar(value["schema"])
    if kind in ("json", "json_object"):
        if value is None:
            raise GrammarError("a json grammar needs a schema in `value`")
        return json_schema_grammar(value)
    raise GrammarError(f"unknown grammar type {kind!r}")
