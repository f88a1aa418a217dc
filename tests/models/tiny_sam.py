"""Tiny random-init SAM and SAM 2 configurations (a few ten thousand parameters)."""

from __future__ import annotations

from pathlib import Path

SAM_CONFIG = {
    "vision_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 8,
        "output_channels": 16,
        "mlp_dim": 64,
        "global_attn_indexes": [1],
        "window_size": 4,
        "num_pos_feats": 8,
    },
    "prompt_encoder_config": {
        "hidden_size": 16,
        "image_size": 64,
        "patch_size": 8,
        "mask_input_channels": 4,
    },
    "mask_decoder_config": {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_dim": 32,
        "iou_head_hidden_dim": 16,
    },
}

SAM2_CONFIG = {
    "vision_config": {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 8,
            "num_attention_heads": 1,
            "image_size": [64, 64],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [8, 16, 32, 64],
            "num_attention_heads_per_stage": [1, 1, 1, 1],
            "window_size_per_stage": [4, 4, 4, 4],
            "global_attention_blocks": [3],
            "window_positional_embedding_background_size": [2, 2],
        },
        "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
        "fpn_hidden_size": 16,
    },
    "prompt_encoder_config": {
        "hidden_size": 16,
        "image_size": 64,
        "patch_size": 16,
        "mask_input_channels": 4,
    },
    "mask_decoder_config": {
        "hidden_size": 16,
        "mlp_dim": 32,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": 16,
    },
}


def write_config(folder: Path, kind: str = "sam", values: dict | None = None) -> Path:
    """Write a tiny ``config.json`` for ``kind`` (``sam`` or ``sam2``) into ``folder``
    (``values``: another config of that kind instead of the tiny one)."""
    from transformers import Sam2Config, SamConfig

    cls, tiny = (SamConfig, SAM_CONFIG) if kind == "sam" else (Sam2Config, SAM2_CONFIG)
    values = tiny if values is None else values
    folder.mkdir(parents=True, exist_ok=True)
    cls(**values).save_pretrained(str(folder))
    return folder / "config.json"


def write_model(folder: Path, kind: str = "sam", seed: int = 0) -> Path:
    """Save a tiny random-init model with ``save_pretrained`` (a local "weights" folder)."""
    import torch
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    torch.manual_seed(seed)
    if kind == "sam":
        model = SamModel(SamConfig(**SAM_CONFIG))
    else:
        model = Sam2Model(Sam2Config(**SAM2_CONFIG))
    model.save_pretrained(str(folder))
    return folder
