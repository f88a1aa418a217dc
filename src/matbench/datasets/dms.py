"""Dense Material Segmentation (Upchurch & Niu, ECCV 2022), with the official DMS46 mapping.

Layout::

    DMS_v1/info.json.gz          gzip'd JSON list: image_path, label_path (relative), height, width…
    DMS_v1/taxonomy.json         names[57], shortnames, colormaps, semantic_labels[52]
    DMS_v1/labels/<split>/<stem>.png   single channel, values index taxonomy names (0 = No label)
    DMS_v1/images/<split>/<stem>.jpg   (users fetch these from Open Images)

Splits are ``train``, ``validation`` and ``test``. Label values are mapped to DMS46: the 46
kept indices, sorted, become 0..45; every other value becomes 255 (ignore).

Two modes:

- ``dense``: ``image`` (3, H, W) and ``mask`` int64 (H, W), the DMS46 label map.
- ``region``: one sample per (image, DMS46 class present in it), with ``mask`` bool (H, W) —
  the pixels of that class — and ``label`` the class. A region is the *union* of the class's
  pixels in the image, not a connected component: DMS labels carry no instance ids, and one
  surface split by an occluder (a table behind a chair) is still one material region to
  classify. Classes covering fewer than ``min_pixels`` pixels (at label resolution) are left
  out. Finding the regions reads every label map of the split once; the per-image class pixel
  counts are kept in the index cache (:mod:`matbench.datasets.index_cache`, keyed by the
  SHA-256 of ``info.json.gz`` and of every label map), so later runs, other ``min_pixels``
  and other DDP ranks start without reading them again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from matbench.datasets.batched import load_once
from matbench.datasets.descriptions import FALLBACK_DESCRIPTION, assign_descriptions
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.index_cache import Index, cached_index
from matbench.datasets.utils import (
    Sample,
    file_digest,
    open_image,
    oriented_size,
    read_image,
    resize_sample,
)

DMS_SPLITS = ("train", "validation", "test")
#: Taxonomy indices that are not materials: No label, I cannot tell, Not on list,
#: Bad polygon, Multiple materials.
DMS_NON_MATERIAL = (0, 22, 28, 54, 55)
#: Material indices that DMS46 drops: Fiberglass wool, Liquid non-water, Pearl, Soap, Sponge,
#: Styrofoam.
DMS46_DROPPED = (14, 25, 31, 40, 42, 45)
#: The 46 taxonomy indices of DMS46, sorted: index ``i`` of this tuple is train id ``i``.
DMS46_INDICES = tuple(i for i in range(57) if i not in DMS_NON_MATERIAL and i not in DMS46_DROPPED)
IGNORE_INDEX = 255


def dms46_lut() -> np.ndarray:
    """Lookup table (256,) uint8: taxonomy index → DMS46 train id, 255 for everything else."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(DMS46_INDICES)] = np.arange(len(DMS46_INDICES), dtype=np.uint8)
    return lut


def read_taxonomy(path: Path) -> dict[str, Any]:
    """Read and check ``taxonomy.json`` (57 names, the 52 semantic labels)."""
    try:
        taxonomy = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"cannot be read as JSON ({err})") from err
    names = taxonomy.get("names") if isinstance(taxonomy, dict) else None
    if not isinstance(names, list) or len(names) != 57:
        raise DatasetFormatError(path, "expected 'names' to be a list of the 57 DMS names")
    semantic = taxonomy.get("semantic_labels")
    if semantic is not None:
        expected = [i for i in range(57) if i not in DMS_NON_MATERIAL]
        if not isinstance(semantic, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in semantic
        ):
            raise DatasetFormatError(
                path,
                f"'semantic_labels' must be a list of integers, got {type(semantic).__name__} "
                f"{str(semantic)[:60]}",
            )
        if sorted(semantic) != expected:
            raise DatasetFormatError(
                path,
                "'semantic_labels' is not the 52 DMS material indices (every index except "
                f"{list(DMS_NON_MATERIAL)})",
            )
    return taxonomy


def dms46_class_names(root: str | Path) -> list[str]:
    """The 46 DMS46 class names in train-id order, read from ``<root>/taxonomy.json``."""
    path = Path(root).expanduser() / "taxonomy.json"
    if not path.is_file():
        raise DatasetNotFoundError("DMS", root, ["taxonomy.json"])
    names = read_taxonomy(path)["names"]
    return [str(names[i]) for i in DMS46_INDICES]


