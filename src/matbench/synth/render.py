"""MatSeg 3D scenes: PBR materials mapped onto objects by natural-image soft maps, Cycles renders.

Every random draw of a scene is made here with numpy (objects, deformations, soft maps from
:func:`~matbench.synth.maps.soft_map`, PBR materials from :mod:`~matbench.synth.pbr`, ground,
occluders, environment, lights, camera) and written as a JSON spec plus PNG maps; a separate
process with Blender as a Python module (:mod:`matbench.synth.blender_worker`) builds and renders
it. Blender runs out of process because its wheel pins its own numpy, and because a crash or a
hang of one render must not end the run. The per-material masks come from value AOVs (one per
material: its visible weight at the first surface hit, averaged over the pixel's samples), so a
mask is the material's coverage fraction of each pixel, anti-aliased like the image.

Each scene is written in the released 3D layout that :class:`~matbench.datasets.MatSegScenes`
reads: ``RGB__RGB.jpg``, ``ObjectMaskOcluded.png``, ``mask001.png…``, ``CameraParameters.json``,
``NoGroundPlane.txt`` (scenes without ground), ``scene.json`` (the draws) and ``Finished.txt``,
written last; the folder is assembled aside and moved in place whole.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from matbench.formats.matseg import (
    CAMERA_PARAMETERS,
    NO_GROUND_PLANE,
    OBJECT_MASK,
    SCENE_IMAGE,
    is_finished,
    mark_finished,
    mask_name,
)
from matbench.synth.maps import random_view, soft_map
from matbench.synth.pbr import PBRConfig, list_materials, make_material, save_material
from matbench.synth.scene import resolve_images, scene_seed
from matbench.synth.writer import JPEG_QUALITY, _prepare_out, check_run, scene_name

log = logging.getLogger(__name__)

#: Seed streams of 3D scenes: the first attempt, and the retry after a failure.
STREAM_3D, STREAM_3D_RETRY = 3, 4
WORKER_SCRIPT = Path(__file__).with_name("blender_worker.py")
RUN_CONFIG = "render_config.json"
#: Exit codes of the worker's ``--device`` probe (see :mod:`matbench.synth.blender_worker`).
PROBE_VERSION_ERROR, PROBE_DEVICE_ERROR = 3, 4
ERROR_LOG = "render_errors.log"
MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply", ".stl")
HDRI_EXTENSIONS = (".hdr", ".exr", ".png", ".jpg", ".jpeg")
#: The maps of a material folder that the Blender shader reads.
SHADER_MAPS = ("albedo", "roughness", "metallic", "transmission", "normal")
PRIMITIVES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus", "monkey")
INSTALL_HINT = (
    'install Blender as a Python module with `pip install "matbench[render]"` (bpy wheels exist '
    "for CPython 3.11 on Linux x86_64, macOS and Windows), or pass --blender-python "
    "(MATBENCH_BLENDER_PYTHON) naming a Python interpreter that can `import bpy` (Blender 4.2-4.5)"
)
#: Emission colours of the ID render (``flat``): 0/1 components survive the sRGB encoding.
FLAT_PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.0, 1.0),
    (1.0, 1.0, 1.0),
)
FLAT_BACKGROUND = (0.0, 0.0, 0.0)


class RenderUnavailableError(RuntimeError):
    """No Python interpreter that can import Blender's ``bpy`` was found."""


class SceneRenderError(RuntimeError):
    """One scene could not be rendered (Blender failed, timed out, or the view was empty)."""


