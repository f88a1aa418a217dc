"""Helpers shared by the dataset readers: image and mask decoding as tensors.

The decoding itself (modes, bit depths, EXIF, errors naming the file) lives in the torch-free
:mod:`matbench.decoding`, re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from matbench.decoding import (
    as_rgb,
    decode_gray,
    decode_mask_fraction,
    decode_rgb,
    header_size,
    open_image,
    oriented_size,
)

#: Default threshold (0-255) that turns a grey mask into a binary one.
MASK_THRESHOLD = 127

__all__ = [
    "MASK_THRESHOLD",
    "as_rgb",
    "decode_gray",
    "decode_mask_fraction",
    "decode_rgb",
    "header_size",
    "open_image",
    "oriented_size",
    "read_image",
    "read_mask",
]


def read_image(path: str | Path) -> Tensor:
    """RGB float image (3, H, W) in [0, 1]; see :func:`matbench.decoding.decode_rgb`."""
    return torch.from_numpy(decode_rgb(path)).permute(2, 0, 1).float().div_(255.0)


def read_mask(path: str | Path, threshold: int = MASK_THRESHOLD) -> Tensor:
    """Binary mask (H, W) bool: one channel at its bit depth, above ``threshold / 255`` of full
    scale is the material (``> 127`` for 8-bit files)."""
    values, scale = decode_gray(path)
    if scale == 255:
        return torch.from_numpy(values > threshold)
    return torch.from_numpy(values.astype("float64") / scale > threshold / 255.0)
