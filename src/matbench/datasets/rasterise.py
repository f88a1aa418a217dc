"""COCO/LVIS polygons rasterised in PyTorch, pixel for pixel as pycocotools does it.

LVIS masks are defined by pycocotools (``mask.frPyObjects`` → ``merge`` → ``decode``). Its C
``rleFrPoly`` scales each polygon by 5, rounds the vertices (``(int)(5 x + .5)``), walks every
edge through the upsampled grid, keeps the points where the walk crosses the centre line of a
pixel column (``(u + .5) / 5 - .5`` an integer) together with the upsampled row there
(``ceil((v + .5) / 5 - .5)``, clamped to ``[0, h]``), and builds a column-major run-length
encoding that toggles at each of them. A pixel is in the polygon when an odd number of
toggles lie at or before it in the image's column-major order; the polygons of an object are
merged by union. :func:`rasterise_polygons` does the same arithmetic (float64 where the C
code uses double, truncation where it casts to int) on whole batches of polygons at once,
on any device, inside a window per object that holds every pixel the rule can set, so the
mask of an object costs its window's pixels rather than the image's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: pycocotools' upsampling factor of the polygon walk (``scale`` in ``rleFrPoly``).
SCALE = 5


@dataclass
class ObjectMasks:
    """Rasterised objects: each object's mask inside its window.

    Attributes:
        windows: (N, 4) int64 ``(x0, y0, x1, y1)`` of each object's window (exclusive ends,
            inside the image): every pixel of the mask lies in it.
        pixels: The windows' masks, bool, each (y1 - y0, x1 - x0) row-major, concatenated.
        offsets: (N + 1,) start of each object's window in :attr:`pixels`.
        boxes: (N, 4) int64 tight box of each mask; ``(0, 0, 0, 0)`` for an empty mask.
        empty: (N,) bool, the masks without any pixel.
    """

    windows: Tensor
    pixels: Tensor
    offsets: Tensor
    boxes: Tensor
    empty: Tensor

    def _bounds(self) -> tuple[list[list[int]], list[int]]:
        # read once: on a GPU each read of a single value waits for the device
        bounds = self.__dict__.get("_bounds_lists")
        if bounds is None:
            bounds = self.__dict__["_bounds_lists"] = (
                self.windows.tolist(),
                self.offsets.tolist(),
            )
        return bounds

    def window_mask(self, k: int) -> Tensor:
        """Object ``k``'s mask inside its window, (y1 - y0, x1 - x0) bool (a view)."""
        windows, offsets = self._bounds()
        x0, y0, x1, y1 = windows[k]
        return self.pixels[offsets[k] : offsets[k + 1]].view(y1 - y0, x1 - x0)

    def crop(self, k: int, box: tuple[int, int, int, int]) -> Tensor:
        """Object ``k``'s mask inside ``box`` (any box of the image), a new bool tensor."""
        x0, y0, x1, y1 = box
        out = torch.zeros((y1 - y0, x1 - x0), dtype=torch.bool, device=self.pixels.device)
        wx0, wy0, wx1, wy1 = self._bounds()[0][k]
        ix0, iy0, ix1, iy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
        if ix0 < ix1 and iy0 < iy1:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.window_mask(k)[
                iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0
            ]
        return out

    def full(self, k: int, height: int, width: int) -> Tensor:
        """Object ``k``'s whole (height, width) mask."""
        return self.crop(k, (0, 0, width, height))


def _segments(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """For segments of ``lengths``: the segment of each element and its position in it."""
    total = int(lengths.sum())
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    return owner, torch.arange(total, device=lengths.device) - starts[owner]


def _offsets(lengths: Tensor) -> Tensor:
    out = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=out[1:])
    return out