@dataclass(frozen=True)
class RenderConfig:
    """How 3D scenes are drawn and rendered.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        samples: Cycles samples per pixel.
        device: ``"auto"`` (a GPU if Cycles finds one, else the CPU), ``"cpu"`` or ``"gpu"``.
        threads: CPU threads per Blender process (0: all cores divided by the workers).
        min_materials: Fewest materials mapped onto the objects of a scene.
        max_materials: Most materials.
        min_objects: Fewest textured objects.
        max_objects: Most textured objects.
        max_occluders: Most untextured occluders (between camera and objects).
        max_lights: Most extra lights (besides the environment).
        ground_prob: Probability of a ground plane.
        hard_prob: Probability that the soft maps are binarised (hard segmentation).
        env_image_prob: Without HDRIs: probability of a natural image as the environment
            texture (else a procedural sky).
        mesh_prob: With a mesh folder: probability that an object is a mesh from it.
        map_size: Side of the soft maps (px).
        denoise: Cycles denoising of the image (the masks are never denoised).
        max_bounces: Cycles light bounces.
        min_coverage: A render whose textured objects cover less of the image fails.
        flat: ID render: each material a flat emission colour (:data:`FLAT_PALETTE`), no
            lights, black world (for checks of the masks against the image).
        timeout: Seconds one Blender render may take.
    """

    width: int = 512
    height: int = 512
    samples: int = 64
    device: Literal["auto", "cpu", "gpu"] = "auto"
    threads: int = 0
    min_materials: int = 1
    max_materials: int = 6
    min_objects: int = 1
    max_objects: int = 4
    max_occluders: int = 2
    max_lights: int = 3
    ground_prob: float = 0.8
    hard_prob: float = 0.3
    env_image_prob: float = 0.5
    mesh_prob: float = 0.8
    map_size: int = 512
    denoise: bool = False
    max_bounces: int = 6
    min_coverage: float = 0.02
    flat: bool = False
    timeout: float = 1800.0

    def __post_init__(self) -> None:
        if min(self.width, self.height) < 8:
            raise ValueError(f"image size must be at least 8 px, got {self.width}x{self.height}")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {self.device!r}")
        if not 1 <= self.min_materials <= self.max_materials:
            raise ValueError(
                f"need 1 <= min_materials <= max_materials, got "
                f"{self.min_materials}, {self.max_materials}"
            )
        if self.flat and self.max_materials > len(FLAT_PALETTE):
            raise ValueError(f"flat renders hold at most {len(FLAT_PALETTE)} materials")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        for name in ("ground_prob", "hard_prob", "env_image_prob", "mesh_prob", "min_coverage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class RenderAssets:
    """Where scene content comes from (all picklable, for worker processes).

    Args:
        images: Natural-image folder (``None``: scikit-image's photographs), see
            :func:`~matbench.synth.scene.resolve_images`.
        materials: PBR material folders to draw from (empty: materials are generated from
            textures of the natural images for every scene).
        meshes: Mesh files to draw objects from (empty: Blender primitives only).
        hdris: Environment maps (empty: natural images or a procedural sky).
    """

    images: str | None = None
    materials: tuple[str, ...] = ()
    meshes: tuple[str, ...] = ()
    hdris: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderRecord:
    """One written 3D scene.

    Args:
        path: The scene folder.
        materials: Number of masks.
        seed: The seed of the attempt that succeeded.
        retried: Whether the first attempt failed.
        coverage: Fraction of the image covered by textured objects.
        device: What Cycles rendered on.
        seconds: Wall time of the successful attempt.
    """

    path: Path
    materials: int
    seed: int
    retried: bool
    coverage: float
    device: str
    seconds: float


@dataclass(frozen=True)
class RenderFailure:
    """A scene skipped after its retry failed too: its index and both errors."""

    index: int
    errors: tuple[str, ...]


def blender_python(python: str | None = None, device: str = "auto") -> tuple[str, str, str]:
    """The interpreter that runs the Blender worker, its Blender version, and the Cycles device
    that renders requesting ``device`` (auto/cpu/gpu) get: ``CPU`` or a GPU backend (``OPTIX``,
    ``CUDA``, ``HIP``, ``METAL``, ``ONEAPI``). One probe run of the worker finds all three.

    ``python`` (or ``$MATBENCH_BLENDER_PYTHON``) if given, else this interpreter when ``bpy`` is
    installed here.

    Raises:
        RenderUnavailableError: If that interpreter cannot import ``bpy`` (says how to install
            it), its Blender version is not supported, or ``gpu`` is requested and Cycles finds
            none; before any scene is drawn.
    """
    python = python or os.environ.get("MATBENCH_BLENDER_PYTHON") or None
    if python is None and importlib.util.find_spec("bpy") is None:
        raise RenderUnavailableError(f"bpy is not installed in {sys.executable}: {INSTALL_HINT}")
    interpreter = python or sys.executable
    try:
        done = subprocess.run(
            [interpreter, str(WORKER_SCRIPT), "--device", device.upper()],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RenderUnavailableError(f"cannot run {interpreter} ({err}): {INSTALL_HINT}") from err
    lines = dict(
        line.split(" ", 1)
        for line in done.stdout.splitlines()
        if line.startswith(("BLENDER ", "DEVICE "))
    )
    errors = [line for line in done.stderr.strip().splitlines() if "NumPy" not in line]
    last = errors[-1] if errors else "no output"
    if done.returncode == PROBE_DEVICE_ERROR:
        raise RenderUnavailableError(f"Cycles cannot render with --device {device}: {last}")
    if done.returncode == PROBE_VERSION_ERROR:
        raise RenderUnavailableError(f"{interpreter}: {last}")
    if done.returncode != 0 or set(lines) != {"BLENDER", "DEVICE"}:
        raise RenderUnavailableError(f"{interpreter} cannot import bpy ({last}): {INSTALL_HINT}")
    return interpreter, lines["BLENDER"], lines["DEVICE"]


def find_files(folder: str | Path | None, extensions: tuple[str, ...], what: str) -> list[str]:
    """Files with ``extensions`` anywhere under ``folder`` (sorted); ``[]`` for ``None``.

    Raises:
        DatasetNotFoundError: If the folder is missing or holds no such file.
    """
    if folder is None:
        return []
    from matbench.datasets.errors import DatasetNotFoundError

    root = Path(folder)
    expected = [f"**/*{ext}" for ext in extensions]
    if not root.is_dir():
        raise DatasetNotFoundError(what, root, expected, "The folder does not exist.")
    found = sorted(
        str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions
    )
    if not found:
        raise DatasetNotFoundError(what, root, expected, f"No {what} file found.")
    return found


def _save_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path, format="PNG")
    return str(path)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / max(np.linalg.norm(v), 1e-9)


def _modifiers(rng: np.random.Generator, primitive: str) -> list[dict[str, Any]]:
    """Random deformation: subdivision, a simple deform and a noise displacement."""
    mods: list[dict[str, Any]] = []
    deform = rng.random() < 0.5
    displace = rng.random() < 0.6
    coarse = primitive in ("cube", "cylinder", "cone", "monkey")
    if deform or displace or rng.random() < 0.5:
        mods.append({"type": "SUBSURF", "levels": 3 if coarse else 1})
    if deform:
        method = ("TWIST", "BEND", "TAPER", "STRETCH")[int(rng.integers(4))]
        amount = {
            "TWIST": rng.uniform(-1.5, 1.5),
            "BEND": rng.uniform(-1.0, 1.0),
            "TAPER": rng.uniform(-0.6, 0.6),
            "STRETCH": rng.uniform(-0.3, 0.3),
        }[method]
        axis = "XYZ"[int(rng.integers(3))]
        mods.append({"type": "SIMPLE_DEFORM", "method": method, "amount": amount, "axis": axis})
    if displace:
        mods.append(
            {
                "type": "DISPLACE",
                "strength": rng.uniform(0.05, 0.35),
                "noise_scale": rng.uniform(0.3, 1.2),
            }
        )
    return mods


def _texture_view(rng: np.random.Generator, images: Any, path: Path) -> str:
    return _save_png(path, random_view(images.pick(rng), rng, min_crop=0.4))


def draw_scene(
    rng: np.random.Generator, assets: RenderAssets, config: RenderConfig, folder: Path
) -> dict[str, Any]:
    """Draw one scene: writes its maps and materials under ``folder`` and returns the spec that
    :mod:`matbench.synth.blender_worker` builds (every random choice is in it)."""
    images = resolve_images(assets.images)
    folder.mkdir(parents=True, exist_ok=True)
    n_materials = int(rng.integers(config.min_materials, config.max_materials + 1))
    hard = bool(rng.random() < config.hard_prob)
    size = (config.map_size, config.map_size)
    main_source = images.pick(rng)
    maps: list[str | None] = [None]
    for k in range(1, n_materials):
        source = main_source if rng.random() < 0.7 else images.pick(rng)
        alpha = soft_map(source, rng, size, hard=hard)
        maps.append(_save_png(folder / f"map{k}.png", np.round(alpha * 255).astype(np.uint8)))

    materials = []
    for i in range(n_materials):
        if assets.materials:
            src = Path(assets.materials[int(rng.integers(len(assets.materials)))])
            draws: dict[str, Any] = {"folder": str(src)}
        else:
            src = save_material(make_material(rng, images, PBRConfig()), folder / f"material{i}")
            draws = json.loads((src / "material.json").read_text())
        materials.append(
            {
                # The height enters through the normal map made from it.
                **{name: str(src / f"{name}.png") for name in SHADER_MAPS},
                "normal_gain": rng.uniform(0.3, 1.0),
                "tile": {
                    "scale": rng.uniform(1.0, 4.0),
                    "rotation": rng.uniform(0, 2 * np.pi),
                    "offset": rng.uniform(0, 1, 2).tolist(),
                },
                "flat_color": list(FLAT_PALETTE[i % len(FLAT_PALETTE)]),
                "draws": draws,
            }
        )

    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    spread = 0.0 if n_objects == 1 else 1.0 + 0.3 * n_objects
    objects = []
    centres = []
    for _ in range(n_objects):
        angle = rng.uniform(0, 2 * np.pi)
        radius = spread * np.sqrt(rng.uniform(0, 1))
        centre = [radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-0.3, 0.5)]
        centres.append(centre)
        base = rng.uniform(0.6, 1.1)
        placement: dict[str, Any] = {
            "location": centre,
            "rotation": rng.uniform(0, 2 * np.pi, 3).tolist(),
            "scale": (base * rng.uniform(0.85, 1.15, 3)).tolist(),
            "map_scale": rng.uniform(0.7, 2.0),
            "map_rotation": rng.uniform(0, 2 * np.pi),
            "map_offset": rng.uniform(0, 1, 2).tolist(),
        }
        if assets.meshes and rng.random() < config.mesh_prob:
            placement["mesh"] = assets.meshes[int(rng.integers(len(assets.meshes)))]
            placement["modifiers"] = []
        else:
            primitive = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
            placement["primitive"] = primitive
            placement["modifiers"] = _modifiers(rng, primitive)
        objects.append(placement)
    target = np.mean(centres, axis=0) + rng.normal(0, 0.2, 3)

    elevation = rng.uniform(np.radians(12), np.radians(65))
    azimuth = rng.uniform(0, 2 * np.pi)
    lens = rng.uniform(35, 60)
    distance = (2.2 + spread) * lens / 35 * rng.uniform(0.9, 1.5)
    direction = np.array(
        [
            np.cos(elevation) * np.cos(azimuth),
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation),
        ]
    )
    cam_location = target + distance * direction
    camera = {"location": cam_location.tolist(), "target": target.tolist(), "lens": lens}

    occluders = []
    for j in range(int(rng.integers(0, config.max_occluders + 1))):
        t = rng.uniform(0.35, 0.65)
        side = np.cross(direction, _unit(rng))
        side /= max(np.linalg.norm(side), 1e-9)
        point = target + t * (cam_location - target) + side * rng.uniform(0.3, 1.0) * (1 - t)
        occluder: dict[str, Any] = {
            "primitive": PRIMITIVES[int(rng.integers(len(PRIMITIVES)))],
            "location": point.tolist(),
            "rotation": rng.uniform(0, 2 * np.pi, 3).tolist(),
            "scale": (rng.uniform(0.12, 0.35) * rng.uniform(0.7, 1.3, 3)).tolist(),
            "colour": rng.uniform(0, 1, 3).tolist(),
            "roughness": rng.uniform(0, 1),
        }
        if rng.random() < 0.5:
            occluder["texture"] = _texture_view(rng, images, folder / f"occluder{j}.png")
            occluder["texture_scale"] = rng.uniform(1, 3)
        if config.flat:
            occluder["colour"] = list(FLAT_BACKGROUND)
        occluders.append(occluder)

    ground = None
    if rng.random() < config.ground_prob:
        ground = {
            "z": -1.3,
            "size": 80.0,
            "colour": rng.uniform(0, 1, 3).tolist(),
            "roughness": rng.uniform(0.2, 1.0),
        }
        if rng.random() < 0.7:
            ground["texture"] = _texture_view(rng, images, folder / "ground.png")
            ground["texture_scale"] = rng.uniform(2, 12)
        if config.flat:
            ground["colour"] = list(FLAT_BACKGROUND)

    rotation = rng.uniform(0, 2 * np.pi)
    if assets.hdris:
        path = assets.hdris[int(rng.integers(len(assets.hdris)))]
        environment = {"kind": "hdri", "path": path, "strength": rng.uniform(0.5, 1.5)}
    elif rng.random() < config.env_image_prob:
        view = images.pick(rng)
        environment = {
            "kind": "image",
            "path": _save_png(folder / "environment.png", view),
            "strength": rng.uniform(0.6, 1.6),
        }
    else:
        environment = {
            "kind": "sky",
            "sun_elevation": rng.uniform(0.1, 1.3),
            "air": rng.uniform(0.5, 2.0),
            "dust": rng.uniform(0.0, 3.0),
            "strength": rng.uniform(0.15, 0.5),
        }
    environment["rotation"] = rotation

    lights = []
    for _ in range(int(rng.integers(0, config.max_lights + 1))):
        kind = ("POINT", "AREA", "SUN")[int(rng.integers(3))]
        place = _unit(rng)
        place[2] = abs(place[2]) + 0.3
        energy = {"POINT": (200, 1500), "AREA": (100, 1000), "SUN": (1, 5)}[kind]
        lights.append(
            {
                "type": kind,
                "location": (target + rng.uniform(4, 8) * place).tolist(),
                "target": target.tolist(),
                "energy": rng.uniform(*energy),
                "colour": rng.uniform(0.8, 1.0, 3).tolist(),
                "size": rng.uniform(0.5, 3.0),
            }
        )

    return {
        "resolution": [config.width, config.height],
        "samples": config.samples,
        "device": config.device.upper(),
        "denoise": config.denoise,
        "max_bounces": config.max_bounces,
        "flat": config.flat,
        "hard": hard,
        "maps": maps,
        "materials": materials,
        "objects": objects,
        "occluders": occluders,
        "ground": ground,
        "environment": environment,
        "lights": lights,
        "camera": camera,
    }


