"""Polygon masks decoded only where the object is.

pycocotools rasterises COCO/LVIS polygons into a run-length encoding (RLE) of the whole image;
``mask.decode`` then writes every pixel of the image, 300k of them for a COCO photo, for an
object that may cover a few hundred. :func:`polygon_region` keeps pycocotools' rasterisation
(the same pixels as :func:`matbench.datasets.lvis_materials.decode_polygons`, bit for bit) but
expands the RLE only over the columns the object touches, and returns the tight box with it.
:func:`polygon_regions` does the same for many objects at once (a batch's), in one pass of
NumPy operations rather than one per object.
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


def _segment_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``values`` restarting where ``segment`` (non-decreasing) changes."""
    sums = np.cumsum(values)
    if sums.size == 0:
        return sums
    starts = np.flatnonzero(np.concatenate(([True], segment[1:] != segment[:-1])))
    before = np.concatenate(([0], sums))[starts]
    return sums - np.repeat(before, np.diff(np.append(starts, sums.size)))


def rle_counts_many(strings: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rle_counts` of several strings at once: the counts of all, concatenated, and
    the offsets (len(strings) + 1) of each string's counts in them."""
    lengths = np.fromiter((len(b) for b in strings), dtype=np.int64, count=len(strings))
    chars = np.frombuffer(b"".join(strings), dtype=np.uint8).astype(np.int64) - 48
    last = np.flatnonzero((chars & 0x20) == 0)  # every string ends a count
    first = np.concatenate(([0], last[:-1] + 1))
    group = np.repeat(np.arange(len(last)), last - first + 1)
    shift = 5 * (np.arange(len(chars)) - first[group])
    values = np.add.reduceat((chars & 0x1F) << shift, first) if len(last) else last
    bits = 5 * (last - first + 1)
    negative = (chars[last] & 0x10) != 0
    values[negative] |= np.left_shift(-1, bits[negative])
    # the string of each count, and its position in that string's counts
    string_of_char = np.repeat(np.arange(len(strings)), lengths)
    owner = string_of_char[last]
    per_string = np.bincount(owner, minlength=len(strings))
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(per_string, out=offsets[1:])
    position = np.arange(len(values)) - offsets[owner]
    counts = values.copy()
    # counts after the third are stored as differences from the count two before
    for chain in ((position & 1) == 1, ((position & 1) == 0) & (position >= 2)):
        index = np.flatnonzero(chain)
        counts[index] = _segment_cumsum(values[index], owner[index])
    return counts, offsets


def polygon_regions(
    objects: Sequence[Sequence[Sequence[float] | np.ndarray]],
    heights: Sequence[int],
    widths: Sequence[int],
) -> list[tuple[Box, np.ndarray] | None]:
    """:func:`polygon_region` of each object (its polygons, on an image ``heights[k]`` x
    ``widths[k]``), equal to it, computed together."""
    from pycocotools import mask as mask_utils

    rles = []
    for polygons, height, width in zip(objects, heights, widths, strict=True):
        parts = mask_utils.frPyObjects(list(polygons), int(height), int(width))
        rles.append(mask_utils.merge(parts) if len(parts) > 1 else parts[0])
    if not rles:
        return []
    boxes = mask_utils.toBbox(rles).astype(np.int64).reshape(-1, 4)
    keep = np.flatnonzero((boxes[:, 2] > 0) & (boxes[:, 3] > 0))
    out: list[tuple[Box, np.ndarray] | None] = [None] * len(rles)
    if keep.size == 0:
        return out
    counts, offsets = rle_counts_many([rles[k]["counts"] for k in keep])
    height = np.asarray(heights, dtype=np.int64)[keep]
    x0, y0 = boxes[keep, 0], boxes[keep, 1]
    x1, y1 = x0 + boxes[keep, 2], y0 + boxes[keep, 3]
    # every object's runs cover its own image: place the images end to end
    size = height * np.asarray(widths, dtype=np.int64)[keep]
    base = np.concatenate(([0], np.cumsum(size)[:-1]))
    owner = np.repeat(np.arange(keep.size), np.diff(offsets))
    lo, hi = base + x0 * height, base + x1 * height  # the box's columns, in the flat order
    ends = np.clip(np.cumsum(counts), lo[owner], hi[owner])
    lengths = np.diff(np.concatenate(([0], ends)))
    starts = offsets[:-1]
    lengths[starts] = ends[starts] - lo  # each object's first run starts at its box
    is_object = ((np.arange(len(counts)) - offsets[owner]) & 1).astype(bool)
    pixels = np.repeat(is_object, lengths)
    column_start = np.concatenate(([0], np.cumsum((x1 - x0) * height)))
    for j, k in enumerate(keep.tolist()):
        columns = pixels[column_start[j] : column_start[j + 1]].reshape(
            int(x1[j] - x0[j]), int(height[j])
        )
        box = (int(x0[j]), int(y0[j]), int(x1[j]), int(y1[j]))
        out[k] = (box, np.ascontiguousarray(columns[:, box[1] : box[3]].T))
    return out
