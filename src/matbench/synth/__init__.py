"""Procedural training data (MatSeg pattern infusion).

Soft maps from natural images (:mod:`~matbench.synth.maps`), textures cut from natural images
by cell-histogram region growing (:mod:`~matbench.synth.textures`), scenes that blend textures
by the maps (:mod:`~matbench.synth.scene`), point annotation in the benchmark's terms
(:mod:`~matbench.synth.benchmark`), and writers for the MatSeg layouts
(:mod:`~matbench.synth.writer`); PBR materials from textures (:mod:`~matbench.synth.pbr`) and 3D
scenes rendered with Blender (:mod:`~matbench.synth.render`, imported on demand). Command line:
``matbench synth matseg2d|pbr|render --out DIR --n N``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and the API docs see the names; at run time they load lazily
    from matbench.synth.benchmark import Annotation, annotate
    from matbench.synth.maps import CHANNELS, fuzzy_threshold, image_channel, soft_map
    from matbench.synth.scene import (
        Scene,
        SceneConfig,
        TextureNotFoundError,
        generate_scene,
        make_scene,
        scene_seed,
    )
    from matbench.synth.sources import NaturalImages, load_images
    from matbench.synth.textures import extract_texture, find_texture, js_distance
    from matbench.synth.writer import (
        BenchmarkRecord,
        NotEnoughImagesError,
        SceneRecord,
        write_benchmark,
        write_scenes,
    )

#: Public name -> the module that defines it; loaded on first use, so that the command line
#: (``matbench synth --help``) does not import NumPy and SciPy.
_HOMES = {
    "Annotation": "benchmark",
    "annotate": "benchmark",
    "CHANNELS": "maps",
    "fuzzy_threshold": "maps",
    "image_channel": "maps",
    "soft_map": "maps",
    "Scene": "scene",
    "SceneConfig": "scene",
    "TextureNotFoundError": "scene",
    "generate_scene": "scene",
    "make_scene": "scene",
    "scene_seed": "scene",
    "NaturalImages": "sources",
    "load_images": "sources",
    "extract_texture": "textures",
    "find_texture": "textures",
    "js_distance": "textures",
    "BenchmarkRecord": "writer",
    "NotEnoughImagesError": "writer",
    "SceneRecord": "writer",
    "write_benchmark": "writer",
    "write_scenes": "writer",
}

__all__ = [
    "CHANNELS",
    "Annotation",
    "BenchmarkRecord",
    "NaturalImages",
    "NotEnoughImagesError",
    "Scene",
    "SceneConfig",
    "SceneRecord",
    "TextureNotFoundError",
    "annotate",
    "extract_texture",
    "find_texture",
    "fuzzy_threshold",
    "generate_scene",
    "image_channel",
    "js_distance",
    "load_images",
    "make_scene",
    "scene_seed",
    "soft_map",
    "write_benchmark",
    "write_scenes",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'matbench.synth' has no attribute {name!r}")
    return getattr(importlib.import_module(f"matbench.synth.{home}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
