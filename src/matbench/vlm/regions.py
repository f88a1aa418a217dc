"""How a region is shown to a vision-language model: the whole image with the region marked,
or the region's object crop.

- ``outline``: a red ring drawn just *outside* the region (its pixels stay untouched);
- ``som``: Set-of-Marks — a translucent tint over the region, the outline, and the mark
  ``1`` at the region's most interior point;
- ``crop``: the region's box (with 10 % context, at least 64 px) cut out, unmarked.

Views are downsized so that the longer side is at most ``max_side`` pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import Tensor

from matbench.transforms import crop_object
from matbench.vlm.base import MARKERS

MARK_COLOR = (255, 0, 0)


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float image in [0, 1] → (H, W, 3) uint8."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def pixels_sha256(image: Tensor) -> str:
    """SHA-256 of the decoded image: its uint8 RGB pixels and shape."""
    array = to_uint8(image)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def mask_sha256(mask: Tensor) -> str:
    """SHA-256 of a bool mask (its shape and packed bits): the region's identity."""
    array = mask.to(torch.bool).numpy()
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(np.packbits(array).tobytes())
    return digest.hexdigest()


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def _downsize(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def region_view(
    image: Tensor, mask: Tensor, marker: str = "outline", max_side: int = 768
) -> Image.Image:
    """The picture of one region shown to the model.

    Args:
        image: (3, H, W) float image in [0, 1], full resolution.
        mask: (H, W) bool mask of the region (must not be empty).
        marker: ``outline``, ``som`` or ``crop``.
        max_side: Longest side of the returned picture.

    Raises:
        ValueError: For an unknown marker, mismatched sizes or an empty mask.
    """
    if marker not in MARKERS:
        raise ValueError(f"marker must be one of {MARKERS}, got '{marker}'")
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"mask is {tuple(mask.shape)} but the image is {tuple(image.shape[-2:])}")
    mask = mask.to(torch.bool)
    if not bool(mask.any()):
        raise ValueError("empty region mask")
    if marker == "crop":
        crop, _, _ = crop_object(image, mask, size=None, min_size=64, blur_sigma=0.0, context=0.1)
        return _downsize(Image.fromarray(to_uint8(crop)), max_side)
    # mark at the output resolution, so that the outline has the same width in every view
    picture = _downsize(Image.fromarray(to_uint8(image)), max_side)
    small = _at_size(mask, picture.size)
    array = np.asarray(picture).copy()
    width = max(2, round(max(picture.size) / 200))
    if marker == "som":
        tint = np.array(MARK_COLOR, dtype=np.float32)
        array[small] = (0.65 * array[small] + 0.35 * tint).round().astype(np.uint8)
    array[_ring(small, width)] = MARK_COLOR
    view = Image.fromarray(array)
    if marker == "som":
        _draw_mark(view, small, "1")
    return view


def _at_size(mask: Tensor, size: tuple[int, int]) -> np.ndarray:
    """A bool mask resized (nearest) to a picture's (width, height); a region thinner than
    one output pixel keeps its centre pixel."""
    small = (
        np.asarray(Image.fromarray(mask.numpy().astype(np.uint8) * 255).resize(size, Image.NEAREST))
        > 127
    )
    if not small.any():
        ys, xs = np.nonzero(mask.numpy())
        sy, sx = small.shape[0] / mask.shape[0], small.shape[1] / mask.shape[1]
        small[int(ys.mean() * sy), int(xs.mean() * sx)] = True
    return small


def _draw_mark(view: Image.Image, region: np.ndarray, text: str) -> None:
    """The Set-of-Marks label: ``text`` in white on a black box at the region's most interior
    point (the farthest from its border)."""
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    draw = ImageDraw.Draw(view)
    size = max(10, round(max(view.size) / 30))
    half = size // 2 + (size // 4) * (len(text) - 1)
    box = (x - half, y - size // 2, x + half + 1, y + size // 2 + 1)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), anchor="mm", font_size=size)


#: Distinct tints of the numbered regions of a Set-of-Marks picture (cycled).
MARK_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


def marks_view(image: Tensor, masks: Tensor, max_side: int = 768) -> Image.Image:
    """The Set-of-Marks picture of several regions (Yang et al., 2023): each region tinted in
    its own colour, outlined, and numbered 1..N at its most interior point; regions drawn
    largest first, so that a small object on a large one stays visible.

    Args:
        image: (3, H, W) float image in [0, 1], full resolution.
        masks: (N, H, W) bool masks (none empty), numbered in this order.
        max_side: Longest side of the returned picture.
    """
    if masks.ndim != 3 or tuple(masks.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(
            f"masks {tuple(masks.shape)} must be (N, H, W) with the image's size "
            f"{tuple(image.shape[-2:])}"
        )
    picture = _downsize(Image.fromarray(to_uint8(image)), max_side)
    array = np.asarray(picture).copy()
    width = max(2, round(max(picture.size) / 200))
    smalls = []
    for mask in masks.to(torch.bool):
        if not bool(mask.any()):
            raise ValueError("empty region mask")
        smalls.append(_at_size(mask, picture.size))
    order = sorted(range(len(smalls)), key=lambda i: -int(smalls[i].sum()))
    for i in order:
        colour = np.array(MARK_PALETTE[i % len(MARK_PALETTE)], dtype=np.float32)
        region = smalls[i]
        array[region] = (0.6 * array[region] + 0.4 * colour).round().astype(np.uint8)
        array[_ring(region, width)] = colour.astype(np.uint8)
    view = Image.fromarray(array)
    for i in order:
        _draw_mark(view, smalls[i], str(i + 1))
    return view
