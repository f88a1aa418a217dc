"""Polygon masks decoded only where the object is.

pycocotools rasterises COCO/LVIS polygons into a run-length encoding (RLE) of the whole image;
``mask.decode`` then writes every pixel of the image, 300k of them for a COCO photo, for an
object that may cover a few hundred. :func:`polygon_region` keeps pycocotools' rasterisation
(the same pixels as :func:`matbench.datasets.lvis_materials.decode_polygons`, bit for bit) but
expands the RLE only over the columns the object touches, and returns the tight box with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A tight box ``(x0, y0, x1, y1)`` with exclusive ends.
Box = tuple[int, int, int, int]


def rle_counts(compressed: bytes) -> np.ndarray:
    """The run lengths of a pycocotools compressed RLE string (``rle["counts"]``).

    The format (pycocotools ``rleToString``): each count in 5-bit groups, low first, 48 added
    to each byte, bit 0x20 set on every group but the last, bit 0x10 of the last group the
    sign; counts after the third are stored as differences from the count two before.
    """
    chars = np.frombuffer(compressed, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = np.flatnonzero((chars & 0x20) == 0)
    first = np.concatenate(([0], last[:-1] + 1))
    group = np.repeat(np.arange(len(last)), last - first + 1)
    shift = 5 * (np.arange(len(chars)) - first[group])
    values = np.add.reduceat((chars & 0x1F) << shift, first)
    bits = 5 * (last - first + 1)
    negative = (chars[last] & 0x10) != 0
    values[negative] |= np.left_shift(-1, bits[negative])
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts


def rle_region(counts: np.ndarray, height: int, box: Box) -> np.ndarray:
    """The mask inside ``box`` (y1 - y0, x1 - x0) bool of an RLE mask: column-major runs
    ``counts`` over an image ``height`` pixels high, background first."""
    x0, y0, x1, y1 = box
    ends = np.cumsum(counts)
    lo, hi = x0 * height, x1 * height
    lengths = np.clip(ends, lo, hi)
    lengths[1:] -= lengths[:-1].copy()
    lengths[0] -= lo
    is_object = (np.arange(len(counts)) & 1).astype(bool)
    columns = np.repeat(is_object, lengths).reshape(x1 - x0, height)
    return np.ascontiguousarray(columns[:, y0:y1].T)


def polygon_region(
    polygons: Sequence[Sequence[float] | np.ndarray], height: int, width: int
) -> tuple[Box, np.ndarray] | None:
    """COCO polygons (absolute pixels) of an image ``height`` x ``width``: the tight box of
    their union as pycocotools rasterises it and the mask inside that box (None when no pixel
    is set). Pasted into an empty (height, width) mask at the box, it equals
    ``decode_polygons(polygons, height, width)``."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(list(polygons), height, width)
    rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
    if w == 0 or h == 0:
        return None
    box = (x, y, x + w, y + h)
    return box, rle_region(rle_counts(rle["counts"]), height, box)
