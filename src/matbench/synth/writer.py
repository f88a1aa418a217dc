"""Write generated scenes to disk in the MatSeg layouts, on a pool of worker processes."""

from __future__ import annotations

import multiprocessing
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matbench.formats.matseg import (  # noqa: F401 - FINISHED re-exported
    FINISHED,
    IMAGES_DIR,
    SCENE_IMAGE,
    annotation_dir,
    mark_finished,
    mask_name,
    unmark_finished,
    write_points,
    write_relations,
)
from matbench.synth.benchmark import Annotation, annotate, scene_maker
from matbench.synth.scene import (
    STREAM_BENCHMARK,
    STREAM_SCENES,
    SceneConfig,
    resolve_images,
    scene_seed,
)

JPEG_QUALITY = 95
#: How worker processes name the image set: a resolved folder path, or None (scikit-image).
NaturalImagesKey = str | None


class NotEnoughImagesError(RuntimeError):
    """The generated scenes gave fewer scorable benchmark images than requested."""


@dataclass(frozen=True)
class SceneRecord:
    """What one written training scene holds.

    Args:
        path: The scene folder.
        height: Image height.
        width: Image width.
        materials: Number of masks written.
        hard: Whether the segmentation is hard.
    """

    path: Path
    height: int
    width: int
    materials: int
    hard: bool


@dataclass(frozen=True)
class BenchmarkRecord:
    """What one written benchmark image holds.

    Args:
        image: The image file.
        groups: Number of point groups.
        points: Number of points.
        relations: Number of lines in ``group_relations.txt`` (0: no file).
        candidate: Index of the generated scene the image came from.
    """

    image: Path
    groups: int
    points: int
    relations: int
    candidate: int


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY)


def _prepare_out(out: Path, known: Callable[[Path], bool], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: output path exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out}: output folder is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    unknown = [p for p in entries if not known(p)]
    if unknown:
        raise FileExistsError(
            f"{out}: refusing to overwrite, '{unknown[0].name}' was not written by matbench synth"
        )
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextmanager
def _mapper(workers: int, images: NaturalImagesKey) -> Iterator[Callable[..., Iterable[Any]]]:
    """``map`` in this process (``workers == 1``) or over a pool of worker processes."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        yield map
        return
    # Linux: fork, so that workers inherit the loaded images and modules instead of
    # re-importing the parent's __main__ (``python -m matbench`` pulls in torch and Lightning).
    # Workers only run numpy/scipy/PIL code. Elsewhere: spawn.
    fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_warm, initargs=(images,)
    ) as pool:
        yield pool.map


def _images_key(images: str | Path | None) -> NaturalImagesKey:
    return None if images is None else str(Path(images).expanduser().resolve())


def _warm(images: NaturalImagesKey) -> None:
    resolve_images(images)


def check_run(n: int, seed: int, images: str | Path | None) -> NaturalImagesKey:
    """Validate a run's count and seed and load its natural images in this process (a bad image
    folder fails here, before any worker starts); returns the images' key for workers."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    scene_seed(seed, 0)
    key = _images_key(images)
    resolve_images(key)
    return key


def scene_name(index: int) -> str:
    """Folder name of training scene ``index``."""
    return f"{index:06d}"


def benchmark_stem(candidate: int) -> str:
    """File stem of the benchmark image made from generated scene ``candidate``."""
    return f"synth_{candidate:06d}"


def _scene_job(args: tuple[str, int, int, SceneConfig, NaturalImagesKey, str]) -> SceneRecord:
    out, index, seed, config, images, mode = args
    scene = scene_maker(mode)(
        np.random.default_rng(scene_seed(seed, index, STREAM_SCENES)),
        resolve_images(images),
        config,
    )
    folder = Path(out) / scene_name(index)
    folder.mkdir(parents=True, exist_ok=True)
    unmark_finished(folder)
    _save_jpeg(folder / SCENE_IMAGE, scene.rgb)
    for i, mask in enumerate(scene.masks):
        Image.fromarray(mask).save(folder / mask_name(i), format="PNG")
    mark_finished(folder)
    h, w = scene.rgb.shape[:2]
    return SceneRecord(folder, h, w, len(scene.masks), scene.hard)


