"""Scenes that pixel colour cannot segment: similar-coloured materials under varying light.

The ``illumination`` generator mode. Real material states are not separable by pixel colour: a
wet and a dry patch of one soil share a hue, and one material changes colour across a photo as
light and shadow move over it. Here every material of a scene gets one shared base colour (plus
a small per-material offset) and keeps only its texture's *pattern* (luminance, normalised
locally so that it is stationary), at a contrast, grain and albedo of its own; layouts are
natural-image soft maps as in :func:`~matbench.synth.scene.make_scene`; then the whole scene is
lit by a smooth field of brightness and of colour (two light colours blended by a further map)
and darkened by cast shadows with a penumbra and a cool tint. So one material spans many
colours, and different materials share them: only texture tells them apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from matbench.synth.maps import resize, soft_map
from matbench.synth.scene import (
    Scene,
    SceneConfig,
    draw_layout,
    sample_texture,
    visible_masks,
)
from matbench.synth.sources import NaturalImages
from matbench.synth.textures import tile_texture

#: Generator modes: ``infusion`` (the MatSeg 2D scenes) and ``illumination`` (this module).
SCENE_MODES = ("infusion", "illumination")
#: Per-channel spread of the materials' colours around the scene's base colour.
MATERIAL_COLOUR_SPREAD = 6.0
#: Range of the materials' albedos (a brightness factor on their shared colour).
ALBEDO_RANGE = (0.55, 1.15)
#: Range of the materials' texture contrasts (standard deviation, in 8-bit levels).
CONTRAST_RANGE = (6.0, 48.0)
#: Range of the materials' texture scales (their grain, relative to the cut texture).
SCALE_RANGE = (0.2, 1.0)
#: Blur of the layout maps, as a fraction of the scene's shorter side.
LAYOUT_SMOOTH = 0.02
#: Penumbra of the cast shadows (Gaussian sigma), as a fraction of the scene's shorter side.
SHADOW_SOFTNESS = (0.015, 0.03)
#: Range of the light's brightness gain across a scene.
LIGHT_RANGE = (0.45, 1.35)
#: RGB weights of luminance (ITU-R BT.601), which the texture patterns are made of.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _pattern(texture: np.ndarray) -> np.ndarray:
    """A texture's luminance pattern, normalised locally (zero mean, unit standard deviation
    in a window of a tenth of its size): stationary, so that its contrast is the material's
    everywhere rather than the source photo's light and flat patches."""
    lum = texture.astype(np.float32) @ np.array(LUMA_WEIGHTS, dtype=np.float32)
    sigma = max(1.5, 0.1 * min(lum.shape))
    mean = ndimage.gaussian_filter(lum, sigma)
    spread = np.sqrt(np.maximum(ndimage.gaussian_filter(lum * lum, sigma) - mean * mean, 0.0))
    floor = max(0.25 * float(lum.std()), 1.0)
    pattern = np.clip((lum - mean) / np.maximum(spread, floor), -3.0, 3.0)
    return (pattern - pattern.mean()) / max(float(pattern.std()), 1e-6)


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a coarse uniform grid upsampled (bilinear)."""
    coarse = rng.uniform(0.0, 1.0, size=(cells, cells)).astype(np.float32)
    field = resize(coarse, size)
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def light_field(
    rng: np.random.Generator, images: NaturalImages, size: tuple[int, int]
) -> np.ndarray:
    """The per-pixel RGB gain of the scene's lighting: smooth brightness, two light colours
    blended by a smooth map, and cast shadows (a hard natural-image map, slightly blurred)
    that darken and cool the light."""
    h, w = size
    low, high = LIGHT_RANGE
    brightness = low + (high - low) * _smooth_field(rng, size, int(rng.integers(2, 5)))
    warm = np.array([1.0, rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.7)], dtype=np.float32)
    cool = np.array([rng.uniform(0.5, 0.75), rng.uniform(0.75, 0.95), 1.0], dtype=np.float32)
    mix = _smooth_field(rng, size, int(rng.integers(2, 4)))[..., None]
    gain = brightness[..., None] * (warm * mix + cool * (1.0 - mix))
    if rng.random() < 0.8:
        shadow = soft_map(images.pick(rng), rng, (h, w), hard=True)
        shadow = ndimage.gaussian_filter(shadow, sigma=rng.uniform(*SHADOW_SOFTNESS) * min(h, w))
        depth = rng.uniform(0.35, 0.6)
        tint = np.array([0.85, 0.92, 1.0], dtype=np.float32)
        gain = gain * (1.0 - depth * shadow[..., None] * (2.0 - tint))
    return gain.astype(np.float32)


def make_illumination_scene(
    rng: np.random.Generator, images: NaturalImages, config: SceneConfig | None = None
) -> Scene:
    """Draw one ``illumination``-mode scene with ``rng`` (module docstring).

    Sizes, material count, hard/soft layouts and texture sources follow ``config`` as in
    :func:`~matbench.synth.scene.make_scene`; at least two materials are drawn.
    """
    config = config or SceneConfig()
    (h, w), hard, alphas = draw_layout(rng, images, config, at_least=2, smooth=LAYOUT_SMOOTH)
    base = rng.uniform(70.0, 170.0, size=3).astype(np.float32)
    canvas = np.zeros((h, w, 3), dtype=np.float32)
    n = len(alphas)
    # Stratified albedos and contrasts: the materials of one scene differ in both.
    albedos = _spread(rng, n, ALBEDO_RANGE)
    contrasts = _spread(rng, n, CONTRAST_RANGE, log=True)
    scales = _spread(rng, n, SCALE_RANGE, log=True)
    for alpha, albedo, contrast, scale in zip(alphas, albedos, contrasts, scales, strict=True):
        texture = sample_texture(images, rng, config)
        size = (max(8, round(texture.shape[0] * scale)), max(8, round(texture.shape[1] * scale)))
        pattern = _pattern(resize(texture, size))
        colour = base + rng.normal(0.0, MATERIAL_COLOUR_SPREAD, size=3).astype(np.float32)
        offset = (int(rng.integers(2 * size[0])), int(rng.integers(2 * size[1])))
        tiled = tile_texture(pattern[..., None], (h, w), offset)[..., 0].astype(np.float32)
        material = albedo * (colour + contrast * tiled[..., None])
        canvas += (material - canvas) * alpha[..., None]
    canvas *= light_field(rng, images, (h, w))
    rgb = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(rgb=rgb, masks=visible_masks(alphas), hard=hard)


def _spread(
    rng: np.random.Generator, n: int, bounds: tuple[float, float], log: bool = False
) -> np.ndarray:
    """``n`` values evenly spaced over ``bounds`` (jittered by a quarter step), in random
    order: any two are at least half a step apart."""
    low, high = (np.log(bounds[0]), np.log(bounds[1])) if log else bounds
    levels = rng.permutation(n) + 0.5 + rng.uniform(-0.25, 0.25, size=n)
    values = low + (high - low) * levels / n
    return (np.exp(values) if log else values).astype(np.float32)
