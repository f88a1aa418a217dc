"""MatSeg: the point-annotated material-state benchmark and the soft-mask training scenes.

Layouts are described in ``docs/formats.md`` (MatSeg sections); the names and the annotation
readers live in :mod:`matbench.formats.matseg`:

- :class:`MatSegBenchmark` reads ``<root>/images/<stem>.<ext>`` with ``data/<stem>/data.json``
  points and an optional ``data/<stem>/group_relations.txt``.
- :class:`MatSegScenes` reads ``<root>/<scene>/`` folders (``RGB__RGB.jpg`` and soft masks
  ``mask0.png…`` or ``mask001.png…``) that hold ``Finished.txt``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.index_cache import Index, StringTable, cached_index, pack_strings
from matbench.datasets.utils import (  # noqa: F401 - IMAGE_EXTENSIONS re-exported
    IMAGE_EXTENSIONS,
    decode_gray,
    decode_rgb,
    header_size,
    list_images,
    load_rgb,
    oriented_size,
    to_tensor,
)
from matbench.formats.matseg import (  # noqa: F401 - the format's names, re-exported
    DATA_DIR,
    FINISHED,
    IMAGES_DIR,
    MASK_PATTERN,
    POINTS_FILE,
    RELATIONS_FILE,
    ROI_MIN_TOTAL,
    ROUND_WEIGHT,
    SAME_WEIGHT,
    SCENE_IMAGE,
    SQUARE_WEIGHT,
    annotation_dir,
    check_group_ids,
    finished_scenes,
    parse_points,
    parse_relations,
)

log = logging.getLogger(__name__)


class MatSegBenchmark(Dataset):
    """The MatSeg zero-shot material-state benchmark (point annotations).

    Sample keys: ``image`` (3, H, W) float in [0, 1], resized (bilinear) so that the longest side
    is at most ``max_size``; ``points`` (N, 3) int64 ``x, y, r`` scaled by the same factor and
    rounded; ``groups`` (N,) int64 group index; ``weight`` (N, N) float32 ground-truth similarity
    (1 same group, 0.6 ``[...]`` relation, 0.3 ``(...)`` relation, else 0); ``has_relations``
    bool; ``key`` (the image stem); ``index``. Group indices follow the sorted group ids of the
    image (numeric order when they are numbers); ``group_ids`` gives the original ids.

    Args:
        root: Folder with ``images/`` and ``data/``.
        max_size: Longest image side after resizing (images are never enlarged); None = keep.
    """

    def __init__(self, root: str | Path, max_size: int | None = 700) -> None:
        self.root = Path(root)
        self.max_size = max_size
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        images_dir = self.root / IMAGES_DIR
        expected = [f"{IMAGES_DIR}/<stem>.jpg", f"{DATA_DIR}/<stem>/{POINTS_FILE}"]
        if not images_dir.is_dir():
            raise DatasetNotFoundError(type(self).__name__, self.root, expected)
        files = list_images(images_dir)
        if not files:
            raise DatasetNotFoundError(type(self).__name__, self.root, expected)
        self.records: list[dict[str, Any]] = []
        stems: dict[str, Path] = {}
        for image_path in files:
            stem = image_path.stem
            if stem in stems:
                raise DatasetFormatError(
                    image_path, f"two images share the stem '{stem}' (also {stems[stem].name})"
                )
            stems[stem] = image_path
            self.records.append(self._index(image_path))

    def _index(self, image_path: Path) -> dict[str, Any]:
        stem = image_path.stem
        json_path = annotation_dir(self.root, stem) / POINTS_FILE
        if not json_path.is_file():
            raise DatasetFormatError(image_path, f"no point annotation file {json_path}")
        groups = parse_points(json_path)
        ids = sorted(groups, key=lambda g: (0, int(g), g) if g.lstrip("-").isdigit() else (1, 0, g))
        width, height = oriented_size(image_path)
        for gid in ids:
            pts = groups[gid]
            bad = (pts[:, 0] < 0) | (pts[:, 0] >= width) | (pts[:, 1] < 0) | (pts[:, 1] >= height)
            if bad.any():
                x, y, _ = pts[bad][0]
                raise DatasetFormatError(
                    json_path,
                    f"group '{gid}': point ({x}, {y}) lies outside the {width}x{height} image "
                    f"{image_path.name} (after EXIF orientation)",
                )
        points = np.concatenate([groups[g] for g in ids])
        group_index = np.concatenate([np.full(len(groups[g]), i) for i, g in enumerate(ids)])
        weight = (group_index[:, None] == group_index[None, :]).astype(np.float32)
        rel_path = json_path.parent / RELATIONS_FILE
        has_relations = rel_path.is_file()
        if has_relations:
            for (a, b), value in parse_relations(rel_path, ids).items():
                ia, ib = ids.index(a), ids.index(b)
                weight[np.ix_(group_index == ia, group_index == ib)] = value
        return {
            "path": image_path,
            "key": stem,
            "size": (width, height),
            "points": points,
            "groups": group_index.astype(np.int64),
            "group_ids": ids,
            "weight": weight,
            "has_relations": has_relations,
        }

    def __len__(self) -> int:
        return len(self.records)

    def _ratio(self, index: int) -> float:
        """The official reader's shrink ratio: ``max(h / max_size, w / max_size)``."""
        width, height = self.records[index]["size"]
        if self.max_size is None:
            return 1.0
        return max(height / self.max_size, width / self.max_size)

    def scale(self, index: int) -> tuple[float, tuple[int, int]]:
        """Resize factor and resized ``(width, height)`` of sample ``index``: as the official
        reader, ``int(side / ratio)`` when the ratio exceeds 1."""
        width, height = self.records[index]["size"]
        ratio = self._ratio(index)
        if ratio <= 1:
            return 1.0, (width, height)
        return 1.0 / ratio, (max(1, int(width / ratio)), max(1, int(height / ratio)))

    def scaled_points(self, index: int) -> np.ndarray:
        """Points of sample ``index`` in the resized image: as the official reader,
        ``(p / ratio).round()`` (numpy: half to even) for ``x, y, r``; centres clipped into
        the image."""
        rec = self.records[index]
        factor, (width, height) = self.scale(index)
        points = rec["points"]
        if factor != 1.0:
            points = np.round(points / self._ratio(index)).astype(np.int64)
        points = points.copy()
        points[:, 0] = points[:, 0].clip(0, width - 1)
        points[:, 1] = points[:, 1].clip(0, height - 1)
        return points

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        factor, (width, height) = self.scale(index)
        image = load_rgb(rec["path"], self.max_size if factor < 1 else None)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        points = self.scaled_points(index)
        return {
            "image": to_tensor(np.asarray(image)),
            "points": torch.from_numpy(points),
            "groups": torch.from_numpy(rec["groups"]),
            "weight": torch.from_numpy(rec["weight"]),
            "has_relations": rec["has_relations"],
            "key": rec["key"],
            "index": index,
        }


