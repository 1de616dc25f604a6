"""Request bodies of the TGI and OpenAI routes, as the clients send them.

Unknown fields are ignored rather than rejected, as TGI's serde structs do: clients add fields
over time (``watermark``, ``tool_prompt``, ...) and a stand-in server must not break on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class Grammar(BaseModel):
    """TGI's ``grammar`` parameter: ``{"type": "json" | "regex" | "json_schema", "value": ...}``.

    ``json`` takes a JSON schema (an object, or a string holding one), ``regex`` a pattern,
    ``json_schema`` ``{"name", "schema"}``; ``json_object`` is TGI's alias of ``json``, and
    without a ``value`` here means any JSON object.
    """

    model_config = ConfigDict(extra="ignore")

    type: Literal["json", "json_object", "json_schema", "regex"]
    """The grammar's kind."""
    value: Any = None
    """The schema or pattern."""


class GenerateParameters(BaseModel):
    """``parameters`` of ``POST /``, ``/generate`` and ``/generate_stream``."""

    model_config = ConfigDict(extra="ignore")

    adapter_id: str | None = None
    """LoRA adapter to use (a 422 names the loaded ones); ignored when none is loaded."""
    best_of: int | None = None
    """Only 1 is supported, like a TGI started with ``--max-best-of 1``."""
    decoder_input_details: bool = False
    """Also return the prompt tokens with their logprobs (``details.prefill``)."""
    details: bool = False
    """Return ``details`` (finish reason, tokens, seed)."""
    do_sample: bool = False
    """Sample instead of greedy decoding (also implied by any warper)."""
    frequency_penalty: float | None = None
    """Between -2 and 2; penalizes tokens in proportion to how often they appeared."""
    grammar: Grammar | None = None
    """Constrained decoding: every generated token keeps the output inside this grammar."""
    max_new_tokens: int | None = None
    """Tokens to generate; missing means the server default, null means up to the context."""
    repetition_penalty: float | None = None
    """CTRL-style penalty, > 0; 1.0 means none."""
    return_full_text: bool | None = None
    """Prepend the prompt to ``generated_text`` (``POST /`` defaults to true, like TGI)."""
    seed: int | None = None
    """Sampling seed; random when missing."""
    stop: list[str] = Field(default_factory=list)
    """Stop once the generated text ends with one of these (kept in the text, like TGI)."""
    temperature: float | None = None
    """> 0; 1.0 means unchanged."""
    top_k: int | None = None
    """> 0; keep the k most likely tokens."""
    top_n_tokens: int | None = None
    """Report this many most likely alternatives per token (``top_tokens``)."""
    top_p: float | None = None
    """In (0, 1); nucleus sampling."""
    truncate: int | None = None
    """Keep only the last ``truncate`` prompt tokens."""
    typical_p: float | None = None
    """In (0, 1); typical decoding."""
    watermark: bool = False
    """Accepted and ignored."""


class GenerateRequest(BaseModel):
    """Body of the TGI generate routes."""

    model_config = ConfigDict(extra="ignore")

    inputs: str
    """The prompt."""
    parameters: GenerateParameters | None = None
    """Generation parameters; a missing object means TGI's defaults, which sample."""
    stream: bool = False
    """Stream as SSE (honored by ``POST /`` only, like TGI)."""


class FunctionDefinition(BaseModel):
    """A function a tool call may name: OpenAI's ``tools[].function``."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """The name the model calls it by."""
    description: str | None = None
    """What it does (shown to the model)."""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        validation_alias=AliasChoices("parameters", "arguments"),
    )
    """JSON schema of its arguments (TGI also reads it as ``arguments``); missing or null
    means no arguments."""

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_parameters(cls, value: Any) -> Any:
        return {"type": "object", "properties": {}} if value is None else value


class Tool(BaseModel):
    """One entry of a chat request's ``tools``."""

    model_config = ConfigDict(extra="ignore")

    type: str = "function"
    """Only functions exist."""
    function: FunctionDefinition
    """The function."""


class FunctionName(BaseModel):
    """``{"name": ...}`` of a forced ``tool_choice``."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """The tool to call."""


class NamedToolChoice(BaseModel):
    """``tool_choice`` forcing one function: ``{"type": "function", "function": {"name"}}``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    """Always ``function``."""
    function: FunctionName
    """The function to call."""


