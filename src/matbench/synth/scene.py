"""2D MatSeg scenes by pattern infusion: textures blended into natural-image soft maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from matbench.synth.maps import fuzzy_threshold, random_view, resize, soft_map
from matbench.synth.sources import NaturalImages, cached_images
from matbench.synth.textures import find_texture, tile_texture

# Seed streams: training scenes and benchmark images never share a random stream.
STREAM_SCENES = 0
STREAM_BENCHMARK = 1


class TextureNotFoundError(RuntimeError):
    """No textured region could be cut from the natural images."""


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn.

    Args:
        min_size: Smallest scene side in pixels.
        max_size: Largest scene side in pixels (each side drawn independently).
        min_materials: Fewest materials per scene (at least 1).
        max_materials: Most materials per scene.
        hard_prob: Probability of a hard segmentation (maps binarised at 0.5).
        shading_prob: Probability of shading the scene with a further extracted map.
        cell_size: Cell side (pixels) for texture extraction.
        js_threshold: Largest Jensen–Shannon distance between a region's seed cell and its cells.
        texture_tries: Source views tried per texture before giving up.
        same_source_prob: Probability that a material's map comes from the scene's main source
            image (correlated shapes, as in the paper) rather than another random image.
    """

    min_size: int = 400
    max_size: int = 999
    min_materials: int = 1
    max_materials: int = 10
    hard_prob: float = 0.3
    shading_prob: float = 0.7
    cell_size: int = 40
    js_threshold: float = 0.45
    texture_tries: int = 30
    same_source_prob: float = 0.7

    def __post_init__(self) -> None:
        if not 16 <= self.min_size <= self.max_size:
            raise ValueError(
                f"scene sizes must satisfy 16 <= min_size <= max_size, got "
                f"{self.min_size}..{self.max_size}"
            )
        if not 1 <= self.min_materials <= self.max_materials:
            raise ValueError(
                f"materials must satisfy 1 <= min_materials <= max_materials, got "
                f"{self.min_materials}..{self.max_materials}"
            )
        for name in ("hard_prob", "shading_prob", "same_source_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.cell_size < 4:
            raise ValueError(f"cell_size must be at least 4, got {self.cell_size}")


@dataclass
class Scene:
    """One generated scene.

    Args:
        rgb: ``uint8`` (H, W, 3).
        masks: One ``uint8`` (H, W) map per material: its visible fraction times 255. The masks
            of a scene sum to exactly 255 at every pixel.
        hard: Whether the scene uses hard segmentation.
    """

    rgb: np.ndarray
    masks: list[np.ndarray]
    hard: bool

    def fractions(self) -> np.ndarray:
        """``float32`` (materials, H, W): the masks as fractions in [0, 1]."""
        return np.stack(self.masks).astype(np.float32) / 255.0


def scene_seed(seed: int, index: int, stream: int = STREAM_SCENES) -> int:
    """The seed of scene ``index`` of a run seeded with ``seed`` (independent of the others)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def resolve_images(images: str | Path | NaturalImages | None) -> NaturalImages:
    """The image set for ``images``: a folder path, ``None`` (scikit-image photos) or a set."""
    if isinstance(images, NaturalImages):
        return images
    key = None if images is None else str(Path(images).expanduser().resolve())
    return cached_images(key)


def _augment_texture(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = texture.astype(np.float32)
    spread = np.abs(x - x.mean(axis=-1, keepdims=True)).mean()
    if spread < 3.0 and rng.random() < 0.8:
        # Grey texture (brick, gravel, ...): give it a colour.
        tint = rng.uniform(0.25, 1.0, size=3).astype(np.float32)
        x = x * (tint / tint.max())
    elif rng.random() < 0.5:
        x = x[..., rng.permutation(3)]
    gain = rng.uniform(0.6, 1.3)
    gamma = rng.uniform(0.7, 1.4)
    x = 255.0 * np.clip(x * gain / 255.0, 0.0, 1.0) ** gamma
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def sample_texture(
    images: NaturalImages, rng: np.random.Generator, config: SceneConfig
) -> np.ndarray:
    """A texture cut from a random view of a random natural image, colour-augmented.

    Raises:
        TextureNotFoundError: If ``config.texture_tries`` views gave no textured region.
    """
    cell = config.cell_size
    for _ in range(config.texture_tries):
        source = images.pick(rng)
        # Work on at most 512 px: enough cells, bounded cost.
        limit = min(1.0, 512.0 / max(source.shape[:2]))
        view = random_view(source, rng, min_crop=0.5, scale=(0.5 * limit, limit))
        short = min(view.shape[:2])
        if short < 3 * cell:
            # Small images: enlarge the view so that it holds at least 3 x 3 cells.
            factor = 3 * cell / short
            view = resize(view, (round(view.shape[0] * factor), round(view.shape[1] * factor)))
        box = find_texture(view, cell=cell, threshold=config.js_threshold, min_cells=4)
        if box is not None:
            y0, x0, y1, x1 = box
            return _augment_texture(view[y0:y1, x0:x1], rng)
    names = ", ".join(Path(n).name for n in images.names[:5])
    more = " ..." if len(images.names) > 5 else ""
    raise TextureNotFoundError(
        f"no textured region found in {config.texture_tries} random views of the natural images "
        f"({names}{more}); they look flat or too small for {cell} px cells"
    )


def draw_layout(
    rng: np.random.Generator,
    images: NaturalImages,
    config: SceneConfig,
    at_least: int = 1,
    smooth: float = 0.0,
) -> tuple[tuple[int, int], bool, list[np.ndarray]]:
    """A scene's size, whether it is hard, and its layers' alphas: layer 0 covers everything,
    every later one (a natural-image soft map) is blended over the earlier ones. The number of
    layers is drawn in the config's range, raised to ``at_least``. With ``smooth`` > 0 each map
    is blurred (Gaussian, sigma ``smooth`` times the scene's shorter side) and thresholded
    again, which removes shapes much smaller than that."""
    h = int(rng.integers(config.min_size, config.max_size + 1))
    w = int(rng.integers(config.min_size, config.max_size + 1))
    low, high = max(at_least, config.min_materials), max(at_least, config.max_materials)
    n = int(rng.integers(low, high + 1))
    hard = bool(rng.random() < config.hard_prob)
    main_source = images.pick(rng)
    alphas = [np.ones((h, w), dtype=np.float32)]
    for _ in range(1, n):
        source = main_source if rng.random() < config.same_source_prob else images.pick(rng)
        alpha = soft_map(source, rng, (h, w), hard=hard)
        if smooth > 0:
            alpha = ndimage.gaussian_filter(alpha, sigma=smooth * min(h, w))
            # Re-threshold: hard maps at 0.5; soft maps around 0.5 at twice the slope, so
            # that the blur removes small shapes without widening the soft transitions.
            alpha = (alpha > 0.5).astype(np.float32) if hard else fuzzy_threshold(alpha, 0.25, 0.75)
        alphas.append(alpha)
    return (h, w), hard, alphas


def make_scene(
    rng: np.random.Generator, images: NaturalImages, config: SceneConfig | None = None
) -> Scene:
    """Draw one scene with ``rng`` (see :func:`generate_scene`)."""
    config = config or SceneConfig()
    (h, w), hard, alphas = draw_layout(rng, images, config)
    canvas = np.zeros((h, w, 3), dtype=np.float32)
    for alpha in alphas:
        texture = sample_texture(images, rng, config)
        scale = rng.uniform(0.5, 1.5)
        size = (
            max(16, round(texture.shape[0] * scale)),
            max(16, round(texture.shape[1] * scale)),
        )
        texture = resize(texture, size)
        offset = (int(rng.integers(2 * size[0])), int(rng.integers(2 * size[1])))
        tiled = tile_texture(texture, (h, w), offset).astype(np.float32)
        canvas += (tiled - canvas) * alpha[..., None]

    if rng.random() < config.shading_prob:
        shade = soft_map(images.pick(rng), rng, (h, w))
        shade = ndimage.gaussian_filter(shade, sigma=rng.uniform(1.0, 4.0))
        strength = rng.uniform(0.2, 0.6)
        canvas *= ((1.0 - strength) + strength * shade)[..., None]
    rgb = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(rgb=rgb, masks=visible_masks(alphas), hard=hard)


def visible_masks(alphas: list[np.ndarray]) -> list[np.ndarray]:
    """``uint8`` masks of the visible fraction of each layer (later layers blended over earlier
    ones with the given alphas); they add up to exactly 255 at every pixel."""
    n = len(alphas)
    h, w = alphas[0].shape
    # Visible fraction of layer i: its alpha times what no later layer covers.
    visible = np.empty((n, h, w), dtype=np.float32)
    uncovered = np.ones((h, w), dtype=np.float32)
    for i in range(n - 1, -1, -1):
        visible[i] = alphas[i] * uncovered
        uncovered *= 1.0 - alphas[i]
    # Quantise the running sum so that the uint8 masks add up to exactly 255.
    cumulative = np.round(np.cumsum(visible, axis=0) * 255.0).astype(np.int16)
    cumulative = np.clip(cumulative, 0, 255)
    levels = np.diff(cumulative, axis=0, prepend=np.zeros((1, h, w), dtype=np.int16))
    return [np.clip(level, 0, 255).astype(np.uint8) for level in levels]


def generate_scene(
    seed: int,
    *,
    images: str | Path | NaturalImages | None = None,
    min_size: int = 400,
    max_size: int = 999,
    min_materials: int = 1,
    max_materials: int = 10,
    hard_prob: float = 0.3,
    shading_prob: float = 0.7,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One 2D MatSeg scene by pattern infusion, fully determined by ``seed``.

    1-10 materials: each is a texture cut from a natural image (cell-histogram region growing,
    :mod:`matbench.synth.textures`), tiled over the scene and blended in by a soft map read from
    a natural image (random R/G/B/H/S/V channel through a fuzzy threshold,
    :mod:`matbench.synth.maps`), later materials over earlier ones; then shading by a further
    map. With probability ``hard_prob`` the maps are binarised (hard segmentation).

    Args:
        seed: Any non-negative integer; scene ``i`` of :func:`~matbench.synth.write_scenes`
            with seed ``s`` is ``generate_scene(scene_seed(s, i))``.
        images: Folder of natural images, ``None`` for scikit-image's bundled photographs,
            or a loaded :class:`~matbench.synth.sources.NaturalImages`.
        min_size: Smallest side in pixels.
        max_size: Largest side in pixels.
        min_materials: Fewest materials.
        max_materials: Most materials.
        hard_prob: Probability of hard segmentation.
        shading_prob: Probability of shading.

    Returns:
        ``(rgb, masks)``: ``uint8`` (H, W, 3) and one ``uint8`` (H, W) visible-fraction mask
        (0-255) per material; the masks sum to 255 at every pixel.
    """
    config = SceneConfig(
        min_size=min_size,
        max_size=max_size,
        min_materials=min_materials,
        max_materials=max_materials,
        hard_prob=hard_prob,
        shading_prob=shading_prob,
    )
    scene = make_scene(np.random.default_rng(seed), resolve_images(images), config)
    return scene.rgb, scene.masks