# -- training scenes ---------------------------------------------------------------------------
def scene_targets(masks: np.ndarray, full_scale: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Soft fractions and region of interest from stacked masks (M, H, W) whose full scale
    is ``full_scale`` (255 for 8-bit files, 65535 for 16-bit).

    Returns ``fractions`` (M', H, W) float32 — mask / total inside the region of interest, 0
    outside — keeping only the materials whose fraction exceeds 0.5 somewhere, and ``roi``
    (H, W) bool, where the total is at least :data:`ROI_MIN_TOTAL` (in 0–255 units).
    """
    masks = masks.astype(np.float32)
    total = masks.sum(0)
    roi = total >= ROI_MIN_TOTAL * (full_scale / 255.0)
    fractions = np.where(roi, masks / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    keep = (fractions > 0.5).reshape(len(fractions), -1).any(1) if len(fractions) else []
    return fractions[np.asarray(keep, dtype=bool)], roi


def scene_listing(root: Path) -> tuple[list[Path], str]:
    """The finished scene folders under ``root`` (sorted) and a SHA-256 of the names, sizes
    and modification times of their files: the key of their cached index (one stat per file,
    no file opened)."""
    digest = hashlib.sha256()
    folders = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        with os.scandir(entry.path) as listing:
            files = sorted(listing, key=lambda f: f.name)
        if not any(f.name == FINISHED and f.is_file() for f in files):
            continue
        folders.append(Path(entry.path))
        lines = [f"{entry.name}/"]
        for f in files:
            try:
                st = f.stat()
            except OSError:  # a broken link: no file, as for the scene's own checks
                continue
            if stat.S_ISREG(st.st_mode):
                lines.append(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}")
        digest.update("\n".join(lines).encode() + b"\n")
    return folders, digest.hexdigest()


class SceneRecords(Sequence[dict[str, Any]]):
    """Scene records (``folder``, ``image``, ``masks``, ``size``) of some positions of a
    scene index, made on access: no Python object per scene is held."""

    def __init__(self, root: Path, arrays: Mapping[str, np.ndarray], positions: np.ndarray) -> None:
        self.root = root
        self.positions = positions
        self.a = arrays
        self.names = StringTable(arrays["folder_blob"], arrays["folder_offsets"])
        self.mask_names = StringTable(arrays["mask_blob"], arrays["mask_offsets"])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        position = int(self.positions[index])
        a = self.a
        folder = self.root / self.names[position]
        m0, m1 = (int(v) for v in a["scene_mask_offsets"][position : position + 2])
        width, height = (int(v) for v in a["size"][position])
        return {
            "folder": folder,
            "image": folder / SCENE_IMAGE,
            "masks": [folder / self.mask_names[k] for k in range(m0, m1)],
            "size": (width, height),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))


def _mask_files(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := MASK_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


class MatSegScenes(Dataset):
    """MatSeg training scenes: an image and the soft masks of its materials.

    Only scene folders one level under ``root`` that hold ``Finished.txt`` count. Masks are
    ``mask0.png, mask1.png…`` (2D scenes) or ``mask001.png…`` (3D scenes), in numeric order.
    Every scene is checked when the dataset is built (image and masks present and readable
    headers, equal sizes), so that problems surface before a loader worker starts.

    A sample is a random crop, resized to the requested size, of the image and its masks; the
    size is given with the index as ``dataset[(index, (height, width))]`` (the datamodule's batch
    sampler draws one size per batch), or is ``crop_size`` for a plain integer index. Keys:
    ``image`` (3, h, w) float in [0, 1] (augmented when ``transform`` is set); ``fractions``
    (M, h, w) float32 soft fractions of the materials that dominate somewhere in the crop;
    ``roi`` (h, w) bool region of interest; ``key`` (scene folder name); ``index``.

    Args:
        root: Folder of scene folders.
        crop_size: Output size for plain integer indices.
        min_crop_fraction: Smallest crop side, as a fraction of the scene's shorter side.
        transform: Image-only augmentation: ``transform(image, seed)`` on an (H, W, 3) uint8
            array, ``seed`` being the sample's seed (or None) from the batch sampler.
        on_error: ``"raise"`` a :class:`DatasetFormatError` naming the file, or ``"skip"``:
            log it, count it and return another scene instead.
        scenes: Restrict to these scene folder names (used for splits).
        seed: Base seed of the random crops (each worker/epoch still differs).
        fixed_crops: The crop of a sample depends only on ``seed`` and its index (validation).
        index_cache: Folder of cached scene indexes (see
            :mod:`matbench.datasets.index_cache`), keyed by the names, sizes and modification
            times of every finished scene's files: a changed scene rebuilds it. ``"auto"`` =
            ``$MATBENCH_CACHE_DIR/index``; None = check every scene's files on every run.
    """

    def __init__(
        self,
        root: str | Path,
        crop_size: int = 256,
        min_crop_fraction: float = 0.3,
        transform: Callable[[np.ndarray, int | None], np.ndarray] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        scenes: list[str] | None = None,
        seed: int | None = None,
        fixed_crops: bool = False,
        index_cache: str | Path | None = "auto",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not 0 < min_crop_fraction <= 1:
            raise ValueError(f"min_crop_fraction must be in (0, 1], got {min_crop_fraction}")
        self.root = Path(root)
        self.crop_size = crop_size
        self.min_crop_fraction = min_crop_fraction
        self.transform = transform
        self.on_error = on_error
        self.seed = seed
        self.fixed_crops = fixed_crops
        self._rng: np.random.Generator | None = None
        self._rng_owner: int | None = None
        self.num_skipped = 0
        expected = [f"<scene>/{FINISHED}", f"<scene>/{SCENE_IMAGE}", "<scene>/mask*.png"]
        if not self.root.is_dir():
            raise DatasetNotFoundError(type(self).__name__, self.root, expected)
        folders, fingerprint = scene_listing(self.root)
        settings = {"reader": type(self).__name__, "version": 1, "root": str(self.root.resolve())}
        self.index = cached_index(
            "matseg_scenes",
            settings,
            [],
            lambda: self._build_index(folders),
            cache_dir=index_cache,
            fingerprint=fingerprint,
        )
        a = self.index.arrays
        names = StringTable(a["folder_blob"], a["folder_offsets"])
        problems = StringTable(a["problem_blob"], a["problem_offsets"])
        wanted = None if scenes is None else set(scenes)
        chosen = []
        for position in range(len(names)):
            if wanted is not None and names[position] not in wanted:
                continue
            if a["problem_path_offsets"][position + 1] > a["problem_path_offsets"][position]:
                paths = StringTable(a["problem_path_blob"], a["problem_path_offsets"])
                err = DatasetFormatError(self.root / paths[position], problems[position])
                if on_error == "raise":
                    raise err
                self.num_skipped += 1
                log.warning(
                    "MatSegScenes: skipping scene (%d skipped so far): %s", self.num_skipped, err
                )
                continue
            chosen.append(position)
        #: The scenes' records (``folder``, ``image``, ``masks``, ``size``), made on access.
        self.scenes = SceneRecords(self.root, a, np.asarray(chosen, dtype=np.int64))
        if not len(self.scenes):
            raise DatasetNotFoundError(
                type(self).__name__,
                self.root,
                expected,
                "no finished scene with an image and masks"
                + (f" among {scenes}" if scenes else ""),
            )

    def _build_index(self, folders: list[Path]) -> Index:
        """Every finished scene checked (files, numbering, header sizes): its mask names and
        size, or the first problem found (kept, so that the cached index serves any subset
        of scenes and either ``on_error``)."""
        names, sizes, mask_counts, mask_names, problem_paths, problems = [], [], [], [], [], []
        for folder in folders:
            names.append(folder.name)
            try:
                record = self._index(folder)
            except DatasetFormatError as err:
                sizes.append((0, 0))
                mask_counts.append(0)
                problem_paths.append(str(err.path.relative_to(self.root)))
                problems.append(err.problem)
                continue
            sizes.append(tuple(record["size"]))
            mask_counts.append(len(record["masks"]))
            mask_names += [m.name for m in record["masks"]]
            problem_paths.append("")
            problems.append("")
        arrays: dict[str, np.ndarray] = {
            "size": np.array(sizes, dtype=np.int64).reshape(-1, 2),
            "scene_mask_offsets": np.concatenate(([0], np.cumsum(mask_counts))).astype(np.int64),
        }
        for prefix, values in (
            ("folder", names),
            ("mask", mask_names),
            ("problem_path", problem_paths),
            ("problem", problems),
        ):
            packed = pack_strings(values)
            arrays[f"{prefix}_blob"], arrays[f"{prefix}_offsets"] = (
                packed["blob"],
                packed["offsets"],
            )
        return Index(arrays, {"scenes": len(names)})

    @staticmethod
    def _index(folder: Path) -> dict[str, Any]:
        image_path = folder / SCENE_IMAGE
        if not image_path.is_file():
            raise DatasetFormatError(image_path, "missing scene image")
        masks = _mask_files(folder)
        if not masks:
            raise DatasetFormatError(folder, "scene has no mask*.png file")
        numbers = [int(MASK_PATTERN.match(p.name).group(1)) for p in masks]
        start = 0 if numbers[0] == 0 else 1
        for expected, (number, path) in enumerate(zip(numbers, masks, strict=True), start=start):
            if number != expected:
                digits = len(MASK_PATTERN.match(path.name).group(1))
                missing = folder / f"mask{expected:0{digits}d}.png"
                raise DatasetFormatError(missing, "mask file is missing (the numbering has a gap)")
        size = header_size(image_path)
        for mask in masks:
            if header_size(mask) != size:
                raise DatasetFormatError(
                    mask, f"size {header_size(mask)} differs from the scene image's {size}"
                )
        return {"folder": folder, "image": image_path, "masks": masks, "size": size}

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def rng(self) -> np.random.Generator:
        """The crop generator of this process: each loader worker gets its own stream."""
        info = torch.utils.data.get_worker_info()
        owner = -1 if info is None else info.id
        if self._rng is None or self._rng_owner != owner:
            seed = self.seed if info is None else info.seed
            self._rng = np.random.default_rng(seed)
            self._rng_owner = owner
        return self._rng

    def __getitem__(
        self, item: int | tuple[int, tuple[int, int]] | tuple[int, tuple[int, int], int]
    ) -> dict[str, Any]:
        seed = None
        if isinstance(item, tuple):
            index, out_size, *rest = item
            seed = rest[0] if rest else None
        else:
            index, out_size = item, (self.crop_size, self.crop_size)
        if self.on_error == "raise":
            return self._load(index, out_size, seed)
        for attempt in range(len(self.scenes)):
            current = (index + attempt) % len(self.scenes)
            try:
                return self._load(current, out_size, seed)
            except DatasetFormatError as err:
                self.num_skipped += 1
                log.warning(
                    "MatSegScenes: skipping scene (%d skipped so far in this process): %s",
                    self.num_skipped,
                    err,
                )
        raise RuntimeError(f"MatSegScenes: every scene under {self.root} failed to load")

    def _load(
        self, index: int, out_size: tuple[int, int], seed: int | None = None
    ) -> dict[str, Any]:
        scene = self.scenes[index]
        image = decode_rgb(scene["image"])
        masks, full_scale = stack_masks([_read_mask(p, image.shape[:2]) for p in scene["masks"]])
        check_has_material(scene["folder"], masks, full_scale)
        crop_h, crop_w = out_size
        if self.fixed_crops:
            rng = np.random.default_rng([self.seed or 0, index])
        elif seed is not None:
            rng = np.random.default_rng(seed)
        else:
            rng = self.rng
        image, masks = self._random_crop(rng, image, masks, crop_h, crop_w)
        fractions, roi = scene_targets(masks, full_scale)
        if self.transform is not None:
            image = self.transform(image, seed)
        return {
            "image": to_tensor(image),
            "fractions": torch.from_numpy(np.ascontiguousarray(fractions)),
            "roi": torch.from_numpy(roi),
            "key": scene["folder"].name,
            "index": index,
        }

    def _random_crop(
        self, rng: np.random.Generator, image: np.ndarray, masks: np.ndarray, out_h: int, out_w: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random window with the output's aspect ratio, resized to (out_h, out_w)."""
        import cv2

        height, width = image.shape[:2]
        # Largest window with the output aspect that fits, then a random fraction of it.
        fit = min(height / out_h, width / out_w)
        scale = fit * rng.uniform(self.min_crop_fraction, 1.0)
        ch = max(1, min(height, round(out_h * scale)))
        cw = max(1, min(width, round(out_w * scale)))
        y0 = int(rng.integers(0, height - ch + 1))
        x0 = int(rng.integers(0, width - cw + 1))
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
        if (ch, cw) != (out_h, out_w):
            interp = cv2.INTER_AREA if ch > out_h else cv2.INTER_LINEAR
            image = cv2.resize(image, (out_w, out_h), interpolation=interp)
            masks = np.stack(
                [cv2.resize(m, (out_w, out_h), interpolation=interp) for m in masks]
            ).reshape(len(masks), out_h, out_w)
        return image, masks


def _read_mask(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """A soft mask at its bit depth: ``(values, full_scale)`` (see
    :func:`matbench.decoding.decode_gray`)."""
    mask, scale = decode_gray(path)
    if mask.shape != shape:
        raise DatasetFormatError(path, f"mask size {mask.shape} differs from the image's {shape}")
    return mask, scale


def check_has_material(folder: Path, masks: np.ndarray, full_scale: int) -> None:
    """A scene needs some pixel in its region of interest where one material dominates;
    otherwise every crop of it is unscorable (it would train on nothing and validate as 0)."""
    total = masks.sum(0, dtype=np.float32)
    dominant = 2 * masks.max(0).astype(np.float32) > total
    if not (dominant & (total >= ROI_MIN_TOTAL * (full_scale / 255.0))).any():
        raise DatasetFormatError(
            folder,
            f"scene has no material pixel: its {len(masks)} masks are all (nearly) zero or "
            "no material dominates anywhere",
        )


def stack_masks(masks: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Stack masks of one scene at a common bit depth: ``(array (M, H, W), full_scale)``.

    8-bit masks beside a 16-bit one are widened exactly (``v * 257``)."""
    scale = max(s for _, s in masks)
    if scale == 255:
        return np.stack([m for m, _ in masks]), 255
    return np.stack([m.astype(np.uint16) * np.uint16(scale // s) for m, s in masks]), scale
