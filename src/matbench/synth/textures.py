"""Unsupervised texture extraction: cell histograms, Jensen–Shannon region growing, tiling."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Histogram bins per channel (colour and gradient).
BINS = 16
#: Gradient magnitudes (in intensity units of [0, 1] per pixel) at or above this share the last bin.
GRADIENT_MAX = 0.25
#: A texture whose grey-level standard deviation is below this is flat.
FLAT_STD = 0.03
#: ... or whose mean absolute gradient is below this.
FLAT_GRADIENT = 0.01


def js_distance(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen–Shannon distance (square root of the base-2 divergence), in [0, 1].

    Args:
        p: Histograms (non-negative; normalised along ``axis`` here).
        q: Histograms broadcastable against ``p``.
        axis: The bin axis.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / np.maximum(p.sum(axis=axis, keepdims=True), 1e-12)
    q = q / np.maximum(q.sum(axis=axis, keepdims=True), 1e-12)
    p, q = np.broadcast_arrays(p, q)
    m = 0.5 * (p + q)

    def _kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return (a * np.log2(ratio)).sum(axis=axis)

    divergence = 0.5 * _kl(p) + 0.5 * _kl(q)
    return np.sqrt(np.clip(divergence, 0.0, 1.0))


def cell_histograms(image: np.ndarray, cell: int, bins: int = BINS) -> np.ndarray:
    """Per-cell normalised histograms of R, G, B and of their gradient magnitudes.

    Args:
        image: ``uint8`` (H, W, 3); the last partial row/column of cells is dropped.
        cell: Cell side in pixels.
        bins: Bins per histogram.

    Returns:
        ``float32`` (rows, cols, 6, bins): channels R, G, B, |grad R|, |grad G|, |grad B|.
    """
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    if rows == 0 or cols == 0:
        raise ValueError(f"image of {image.shape[:2]} px holds no {cell} px cell")
    x = image[: rows * cell, : cols * cell].astype(np.float32) / 255.0
    grad = np.abs(np.diff(x, axis=0, append=x[-1:])) + np.abs(np.diff(x, axis=1, append=x[:, -1:]))
    colour_bins = np.minimum((x * bins).astype(np.int32), bins - 1)
    grad_bins = np.minimum((grad * (bins / GRADIENT_MAX)).astype(np.int32), bins - 1)
    # Flat index (cell row, cell col, channel, bin) for a single bincount.
    cell_id = (np.arange(rows * cell, dtype=np.int32) // cell)[:, None] * cols + (
        np.arange(cols * cell, dtype=np.int32) // cell
    )[None, :]
    base = (cell_id * (6 * bins))[..., None] + np.arange(3, dtype=np.int32) * bins
    flat = np.concatenate([base + colour_bins, base + 3 * bins + grad_bins], axis=-1)
    counts = np.bincount(flat.ravel(), minlength=rows * cols * 6 * bins)
    return (counts.reshape(rows, cols, 6, bins) / float(cell * cell)).astype(np.float32)


def cell_distance(hist: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance of every cell to ``ref``: the largest JS distance over the six histograms."""
    return js_distance(hist, ref, axis=-1).max(axis=-1)


def _entropy(p: np.ndarray) -> np.ndarray:
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=-1)


def _fast_cell_distance(
    hist: np.ndarray, entropy: np.ndarray, ref: np.ndarray, ref_entropy: np.ndarray
) -> np.ndarray:
    # JS divergence = H((p + q) / 2) - (H(p) + H(q)) / 2, with the H(p) precomputed.
    divergence = _entropy(0.5 * (hist + ref)) - 0.5 * (entropy + ref_entropy)
    return np.sqrt(np.clip(divergence, 0.0, 1.0)).max(axis=-1)


