"""Tiny randomly initialised models of ``matbench synth materials``, built offline.

A Stable Diffusion pipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel and a
character-level CLIP tokenizer written from a small vocabulary), and a Grounding DINO (tiny
Swin backbone, tiny BERT text encoder with a character-level WordPiece vocabulary) with its
processor; each saved where ``from_pretrained`` reads it. The SAM is
:func:`tests.models.tiny_sam.write_model`. Their outputs are meaningless but deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.models.tiny_sam import write_model as write_sam

CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789,.-'")

__all__ = ["make_tiny_grounding_dino", "make_tiny_sd", "write_sam"]


def _clip_tokenizer(folder: Path, max_length: int = 77):
    """A character-level CLIP BPE tokenizer: every character, alone and word-final, and no
    merges."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in CHARACTERS:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length
    )


def make_tiny_sd(folder: str | Path, seed: int = 0, width: int = 8, max_length: int = 77) -> Path:
    """Write a tiny random Stable Diffusion pipeline (``DiffusionPipeline.from_pretrained``
    loads it); ``width`` scales the UNet and VAE channels (the benchmark widens it)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder / "_tokenizer_source", max_length)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=max_length,
            projection_dim=16,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=end,
            pad_token_id=end,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(width, width),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_grounding_dino(folder: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Write a tiny random Grounding DINO and its processor (character-level BERT
    tokenizer; images resized to ``image_size``)."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    source = folder / "_tokenizer_source"
    source.mkdir(parents=True, exist_ok=True)
    letters = [c for c in CHARACTERS if c.isalnum()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"]
    vocab += letters + [f"##{c}" for c in letters]
    (source / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(str(source / "vocab.txt"), do_lower_case=True)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=image_size,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": image_size, "longest_edge": image_size}
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