def write_scenes(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    images: str | Path | None = None,
    min_size: int = 400,
    max_size: int = 999,
    min_materials: int = 1,
    max_materials: int = 10,
    hard_prob: float = 0.3,
    shading_prob: float = 0.7,
    workers: int = 2,
    overwrite: bool = False,
    mode: str = "infusion",
) -> list[SceneRecord]:
    """Write ``n`` 2D training scenes in the MatSeg scene layout.

    ``<out>/<scene>/RGB__RGB.jpg``, ``mask0.png``, ``mask1.png``, ... (8-bit visible fraction
    of each material) and ``Finished.txt``, written last. Scene ``i`` depends only on
    ``(seed, i)``, so the files are byte-identical for any ``workers``.

    Args:
        out: Output folder (created; must be empty unless ``overwrite``).
        n: Number of scenes.
        seed: Non-negative run seed.
        images: Folder of natural images; ``None`` for scikit-image's bundled photographs.
        min_size: Smallest scene side in pixels.
        max_size: Largest scene side in pixels.
        min_materials: Fewest materials per scene.
        max_materials: Most materials per scene.
        hard_prob: Probability of hard segmentation.
        shading_prob: Probability of shading.
        workers: Processes (1 = in this process).
        overwrite: Replace an earlier output of ``matbench synth`` in ``out``.
        mode: ``infusion`` or ``illumination`` (see :func:`~matbench.synth.benchmark.scene_maker`).

    Returns:
        One record per scene, in index order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    config = SceneConfig(
        min_size=min_size,
        max_size=max_size,
        min_materials=min_materials,
        max_materials=max_materials,
        hard_prob=hard_prob,
        shading_prob=shading_prob,
    )
    scene_seed(seed, 0)  # validates the seed before any work
    key = _images_key(images)
    resolve_images(key)  # a bad image folder fails here, in the main process
    out = Path(out)
    _prepare_out(out, lambda p: p.is_dir() and p.name.isdigit(), overwrite)
    scene_maker(mode)  # an unknown mode fails here, before any work
    args = [(str(out), i, seed, config, key, mode) for i in range(n)]
    with _mapper(min(workers, max(n, 1)), key) as run:
        return list(run(_scene_job, args))


def _benchmark_job(
    args: tuple[str, int, int, SceneConfig, NaturalImagesKey, str],
) -> BenchmarkRecord | None:
    out, candidate, seed, config, images, mode = args
    rng = np.random.default_rng(scene_seed(seed, candidate, STREAM_BENCHMARK))
    scene = scene_maker(mode)(rng, resolve_images(images), config)
    annotation = annotate(scene.fractions(), rng)
    if annotation is None:
        return None
    stem = benchmark_stem(candidate)
    image = Path(out) / IMAGES_DIR / f"{stem}.jpg"
    _save_jpeg(image, scene.rgb)
    write_annotation(annotation_dir(Path(out), stem), annotation)
    return BenchmarkRecord(
        image=image,
        groups=len(annotation.groups),
        points=sum(len(p) for p in annotation.groups.values()),
        relations=len(annotation.relations),
        candidate=candidate,
    )


def write_annotation(folder: Path, annotation: Annotation) -> None:
    """Write ``data.json`` (and ``group_relations.txt`` if there are relations) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_points(folder, annotation.groups)
    write_relations(folder, annotation.relations)


def write_benchmark(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    images: str | Path | None = None,
    min_size: int = 400,
    max_size: int = 999,
    min_materials: int = 2,
    max_materials: int = 6,
    hard_prob: float = 0.3,
    shading_prob: float = 0.7,
    workers: int = 2,
    overwrite: bool = False,
    max_candidates: int | None = None,
    mode: str = "infusion",
) -> tuple[list[BenchmarkRecord], int]:
    """Write a point-annotated benchmark of ``n`` generated images in the MatSeg benchmark layout.

    ``<out>/images/<stem>.jpg``, ``<out>/data/<stem>/data.json`` and, for images with mixed
    regions, ``<out>/data/<stem>/group_relations.txt`` (see :func:`~matbench.synth.annotate`).
    Generated scenes without scorable structure are skipped; the images kept are the first
    ``n`` scorable candidates, so the output does not depend on ``workers``. Benchmark scenes
    use their own seed stream: they never coincide with :func:`write_scenes` scenes.

    Args:
        out: Output folder (created; must be empty unless ``overwrite``).
        n: Number of images.
        seed: Non-negative run seed.
        images: Folder of natural images; ``None`` for scikit-image's bundled photographs.
        min_size: Smallest side in pixels.
        max_size: Largest side in pixels.
        min_materials: Fewest materials per image.
        max_materials: Most materials per image.
        hard_prob: Probability of hard segmentation (no mixed regions then).
        shading_prob: Probability of shading.
        workers: Processes (1 = in this process).
        overwrite: Replace an earlier output of ``matbench synth`` in ``out``.
        max_candidates: Give up after this many generated scenes (default ``20 * n + 20``).
        mode: ``infusion`` (MatSeg 2D scenes) or ``illumination`` (similar-coloured materials
            under varying coloured light and shadow, :mod:`matbench.synth.illumination`).

    Returns:
        ``(records, skipped)``: one record per written image in order, and the number of
        candidate scenes skipped before the ``n``-th image.

    Raises:
        NotEnoughImagesError: If ``max_candidates`` scenes gave fewer than ``n`` scorable images.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    config = SceneConfig(
        min_size=min_size,
        max_size=max_size,
        min_materials=min_materials,
        max_materials=max_materials,
        hard_prob=hard_prob,
        shading_prob=shading_prob,
    )
    scene_seed(seed, 0)
    scene_maker(mode)
    key = _images_key(images)
    resolve_images(key)
    out = Path(out)
    _prepare_out(out, lambda p: p.is_dir() and p.name in ("images", "data"), overwrite)
    (out / "images").mkdir()
    (out / "data").mkdir()
    limit = 20 * n + 20 if max_candidates is None else max_candidates
    kept: list[BenchmarkRecord] = []
    skipped = 0
    next_candidate = 0
    with _mapper(workers, key) as run:
        while len(kept) < n and next_candidate < limit:
            stop = min(limit, next_candidate + max(n - len(kept), workers))
            batch = range(next_candidate, stop)
            next_candidate = stop
            args = [(str(out), c, seed, config, key, mode) for c in batch]
            for candidate, record in zip(batch, run(_benchmark_job, args), strict=True):
                if len(kept) >= n:
                    # Surplus of the last batch: removed so that the output matches workers=1.
                    if record is not None:
                        record.image.unlink()
                        shutil.rmtree(out / "data" / benchmark_stem(candidate))
                elif record is None:
                    skipped += 1
                else:
                    kept.append(record)
    if len(kept) < n:
        raise NotEnoughImagesError(
            f"only {len(kept)} of {n} benchmark images after {limit} generated scenes: the "
            "scenes hold too little scorable structure (try other images or sizes)"
        )
    return kept, skipped
