"""A tiny random Llama and a word-level tokenizer, built in-process for fast, offline tests.

Nothing is downloaded: the vocabulary is a list of plain English words written below, and the
weights come from a fixed torch seed, so every process builds the same model and greedy output
is the same readable word salad everywhere.

The vocabulary ends with one token per printable ASCII character (:data:`CHARACTER_TOKENS`), so
constrained decoding can spell JSON or anything a regex asks for. They come after every word,
with weights from a separate seed, and the backend leaves them out unless a grammar is active
(the config's ``herd_unconstrained_vocab_size``, kept by ``save_pretrained``): unconstrained
output is token for token what it was before they existed.
"""

from __future__ import annotations

import string
from typing import Any

TINY_SEED = 1
"""Torch seed for the tiny model's weights."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, the template SmolLM2 uses; also the fallback for GGUF files that carry none."""

SPECIAL_TOKENS = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")
PUNCTUATION = (".", ",", "?", "!", ":", ";", "'", "-")
_WORD_TEXT = """
the a of and to in is it that was for on are with as i his they be at one have this from or had
by hot word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water
than call first who may down side been now find any new work part take get place made live where
after back little only round man year came show every good me give our under name very through
just form sentence great think say help low line differ turn cause much mean before move right boy
old too same tell does set three want air well also play small end put home read hand port large
spell add even land here must big high such follow act why ask men change went light kind off need
house picture try us again animal point mother world near build self earth father head stand own
page should country found answer school grow study still learn plant cover food sun four between
state keep eye never last let thought city tree cross farm hard start might story saw far sea draw
left late run while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile river
car feet care second book carry took science eat room friend began idea fish mountain stop once
base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever
red list though feel talk bird soon body dog family direct leave song measure door product black
short class wind question happen complete ship area half rock order fire south problem piece told
knew pass since top whole king space heard best hour better true during hundred five remember step
early hold west ground interest reach fast verb sing listen six table travel less morning ten
simple several toward war lay against pattern slow center love person money serve appear road map
rain rule pull cold notice voice unit power town fine certain fly fall lead cry dark machine note
wait plan figure star box noun field rest correct able pound done beauty drive stood contain front
teach week final gave green quick develop ocean warm free minute strong special mind behind clear
tail produce fact street inch nothing course stay wheel full force blue object decide surface deep
moon island foot system busy test record boat common gold possible plane dry wonder laugh thousand
ago ran check game shape miss brought heat snow bring yes distant fill east paint language among
hello user assistant capital france paris london berlin rome madrid question reply model expert
router answer math code poem history weather please thanks today tomorrow quickly slowly
"""
WORDS = tuple(_WORD_TEXT.split())
"""The tiny vocabulary: plain words, so generated text reads as (nonsense) English."""

CHARACTER_TOKENS = tuple("##" + char for char in string.printable if char.isprintable())
"""``##{``, ``##"``, ``##7``, ...: WordPiece continuation pieces, which the decoder glues to the
previous token, so ``{`` ``"`` ``a`` ... decode to ``{"a`` instead of ``{ " a``. Encoding never
produces them (the pre-tokenizer yields no ``##`` pieces); only a grammar makes the model pick
them."""

CHARACTER_SEED = 2
"""Torch seed for the character tokens' embedding and output rows."""


def build_tiny_tokenizer() -> Any:
    """A lower-casing word-level tokenizer over :data:`WORDS` with ChatML special tokens.

    Returns:
        A transformers fast tokenizer (unknown words map to ``<unk>``).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(WORDS))
    tokens = (*SPECIAL_TOKENS, *PUNCTUATION, *words, *CHARACTER_TOKENS)
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece's decoder joins words with spaces and glues punctuation back ("hello, world.").
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_model(
    vocab_size: int, eos_token_id: int, pad_token_id: int, *, appended_tokens: int = 0
) -> Any:
    """A 2-layer Llama with hidden size 32 and seeded random weights, in eval mode.

    Args:
        vocab_size: the tokenizer's vocabulary size.
        eos_token_id: id that ends a generation.
        pad_token_id: id used for padding.
        appended_tokens: how many ids at the end of the vocabulary get rows from
            :data:`CHARACTER_SEED` after the model is built for the rest, so appending tokens
            leaves every other weight as it was.

    Returns:
        A ``LlamaForCausalLM`` (about 50k parameters).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size - appended_tokens,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # Untied input/output embeddings make greedy output wander over the vocabulary instead
        # of repeating the last prompt word forever.
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
        if appended_tokens:  # resizing draws from the global RNG too
            _append_rows(model, vocab_size, appended_tokens)
    if appended_tokens:  # read by GenerationBackend: the appended ids are for grammars only
        model.config.herd_unconstrained_vocab_size = vocab_size - appended_tokens
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = pad_token_id
    return model.eval()


def _append_rows(model: Any, vocab_size: int, appended: int) -> None:
    import torch

    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    generator = torch.Generator().manual_seed(CHARACTER_SEED)
    std = model.config.initializer_range
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            rows = torch.randn(appended, weight.shape[1], generator=generator) * std
            weight[-appended:] = rows


def build_tiny_parts() -> tuple[Any, Any]:
    """The tiny model and its tokenizer, as ``(model, tokenizer)``."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(
        len(tokenizer),
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        appended_tokens=len(CHARACTER_TOKENS),
    )
    return model, tokenizer
