"""Character-level tokenizer for the organisms, saved as a transformers fast tokenizer.

One token per character of a fixed alphabet (lowercase letters, digits, arithmetic symbols, space and
newline) plus ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``. Encoding prepends ``<bos>``; decoding
concatenates characters. Padding is on the left, as batched generation needs.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
ALPHABET: str = string.ascii_lowercase + string.digits + " \n+-*/()=:,.?"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The organisms' character-level tokenizer (deterministic vocabulary: specials, then ALPHABET)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )
