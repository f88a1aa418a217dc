"""PBR/SVBRDF materials from natural textures (MatSeg section 3.2.2).

Each material starts from a texture cut out of a natural image (:func:`sample_texture`, already
colour-augmented): the albedo. Roughness, metallic, height and transmission maps are each either
one image property of the texture (R, G, B, H, S or V) through a random threshold and a random
scale/shift, or one uniform random value. The normal map is the Sobel gradient of the height.
A material may instead be the mix of two such materials, with one weight for every property
("per_material") or one weight per property ("per_property").

On disk a material is a folder: ``albedo.png`` (RGB), ``roughness.png``, ``metallic.png``,
``height.png``, ``transmission.png`` (8-bit grey, value / 255), ``normal.png`` (RGB tangent-space
normal, OpenGL convention: green points up the image), and ``material.json`` with every draw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matbench.synth.maps import CHANNELS, fuzzy_threshold, image_channel, resize
from matbench.synth.scene import SceneConfig, resolve_images, sample_texture, scene_seed
from matbench.synth.sources import NaturalImages

#: The scalar property maps, in the order they are drawn.
PROPERTIES: tuple[str, ...] = ("roughness", "metallic", "height", "transmission")
#: Every map file of a material folder (without ``.png``).
MAP_NAMES: tuple[str, ...] = ("albedo", *PROPERTIES, "normal")
MATERIAL_JSON = "material.json"
#: Seed stream of PBR materials (2D scenes and the benchmark use 0 and 1).
STREAM_PBR = 2


@dataclass(frozen=True)
class PBRConfig:
    """How materials are drawn.

    Args:
        channel_prob: Probability that a property map comes from an image channel of the
            texture (else it is one uniform random value), as in the paper (0.7).
        threshold_prob: Probability that a channel goes through a random fuzzy threshold
            before the scale/shift (else the raw channel is scaled).
        mix_prob: Probability that a material is the mix of two drawn materials.
        per_property_prob: Given a mix, probability of one weight per property (else one
            weight for the whole material).
        normal_strength: Range of the height-to-normal gradient gain.
        max_side: Textures larger than this (px) are reduced to it.
    """

    channel_prob: float = 0.7
    threshold_prob: float = 0.5
    mix_prob: float = 0.3
    per_property_prob: float = 0.5
    normal_strength: tuple[float, float] = (1.0, 8.0)
    max_side: int = 512

    def __post_init__(self) -> None:
        for name in ("channel_prob", "threshold_prob", "mix_prob", "per_property_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        low, high = self.normal_strength
        if not 0.0 <= low <= high:
            raise ValueError(f"normal_strength must satisfy 0 <= low <= high, got {low}, {high}")


@dataclass
class PBRMaterial:
    """One PBR material: ``float32`` maps in [0, 1] of one size, and the draws that made them.

    Args:
        albedo: (H, W, 3).
        roughness: (H, W).
        metallic: (H, W).
        height: (H, W).
        transmission: (H, W).
        normal: (H, W, 3) unit normals stored as ``(n + 1) / 2``.
        draws: JSON-able record of every random choice.
    """

    albedo: np.ndarray
    roughness: np.ndarray
    metallic: np.ndarray
    height: np.ndarray
    transmission: np.ndarray
    normal: np.ndarray
    draws: dict[str, Any] = field(default_factory=dict)

    def maps(self) -> dict[str, np.ndarray]:
        """The maps by name (:data:`MAP_NAMES`)."""
        return {name: getattr(self, name) for name in MAP_NAMES}


def height_to_normal(height: np.ndarray, strength: float = 1.0, y_up: bool = True) -> np.ndarray:
    """Tangent-space normal map from a height map by 3x3 Sobel gradients.

    ``n = normalize(-strength * dh/dx, -strength * dh/dy, 1)`` stored as ``(n + 1) / 2``. With
    ``y_up`` (OpenGL, what Blender expects) the y axis points up the image, so the row
    gradient enters with the opposite sign; ``y_up=False`` is the image-axis (DirectX) form.

    Args:
        height: (H, W) float map.
        strength: Gain of the gradient (bumpiness).
        y_up: OpenGL convention.

    Returns:
        ``float32`` (H, W, 3) in [0, 1].
    """
    import cv2

    h = np.ascontiguousarray(height, dtype=np.float32)
    dx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    if y_up:
        dy = -dy
    normal = np.stack([-strength * dx, -strength * dy, np.ones_like(h)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return ((normal + 1.0) * 0.5).astype(np.float32)


def property_map(
    texture: np.ndarray, rng: np.random.Generator, config: PBRConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """One scalar property map of ``texture`` and its draws (see the module docstring)."""
    h, w = texture.shape[:2]
    if rng.random() >= config.channel_prob:
        value = float(rng.uniform(0.0, 1.0))
        return np.full((h, w), value, dtype=np.float32), {"source": "uniform", "value": value}
    channel = CHANNELS[int(rng.integers(len(CHANNELS)))]
    values = image_channel(texture, channel)
    draw: dict[str, Any] = {"source": "channel", "channel": channel}
    if rng.random() < config.threshold_prob:
        # Levels as quantiles of the channel, so the threshold is never all-or-nothing.
        q_low, q_high = np.sort(rng.uniform(0.05, 0.95, size=2))
        low, high = (float(v) for v in np.quantile(values, [q_low, q_high]))
        values = fuzzy_threshold(values, low, high)
        draw["threshold"] = [low, high]
    if rng.random() < 0.5:
        values = 1.0 - values
        draw["inverted"] = True
    scale = float(rng.uniform(0.0, 1.0))
    shift = float(rng.uniform(0.0, 1.0 - scale))
    draw.update(scale=scale, shift=shift)
    return np.clip(shift + scale * values, 0.0, 1.0).astype(np.float32), draw


def _single_material(
    texture: np.ndarray, rng: np.random.Generator, config: PBRConfig
) -> PBRMaterial:
    albedo = texture.astype(np.float32) / 255.0
    maps: dict[str, np.ndarray] = {}
    draws: dict[str, Any] = {"size": list(texture.shape[:2])}
    for name in PROPERTIES:
        maps[name], draws[name] = property_map(texture, rng, config)
    strength = float(rng.uniform(*config.normal_strength))
    draws["normal_strength"] = strength
    normal = height_to_normal(maps["height"], strength)
    return PBRMaterial(albedo=albedo, normal=normal, draws=draws, **maps)


def mix_materials(
    a: PBRMaterial, b: PBRMaterial, rng: np.random.Generator, per_property: bool, strength: float
) -> PBRMaterial:
    """``w * a + (1 - w) * b`` map by map (``b`` is resized to ``a``).

    ``per_property``: one uniform weight per map, else one for the whole material. The normal
    map is recomputed from the mixed height with gain ``strength``.
    """
    size = a.albedo.shape[:2]
    names = ("albedo", *PROPERTIES)
    shared = float(rng.uniform(0.0, 1.0))
    weights = {n: float(rng.uniform(0.0, 1.0)) if per_property else shared for n in names}
    mixed = {}
    for name in names:
        other = _resize_float(getattr(b, name), size)
        w = np.float32(weights[name])
        mixed[name] = np.clip(w * getattr(a, name) + (1 - w) * other, 0.0, 1.0).astype(np.float32)
    normal = height_to_normal(mixed["height"], strength)
    draws = {
        "mix": "per_property" if per_property else "per_material",
        "weights": weights,
        "normal_strength": strength,
        "a": a.draws,
        "b": b.draws,
    }
    return PBRMaterial(normal=normal, draws=draws, **mixed)


def _resize_float(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W[, C]) map to ``size`` (height, width)."""
    import cv2

    if values.shape[:2] == tuple(size):
        return values
    out = cv2.resize(values, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(*size, *values.shape[2:]).astype(np.float32)


def make_material(
    rng: np.random.Generator,
    images: NaturalImages,
    config: PBRConfig | None = None,
    scene_config: SceneConfig | None = None,
) -> PBRMaterial:
    """Draw one PBR material with ``rng`` from textures of ``images``."""
    config = config or PBRConfig()
    scene_config = scene_config or SceneConfig()

    def texture() -> np.ndarray:
        tex = sample_texture(images, rng, scene_config)
        if max(tex.shape[:2]) > config.max_side:
            factor = config.max_side / max(tex.shape[:2])
            size = (max(1, round(tex.shape[0] * factor)), max(1, round(tex.shape[1] * factor)))
            tex = resize(tex, size)
        return tex

    first = _single_material(texture(), rng, config)
    if rng.random() >= config.mix_prob:
        return first
    second = _single_material(texture(), rng, config)
    per_property = bool(rng.random() < config.per_property_prob)
    strength = float(rng.uniform(*config.normal_strength))
    return mix_materials(first, second, rng, per_property, strength)


def generate_material(
    seed: int, *, images: str | Path | NaturalImages | None = None, config: PBRConfig | None = None
) -> PBRMaterial:
    """One PBR material fully determined by ``seed`` (material ``i`` of
    :func:`write_materials` with seed ``s`` is ``generate_material(material_seed(s, i))``)."""
    return make_material(np.random.default_rng(seed), resolve_images(images), config)


def material_seed(seed: int, index: int) -> int:
    """The seed of material ``index`` of a run seeded with ``seed``."""
    return scene_seed(seed, index, STREAM_PBR)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)