class CalledFunction(BaseModel):
    """The ``function`` of a tool call in an assistant message of the history."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """The function called."""
    arguments: Any = None
    """Its arguments: a JSON string (OpenAI) or an object."""


class MessageToolCall(BaseModel):
    """One ``tool_calls`` entry of an assistant message in the history."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    """The call's id, which the ``tool`` message answering it repeats."""
    type: str = "function"
    """Always ``function``."""
    function: CalledFunction
    """What was called."""


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request."""

    model_config = ConfigDict(extra="ignore")

    role: str
    """``system``, ``user``, ``assistant``, ``tool``, ..."""
    content: str | list[dict[str, Any]] | None = None
    """Text, or OpenAI content parts of which the text parts are used; may be null on an
    assistant message that only calls tools."""
    name: str | None = None
    """Optional author name; passed to the chat template."""
    tool_calls: list[MessageToolCall] | None = None
    """The tools an assistant message called."""
    tool_call_id: str | None = None
    """On a ``tool`` message: the call it answers."""

    def text(self) -> str:
        """The message's text, content parts joined like TGI joins them."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts: list[str] = []
        for part in self.content:
            if part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                parts.append(f"![]({url})")
        return "".join(parts)


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False
    """Send a last chunk with ``usage`` and no choices before ``[DONE]``."""


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``response_format.json_schema``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    """A name for the schema."""
    description: str | None = None
    """What the output is."""
    json_schema: Any = Field(default=None, alias="schema")
    """The schema the reply must match."""
    strict: bool | None = None
    """Accepted; the output always matches the schema (like TGI, objects get no extra keys)."""


class ResponseFormat(BaseModel):
    """``response_format``, in OpenAI's shapes and TGI's ``{"type", "value"}`` grammar shapes.

    OpenAI: ``{"type": "text"}``, ``{"type": "json_object"}``, ``{"type": "json_schema",
    "json_schema": {"name", "schema", "strict"}}``. TGI: ``{"type": "json", "value": schema}``,
    ``{"type": "json_schema", "value": {"name", "schema"}}``, ``{"type": "regex", "value"}``.
    """

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json", "json_object", "json_schema", "regex"]
    """The kind of output."""
    value: Any = None
    """TGI's grammar value."""
    json_schema: JsonSchemaFormat | None = None
    """OpenAI's schema wrapper."""

    def grammar(self) -> Grammar | None:
        """The TGI grammar this format asks for (None for plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_schema" and self.json_schema is not None:
            return Grammar(type="json", value=self.json_schema.json_schema)
        return Grammar(type=self.type, value=self.value)


class ChatRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    """The LoRA adapter, as in TGI (``tgi`` or the served name: the base model); ignored when
    the server has no adapters, since clients send "dummy" or the URL."""
    messages: list[ChatMessage]
    """The conversation so far."""
    frequency_penalty: float | None = None
    """Between -2 and 2."""
    logprobs: bool | None = None
    """Return each token's logprob in ``choices[].logprobs``."""
    top_logprobs: int | None = None
    """With ``logprobs``: this many alternatives per token."""
    max_tokens: int | None = None
    """Tokens to generate (TGI's default is 100)."""
    max_completion_tokens: int | None = None
    """OpenAI's newer name for ``max_tokens`` (what langchain-openai sends); read when
    ``max_tokens`` is absent, as vLLM does."""
    n: int | None = None
    """Unused, as in TGI."""
    presence_penalty: float | None = None
    """Mapped, like TGI, to ``repetition_penalty = presence_penalty + 2``."""
    stop: list[str] | str | None = None
    """Stop sequences."""
    stream: bool = False
    """Stream ``chat.completion.chunk`` objects as SSE."""
    seed: int | None = None
    """Sampling seed."""
    temperature: float | None = None
    """0 means greedy; anything else (including missing) samples, as in TGI."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    tools: list[Tool] | None = None
    """Functions the model may call; the reply is then a tool call (or, with ``auto``, text)."""
    tool_choice: str | NamedToolChoice | None = None
    """``auto`` (default), ``none``, ``required``, a function name, or a named function."""
    tool_prompt: str | None = None
    """TGI's text appended after the tools (default: TGI's)."""
    response_format: ResponseFormat | None = None
    """A grammar the reply must match (not together with ``tools``, as in TGI)."""
    stream_options: StreamOptions | None = None
    """Streaming options."""

    def stop_sequences(self) -> list[str]:
        """``stop`` as a list (OpenAI allows a single string)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
