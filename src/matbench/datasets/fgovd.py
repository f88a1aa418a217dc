"""FG-OVD: fine-grained object matching with hard-negative captions (Bianchi et al., CVPR 2024).

Layout (the benchmark repository ``lorebianchi98/FG-OVD`` and COCO 2017 images)::

    <root>/benchmarks/{1_attributes,2_attributes,3_attributes,shuffle_negatives,
                       color,material,pattern,transparency}.json
    <root>/training_sets/<same names>.json
    <root>/validation_sets/<same names>.json
    <root>/coco/{train2017,val2017}/<12-digit id>.jpg

Each file is LVIS-format JSON of PACO objects: ``images`` (``file_name`` such as
``val2017/000000239627.jpg``, ``coco_url``, ``width``, ``height``), ``annotations`` (``bbox``
``[x, y, w, h]``, polygon ``segmentation``, ``category_id`` = the positive sentence,
``neg_category_ids`` = the hard-negative sentences in order) and ``categories`` whose ``name``
is a full sentence. Image records also carry LVIS's own ``neg_category_ids``; they are not the
hard negatives and are ignored.

Each object is one sample with its own candidate list: the positive sentence followed by its
first ``max_negatives`` negatives. The default crop is FG-OVD's (FG-CLIP
``fg-ovd_feature_extraction/extraction.py``): the box scaled about its centre by
``scale_factor`` (1.0), clamped to the image, floored/ceiled to whole pixels, then CLIP's
evaluation preprocessing (shorter side resized to the model size, bicubic, centre crop), no
blur. ``crop="object"`` uses matbench's object crop instead (square box padded to
``crop_min_size`` px, blurred outside the polygon mask).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from matbench.datasets.batched import load_once
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.lvis_materials import (
    decode_polygons,
    find_image_files,
    index_image_records,
    parse_polygons,
    read_lvis_json,
)
from matbench.datasets.utils import decode_rgb
from matbench.transforms import crop_object

Sample = dict[str, Any]

#: The eight benchmark files; FG-OVD's names of the difficulty levels in the comments.
BENCHMARKS = (
    "1_attributes",  # Hard
    "2_attributes",  # Medium
    "3_attributes",  # Easy
    "shuffle_negatives",  # Trivial
    "color",
    "material",
    "pattern",
    "transparency",
)
#: Most negatives FG-CLIP's evaluation reports per benchmark (``do_fgovd_eval``); 10 otherwise.
REPORTED_NEGATIVES = {"transparency": 2, "pattern": 7}
#: A box may overhang the image by this many pixels (rounding in the annotations).
BOX_TOLERANCE = 1.0
DOWNLOAD_HINT = (
    "Download the FG-OVD json files from https://github.com/lorebianchi98/FG-OVD "
    "(benchmarks/, training_sets/, validation_sets/) and the COCO 2017 images from "
    "https://cocodataset.org"
)


def reported_negatives(benchmark: str) -> int:
    """How many negatives FG-CLIP reports ranks for on ``benchmark`` (a name or a file)."""
    return REPORTED_NEGATIVES.get(Path(benchmark).stem, 10)


def fgovd_box(
    bbox: list[float], width: int, height: int, scale_factor: float = 1.0
) -> tuple[int, int, int, int]:
    """FG-OVD's crop box ``(x0, y0, x1, y1)`` of an ``[x, y, w, h]`` box.

    The box is scaled about its centre (the shift is floor-divided by 2, as FG-OVD does),
    clamped to the image, and the corners rounded outwards to whole pixels.
    """
    x, y, w, h = bbox
    new_w, new_h = w * scale_factor, h * scale_factor
    x0 = x - (new_w - w) // 2
    y0 = y - (new_h - h) // 2
    x1, y1 = x0 + new_w, y0 + new_h
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, float(width)), min(y1, float(height))
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


def clip_preprocess(crop: Image.Image, size: int) -> Tensor:
    """CLIP's evaluation preprocessing without normalisation: shorter side to ``size``
    (bicubic), centre crop, RGB float (3, size, size) in [0, 1]."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    crop = TF.resize(crop, size, interpolation=InterpolationMode.BICUBIC)
    crop = TF.center_crop(crop, [size, size])
    return TF.to_tensor(crop)