def read_label(path: Path) -> np.ndarray:
    """A DMS label map (H, W) uint8 of taxonomy indices; checks one channel and values ≤ 56."""
    with open_image(path, "a PNG label map") as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise DatasetFormatError(
                path, f"label map must be single-channel, got PIL mode '{img.mode}'"
            )
        array = np.asarray(img)
    if array.ndim != 2:
        raise DatasetFormatError(path, f"label map must be (H, W), got shape {array.shape}")
    if array.size and (int(array.max()) > 56 or int(array.min()) < 0):
        bad = int(array.max()) if int(array.max()) > 56 else int(array.min())
        raise DatasetFormatError(path, f"label value {bad} is not a DMS taxonomy index (0-56)")
    return array.astype(np.uint8)


def check_unique_entries(rows: list[tuple[str, Path, Path]], path: Path) -> None:
    """An image (or label map, or stem) listed twice in ``info.json.gz`` would count twice in
    the metrics: that is an error naming the file and the entry."""
    for column, what in ((0, "stem"), (1, "image_path"), (2, "label_path")):
        seen: set[Any] = set()
        for row in rows:
            if row[column] in seen:
                raise DatasetFormatError(
                    path, f"{what} '{row[column]}' is listed twice (an image would count twice)"
                )
            seen.add(row[column])


