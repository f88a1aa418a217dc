"""Soft maps from natural images: one R/G/B/H/S/V channel through a fuzzy threshold."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The image properties a map can be read from.
CHANNELS: tuple[str, ...] = ("R", "G", "B", "H", "S", "V")

# A channel whose values barely vary gives no shapes; another channel is tried instead.
_MIN_CHANNEL_STD = 0.02


def fuzzy_threshold(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Soft threshold: 0 at or below ``low``, 1 at or above ``high``, linear in between.

    Args:
        values: Any array.
        low: Lower level.
        high: Upper level, ``>= low``. With ``low == high`` this is a hard threshold
            (values ``>= high`` give 1).

    Returns:
        A ``float32`` array of the same shape with values in [0, 1].
    """
    if high < low:
        raise ValueError(f"fuzzy_threshold: high ({high}) must not be below low ({low})")
    values = np.asarray(values, dtype=np.float32)
    if high == low:
        return (values >= high).astype(np.float32)
    return np.clip((values - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def image_channel(rgb: np.ndarray, channel: str) -> np.ndarray:
    """One property of an RGB image as ``float32`` in [0, 1].

    Args:
        rgb: ``uint8`` array (H, W, 3).
        channel: One of ``R G B H S V`` (HSV as in ``colorsys``: hue in turns).
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
    if channel in "RGB":
        return rgb[..., "RGB".index(channel)].astype(np.float32) / np.float32(255.0)
    # Element-wise maxima: much faster than a reduction over the short last axis.
    r8, g8, b8 = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    vmax8 = np.maximum(np.maximum(r8, g8), b8)
    vmax = vmax8.astype(np.float32) / np.float32(255.0)
    if channel == "V":
        return vmax
    delta = (vmax8 - np.minimum(np.minimum(r8, g8), b8)).astype(np.float32) / np.float32(255.0)
    if channel == "S":
        return np.divide(delta, vmax, out=np.zeros_like(vmax), where=vmax > 0)
    r, g, b = (c.astype(np.float32) / np.float32(255.0) for c in (r8, g8, b8))
    safe = np.where(delta > 0, delta, np.float32(1.0))
    hue = np.where(
        vmax8 == r8,
        ((g - b) / safe) % np.float32(6.0),
        np.where(vmax8 == g8, (b - r) / safe + np.float32(2.0), (r - g) / safe + np.float32(4.0)),
    )
    return np.where(delta > 0, hue / np.float32(6.0), np.float32(0.0)).astype(np.float32)


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``uint8`` image (H, W[, 3]) or a ``float32`` map (H, W) to (h, w)."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    if array.dtype == np.uint8:
        out = Image.fromarray(array).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(out)
    out = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(out.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def random_view(
    image: np.ndarray,
    rng: np.random.Generator,
    min_crop: float = 0.35,
    scale: tuple[float, float] | None = None,
) -> np.ndarray:
    """A random crop of ``image``, randomly flipped and rotated by a multiple of 90 degrees.

    Args:
        image: ``uint8`` (H, W, 3).
        rng: Random generator.
        min_crop: Smallest crop side as a fraction of the image side.
        scale: If given, the crop is rescaled by a factor drawn uniformly from this range.
    """
    h, w = image.shape[:2]
    ch = max(1, round(h * rng.uniform(min_crop, 1.0)))
    cw = max(1, round(w * rng.uniform(min_crop, 1.0)))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    view = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    if rng.random() < 0.5:
        view = view[::-1]
    view = np.rot90(view, k=int(rng.integers(4)))
    view = np.ascontiguousarray(view)
    if scale is not None:
        factor = rng.uniform(*scale)
        size = (max(1, round(view.shape[0] * factor)), max(1, round(view.shape[1] * factor)))
        view = resize(view, size)
    return view


def map_view(
    image: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    zoom: tuple[float, float] = (0.5, 2.0),
) -> np.ndarray:
    """A random crop of ``image`` that, resized to ``size``, is magnified by a random ``zoom``.

    The crop is ``size / zoom`` (clipped to the image), so the shapes in a map keep a natural
    scale whatever the scene size; the view is randomly flipped and rotated by 90 degrees.
    """
    h, w = image.shape[:2]
    factor = rng.uniform(*zoom)
    rotate = bool(rng.random() < 0.5)
    out_h, out_w = (size[1], size[0]) if rotate else size
    ch = int(np.clip(round(out_h / factor), 8, h)) if h >= 8 else h
    cw = int(np.clip(round(out_w / factor), 8, w)) if w >= 8 else w
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    view = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    if rng.random() < 0.5:
        view = view[::-1]
    if rotate:
        view = np.rot90(view)
    return np.ascontiguousarray(view)


def soft_map(
    image: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    channel: str | None = None,
    hard: bool = False,
) -> np.ndarray:
    """A soft map with natural shapes, extracted from a random view of a natural image.

    A channel (random unless given) of a random crop/flip/rotation/rescale of ``image``
    (:func:`map_view`) goes through :func:`fuzzy_threshold` between two random levels (drawn
    as quantiles of the channel, so that the map is neither empty nor full); the map is
    inverted with probability 0.5 (the bright or the dark side becomes the region) and
    resized to ``size``.

    Args:
        image: ``uint8`` (H, W, 3) natural image.
        rng: Random generator.
        size: Output (height, width).
        channel: One of :data:`CHANNELS`, or ``None`` for a random one.
        hard: Binarise the map at 0.5 (hard segmentation).

    Returns:
        ``float32`` (height, width) in [0, 1].
    """
    view = map_view(image, rng, size)
    chosen = channel if channel is not None else CHANNELS[int(rng.integers(len(CHANNELS)))]
    values = image_channel(view, chosen)
    # Level statistics from a regular subsample (at most ~64k values) keep large views cheap.
    step = max(1, int(np.sqrt(values.size / 65536)))
    if values[::step, ::step].std() < _MIN_CHANNEL_STD and channel is None:
        # Grey images have no hue/saturation: fall back to brightness.
        values = image_channel(view, "V")
    q_low, q_high = np.sort(rng.uniform(0.05, 0.95, size=2))
    low, high = np.quantile(values[::step, ::step], [q_low, q_high])
    fuzzy = fuzzy_threshold(values, float(low), float(high))
    if rng.random() < 0.5:
        fuzzy = 1.0 - fuzzy
    out = np.clip(resize(fuzzy, size), 0.0, 1.0)
    if hard:
        out = (out > 0.5).astype(np.float32)
    return out