def save_material(material: PBRMaterial, folder: str | Path) -> Path:
    """Write ``material`` as a material folder (see the module docstring); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in material.maps().items():
        Image.fromarray(_to_uint8(values)).save(folder / f"{name}.png", format="PNG")
    (folder / MATERIAL_JSON).write_text(json.dumps(material.draws, indent=1, sort_keys=True))
    return folder


def load_material(folder: str | Path) -> PBRMaterial:
    """Read a material folder written by :func:`save_material`.

    Raises:
        DatasetFormatError: If a map is missing, unreadable or of another size.
    """
    from matbench.datasets.errors import DatasetFormatError
    from matbench.decoding import decode_gray, decode_rgb  # torch-free, like this module

    folder = Path(folder)
    maps: dict[str, np.ndarray] = {}
    size = None
    for name in MAP_NAMES:
        path = folder / f"{name}.png"
        if name in ("albedo", "normal"):
            array = decode_rgb(path).astype(np.float32) / 255.0
        else:  # at its bit depth: 16-bit height or roughness maps keep their precision
            values, scale = decode_gray(path)
            array = values.astype(np.float32) / np.float32(scale)
        if size is not None and array.shape[:2] != size:
            raise DatasetFormatError(path, f"size {array.shape[:2]} differs from albedo's {size}")
        size = array.shape[:2]
        maps[name] = array
    draws_path = folder / MATERIAL_JSON
    draws = json.loads(draws_path.read_text()) if draws_path.is_file() else {}
    return PBRMaterial(draws=draws, **maps)


def is_material_folder(folder: Path) -> bool:
    """True if ``folder`` holds every map file of a material."""
    return folder.is_dir() and all((folder / f"{n}.png").is_file() for n in MAP_NAMES)


def list_materials(root: str | Path) -> list[Path]:
    """The material folders directly under ``root``, sorted by name.

    Raises:
        DatasetNotFoundError: If ``root`` is missing or holds no material folder.
    """
    from matbench.datasets.errors import DatasetNotFoundError

    root = Path(root)
    expected = [f"<material>/{n}.png" for n in MAP_NAMES]
    if not root.is_dir():
        raise DatasetNotFoundError("PBR materials", root, expected, "The folder does not exist.")
    found = sorted(p for p in root.iterdir() if is_material_folder(p))
    if not found:
        raise DatasetNotFoundError(
            "PBR materials", root, expected, "No material folder (try `matbench synth pbr`)."
        )
    return found


def _material_job(args: tuple[str, int, int, PBRConfig, str | None]) -> str:
    out, index, seed, config, images = args
    material = make_material(
        np.random.default_rng(material_seed(seed, index)), resolve_images(images), config
    )
    material.draws["seed"] = material_seed(seed, index)
    return str(save_material(material, Path(out) / f"{index:06d}"))


def write_materials(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    images: str | Path | None = None,
    config: PBRConfig | None = None,
    workers: int = 2,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``n`` PBR material folders ``<out>/000000/…``; material ``i`` depends only on
    ``(seed, i)``, so the files are identical for any ``workers``.

    Returns:
        The material folders, in index order.
    """
    from matbench.synth.writer import _mapper, _prepare_out, check_run

    key = check_run(n, seed, images)
    config = config or PBRConfig()
    out = Path(out)
    _prepare_out(out, lambda p: p.is_dir() and p.name.isdigit(), overwrite)
    args = [(str(out), i, seed, config, key) for i in range(n)]
    with _mapper(min(workers, max(n, 1)), key) as run:
        return [Path(p) for p in run(_material_job, args)]
