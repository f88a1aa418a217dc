"""A tiny randomly initialised Mask2Former config (Swin backbone of a few thousand weights)."""

from __future__ import annotations

import json
from pathlib import Path


def write_mask2former_config(path: Path, num_labels: int = 46) -> Path:
    """Write a ``Mask2FormerConfig`` JSON small enough for CPU tests; return its path."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=num_labels,
        hidden_dim=32,
        num_queries=8,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        mask_feature_size=32,
        feature_size=32,
        decoder_layers=2,
        encoder_layers=1,
        num_attention_heads=2,
        train_num_points=256,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict()))
    return path