def read_pass(folder: Path, name: str, width: int, height: int) -> np.ndarray:
    """A raw float32 pass of the worker as (height, width), top row first."""
    path = folder / "passes" / f"{name}.f32"
    values = np.fromfile(path, dtype="<f4")
    if values.size != width * height:
        raise SceneRenderError(f"{path}: {values.size} values, expected {width}x{height}")
    return np.flipud(values.reshape(height, width)).astype(np.float32)


def quantise_masks(weights: np.ndarray) -> list[np.ndarray]:
    """``uint8`` masks (0-255) of the per-pixel weights (M, H, W), by rounding their running
    sum, so that the masks add up to exactly ``round(255 * sum of weights)`` at every pixel."""
    weights = np.clip(weights, 0.0, 1.0)
    cumulative = np.clip(np.round(np.cumsum(weights, axis=0) * 255.0), 0, 255).astype(np.int16)
    levels = np.diff(cumulative, axis=0, prepend=np.zeros((1, *weights.shape[1:]), np.int16))
    return [np.clip(level, 0, 255).astype(np.uint8) for level in levels]


def _portable(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """The spec for ``scene.json``: temporary paths shortened to their file names; how the run
    was spread over processes (the thread count) is left out, as it does not change the scene."""
    text = json.dumps({k: v for k, v in spec.items() if k not in ("out_dir", "threads")})
    return json.loads(text.replace(str(work) + os.sep, ""))


def collect_scene(spec: dict[str, Any], work: Path, config: RenderConfig) -> tuple[Path, float]:
    """Turn the worker's outputs in ``work`` into a scene folder ``work/scene`` (the MatSeg 3D
    layout, ``Finished.txt`` last); returns it and the objects' image coverage."""
    width, height = spec["resolution"]
    n = len(spec["materials"])
    weights = np.stack([read_pass(work, f"mat{i:03d}", width, height) for i in range(n)])
    objects = np.clip(read_pass(work, "objects", width, height), 0.0, 1.0)
    coverage = float(objects.mean())
    if coverage < config.min_coverage:
        raise SceneRenderError(
            f"the textured objects cover {coverage:.1%} of the image "
            f"(min_coverage {config.min_coverage:.1%})"
        )
    scene = work / "scene"
    scene.mkdir()
    with Image.open(work / "rgb.png") as im:
        rgb = im.convert("RGB")
    rgb.save(scene / SCENE_IMAGE, format="JPEG", quality=JPEG_QUALITY)
    Image.fromarray(np.round(objects * 255).astype(np.uint8)).save(scene / OBJECT_MASK)
    for i, mask in enumerate(quantise_masks(weights), start=1):
        Image.fromarray(mask).save(scene / mask_name(i, digits=3), format="PNG")
    shutil.copyfile(work / "camera.json", scene / CAMERA_PARAMETERS)
    if spec["ground"] is None:
        (scene / NO_GROUND_PLANE).write_text("")
    (scene / "scene.json").write_text(json.dumps(_portable(spec, work), indent=1))
    mark_finished(scene)
    return scene, coverage


def render_scene(
    out: Path,
    index: int,
    seed: int,
    config: RenderConfig,
    assets: RenderAssets,
    python: str,
    threads: int,
) -> tuple[Path, int, float, str]:
    """Draw, render and write scene ``index`` with ``seed``; returns (folder, materials,
    coverage, device).

    Raises:
        SceneRenderError: If Blender fails or times out, or the view misses the objects.
    """
    work = out / f".work-{scene_name(index)}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = draw_scene(np.random.default_rng(seed), assets, config, work / "assets")
    spec.update(out_dir=str(work), seed=seed, threads=threads)
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    log_path = work / "blender.log"
    try:
        with open(log_path, "w") as handle:
            done = subprocess.run(
                [python, str(WORKER_SCRIPT), str(spec_path)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=config.timeout,
                check=False,
            )
    except subprocess.TimeoutExpired as err:
        raise SceneRenderError(f"Blender took more than {config.timeout:.0f} s") from err
    if done.returncode != 0:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        tail = " | ".join(line for line in lines[-6:] if not line.startswith("Fra:"))
        raise SceneRenderError(f"Blender exited with status {done.returncode}: {tail}")
    scene, coverage = collect_scene(spec, work, config)
    info = json.loads((work / "render.json").read_text())
    final = out / scene_name(index)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scene, final)
    shutil.rmtree(work, ignore_errors=True)
    return final, len(spec["materials"]), coverage, str(info.get("device", "?"))


def _render_job(
    args: tuple[str, int, int, RenderConfig, RenderAssets, str, int],
) -> RenderRecord | RenderFailure:
    out, index, seed, config, assets, python, threads = args
    errors: list[str] = []
    for attempt, stream in enumerate((STREAM_3D, STREAM_3D_RETRY)):
        attempt_seed = scene_seed(seed, index, stream)
        start = time.perf_counter()
        try:
            folder, materials, coverage, device = render_scene(
                Path(out), index, attempt_seed, config, assets, python, threads
            )
        except Exception as err:  # noqa: BLE001 - a failed scene is retried/skipped, never fatal
            errors.append(f"seed {attempt_seed}: {type(err).__name__}: {err}")
            continue
        return RenderRecord(
            path=folder,
            materials=materials,
            seed=attempt_seed,
            retried=attempt > 0,
            coverage=coverage,
            device=device,
            seconds=time.perf_counter() - start,
        )
    shutil.rmtree(Path(out) / f".work-{scene_name(index)}", ignore_errors=True)
    return RenderFailure(index=index, errors=tuple(errors))


def _run_settings(n: int, seed: int, config: RenderConfig, assets: RenderAssets) -> dict[str, Any]:
    return {
        "n": n,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "assets": dataclasses.asdict(assets),
    }


def _prepare_resume(out: Path, settings: dict[str, Any]) -> set[int]:
    """Indices already finished in ``out``; refuses another run's output."""
    config_path = out / RUN_CONFIG
    if not config_path.is_file():
        raise FileExistsError(f"{out}: not a `matbench synth render` output ({RUN_CONFIG} missing)")
    earlier = json.loads(config_path.read_text())
    # The scene count may grow; every other setting must match, or scenes would differ.
    if {**earlier, "n": 0} != {**json.loads(json.dumps(settings)), "n": 0}:
        raise FileExistsError(
            f"{out}: written with other settings ({config_path}); use another --out or --overwrite"
        )
    for leftover in out.glob(".work-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    done = set()
    for folder in out.iterdir():
        if folder.is_dir() and folder.name.isdigit():
            if is_finished(folder):
                done.add(int(folder.name))
            else:
                shutil.rmtree(folder)
    return done


def write_3d_scenes(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    config: RenderConfig | None = None,
    images: str | Path | None = None,
    materials: str | Path | None = None,
    meshes: str | Path | None = None,
    hdris: str | Path | None = None,
    workers: int = 1,
    blender: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> tuple[list[RenderRecord], list[RenderFailure]]:
    """Render ``n`` MatSeg 3D scenes into ``<out>/000000/…`` on ``workers`` Blender processes.

    Scene ``i`` depends only on ``(seed, i)`` (and on the retry seed if its first attempt
    failed). A scene whose retry fails too is logged (``<out>/render_errors.log``) and skipped.
    With ``resume``, an interrupted run continues: finished scenes are kept, the rest redone.

    Args:
        out: Output folder.
        n: Number of scenes.
        seed: Non-negative run seed.
        config: Drawing and rendering settings.
        images: Natural-image folder (``None``: scikit-image's photographs).
        materials: Folder of PBR material folders (``matbench synth pbr``); ``None``: generate.
        meshes: Folder searched recursively for OBJ/GLB/GLTF/PLY/STL files.
        hdris: Folder of environment maps.
        workers: Blender processes rendering in parallel.
        blender: Python interpreter with ``bpy`` (default: ``$MATBENCH_BLENDER_PYTHON`` or this
            interpreter).
        overwrite: Replace an earlier output in ``out``.
        resume: Continue an earlier run with the same settings in ``out``.
        progress: Show a progress bar.

    Returns:
        ``(records, failures)``: the scenes written by this call (by index) and those skipped.

    Raises:
        RenderUnavailableError: If no interpreter can import ``bpy`` (names the install line),
            or ``device="gpu"`` and Cycles finds no GPU.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    key = check_run(n, seed, images)
    config = config or RenderConfig()
    assets = RenderAssets(
        images=key,
        materials=tuple(str(p) for p in list_materials(materials)) if materials else (),
        meshes=tuple(find_files(meshes, MESH_EXTENSIONS, "meshes")),
        hdris=tuple(find_files(hdris, HDRI_EXTENSIONS, "HDRI")),
    )
    python, version, device = blender_python(blender, config.device)
    log.info("Blender %s at %s renders on %s", version, python, device)
    out = Path(out)
    settings = _run_settings(n, seed, config, assets)
    done: set[int] = set()
    if resume and out.is_dir() and any(out.iterdir()):
        done = _prepare_resume(out, settings)
    else:
        _prepare_out(
            out,
            lambda p: (
                (p.is_dir() and (p.name.isdigit() or p.name.startswith(".work-")))
                or p.name in (RUN_CONFIG, ERROR_LOG)
            ),
            overwrite,
        )
    (out / RUN_CONFIG).write_text(json.dumps(settings, indent=1))
    todo = [i for i in range(n) if i not in done]
    threads = config.threads or max(1, (os.cpu_count() or 1) // workers)
    jobs = [(str(out), i, seed, config, assets, python, threads) for i in todo]
    records: list[RenderRecord] = []
    failures: list[RenderFailure] = []

    def finish(result: RenderRecord | RenderFailure) -> None:
        if isinstance(result, RenderRecord):
            records.append(result)
            return
        failures.append(result)
        message = f"scene {scene_name(result.index)} skipped: " + " ; ".join(result.errors)
        log.warning(message)
        with open(out / ERROR_LOG, "a") as handle:
            handle.write(message + "\n")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="render", unit="scene", disable=not progress)
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                finish(_render_job(job))
                bar.update()
        else:
            fork = sys.platform.startswith("linux")
            context = multiprocessing.get_context("fork" if fork else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                pending = {pool.submit(_render_job, job) for job in jobs}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        finish(future.result())
                        bar.update()
    finally:
        bar.close()
    records.sort(key=lambda r: r.path.name)
    failures.sort(key=lambda f: f.index)
    return records, failures


def palette_colour(index: int) -> tuple[int, int, int]:
    """The 8-bit sRGB colour of material ``index`` in a ``flat`` render."""
    return tuple(int(round(c * 255)) for c in FLAT_PALETTE[index % len(FLAT_PALETTE)])
