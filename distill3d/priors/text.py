"""The toy prior's text side: a word-level tokenizer over the toy vocabulary and a tiny CLIP text encoder.

Both are real Hugging Face classes (``PreTrainedTokenizerFast`` built with ``tokenizers``' WordLevel model, and
``CLIPTextModel``), saved in the same ``tokenizer/`` and ``text_encoder/`` sub-folders as Stable Diffusion's.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from distill3d.toyworld.vocab import VOCABULARY

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def build_tokenizer(max_length: int = 16) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: special tokens first, then the toy vocabulary in a fixed order."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(VOCABULARY))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = None
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # splits words and punctuation (the comma is a token)
    tk.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]",
        model_max_length=max_length,
    )


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, width: int = 64, layers: int = 2, heads: int = 4) -> CLIPTextModel:
    """A randomly initialised CLIPTextModel sized for the toy vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)