def object_windows(
    points: Tensor, point_object: Tensor, image_hw: Tensor, num_objects: int
) -> Tensor:
    """The window of each object: its vertices' bounds grown by a pixel (two at the far
    side), clipped to the image. pycocotools sets pixel ``x`` only for ``x`` in
    ``[ceil(min x - .5), floor(max x - .5)]`` (and likewise in y), so this holds every one."""
    big = torch.finfo(torch.float64).max
    low = torch.full((num_objects, 2), big, dtype=torch.float64, device=points.device)
    high = torch.full((num_objects, 2), -big, dtype=torch.float64, device=points.device)
    index = point_object[:, None].expand(-1, 2)
    low = low.scatter_reduce(0, index, points, "amin")
    high = high.scatter_reduce(0, index, points, "amax")
    limit = image_hw.flip(1)  # (w, h)
    start = torch.minimum(torch.maximum(low.floor().long() - 1, torch.zeros_like(limit)), limit)
    end = torch.maximum(torch.minimum(high.ceil().long() + 2, limit), start)
    return torch.cat([start, end], dim=1)


def rasterise_polygons(
    points: Tensor,
    polygon_offsets: Tensor,
    polygon_object: Tensor,
    image_hw: Tensor,
) -> ObjectMasks:
    """The masks of objects made of polygons, as pycocotools rasterises and merges them.

    Args:
        points: (K, 2) float64 vertices ``(x, y)`` in pixels of all polygons, concatenated.
        polygon_offsets: (P + 1,) int64 start of each polygon in ``points`` (each >= 1
            vertex).
        polygon_object: (P,) int64 object of each polygon (0..N-1).
        image_hw: (N, 2) int64 ``(height, width)`` of each object's image.

    Returns:
        The objects' masks (see :class:`ObjectMasks`), on the device of ``points``.
    """
    device = points.device
    num_objects = len(image_hw)
    points = points.to(torch.float64)
    polygon_offsets = polygon_offsets.to(device=device, dtype=torch.int64)
    polygon_object = polygon_object.to(device=device, dtype=torch.int64)
    image_hw = image_hw.to(device=device, dtype=torch.int64)
    sizes = polygon_offsets[1:] - polygon_offsets[:-1]
    point_polygon, position = _segments(sizes)
    point_object = polygon_object[point_polygon]
    windows = object_windows(points, point_object, image_hw, num_objects)

    # the vertices as rleFrPoly rounds them: (int)(scale * x + .5), a truncation
    scaled = torch.trunc(points * SCALE + 0.5).long()
    x, y = scaled[:, 0], scaled[:, 1]
    # each vertex starts the edge to the next one (the last to the polygon's first)
    following = torch.arange(len(points), device=device) + 1
    last = position == sizes[point_polygon] - 1
    following[last] = polygon_offsets[:-1][point_polygon[last]]
    xs, ys, xe, ye = x, y, x[following], y[following]
    dx, dy = (xe - xs).abs(), (ye - ys).abs()
    along_x = dx >= dy
    flip = (along_x & (xs > xe)) | (~along_x & (ys > ye))
    xs, xe = torch.where(flip, xe, xs), torch.where(flip, xs, xe)
    ys, ye = torch.where(flip, ye, ys), torch.where(flip, ys, ye)
    # a zero-length edge divides 0 by 0 in C; its one point never borders a column change
    rise = torch.where(along_x, ye - ys, xe - xs).double()
    run = torch.where(along_x, dx, dy)
    slope = rise / run.clamp(min=1).double()
    steps = run + 1
    edge, d = _segments(steps)
    t = torch.where(flip[edge], run[edge] - d, d)
    tf = t.double()
    flat = torch.trunc(
        torch.where(along_x[edge], ys[edge], xs[edge]).double() + slope[edge] * tf + 0.5
    )
    u = torch.where(along_x[edge], t + xs[edge], flat.long())
    v = torch.where(along_x[edge], flat.long(), t + ys[edge])

    # column crossings between consecutive points of one polygon's walk
    walk_polygon = point_polygon[edge]
    cross = (walk_polygon[1:] == walk_polygon[:-1]) & (u[1:] != u[:-1])
    index = torch.nonzero(cross).flatten() + 1
    u1, u0, v1, v0 = u[index], u[index - 1], v[index], v[index - 1]
    polygon = walk_polygon[index]
    obj = polygon_object[polygon]
    height, width = image_hw[obj, 0], image_hw[obj, 1]
    xd = (torch.where(u1 < u0, u1, u1 - 1).double() + 0.5) / SCALE - 0.5
    keep = (xd.floor() == xd) & (xd >= 0) & (xd <= (width - 1).double())
    yd = (torch.minimum(v1, v0).double() + 0.5) / SCALE - 0.5
    yd = torch.minimum(yd.clamp(min=0.0), height.double()).ceil().long()
    column, row, polygon, obj = xd[keep].long(), yd[keep], polygon[keep], obj[keep]

    # toggles in each polygon's copy of its object's window: one column of h + 1 slots per
    # window column (the last slot holds the toggles below the window), column-major as in
    # pycocotools' run-length order; toggles of the columns left of the window count first
    wx0, wy0, wx1, wy1 = windows.unbind(1)
    win_w, win_h = wx1 - wx0, wy1 - wy0
    polygon_slots = (win_w * (win_h + 1))[polygon_object]
    base = _offsets(polygon_slots)
    toggles = torch.zeros(int(base[-1]), dtype=torch.int32, device=device)
    ones = torch.ones_like(column, dtype=torch.int32)
    left = (column < wx0[obj]) & (polygon_slots[polygon] > 0)
    toggles.index_add_(0, base[:-1][polygon[left]], ones[left])
    inside = ~left & (column < wx1[obj])
    column, row, polygon, obj = column[inside], row[inside], polygon[inside], obj[inside]
    slot = (
        base[:-1][polygon]
        + (column - wx0[obj]) * (win_h[obj] + 1)
        + torch.minimum((row - wy0[obj]).clamp(min=0), win_h[obj])
    )
    toggles.index_add_(0, slot, ones[inside])
    counts = torch.cumsum(toggles, 0, dtype=torch.int64)
    before = torch.cat([counts.new_zeros(1), counts])[base[:-1]]
    slot_polygon, slot_position = _segments(polygon_slots)
    parity = ((counts - before[slot_polygon]) & 1).bool()

    # the object's pixels: the union of its polygons' (row-major in the object's window)
    slot_object = polygon_object[slot_polygon]
    column_height = win_h[slot_object] + 1
    slot_column, slot_row = slot_position // column_height, slot_position % column_height
    pixel = slot_row < win_h[slot_object]
    object_offsets = _offsets(win_w * win_h)
    target = (object_offsets[:-1][slot_object] + slot_row * win_w[slot_object] + slot_column)[
        pixel & parity
    ]
    pixels = torch.zeros(int(object_offsets[-1]), dtype=torch.bool, device=device)
    pixels[target] = True

    # tight boxes
    pixel_object, pixel_position = _segments(win_w * win_h)
    on = torch.nonzero(pixels).flatten()
    owner = pixel_object[on]
    px = wx0[owner] + pixel_position[on] % win_w[owner]
    py = wy0[owner] + pixel_position[on] // win_w[owner]
    big = torch.iinfo(torch.int64).max
    low = torch.full((num_objects, 2), big, dtype=torch.int64, device=device)
    high = torch.full((num_objects, 2), -1, dtype=torch.int64, device=device)
    found = torch.stack([px, py], 1)
    low = low.scatter_reduce(0, owner[:, None].expand(-1, 2), found, "amin")
    high = high.scatter_reduce(0, owner[:, None].expand(-1, 2), found + 1, "amax")
    empty = high[:, 0] < 0
    boxes = torch.cat([low, high], 1)
    boxes[empty] = 0
    return ObjectMasks(windows, pixels, object_offsets, boxes, empty)
