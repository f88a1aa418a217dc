"""Helpers shared by the dataset readers: decoding as tensors, resizing, digests, splits.

The decoding itself (modes, bit depths, EXIF orientation, errors naming the file, the image
file endings) lives in the torch-free :mod:`matbench.decoding` (the scene generator's worker
processes use it without torch) and is re-exported here: readers import from this module.
Descriptions and the label-leak check are in :mod:`matbench.datasets.descriptions`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from matbench.decoding import (
    IMAGE_EXTENSIONS,
    as_rgb,
    decode_gray,
    decode_mask_fraction,
    decode_rgb,
    header_size,
    open_image,
    open_rgb,
    oriented_size,
    rgb_pixels,
)
from matbench.errors import DatasetFormatError

#: Default threshold (0-255) that turns a grey mask into a binary one.
MASK_THRESHOLD = 127

Sample = dict[str, Any]

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_THRESHOLD",
    "Sample",
    "as_rgb",
    "decode_gray",
    "decode_mask_fraction",
    "decode_rgb",
    "file_digest",
    "header_size",
    "list_images",
    "load_rgb",
    "mask_is_empty",
    "open_image",
    "open_rgb",
    "oriented_size",
    "read_image",
    "read_image_reduced",
    "read_json",
    "read_mask",
    "resize_sample",
    "resized_size",
    "split_per_class",
    "to_tensor",
]


# -- decoding ------------------------------------------------------------------------------
def to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [0, 1]."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def read_image(path: str | Path) -> Tensor:
    """RGB float image (3, H, W) in [0, 1]; see :func:`matbench.decoding.decode_rgb`.

    Converted in NumPy (one thread; the same IEEE division as torch's), since torch's thread
    pool hands a 0.6 MB conversion off to a busy core: 3x slower on a loaded 2-core machine.
    """
    pixels = decode_rgb(path).astype(np.float32)
    np.divide(pixels, np.float32(255.0), out=pixels)
    return torch.from_numpy(pixels).permute(2, 0, 1)


def read_image_reduced(
    path: str | Path, reduce: int = 1, as_uint8: bool = False
) -> tuple[Tensor, float]:
    """Like :func:`read_image`, but a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size, at
    most by ``reduce`` (see :func:`matbench.decoding.open_rgb`). Returns the image (uint8
    (3, H, W) with ``as_uint8``, a channels-first view of the decoded (H, W, 3) array) and the
    factor it was reduced by (1.0 for a full decode)."""
    rgb, scale = open_rgb(path, reduce=reduce)
    if as_uint8:  # a (3, H, W) view of the decoded pixels: crops are cut before any copy
        return torch.from_numpy(rgb_pixels(rgb)).permute(2, 0, 1), scale
    image = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    # channels first while still uint8: converting a strided view to float is slow
    return image.contiguous().float().div_(255.0), scale


def load_rgb(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Decode an image as an RGB PIL image with EXIF orientation applied.

    With ``max_side``, JPEG decoding may use a reduced scale that still keeps the longest side
    at least ``max_side`` (the final resize is done by the caller).
    """
    return open_rgb(path, draft_size=max_side)[0]


def read_mask(path: str | Path, threshold: int = MASK_THRESHOLD) -> Tensor:
    """Binary mask (H, W) bool: one channel at its bit depth, above ``threshold / 255`` of full
    scale is the material (``> 127`` for 8-bit files)."""
    return torch.from_numpy(_mask_array(path, threshold))


def _mask_array(path: str | Path, threshold: int) -> np.ndarray:
    values, scale = decode_gray(path)
    if scale == 255:
        return values > threshold
    return values.astype("float64") / scale > threshold / 255.0


def mask_is_empty(path: str | Path, threshold: int = MASK_THRESHOLD) -> bool:
    """Whether a mask file (see :func:`read_mask`) has no material pixel. Remembered per file
    (path, inode, size, modification time): a datamodule builds its datasets several times."""
    stat = Path(path).stat()
    return _mask_is_empty(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, threshold)


@lru_cache(maxsize=1 << 18)
def _mask_is_empty(path: str, inode: int, size: int, mtime_ns: int, threshold: int) -> bool:
    return not bool(_mask_array(path, threshold).any())


def list_images(folder: Path) -> list[Path]:
    """The image files (:data:`IMAGE_EXTENSIONS`) directly inside ``folder``, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's content: :class:`FileNotFoundError` naming ``what`` when it is missing,
    :class:`~matbench.errors.DatasetFormatError` naming the file when it is not JSON."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err


# -- resizing and digests -------------------------------------------------------------------
def resized_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """``(width, height)`` after shrinking so that the longest side is at most ``max_size``
    (never enlarged; sides rounded half up, at least 1)."""
    longest = max(width, height)
    if max_size is None or longest <= max_size:
        return width, height
    return (
        max(1, int(np.floor(width * max_size / longest + 0.5))),
        max(1, int(np.floor(height * max_size / longest + 0.5))),
    )


def file_digest(path: Path) -> str:
    """Short content hash of a file (part of the feature cache key)."""
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()


def resize_sample(sample: Sample, size: int | None) -> Sample:
    """Resize ``image`` (bilinear, antialiased) and ``mask`` (nearest) to ``size`` × ``size``.

    The aspect ratio is not kept on purpose: a crop could cut the material region away.
    A dense int64 ``mask`` (label map) is resized by nearest neighbour too.
    """
    if size is None:
        return sample
    image = sample["image"]
    if tuple(image.shape[-2:]) != (size, size):
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
        sample["image"] = image[0].clamp_(0.0, 1.0)
    mask = sample.get("mask")
    if mask is not None and tuple(mask.shape) != (size, size):
        dtype = mask.dtype
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        sample["mask"] = mask.to(dtype)
    return sample


# -- splits ----------------------------------------------------------------------------------
def split_per_class(
    keys_by_class: Mapping[str, Sequence[str]],
    train_fraction: float = 0.5,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[str]]:
    """A seeded per-class split into ``train``, ``val`` and ``test`` key lists.

    For every class the sorted keys are shuffled with ``random.Random(f"{seed}:{class}")``;
    the first ``round(train_fraction * n)`` go to training (the rest to test), and
    ``val_fraction`` of those training keys (at least one when the fraction is positive and
    the class has two or more training keys) are held out for validation. The result only
    depends on the key names, the fractions and the seed.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in sorted(keys_by_class):
        keys = sorted(keys_by_class[name])
        random.Random(f"{seed}:{name}").shuffle(keys)
        n_train = min(max(1, round(train_fraction * len(keys))), len(keys))
        train, test = keys[:n_train], keys[n_train:]
        n_val = 0
        if val_fraction > 0 and len(train) >= 2:
            n_val = min(max(1, round(val_fraction * len(train))), len(train) - 1)
        split["val"] += sorted(train[:n_val])
        split["train"] += sorted(train[n_val:])
        split["test"] += sorted(test)
    return split
