"""Request bodies of the TGI and OpenAI routes, as the clients send them.

Unknown fields are ignored rather than rejected, as TGI's serde structs do: clients add fields
over time (``watermark``, ``tool_prompt``, ...) and a stand-in server must not break on them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerateParameters(BaseModel):
    """``parameters`` of ``POST /``, ``/generate`` and ``/generate_stream``."""

    model_config = ConfigDict(extra="ignore")

    adapter_id: str | None = None
    """LoRA adapter to use; accepted and ignored (this server has no adapters)."""
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
    grammar: Any = None
    """Constrained decoding; rejected, like a TGI started with ``--disable-grammar-support``."""
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


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request."""

    model_config = ConfigDict(extra="ignore")

    role: str
    """``system``, ``user``, ``assistant``, ..."""
    content: str | list[dict[str, Any]] | None = None
    """Text, or OpenAI content parts of which the text parts are used."""
    name: str | None = None
    """Optional author name; passed to the chat template."""

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


class ChatRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    """Used by TGI as the LoRA adapter id unless ``tgi``; accepted and ignored here."""
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
    tools: list[Any] | None = None
    """Tool definitions; rejected (this server has no constrained decoding)."""
    tool_choice: Any = None
    """Accepted with ``tools``."""
    response_format: Any = None
    """Grammar; rejected like ``tools``."""
    stream_options: StreamOptions | None = None
    """Streaming options."""

    def stop_sequences(self) -> list[str]:
        """``stop`` as a list (OpenAI allows a single string)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