def grow_regions(hist: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Connected regions of cells whose distributions match, largest first.

    Cells are visited in raster order; an unvisited cell seeds a region made of the
    4-connected unvisited cells whose distance (:func:`cell_distance`) to the seed is below
    ``threshold``.

    Returns:
        Boolean (rows, cols) masks, sorted by decreasing size (ties in seed order).
    """
    rows, cols = hist.shape[:2]
    hist = hist.astype(np.float64)
    entropy = _entropy(hist)
    visited = np.zeros((rows, cols), dtype=bool)
    regions: list[np.ndarray] = []
    for seed in range(rows * cols):
        r, c = divmod(seed, cols)
        if visited[r, c]:
            continue
        # Breadth-first growth; distances are computed only for cells on the frontier.
        region = np.zeros((rows, cols), dtype=bool)
        region[r, c] = True
        frontier = region.copy()
        blocked = visited.copy()
        while frontier.any():
            candidates = ndimage.binary_dilation(frontier) & ~region & ~blocked
            cr, cc = np.nonzero(candidates)
            if cr.size == 0:
                break
            distance = _fast_cell_distance(hist[cr, cc], entropy[cr, cc], hist[r, c], entropy[r, c])
            close = distance < threshold
            frontier = np.zeros_like(region)
            frontier[cr[close], cc[close]] = True
            blocked[cr[~close], cc[~close]] = True
            region |= frontier
        visited |= region
        regions.append(region)
    order = sorted(range(len(regions)), key=lambda i: -int(regions[i].sum()))
    return [regions[i] for i in order]


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest axis-aligned all-True rectangle of a small boolean grid.

    Returns:
        ``(r0, c0, r1, c1)`` (end exclusive), or ``None`` if the mask is empty. Ties go to the
        first found (top-most, then left-most).
    """
    rows, _ = mask.shape
    best: tuple[int, int, int, int] | None = None
    best_area = 0
    for r0 in range(rows):
        column_ok = np.ones(mask.shape[1], dtype=bool)
        for r1 in range(r0 + 1, rows + 1):
            column_ok &= mask[r1 - 1]
            if not column_ok.any():
                break
            # Longest run of True columns.
            padded = np.concatenate([[0], column_ok.astype(np.int8), [0]])
            edges = np.flatnonzero(np.diff(padded))
            starts, ends = edges[::2], edges[1::2]
            k = int(np.argmax(ends - starts))
            area = (r1 - r0) * int(ends[k] - starts[k])
            if area > best_area:
                best_area = area
                best = (r0, int(starts[k]), r1, int(ends[k]))
    return best


def is_textureless(patch: np.ndarray) -> bool:
    """True for a flat patch: almost constant grey level or almost no gradient."""
    grey = patch.astype(np.float32).mean(axis=-1) / 255.0
    if grey.std() < FLAT_STD:
        return True
    grad = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return bool(grad < FLAT_GRADIENT)


def find_texture(
    image: np.ndarray,
    cell: int = 40,
    threshold: float = 0.45,
    min_cells: int = 4,
) -> tuple[int, int, int, int] | None:
    """Locate a uniform textured region of ``image``.

    Splits the image into ``cell``-pixel cells, grows regions of similar cells
    (:func:`grow_regions`), and from the largest region down cuts the largest rectangle of
    cells that lies inside it; the first rectangle of at least ``min_cells`` cells that is not
    textureless (:func:`is_textureless`) wins.

    Returns:
        The pixel box ``(y0, x0, y1, x1)`` (end exclusive), or ``None``.
    """
    hist = cell_histograms(image, cell)
    for region in grow_regions(hist, threshold):
        if int(region.sum()) < min_cells:
            break
        box = largest_rectangle(region)
        if box is None:
            continue
        r0, c0, r1, c1 = box
        if (r1 - r0) * (c1 - c0) < min_cells:
            continue
        y0, x0, y1, x1 = r0 * cell, c0 * cell, r1 * cell, c1 * cell
        if not is_textureless(image[y0:y1, x0:x1]):
            return y0, x0, y1, x1
    return None


def extract_texture(
    image: np.ndarray,
    cell: int = 40,
    threshold: float = 0.45,
    min_cells: int = 4,
) -> np.ndarray | None:
    """The texture found by :func:`find_texture`, cut out as a ``uint8`` (h, w, 3) copy."""
    box = find_texture(image, cell=cell, threshold=threshold, min_cells=min_cells)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    return image[y0:y1, x0:x1].copy()


def tile_texture(
    texture: np.ndarray, size: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Tile ``texture`` over ``size`` with mirrored copies (so tiles meet without seams).

    Args:
        texture: (h, w, C) array.
        size: Output (height, width).
        offset: Shift (dy, dx) of the tiling pattern.
    """
    h, w = size
    row = np.concatenate([texture, texture[:, ::-1]], axis=1)
    period = np.concatenate([row, row[::-1]], axis=0)
    ph, pw = period.shape[:2]
    dy, dx = offset[0] % ph, offset[1] % pw
    reps = (-(-(h + dy) // ph), -(-(w + dx) // pw)) + (1,) * (texture.ndim - 2)
    return np.tile(period, reps)[dy : dy + h, dx : dx + w]
