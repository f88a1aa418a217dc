"""LVIS-materials: LVIS objects (COCO images, polygon masks) with material labels.

Layout (LVIS reuses the COCO 2017 images)::

    <root>/coco/{train2017,val2017}/<12-digit id>.jpg
    <root>/lvis/lvis_v1_{train,val}.json              LVIS annotation JSON (v1 or v0.5)
    <root>/lvis/lvis_v1_{train,val}_materials.json    materials sidecar (matbench's own)

Image paths: v1 image records have no ``file_name``; the path is the tail of ``coco_url``
(``val2017/000000266409.jpg``). v0.5 records carry ``file_name`` (``COCO_val2014_<id>.jpg``)
and also ``coco_url``. The reader tries, under the images root, the ``coco_url`` tail, then
``file_name``, then ``file_name`` without its ``COCO_<split>_`` prefix in ``train2017`` and
``val2017``. Polygons are decoded with pycocotools (``frPyObjects`` → ``merge`` → ``decode``).

The sidecar (see :mod:`matbench.materials.sidecar`) says which materials each object is made
of; only objects it lists are samples. Without a sidecar, every object is a sample and its
caption is its LVIS category name (useful to inspect the data, not to train materials).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from matbench.datasets.batched import load_once
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.index_cache import Index, StringTable, cached_index, pack_strings
from matbench.datasets.rle import polygon_region, polygon_regions
from matbench.datasets.utils import read_image_reduced
from matbench.materials.sidecar import MaterialLabel, read_sidecar
from matbench.transforms import RegionMask

Sample = dict[str, Any]
_COCO_PREFIX = re.compile(r"^COCO_[a-z]+\d{4}_")
#: How far (in image sizes) polygon coordinates may lie outside their image.
COORDINATE_MARGIN = 1.0


def sidecar_path(annotation_file: str | Path) -> Path:
    """The default sidecar of an annotation file: ``<stem>_materials.json`` beside it."""
    path = Path(annotation_file)
    return path.with_name(f"{path.stem}_materials.json")


def image_candidates(record: dict[str, Any]) -> list[str]:
    """Relative paths under the images root where an LVIS image record's file may be."""
    out: list[str] = []
    url = record.get("coco_url")
    if isinstance(url, str) and url:
        parts = url.rstrip("/").split("/")
        out.append("/".join(parts[-2:]))
    name = record.get("file_name")
    if isinstance(name, str) and name:
        out.append(name)
        stripped = _COCO_PREFIX.sub("", Path(name).name)
        out += [f"train2017/{stripped}", f"val2017/{stripped}"]
    return list(dict.fromkeys(out))


def read_lvis_json(path: Path, kind: str) -> dict[str, Any]:
    """An LVIS-format json file (``images``, ``annotations``, ``categories`` lists); ``kind``
    names the expected file in errors (``"an LVIS annotation file"``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetFormatError(path, f"not {kind} (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(path, f"not {kind} (no '{key}' list)")
    return data


def index_image_records(records: list[Any], path: Path) -> dict[int, dict[str, Any]]:
    """LVIS image records by id: ``{"record", "height", "width", "path": None}``; a record
    without id/height/width or without a file location is a :class:`DatasetFormatError`."""
    images: dict[int, dict[str, Any]] = {}
    for i, record in enumerate(records):
        try:
            image_id = int(record["id"])
            height, width = int(record["height"]), int(record["width"])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetFormatError(
                path, f"images[{i}]: record without id/height/width: {err!r}"
            ) from err
        if height < 1 or width < 1:
            raise DatasetFormatError(path, f"image {image_id}: size {width}x{height}")
        if not image_candidates(record):
            raise DatasetFormatError(path, f"image {image_id} has neither coco_url nor file_name")
        images[image_id] = {"record": record, "height": height, "width": width, "path": None}
    return images


def find_image_files(
    images: dict[int, dict[str, Any]],
    image_ids: Iterable[int],
    image_root: Path,
    dataset: str,
    missing_hint: str,
) -> None:
    """Set ``images[i]["path"]`` (relative to ``image_root``) for every id in ``image_ids``
    to the first existing :func:`image_candidates` of its ``"record"``.

    Raises:
        DatasetNotFoundError: naming up to five missing files, their count and
            ``"<count> image file(s) " + missing_hint``.
    """
    missing = []
    for image_id in image_ids:
        info = images[image_id]
        candidates = image_candidates(info["record"])
        found = next((c for c in candidates if (image_root / c).is_file()), None)
        if found is None:
            missing.append(str(image_root / candidates[0]))
        info["path"] = found or candidates[0]
    if missing:
        raise DatasetNotFoundError(
            dataset, image_root, missing[:5], f"{len(missing)} image file(s) {missing_hint}"
        )


def decode_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """LVIS polygons (absolute pixels) → (height, width) bool mask, via pycocotools."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_categories(categories: list[Any], path: Path) -> dict[int, str]:
    """Category id → name; each category must be an object with an integer ``id`` and a
    string ``name``."""
    names: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict):
            raise DatasetFormatError(path, f"categories[{i}] is not an object")
        if not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise DatasetFormatError(path, f"categories[{i}]: 'id' is missing or not an integer")
        if not isinstance(cat.get("name"), str):
            raise DatasetFormatError(
                path, f"category {cat['id']}: 'name' is missing or not a string"
            )
        names[int(cat["id"])] = cat["name"]
    return names


