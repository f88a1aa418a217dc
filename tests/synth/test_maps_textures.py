"""Soft maps (fuzzy threshold, channels) and texture extraction (histograms, JS distance)."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from matbench.synth.maps import fuzzy_threshold, image_channel, soft_map
from matbench.synth.textures import (
    cell_histograms,
    extract_texture,
    find_texture,
    grow_regions,
    is_textureless,
    js_distance,
    largest_rectangle,
    tile_texture,
)


def test_fuzzy_threshold_hand_cases() -> None:
    x = np.array([0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.9])
    out = fuzzy_threshold(x, 0.2, 0.4)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32
    # Equal levels: a hard threshold, values at the level count as above.
    np.testing.assert_array_equal(fuzzy_threshold(x, 0.3, 0.3), [0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="must not be below"):
        fuzzy_threshold(x, 0.5, 0.4)


def test_image_channel_matches_colorsys() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[0, 3] = (90, 90, 90)
    rgb[0, 4] = (0, 0, 0)
    maps = {c: image_channel(rgb, c) for c in "RGBHSV"}
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            r, g, b = (rgb[y, x] / 255.0).tolist()
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            expected = {"R": r, "G": g, "B": b, "H": h, "S": s, "V": v}
            for c, value in expected.items():
                assert maps[c][y, x] == pytest.approx(value, abs=1e-5), (c, y, x)
    assert maps["H"][0, 1] == pytest.approx(1 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="unknown channel"):
        image_channel(rgb, "X")


def test_soft_map_range_hard_and_determinism() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    soft = soft_map(image, np.random.default_rng(5), (40, 30))
    again = soft_map(image, np.random.default_rng(5), (40, 30))
    assert soft.shape == (40, 30) and soft.dtype == np.float32
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    np.testing.assert_array_equal(soft, again)
    hard = soft_map(image, np.random.default_rng(5), (40, 30), hard=True)
    assert set(np.unique(hard).tolist()) <= {0.0, 1.0}


def test_js_distance_hand_cases() -> None:
    p = np.array([1.0, 0.0])
    q = np.array([0.5, 0.5])
    # JS divergence (base 2) = 0.5 * log2(4/3) + 0.5 * (0.5 * log2(2/3) + 0.5 * log2(2))
    divergence = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_distance(p, q) == pytest.approx(math.sqrt(divergence), abs=1e-12)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_distance([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0, abs=1e-12)
    # Unnormalised counts are normalised first.
    assert js_distance([2, 2], [5, 5]) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 6, 16))
    expected = [jensenshannon(x, y, base=2) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(js_distance(a, b), expected, atol=1e-10)


def test_cell_histograms_of_a_constant_image() -> None:
    image = np.zeros((80, 120, 3), dtype=np.uint8)
    image[..., 0] = 255
    image[..., 1] = 100
    hist = cell_histograms(image, cell=40, bins=16)
    assert hist.shape == (2, 3, 6, 16)
    np.testing.assert_allclose(hist.sum(-1), 1.0, atol=1e-6)
    # Colour bins: R=255 -> last bin, G=100/255*16 -> bin 6, B=0 -> bin 0; no gradient.
    assert hist[0, 0, 0, 15] == 1.0 and hist[0, 0, 1, 6] == 1.0 and hist[0, 0, 2, 0] == 1.0
    assert (hist[..., 3:, 0] == 1.0).all()


def test_largest_rectangle() -> None:
    mask = np.array(
        [
            [0, 1, 1, 0, 0],
            [0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [0, 0, 0, 1, 0],
        ],
        dtype=bool,
    )
    assert largest_rectangle(mask) == (1, 1, 3, 5)
    assert largest_rectangle(np.zeros((3, 3), dtype=bool)) is None


def _half_flat(width_flat: int = 240, width_textured: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((160, width_flat + width_textured, 3), 120, dtype=np.uint8)
    image[:, width_flat:] = rng.integers(0, 256, size=(160, width_textured, 3), dtype=np.uint8)
    return image


def test_texture_extraction_finds_the_textured_half() -> None:
    image = _half_flat()
    # The flat part is the largest region; it must be rejected as textureless.
    largest = grow_regions(cell_histograms(image, 40), 0.45)[0]
    assert largest[:, :6].all() and not largest[:, 6:].any()
    box = find_texture(image, cell=40)
    assert box is not None
    y0, x0, y1, x1 = box
    assert x0 >= 240 and (y1 - y0) * (x1 - x0) >= 4 * 40 * 40
    texture = extract_texture(image, cell=40)
    np.testing.assert_array_equal(texture, image[y0:y1, x0:x1])
    assert not is_textureless(texture)
    assert find_texture(np.full((160, 160, 3), 77, dtype=np.uint8), cell=40) is None


def test_tile_texture_mirrors_without_seams() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    tiled = tile_texture(texture, (23, 31))
    assert tiled.shape == (23, 31, 3)
    np.testing.assert_array_equal(tiled[:5, :7], texture)
    np.testing.assert_array_equal(tiled[:5, 7:14], texture[:, ::-1])
    np.testing.assert_array_equal(tiled[5:10, :7], texture[::-1])
    np.testing.assert_array_equal(tiled[:, 14:21], tiled[:, :7])  # period 2w
    shifted = tile_texture(texture, (23, 31), offset=(3, 4))
    np.testing.assert_array_equal(shifted[:10, :10], tile_texture(texture, (13, 14))[3:, 4:])