class DMS(Dataset):
    """DMS images and DMS46 labels, as dense label maps or as material regions.

    Samples (dense): ``image``, ``mask`` int64 (H, W) with DMS46 ids and 255, ``key``
    (``<split>/<stem>``), ``index``. Samples (region): ``image``, ``mask`` bool (H, W),
    ``label`` (DMS46 id), ``key`` (``<split>/<stem>#<id>``), ``index``, ``description``.

    Args:
        root: The ``DMS_v1`` folder.
        split: ``train``, ``validation`` or ``test``.
        mode: ``dense`` or ``region``.
        min_pixels: Region mode: smallest region kept, in label pixels.
        image_size: Resize image and mask to this square size; None keeps the original.
        descriptions: Region mode: JSON sidecar ``{key: description}``; None = the fallback.
        on_label_leak: ``"redact"``, ``"fallback"``, ``"keep"`` or ``"error"``: what to do with
            descriptions naming their own class (see
            :func:`matbench.datasets.descriptions.assign_descriptions`).
        transforms: Optional callable applied to each sample dict last.
        label_space: Region mode: relabel regions into a label space through its ``dms`` map
            (``classes21`` gives DMS-test-21). Regions of DMS46 classes without a counterpart
            are dropped and counted in :attr:`dropped`. A region stays one DMS46 class's
            pixels with its key (``…#<DMS46 id>``), so sidecars serve every label space, and
            an image may hold two regions of one target class (natural and polished stone).
        index_cache: Folder of cached indexes (region pixel counts, checked sizes);
            ``"auto"`` = ``$MATBENCH_CACHE_DIR/index``; None = read the label maps every time.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "validation",
        mode: Literal["dense", "region"] = "region",
        min_pixels: int = 1024,
        image_size: int | None = None,
        descriptions: str | Path | None = None,
        on_label_leak: str = "redact",
        transforms: Callable[[Sample], Sample] | None = None,
        label_space: str | None = None,
        index_cache: str | Path | None = "auto",
    ) -> None:
        if split not in DMS_SPLITS:
            raise ValueError(f"split must be one of {DMS_SPLITS}, got '{split}'")
        if mode not in ("dense", "region"):
            raise ValueError(f"mode must be 'dense' or 'region', got '{mode}'")
        if min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
        self.root = Path(root).expanduser()
        self.split = split
        self.mode = mode
        self.min_pixels = min_pixels
        self.image_size = image_size
        self.transforms = transforms
        self._check_root()
        self.taxonomy = read_taxonomy(self.root / "taxonomy.json")
        self.classes = [str(self.taxonomy["names"][i]) for i in DMS46_INDICES]
        self.lut = dms46_lut()
        self.images = self._read_info()
        #: Region mode: (image index, DMS46 id, pixel count) per sample, an (N, 3) array.
        self.regions = np.zeros((0, 3), dtype=np.int64)
        #: Region mode: the class of each region (the DMS46 id, or the label-space id).
        self.region_labels: list[int] = []
        #: Regions left out per DMS46 class by the label space.
        self.dropped: dict[str, int] = {}
        self.label_space = None
        if label_space is not None and mode != "region":
            raise ValueError("label_space needs mode='region' (dense maps keep DMS46 ids)")
        settings = {"reader": "DMS", "version": 1, "root": str(self.root.resolve()), "mode": mode}
        sources = [self.root / "info.json.gz", *(label for _, _, label in self.images)]
        build = self._build_region_counts if mode == "region" else self._build_sizes
        #: Region mode: ``counts`` (images, 46), the pixels of each DMS46 class per image;
        #: both modes: ``sizes`` (images, 2), height and width.
        self.index = cached_index(f"dms_{split}", settings, sources, build, index_cache)
        if mode == "region":
            self.regions = regions_from_counts(self.index.arrays["counts"], min_pixels)
            self.region_labels = self.regions[:, 1].tolist()
            if label_space is not None:
                self._relabel(label_space)
            self.descriptions, self.label_leaks = assign_descriptions(
                [self._key(i) for i in range(len(self))],
                self.region_labels,
                self.classes,
                descriptions,
                on_label_leak,
            )
        else:
            self.descriptions, self.label_leaks = [], None
        #: Fallbacks counted for the results JSON (regions without a sidecar description).
        self.data_warnings: dict[str, int] = {}
        if descriptions is not None:
            missing = sum(d == FALLBACK_DESCRIPTION for d in self.descriptions)
            self.data_warnings = {"fallback_descriptions": missing} if missing else {}
        self._settings = json.dumps(
            {"mode": mode, "size": image_size, "min_pixels": min_pixels}, sort_keys=True
        )

    def _relabel(self, spec: str) -> None:
        from matbench.datasets.label_space import load_label_space, relabel

        self.label_space = load_label_space(spec)
        mapping = self.label_space.mapping(self.classes, "dms")
        labels, self.dropped = relabel(self.region_labels, mapping, self.classes)
        kept = [i for i, label in enumerate(labels) if label is not None]
        self.regions = self.regions[np.asarray(kept, dtype=np.int64)]
        self.region_labels = [int(labels[i]) for i in kept]  # type: ignore[arg-type]
        self.classes = list(self.label_space.classes)

    # -- index ---------------------------------------------------------------------------------
    def _expected(self) -> list[str]:
        return [
            "info.json.gz",
            "taxonomy.json",
            f"labels/{self.split}/<stem>.png",
            f"images/{self.split}/<stem>.jpg",
        ]

    def _check_root(self) -> None:
        missing = [
            name
            for name in (
                "info.json.gz",
                "taxonomy.json",
                f"labels/{self.split}",
                f"images/{self.split}",
            )
            if not (self.root / name).exists()
        ]
        if missing:
            raise DatasetNotFoundError(
                "DMS",
                self.root,
                self._expected(),
                f"missing: {', '.join(missing)}. The images come from Open Images: "
                "create images/<split>/ with the DMS release's scripts",
            )

    def _read_info(self) -> list[tuple[str, Path, Path]]:
        path = self.root / "info.json.gz"
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, EOFError) as err:
            raise DatasetFormatError(path, f"cannot be read as gzip'd JSON ({err})") from err
        if not isinstance(info, list):
            raise DatasetFormatError(path, "expected a JSON list with one dict per image")
        rows = []
        for i, entry in enumerate(info):
            if (
                not isinstance(entry, dict)
                or "image_path" not in entry
                or "label_path" not in entry
            ):
                raise DatasetFormatError(path, f"entry {i} has no image_path/label_path")
            label_rel, image_rel = entry["label_path"], entry["image_path"]
            if not isinstance(label_rel, str) or not isinstance(image_rel, str):
                raise DatasetFormatError(path, f"entry {i}: image_path/label_path are not strings")
            if Path(label_rel).parts[:2] != ("labels", self.split):
                continue
            rows.append((Path(label_rel).stem, self.root / image_rel, self.root / label_rel))
        check_unique_entries(rows, path)
        if not rows:
            raise DatasetNotFoundError(
                "DMS", self.root, self._expected(), f"info.json.gz lists no '{self.split}' image"
            )
        missing = [p for _, img, lab in rows for p in (img, lab) if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(
                "DMS",
                self.root,
                [str(p.relative_to(self.root)) for p in missing[:5]],
                f"{len(missing)} files listed in info.json.gz are missing",
            )
        rows.sort(key=lambda r: r[0])
        return rows

    def _build_sizes(self) -> Index:
        """Image and label sizes agree (read from the file headers, nothing decoded)."""
        sizes = np.zeros((len(self.images), 2), dtype=np.int64)
        for i, (_, image_path, label_path) in enumerate(self.images):
            image_wh, label_wh = oriented_size(image_path), oriented_size(label_path)
            if image_wh != label_wh:
                raise DatasetFormatError(
                    label_path,
                    f"label map is {label_wh[0]}x{label_wh[1]} (WxH) but its image "
                    f"{image_path} is {image_wh[0]}x{image_wh[1]}",
                )
            sizes[i] = label_wh[1], label_wh[0]
        return Index({"sizes": sizes})

    def _build_region_counts(self) -> Index:
        """Every label map read once: its DMS46 class pixel counts and its size."""
        counts = np.zeros((len(self.images), len(DMS46_INDICES)), dtype=np.int64)
        sizes = np.zeros((len(self.images), 2), dtype=np.int64)
        for i, (_, image_path, _) in enumerate(self.images):
            label = self._mapped_label(i, check_image=image_path)
            counts[i] = np.bincount(label.ravel(), minlength=256)[: len(DMS46_INDICES)]
            sizes[i] = label.shape
        return Index({"counts": counts, "sizes": sizes})

    def _mapped_label(self, image_index: int, check_image: Path | None = None) -> np.ndarray:
        _, image_path, label_path = self.images[image_index]
        label = read_label(label_path)
        if check_image is not None:
            width, height = oriented_size(check_image)
            if (height, width) != label.shape:
                raise DatasetFormatError(
                    label_path,
                    f"label map is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                    f"{image_path} is {width}x{height}",
                )
        return self.lut[label]

    # -- samples -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.regions) if self.mode == "region" else len(self.images)

    @property
    def labels(self) -> list[int]:
        """Region mode: the class id of every sample."""
        return list(self.region_labels)

    def sample_groups(self) -> np.ndarray:
        """The image of every sample: a region's samples share their image's number, so
        :class:`matbench.datamodules.sampler.GroupedSampler` reads them together."""
        if self.mode == "region":
            return self.regions[:, 0].copy()
        return np.arange(len(self.images))

    def _key(self, index: int) -> str:
        if self.mode == "region":
            image_index, train_id, _ = self.regions[index].tolist()
            return f"{self.split}/{self.images[image_index][0]}#{train_id}"
        return f"{self.split}/{self.images[index][0]}"

    def fingerprint(self, index: int) -> dict[str, str]:
        """Feature-cache identity of sample ``index`` (see :mod:`matbench.cache`)."""
        image_index = int(self.regions[index][0]) if self.mode == "region" else index
        _, image_path, label_path = self.images[image_index]
        description = self.descriptions[index] if self.descriptions else ""
        detail = hashlib.blake2b(
            "|".join(
                [file_digest(image_path), file_digest(label_path), self._settings, description]
            ).encode(),
            digest_size=16,
        ).hexdigest()
        return {"dataset": "DMS", "split": self.split, "key": self._key(index), "detail": detail}

    def sample_meta(self, index: int) -> Sample | None:
        """Region ``index`` without its pixels: ``key``, ``index``, ``label``,
        ``description`` (what a feature cache serves with the cached features); None in
        ``dense`` mode, whose samples are never cached."""
        if self.mode != "region":
            return None
        return {
            "key": self._key(index),
            "index": index,
            "label": torch.tensor(self.region_labels[index], dtype=torch.int64),
            "description": self.descriptions[index],
        }

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """A batch of samples; an image's regions in the batch share one decode."""
        samples: list[Sample | None] = []
        to_load: list[tuple[int, Sample]] = []
        for index in indices:
            meta = self.sample_meta(index) or {"key": self._key(index), "index": index}
            to_load.append((len(samples), meta))
            samples.append(None)
        image_of = [self._image_index(meta["index"]) for _, meta in to_load]
        pairs = load_once(image_of, self._read_pair)
        for (position, meta), pair in zip(to_load, pairs, strict=True):
            sample = self._sample(meta["index"], *pair)
            sample.update(meta)
            if self.transforms is not None:
                sample = self.transforms(sample)
            samples[position] = sample
        return samples  # type: ignore[return-value]

    def _image_index(self, index: int) -> int:
        return int(self.regions[index][0]) if self.mode == "region" else index

    def _read_pair(self, image_index: int) -> tuple[torch.Tensor, np.ndarray]:
        _, image_path, label_path = self.images[image_index]
        image = read_image(image_path)
        label = self._mapped_label(image_index)
        if tuple(image.shape[-2:]) != label.shape:
            raise DatasetFormatError(
                label_path,
                f"label map is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[2]}x{image.shape[1]}",
            )
        return image, label

    def _sample(self, index: int, image: torch.Tensor, label: np.ndarray) -> Sample:
        if self.mode == "region":
            mask = torch.from_numpy(label == self.regions[index][1])
        else:
            mask = torch.from_numpy(label.astype(np.int64))
        return resize_sample({"image": image, "mask": mask}, self.image_size)


def regions_from_counts(counts: np.ndarray, min_pixels: int) -> np.ndarray:
    """(image index, DMS46 id, pixel count) of every class covering ``>= min_pixels`` pixels
    of an image, ordered by image then class: an (N, 3) int64 array."""
    images, classes = np.nonzero(np.asarray(counts) >= min_pixels)
    return np.stack([images, classes, np.asarray(counts)[images, classes]], axis=1).astype(np.int64)