def parse_annotation(ann: Any, index: int, path: Path) -> tuple[int, int, int, Any, list[float]]:
    """``(id, image_id, category_id, segmentation, bbox)`` of one annotation, checked: an
    object with integer ids and a ``bbox`` of 4 finite numbers with non-negative size."""
    if not isinstance(ann, dict):
        raise DatasetFormatError(path, f"annotations[{index}] is not an object")
    where = f"annotation {ann.get('id', f'#{index}')}"
    ids = []
    for field in ("id", "image_id", "category_id"):
        value = ann.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DatasetFormatError(path, f"{where}: '{field}' is missing or not an integer")
        ids.append(value)
    if "segmentation" not in ann:
        raise DatasetFormatError(path, f"{where}: 'segmentation' is missing")
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(_is_number(v) and math.isfinite(v) for v in bbox)
    ):
        raise DatasetFormatError(path, f"{where}: 'bbox' must be 4 finite numbers, got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise DatasetFormatError(path, f"{where}: 'bbox' has a negative size {bbox!r}")
    return ids[0], ids[1], ids[2], ann["segmentation"], [float(v) for v in bbox]


def parse_polygons(
    segmentation: Any, ann_id: int, width: int, height: int, path: Path
) -> list[list[float]]:
    """The usable polygons of an annotation, checked before any pycocotools call.

    Every coordinate must be a finite number within :data:`COORDINATE_MARGIN` image sizes of
    the image (pycocotools allocates in proportion to the coordinates: a NaN or a 1e8 makes it
    allocate without bound or crash). Polygons with fewer than 3 points or an odd number of
    values are degenerate and dropped.
    """
    if not isinstance(segmentation, list):
        raise DatasetFormatError(
            path, f"annotation {ann_id}: segmentation is not a list of polygons (RLE?)"
        )
    margin = COORDINATE_MARGIN * max(width, height)
    polygons = []
    for k, poly in enumerate(segmentation):
        if not isinstance(poly, list):
            raise DatasetFormatError(
                path, f"annotation {ann_id}: segmentation[{k}] is not a list of coordinates"
            )
        bad = [v for v in poly if not (_is_number(v) and math.isfinite(v))]
        if bad:
            raise DatasetFormatError(
                path,
                f"annotation {ann_id}: segmentation[{k}] has a coordinate {bad[0]!r} "
                "(coordinates must be finite numbers)",
            )
        xs, ys = poly[0::2], poly[1::2]
        if (
            xs
            and ys
            and (
                min(xs) < -margin
                or max(xs) > width + margin
                or min(ys) < -margin
                or max(ys) > height + margin
            )
        ):
            raise DatasetFormatError(
                path,
                f"annotation {ann_id}: segmentation[{k}] has coordinates far outside its "
                f"{width}x{height} image (x {min(xs)}..{max(xs)}, y {min(ys)}..{max(ys)})",
            )
        if len(poly) >= 6 and len(poly) % 2 == 0:
            polygons.append([float(v) for v in poly])
    return polygons


def outside_image(polygons: list[list[float]], width: int, height: int) -> bool:
    """True when the polygons' bounding box does not overlap the image at all."""
    xs = [v for poly in polygons for v in poly[0::2]]
    ys = [v for poly in polygons for v in poly[1::2]]
    return max(xs) <= 0 or min(xs) >= width or max(ys) <= 0 or min(ys) >= height


def load_image(path: Path) -> Tensor:
    """RGB float tensor (3, H, W) in [0, 1], EXIF orientation applied."""
    return read_image_reduced(path)[0]


#: The reduced JPEG decode (see :func:`matbench.datasets.utils.read_image_reduced`).
load_image_reduced = read_image_reduced


class LVISObjects(Sequence[dict[str, Any]]):
    """The objects of an :class:`LVISMaterials` index as dicts (``id``, ``image_id``,
    ``polygons``, ``bbox``, ``materials``, ``text``, ``label``), made on access from the
    index's arrays: the index itself holds no Python object per object."""

    def __init__(self, arrays: Mapping[str, np.ndarray], materials: Sequence[str]) -> None:
        self.a = arrays
        self.materials = materials
        self.texts = StringTable(arrays["text_blob"], arrays["text_offsets"])

    def __len__(self) -> int:
        return len(self.a["id"])

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        a = self.a
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        p0, p1 = int(a["poly_offsets"][index]), int(a["poly_offsets"][index + 1])
        bounds = a["coord_offsets"][p0 : p1 + 1].tolist()
        coords = a["coords"]
        polygons = [coords[s:e].tolist() for s, e in itertools.pairwise(bounds)]
        m0, m1 = int(a["mat_offsets"][index]), int(a["mat_offsets"][index + 1])
        return {
            "id": int(a["id"][index]),
            "image_id": int(a["image_id"][a["image_row"][index]]),
            "polygons": polygons,
            "bbox": a["bbox"][index].tolist(),
            "materials": [self.materials[m] for m in a["mat_ids"][m0:m1].tolist()],
            "text": self.texts[index] if a["has_text"][index] else None,
            "label": int(a["label"][index]),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))


