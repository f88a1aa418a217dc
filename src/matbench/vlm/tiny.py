"""Tiny randomly initialised ``transformers`` models with their processors, built offline.

For tests, benchmarks and smoke runs of the model back ends: a LLaVA-architecture
image-text-to-text model (CLIP vision tower + Llama decoder, ~20k parameters) and a Llama
text-only LM, each with a word-level tokenizer and a chat template, saved in the folder
layout ``from_pretrained`` reads. Nothing is downloaded. Their answers are meaningless
but deterministic.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: The tokenizer's words: appearance vocabulary, no material names (so that the tiny models'
#: descriptions never name a class by accident).
WORDS = (
    "the a an is it its and with of in on surface region shows looks appears has very slightly "
    "shiny matte rough smooth glossy reflective translucent opaque transparent texture grain "
    "fine coarse bright dark soft hard wet dry light dull woven porous streaked speckled "
    "highlights reflections pattern color colour uniform uneven outlined marked describe "
    "material appearance gloss translucency answer one word class list choose from user "
    "assistant system"
).split()
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
PUNCTUATION = (".", ",", ":", ";", "?", "!", "(", ")", "'", '"', "-", "1", "2", "3")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : "
    "{% if m['content'] is string %}{{ m['content'] }} "
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
    "{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIAL + tuple(WORDS) + PUNCTUATION))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
    )


def _text_config(vocab_size: int, hidden: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def make_tiny_vlm(
    folder: str | Path, image_size: int = 32, seed: int = 0, hidden: int = 32
) -> Path:
    """Write a tiny random LLaVA model and its processor into ``folder``; return it.

    Args:
        folder: Output folder (created).
        image_size: Input size of the CLIP vision tower (patches of 8 pixels, 16 for inputs
            of 128 pixels and more).
        seed: Seed of the random weights.
        hidden: Width of the language decoder.
    """
    from transformers import (
        AutoModelForImageTextToText,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = _tokenizer()
    patch = 8 if image_size < 128 else 16
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=16,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(len(tokenizer), hidden),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(image_size // patch) ** 2,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_lm(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Llama causal LM and its tokenizer into ``folder``; return it."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_text_config(len(tokenizer), 32))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