class FGOVD(Dataset):
    """Objects of one FG-OVD file, each with its positive and hard-negative sentences.

    A sample holds ``image`` (3, S, S) crop in [0, 1], ``candidates`` (the positive sentence
    then the negatives), ``caption`` (the positive), ``key`` (annotation id), ``image_id`` and
    ``index``. Objects are ordered by image, so that :meth:`image_samples` decodes each image
    once for all its objects (what evaluation uses).

    Args:
        annotation_file: An FG-OVD json file.
        image_root: Folder holding ``train2017/`` and ``val2017/``.
        crop: ``"box"`` (FG-OVD's rule) or ``"object"`` (matbench's object crop).
        image_size: Side of the crop given to the model.
        scale_factor: FG-OVD's box scale about its centre (``"box"`` crop).
        max_negatives: Negatives kept per object (the first ones, in file order).
        min_negatives: Objects with fewer negatives are dropped (FG-CLIP trains on objects
            with all 10).
        crop_min_size: Smallest side of the ``"object"`` crop in original pixels.
        crop_blur_sigma: Blur outside the mask of the ``"object"`` crop; 0 = off.

    Raises:
        DatasetNotFoundError: The file or an image is missing.
        DatasetFormatError: A malformed file: an annotation without negatives, a negative or
            positive id missing from ``categories``, a box outside its image, ...
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        crop: Literal["box", "object"] = "box",
        image_size: int = 224,
        scale_factor: float = 1.0,
        max_negatives: int = 10,
        min_negatives: int = 1,
        crop_min_size: int = 50,
        crop_blur_sigma: float = 4.0,
    ) -> None:
        if crop not in ("box", "object"):
            raise ValueError(f"crop must be 'box' or 'object', got '{crop}'")
        if max_negatives < 1 or min_negatives < 1:
            raise ValueError("max_negatives and min_negatives must be >= 1")
        if min_negatives > max_negatives:
            raise ValueError(f"min_negatives {min_negatives} > max_negatives {max_negatives}")
        if scale_factor <= 0:
            raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.crop = crop
        self.image_size = image_size
        self.scale_factor = scale_factor
        self.max_negatives = max_negatives
        self.min_negatives = min_negatives
        self.crop_min_size = crop_min_size
        self.crop_blur_sigma = crop_blur_sigma
        if not self.annotation_file.is_file():
            raise DatasetNotFoundError(
                type(self).__name__,
                self.annotation_file.parent,
                [self.annotation_file.name],
                DOWNLOAD_HINT,
            )
        if not self.image_root.is_dir():
            raise DatasetNotFoundError(
                type(self).__name__, self.image_root, ["train2017/", "val2017/"], DOWNLOAD_HINT
            )
        self._index(read_lvis_json(self.annotation_file, "an FG-OVD file"))

    # -- index -------------------------------------------------------------------------------
    def _index(self, data: dict[str, Any]) -> None:
        path = self.annotation_file
        try:
            sentences = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetFormatError(path, f"category without id/name: {err}") from err
        images = index_image_records(data["images"], path)
        objects = []
        self.num_dropped = 0
        for position, ann in enumerate(data["annotations"]):
            obj = self._object(ann, images, sentences)
            if len(obj["negatives"]) < self.min_negatives:
                self.num_dropped += 1
                continue
            obj["position"] = position
            objects.append(obj)
        # Objects of an image next to each other (images in order of first appearance).
        first = {}
        for obj in objects:
            first.setdefault(obj["image_id"], len(first))
        objects.sort(key=lambda o: (first[o["image_id"]], o["position"]))
        self.objects: list[dict[str, Any]] = objects
        #: Per image (in order), the range of its objects in :attr:`objects`.
        self.image_ranges: list[tuple[int, int]] = []
        for i, obj in enumerate(objects):
            if i == 0 or obj["image_id"] != objects[i - 1]["image_id"]:
                self.image_ranges.append((i, i + 1))
            else:
                self.image_ranges[-1] = (self.image_ranges[-1][0], i + 1)
        find_image_files(
            images,
            dict.fromkeys(o["image_id"] for o in objects),
            self.image_root,
            type(self).__name__,
            f"of {path.name} are missing. {DOWNLOAD_HINT}",
        )
        self.images = images

    def _object(
        self, ann: dict[str, Any], images: dict[int, dict[str, Any]], sentences: dict[int, str]
    ) -> dict[str, Any]:
        path = self.annotation_file
        try:
            ann_id, image_id = int(ann["id"]), int(ann["image_id"])
            positive = int(ann["category_id"])
            bbox = [float(v) for v in ann["bbox"]]
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetFormatError(
                path, f"annotation {ann.get('id')}: missing or bad field {err}"
            ) from err
        negatives = ann.get("neg_category_ids")
        if not isinstance(negatives, list) or not negatives:
            raise DatasetFormatError(
                path,
                f"annotation {ann_id} has no hard negatives ('neg_category_ids' is "
                f"{negatives!r}): not an FG-OVD benchmark/training file?",
            )
        for cat in [positive, *negatives]:
            if cat not in sentences:
                role = "category_id" if cat == positive else "negative id"
                raise DatasetFormatError(
                    path, f"annotation {ann_id}: {role} {cat} is not in 'categories'"
                )
        if image_id not in images:
            raise DatasetFormatError(path, f"annotation {ann_id}: unknown image_id {image_id}")
        width, height = images[image_id]["width"], images[image_id]["height"]
        x, y, w, h = bbox if len(bbox) == 4 else (math.nan,) * 4
        inside = (
            all(math.isfinite(v) for v in (x, y, w, h))
            and w > 0
            and h > 0
            and -BOX_TOLERANCE <= x < width
            and -BOX_TOLERANCE <= y < height
            and x + w <= width + BOX_TOLERANCE
            and y + h <= height + BOX_TOLERANCE
        )
        if not inside:
            raise DatasetFormatError(
                path,
                f"annotation {ann_id}: box [x, y, w, h] = {ann['bbox']} lies outside its "
                f"image {image_id} ({width}x{height}) or is empty",
            )
        return {
            "id": ann_id,
            "image_id": image_id,
            "bbox": bbox,
            "segmentation": ann.get("segmentation"),
            "positive": sentences[positive],
            "negatives": [sentences[int(n)] for n in negatives[: self.max_negatives]],
        }

    # -- samples -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.objects)

    @property
    def sentences(self) -> list[str]:
        """Every distinct candidate sentence of the kept objects."""
        return list(
            dict.fromkeys(s for o in self.objects for s in [o["positive"], *o["negatives"]])
        )

    def decode(self, image_id: int) -> Image.Image:
        """The RGB image of ``image_id``. No EXIF rotation: the boxes are in the stored pixel
        grid (FG-OVD opens images the same way)."""
        info = self.images[image_id]
        path = self.image_root / info["path"]
        img = Image.fromarray(decode_rgb(path, exif=False))
        if img.size != (info["width"], info["height"]):
            raise DatasetFormatError(
                path,
                f"image is {img.size[0]}x{img.size[1]} but {self.annotation_file.name} records "
                f"{info['width']}x{info['height']}",
            )
        return img

    def sample(self, index: int, image: Image.Image) -> Sample:
        """Object ``index`` cropped from its decoded ``image``."""
        obj = self.objects[index]
        if self.crop == "box":
            box = fgovd_box(obj["bbox"], *image.size, scale_factor=self.scale_factor)
            crop = clip_preprocess(image.crop(box), self.image_size)
        else:
            crop = self._object_crop(obj, image)
        return {
            "image": crop,
            "candidates": [obj["positive"], *obj["negatives"]],
            "caption": obj["positive"],
            "key": str(obj["id"]),
            "image_id": obj["image_id"],
            "index": index,
        }

    def _object_crop(self, obj: dict[str, Any], image: Image.Image) -> Tensor:
        segmentation = obj["segmentation"]
        width, height = image.size
        polygons = []
        if isinstance(segmentation, list):  # checked before pycocotools sees a coordinate
            polygons = parse_polygons(segmentation, obj["id"], width, height, self.annotation_file)
        if not polygons:
            raise DatasetFormatError(
                self.annotation_file,
                f"annotation {obj['id']}: crop='object' needs polygon segmentation",
            )
        mask = torch.from_numpy(decode_polygons(polygons, height, width))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        tensor = pixels.permute(2, 0, 1).float().div_(255.0)
        box = fgovd_box(obj["bbox"], width, height)
        crop, _, _ = crop_object(
            tensor,
            mask,
            size=self.image_size,
            min_size=self.crop_min_size,
            blur_sigma=self.crop_blur_sigma,
            square=True,
            box=None if bool(mask.any()) else box,
        )
        return crop

    def __getitem__(self, index: int) -> Sample:
        return self.sample(index, self.decode(self.objects[index]["image_id"]))

    def sample_groups(self) -> np.ndarray:
        """The image id of every sample (see :mod:`matbench.datamodules.sampler`)."""
        return np.array([o["image_id"] for o in self.objects], dtype=np.int64)

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """A batch of samples, each image decoded once for all of its objects in it."""
        image_ids = [self.objects[i]["image_id"] for i in indices]
        images = load_once(image_ids, self.decode)
        return [self.sample(i, image) for i, image in zip(indices, images, strict=True)]

    def image_samples(self, image_index: int) -> list[Sample]:
        """All objects of the ``image_index``-th image, decoded once."""
        start, stop = self.image_ranges[image_index]
        image = self.decode(self.objects[start]["image_id"])
        return [self.sample(i, image) for i in range(start, stop)]


class FGOVDImages(Dataset):
    """One item per image of an :class:`FGOVD`: the list of its object samples, the image
    decoded once. Collate with :func:`fgovd_collate`."""

    def __init__(self, objects: FGOVD) -> None:
        self.objects = objects

    def __len__(self) -> int:
        return len(self.objects.image_ranges)

    def __getitem__(self, index: int) -> list[Sample]:
        return self.objects.image_samples(index)


def fgovd_collate(items: list[Sample | list[Sample]]) -> dict[str, Any]:
    """Batch object samples (or per-image lists of them): ``image`` stacked, ``index`` a
    tensor, ``candidates`` a list of per-object sentence lists, the rest lists."""
    samples = [s for item in items for s in (item if isinstance(item, list) else [item])]
    if not samples:
        return {"image": torch.empty(0, 3, 1, 1), "candidates": [], "caption": [], "key": []}
    batch: dict[str, Any] = {key: [s[key] for s in samples] for key in samples[0]}
    batch["image"] = torch.stack(batch["image"])
    batch["index"] = torch.tensor(batch["index"], dtype=torch.long)
    batch["image_id"] = torch.tensor(batch["image_id"], dtype=torch.long)
    return batch