class LVISImages(Mapping[int, dict[str, Any]]):
    """The images that :class:`LVISMaterials` objects are on: ``image_id → {height, width,
    path}`` (path relative to the images root), read from the index's arrays."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.a = arrays
        self.paths = StringTable(arrays["image_path_blob"], arrays["image_path_offsets"])

    def row(self, image_id: int) -> int:
        ids = self.a["image_id"]
        row = int(np.searchsorted(ids, image_id))
        if row >= len(ids) or int(ids[row]) != image_id:
            raise KeyError(image_id)
        return row

    def __getitem__(self, image_id: int) -> dict[str, Any]:
        row = self.row(int(image_id))
        return {
            "height": int(self.a["image_height"][row]),
            "width": int(self.a["image_width"][row]),
            "path": self.paths[row],
        }

    def __len__(self) -> int:
        return len(self.a["image_id"])

    def __iter__(self) -> Iterator[int]:
        return iter(self.a["image_id"].tolist())


class LVISMaterials(Dataset):
    """Objects of an LVIS annotation file, each with its material caption.

    A sample holds ``image`` (3, H, W) and ``mask`` (H, W, bool) of the whole COCO image, the
    object ``box`` (x0, y0, x1, y1), ``caption`` (str), ``label`` (index of the object's first
    material in :attr:`materials`), ``key`` (the annotation id as a string), ``index``, and
    ``mask_box``, the tight box of the mask, when the mask is not empty; ``transforms`` (e.g.
    :class:`matbench.transforms.ObjectCrop`) then turns it into an object crop. A transform
    with ``accepts_region_masks`` gets the mask as a :class:`matbench.transforms.RegionMask`
    (the object's box and the pixels in it) and no ``mask_box``: the same crops, without a
    whole-image mask per object.

    Args:
        annotation_file: LVIS v1 or v0.5 annotation JSON.
        image_root: Folder holding ``train2017/`` and ``val2017/``.
        sidecar: Materials sidecar; ``"auto"`` for :func:`sidecar_path`, None for none.
        caption: ``"material"``: the material names (joined by " and "); ``"sidecar"``: the
            sidecar's free-text caption when it has one, else the material names.
        template: Format string for the material caption, e.g. ``"an object made of {}"``;
            None = the material name alone (the talk's finding).
        transforms: Callable applied to each sample dict.
        check_images: Check in ``__init__`` that every image file exists.
        index_cache: Folder of cached indexes (see :mod:`matbench.datasets.index_cache`);
            ``"auto"`` = ``$MATBENCH_CACHE_DIR/index``; None = parse the JSON every time.
        draft_size: Decode a JPEG at 1/2, 1/4 or 1/8 resolution when every object read from
            it still gets at least this many pixels per box side (set it to the crop's output
            size); None = always decode at full resolution. Samples then carry
            ``image_scale``, which :class:`matbench.transforms.ObjectCrop` follows.
        uint8_images: Samples carry the decoded image as uint8 (3, H, W) (a view of the
            decoded (H, W, 3) pixels), not float in [0, 1]: for transforms that convert only
            what they keep (:class:`~matbench.transforms.ObjectCrop` converts the crop; the
            datamodule always reads this way).
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        sidecar: str | Path | None = "auto",
        caption: str = "material",
        template: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        check_images: bool = True,
        index_cache: str | Path | None = "auto",
        draft_size: int | None = None,
        uint8_images: bool = False,
    ) -> None:
        if caption not in ("material", "sidecar"):
            raise ValueError(f"caption must be 'material' or 'sidecar', got '{caption}'")
        if template is not None and "{}" not in template:
            raise ValueError(f"template '{template}' has no '{{}}' for the material")
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.caption_mode = caption
        self.template = template
        self.transforms = transforms
        self.draft_size = draft_size
        self.uint8_images = uint8_images
        if not self.annotation_file.is_file():
            raise DatasetNotFoundError(
                type(self).__name__,
                self.annotation_file.parent,
                [self.annotation_file.name],
                "Download the LVIS annotations from https://www.lvisdataset.org/dataset",
            )
        if not self.image_root.is_dir():
            raise DatasetNotFoundError(
                type(self).__name__,
                self.image_root,
                ["train2017/", "val2017/"],
                "Download the COCO 2017 images from https://cocodataset.org",
            )
        if sidecar == "auto":
            sidecar = sidecar_path(self.annotation_file)
        if sidecar is not None and not Path(sidecar).is_file():
            raise DatasetNotFoundError(
                type(self).__name__,
                Path(sidecar).parent,
                [Path(sidecar).name],
                "Write it with: matbench materials build --lvis "
                f"{self.annotation_file} --out {sidecar}",
            )
        self.sidecar = Path(sidecar) if sidecar is not None else None
        settings = {
            "reader": type(self).__name__,
            "version": 1,
            "image_root": str(self.image_root.resolve()),
        }
        sources = [self.annotation_file, *([self.sidecar] if self.sidecar else [])]
        self.index = cached_index(
            "lvis_materials", settings, sources, self._build_index, cache_dir=index_cache
        )
        self._adopt(self.index)

    def _build_index(self) -> Index:
        data = self._read_annotations()
        labels: dict[int, MaterialLabel] | None = None
        if self.sidecar is not None:
            labels = read_sidecar(self.sidecar)
        self._index(data, labels)
        del data
        return self._pack()

    def _pack(self) -> Index:
        """The parsed objects and images as flat arrays (the cacheable index)."""
        objects: list[dict[str, Any]] = self.objects
        image_ids = sorted({o["image_id"] for o in objects})
        row_of = {image_id: row for row, image_id in enumerate(image_ids)}
        lookup = {name: i for i, name in enumerate(self.materials)}
        polygons = [p for o in objects for p in o["polygons"]]
        texts = [o["text"] or "" for o in objects]
        arrays: dict[str, np.ndarray] = {
            "id": np.array([o["id"] for o in objects], dtype=np.int64),
            "image_row": np.array([row_of[o["image_id"]] for o in objects], dtype=np.int64),
            "bbox": np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4),
            "label": np.array([o["label"] for o in objects], dtype=np.int64),
            "poly_offsets": _offsets([len(o["polygons"]) for o in objects]),
            "coord_offsets": _offsets([len(p) for p in polygons]),
            "coords": np.fromiter(
                itertools.chain.from_iterable(polygons),
                dtype=np.float64,
                count=sum(len(p) for p in polygons),
            ),
            "mat_offsets": _offsets([len(o["materials"]) for o in objects]),
            "mat_ids": np.array(
                [lookup[m] for o in objects for m in o["materials"]], dtype=np.int64
            ),
            "has_text": np.array([bool(o["text"]) for o in objects], dtype=bool),
            "image_id": np.array(image_ids, dtype=np.int64),
            "image_height": np.array([self.images[i]["height"] for i in image_ids], np.int64),
            "image_width": np.array([self.images[i]["width"] for i in image_ids], np.int64),
        }
        for prefix, values in (
            ("text", texts),
            ("image_path", [self.images[i]["path"] for i in image_ids]),
        ):
            packed = pack_strings(values)
            arrays[f"{prefix}_blob"], arrays[f"{prefix}_offsets"] = (
                packed["blob"],
                packed["offsets"],
            )
        meta = {
            "categories": sorted(self.category_names.items()),
            "materials": self.materials,
            "num_degenerate": self.num_degenerate,
            "num_outside": self.num_outside,
        }
        return Index(arrays, meta)

    def _adopt(self, index: Index) -> None:
        meta = index.meta
        self.category_names = {int(k): str(v) for k, v in meta["categories"]}
        #: The material names (or category names without a sidecar); ``label`` indexes them.
        self.materials = list(meta["materials"])
        self.num_degenerate = int(meta["num_degenerate"])
        self.num_outside = int(meta.get("num_outside", 0))
        self.objects = LVISObjects(index.arrays, self.materials)
        self.images = LVISImages(index.arrays)

    # -- index -------------------------------------------------------------------------------
    def _read_annotations(self) -> dict[str, Any]:
        return read_lvis_json(self.annotation_file, "an LVIS annotation file")

    def _index(self, data: dict[str, Any], labels: dict[int, MaterialLabel] | None) -> None:
        path = self.annotation_file
        images = index_image_records(data["images"], path)
        self.category_names = parse_categories(data["categories"], path)
        if labels is not None:
            vocabulary = sorted({m for label in labels.values() for m in label.materials})
        else:
            vocabulary = sorted(set(self.category_names.values()))
        #: The material names (or category names without a sidecar); ``label`` indexes them.
        self.materials: list[str] = vocabulary
        lookup = {name: i for i, name in enumerate(vocabulary)}
        self.objects: list[dict[str, Any]] = []
        self.num_degenerate = 0
        self.num_outside = 0
        outside: list[int] = []
        for i, ann in enumerate(data["annotations"]):
            ann_id, image_id, category, segmentation, bbox = parse_annotation(ann, i, path)
            if image_id not in images:
                raise DatasetFormatError(path, f"annotation {ann_id}: unknown image_id {image_id}")
            if labels is not None:
                label = labels.get(ann_id)
                if label is None:
                    continue
                materials, text = label.materials, label.caption
            else:
                materials, text = [self.category_names.get(category, str(category))], None
            width, height = images[image_id]["width"], images[image_id]["height"]
            polygons = parse_polygons(segmentation, ann_id, width, height, path)
            if not polygons:
                self.num_degenerate += 1
                continue
            if outside_image(polygons, width, height):
                self.num_outside += 1
                outside.append(ann_id)
                continue
            self.objects.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "polygons": polygons,
                    "bbox": bbox,
                    "materials": materials,
                    "text": text,
                    "label": lookup[materials[0]],
                }
            )
        if outside:
            warnings.warn(
                f"{path}: {len(outside)} objects lie entirely outside their image and were "
                f"skipped (annotation ids {outside[:5]})",
                stacklevel=2,
            )
        self.objects.sort(key=lambda o: o["id"])
        if labels is not None:
            file_ids = {a["id"] for a in data["annotations"]}
            missing = sorted(set(labels) - file_ids)
            if missing:
                raise DatasetFormatError(
                    self.sidecar or path,
                    f"{len(missing)} sidecar annotation ids are not in {path.name}, e.g. "
                    f"{missing[:5]}: is the sidecar for another annotation file?",
                )
        used = sorted({o["image_id"] for o in self.objects})
        find_image_files(
            images,
            used,
            self.image_root,
            type(self).__name__,
            f"of {path.name} are missing under the images root (expected "
            "<images root>/<train2017|val2017>/<id>.jpg)",
        )
        self.images = images

    @property
    def data_warnings(self) -> dict[str, int]:
        """Counts of annotations left out, recorded in the results JSON."""
        counts = {"degenerate_polygons": self.num_degenerate, "outside_image": self.num_outside}
        return {k: v for k, v in counts.items() if v}

    # -- samples -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.objects)

    def caption(self, obj: dict[str, Any]) -> str:
        """The caption of one object (see the ``caption`` and ``template`` arguments)."""
        if self.caption_mode == "sidecar" and obj["text"]:
            return obj["text"]
        text = " and ".join(obj["materials"])
        return self.template.format(text) if self.template else text

    def sample_groups(self) -> np.ndarray:
        """The image of every sample (a row number): samples sharing it are read together by
        :class:`matbench.datamodules.sampler.GroupedSampler` and decoded once."""
        return np.asarray(self.index.arrays["image_row"])

    def draft_reduction(self, index: int) -> int:
        """The largest JPEG reduction (1, 2, 4 or 8) that leaves object ``index`` at least
        ``draft_size`` pixels per box side; 1 without ``draft_size``."""
        if self.draft_size is None:
            return 1
        side = float(min(self._arrays["bbox"][index, 2:]))
        reduce = 1
        while reduce < 8 and side / (2 * reduce) >= self.draft_size:
            reduce *= 2
        return reduce

    def _image(self, row: int, reduce: int) -> tuple[Tensor, float]:
        a = self._arrays
        path = self.image_root / self.images.paths[row]
        image, scale = load_image_reduced(path, reduce, as_uint8=self.uint8_images)
        height, width = int(a["image_height"][row]), int(a["image_width"][row])
        expected = (math.ceil(height / scale), math.ceil(width / scale))
        if tuple(image.shape[-2:]) != expected:
            raise DatasetFormatError(
                path,
                f"image is {image.shape[-1]}x{image.shape[-2]} but {self.annotation_file.name} "
                f"records {width}x{height}" + (f" (decoded at 1/{scale:g})" if scale != 1 else ""),
            )
        return image, scale

    def __getitem__(self, index: int) -> Sample:
        row = int(self._arrays["image_row"][index])
        image, scale = self._image(row, self.draft_reduction(index))
        return self._sample(index, self._regions([index])[0], image, scale)

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """A batch of samples, each image decoded once for all of its objects in the batch
        (the samples equal ``[self[i] for i in indices]`` when ``draft_size`` is None)."""
        rows = [int(r) for r in self._arrays["image_row"][indices]]
        reduce: dict[int, int] = {}
        for row, index in zip(rows, indices, strict=True):
            reduce[row] = min(reduce.get(row, 8), self.draft_reduction(index))
        images = load_once(rows, lambda row: self._image(row, reduce[row]))
        regions = self._regions(indices)
        return [
            self._sample(index, region, *decoded)
            for index, region, decoded in zip(indices, regions, images, strict=True)
        ]

    def draft_reductions(self, indices: np.ndarray) -> np.ndarray:
        """:meth:`draft_reduction` of each object of ``indices``."""
        reduce = np.ones(len(indices), dtype=np.int64)
        if self.draft_size is None:
            return reduce
        side = self._arrays["bbox"][indices, 2:].min(axis=1)
        for _ in range(3):
            reduce = np.where(side / (2 * reduce) >= self.draft_size, 2 * reduce, reduce)
        return reduce

    def object_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Objects ``indices`` as one batch of arrays, for a crop finished where the batch is
        (:func:`matbench.transforms.finish_polygon_batch`): each image decoded once (uint8,
        as :meth:`__getitems__` decodes it) and the objects' polygons, boxes and labels
        gathered from the index without any per-object array work.

        Returns:
            ``images`` (the distinct images, uint8 (3, h, w), in order of first use),
            ``image_scale`` (I,) float64 (each image's JPEG reduction),
            ``image_of`` (N,) the image of each object, ``image_hw`` (N, 2) its full size,
            ``points`` (K, 2) float64 polygon vertices, ``polygon_offsets`` (P + 1,),
            ``polygon_object`` (P,), ``box`` (N, 4) the annotation box as an integer box
            (the crop's centre when the mask is empty), ``label`` (N,), ``caption``,
            ``key`` (lists) and ``index`` (N,).
        """
        return object_batch_tensors(self.object_arrays(indices))

    def object_arrays(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """:meth:`object_batch` with NumPy arrays instead of tensors (``images`` are
        tensors), to be merged with other parts' before the tensors are made."""
        a = self._arrays
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = a["image_row"][idx]
        distinct, first, image_of = np.unique(rows, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")
        rank = np.empty_like(by_first)
        rank[by_first] = np.arange(len(by_first))
        image_of, distinct = rank[image_of.reshape(-1)], distinct[by_first]
        if self.draft_size is None:
            reduce = np.ones(len(distinct), dtype=np.int64)
        else:
            reduce = np.full(len(distinct), 8, dtype=np.int64)
            np.minimum.at(reduce, image_of, self.draft_reductions(idx))
        decoded = [self._image(int(r), int(f)) for r, f in zip(distinct, reduce, strict=True)]
        p0, p1 = a["poly_offsets"][idx], a["poly_offsets"][idx + 1]
        polygons = _ranges(p0, p1 - p0)
        c0, c1 = a["coord_offsets"][polygons], a["coord_offsets"][polygons + 1]
        x, y, w, h = a["bbox"][idx].T
        x0, y0 = np.trunc(x), np.trunc(y)  # as _sample's int()
        box = np.stack(
            [x0, y0, np.maximum(x0 + 1, np.ceil(x + w)), np.maximum(y0 + 1, np.ceil(y + h))], 1
        )
        return {
            "images": [image for image, _ in decoded],
            "image_scale": np.array([scale for _, scale in decoded], dtype=np.float64),
            "image_of": image_of.astype(np.int64),
            "image_hw": np.stack([a["image_height"][rows], a["image_width"][rows]], 1),
            "points": a["coords"][_ranges(c0, c1 - c0)].reshape(-1, 2),
            "polygon_offsets": _offsets((c1 - c0) // 2),
            "polygon_object": np.repeat(np.arange(len(idx)), p1 - p0),
            "box": box.astype(np.int64),
            "label": a["label"][idx],
            "caption": self._captions(idx),
            "key": [str(k) for k in a["id"][idx].tolist()],
            "index": idx,
        }

    def _polygons(self, index: int) -> list[np.ndarray]:
        a = self._arrays
        p0, p1 = a["poly_offsets"][index], a["poly_offsets"][index + 1]
        bounds = a["coord_offsets"][p0 : p1 + 1].tolist()
        coords = a["coords"]
        return [coords[start:end] for start, end in itertools.pairwise(bounds)]

    def _regions(self, indices: Sequence[int]) -> list[tuple[tuple[int, ...], np.ndarray] | None]:
        """The rasterised polygons of objects ``indices``: each one's tight box and mask in
        it (None when no pixel is set), rasterised together (:func:`polygon_regions`)."""
        a = self._arrays
        rows = a["image_row"][indices]
        heights, widths = a["image_height"][rows], a["image_width"][rows]
        objects = [self._polygons(int(index)) for index in indices]
        try:
            return polygon_regions(objects, heights, widths)
        except Exception:  # noqa: BLE001 - pycocotools raises bare exceptions: find the object
            for index, polygons, height, width in zip(
                indices, objects, heights, widths, strict=True
            ):
                try:
                    polygon_region(polygons, int(height), int(width))
                except Exception as err:  # noqa: BLE001
                    raise DatasetFormatError(
                        self.annotation_file,
                        f"annotation {int(a['id'][index])}: cannot decode polygons ({err})",
                    ) from err
            raise

    @property
    def _arrays(self) -> dict[str, np.ndarray]:
        """The index arrays as plain ndarray views (reading one element of a ``np.memmap``
        costs ~30x more); not pickled: a worker makes its own views of the mapped files."""
        views = self.__dict__.get("_array_views")
        if views is None:
            views = {k: np.asarray(v) for k, v in self.index.arrays.items()}
            self.__dict__["_array_views"] = views
        return views

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_array_views", None)
        return state

    def _captions(self, indices: np.ndarray) -> list[str]:
        """``[self._caption_of(i) for i in indices]``, the objects of one material (most)
        looked up in a list of the materials' captions."""
        a = self._arrays
        m0 = a["mat_offsets"][indices]
        lookup = (a["mat_offsets"][indices + 1] - m0) == 1
        if self.caption_mode == "sidecar":
            lookup &= ~a["has_text"][indices]
        if not lookup.all():
            return [self._caption_of(i) for i in indices.tolist()]
        captions = self.__dict__.get("_material_captions")
        if captions is None:
            template = self.template
            captions = [template.format(m) if template else m for m in self.materials]
            self.__dict__["_material_captions"] = captions
        return [captions[m] for m in a["mat_ids"][m0].tolist()]

    def _caption_of(self, index: int) -> str:
        a = self._arrays
        if self.caption_mode == "sidecar" and a["has_text"][index]:
            text = self.objects.texts[index]
            if text:
                return text
        m0, m1 = a["mat_offsets"][index], a["mat_offsets"][index + 1]
        text = " and ".join(self.materials[m] for m in a["mat_ids"][m0:m1].tolist())
        return self.template.format(text) if self.template else text

    def _sample(
        self,
        index: int,
        region: tuple[tuple[int, ...], np.ndarray] | None,
        image: Tensor,
        scale: float = 1.0,
    ) -> Sample:
        a = self._arrays
        row = int(a["image_row"][index])
        height, width = int(a["image_height"][row]), int(a["image_width"][row])
        as_region = getattr(self.transforms, "accepts_region_masks", False)
        if as_region:  # the transform cuts the object's region: no whole-image mask
            mask = RegionMask((height, width), *(region or (None, None)))
        else:  # the whole mask, written only where the object is (decode_polygons' pixels)
            full = np.zeros((height, width), dtype=bool)
            if region is not None:
                (x0, y0, x1, y1), inside = region
                full[y0:y1, x0:x1] = inside
            mask = torch.from_numpy(full)
        x, y, w, h = a["bbox"][index].tolist()
        box = (
            int(x),
            int(y),
            max(int(x) + 1, int(np.ceil(x + w))),
            max(int(y) + 1, int(np.ceil(y + h))),
        )
        sample: Sample = {
            "image": image,
            "mask": mask,
            "box": torch.tensor(box, dtype=torch.int64),
            "caption": self._caption_of(index),
            "label": torch.tensor(int(a["label"][index]), dtype=torch.int64),
            "key": str(int(a["id"][index])),
            "index": index,
        }
        if region is not None and not as_region:  # so that a crop need not search the mask
            sample["mask_box"] = torch.tensor(region[0], dtype=torch.int64)
        if scale != 1.0:
            sample["image_scale"] = scale
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def _offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def object_batch_tensors(arrays: dict[str, Any]) -> dict[str, Any]:
    """:meth:`LVISMaterials.object_arrays` (or a merge of several) with tensors."""
    out = dict(arrays)
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            dtype = np.float64 if value.dtype.kind == "f" else np.int64
            out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=dtype))
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``start, ..., start + length - 1`` of each range, concatenated."""
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(np.sum(lengths)))
