"""``matbench materials label``: a trained dense segmenter labels every LVIS object.

For each image, one forward of a :class:`~matbench.tasks.dense.DenseMaterialTask` checkpoint
gives class probabilities per pixel; each object's mask then gets the majority class inside it,
that class's pixel share of the mask and the mean confidence (top probability) over those
pixels. Objects below ``min_share`` or ``min_confidence``, or whose class is not a material
(DMS46's "Clutter", "Sky"…), are marked unknown and counted. The output is the predictions
file that ``materials build --predictions`` reads::

    {
      "version": 1, "kind": "matbench.dense_labels",
      "lvis": {"file": ..., "num_categories": 1203, "categories_sha256": ...},
      "model": {"checkpoint": ..., "class_names": [...], "inference": ...},
      "thresholds": {"min_share": 0.5, "min_confidence": 0.0},
      "annotations": {"<id>": {"materials": ["wood"], "class": "Wood", "share": 0.83,
                               "confidence": 0.71, "pixels": 5120}, ...},
      "unknown": {"<id>": {"reason": "share", "class": ..., "share": ..., ...}, ...},
      "counts": {"objects": ..., "labelled": ..., "unknown": {"share": ..., ...}}
    }

Work is resumable: the labels of finished images are appended to ``<out>.progress.jsonl``
(keyed by the checkpoint, the image and the thresholds) every :data:`FLUSH_SECONDS` and when
the run stops, whatever stopped it; a rerun skips the images already there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matbench.errors import CheckpointError, ConfigError, DatasetFormatError
from matbench.materials.sidecar import lvis_identity
from matbench.materials.vocabulary import canonical, is_material
from matbench.metrics.functional.segmentation import top_class

LABELS_VERSION = 1
LABELS_KIND = "matbench.dense_labels"


def class_materials(
    class_names: list[str], overrides: dict[str, str | None] | None = None
) -> list[str | None]:
    """The material of each segmenter class: ``overrides`` first (a name → material or None
    for "not a material"), then the vocabulary's canonical name; None when neither knows it."""
    overrides = overrides or {}
    out: list[str | None] = []
    for name in class_names:
        if name in overrides:
            value = overrides[name]
            out.append(None if value is None else canonical(value))
        else:
            out.append(canonical(name) if is_material(name) else None)
    return out


@dataclass
class ObjectLabel:
    """The segmenter's verdict on one object's mask."""

    class_id: int
    share: float
    confidence: float
    pixels: int


def mask_pixels(masks: Sequence[np.ndarray] | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of (H, W) bool masks as :func:`label_objects` takes them: every mask's flat
    (row-major) pixel indices one mask after the other, and each mask's pixel count."""
    flat = [np.flatnonzero(np.asarray(mask)) for mask in masks]
    counts = np.array([len(f) for f in flat], dtype=np.int64)
    return (np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)), counts


def label_objects(
    probabilities: Tensor, pixels: np.ndarray, counts: np.ndarray
) -> list[ObjectLabel | None]:
    """Majority class, its share and mean confidence inside each object's mask.

    Args:
        probabilities: (C, H, W) class probabilities of one image.
        pixels: Flat (row-major) pixel indices of every object's mask, one object after the
            other (see :func:`mask_pixels`).
        counts: Pixels of each object, in order.

    Returns:
        One :class:`ObjectLabel` per object (None for an empty mask); ties between classes go
        to the lower class id.
    """
    c = probabilities.shape[0]
    confidence, predicted = (v.cpu().numpy() for v in top_class(probabilities.reshape(c, -1), 0))
    # one histogram of (object, class) for all objects of the image, in NumPy: a few passes
    # over the masks' pixels, single-threaded (as the metrics' CPU confusion matrix)
    n = len(counts)
    key = np.repeat(np.arange(n, dtype=np.int64) * c, counts) + predicted[pixels]
    histogram = np.bincount(key, minlength=n * c).reshape(n, c)
    sums = np.bincount(key, weights=confidence[pixels].astype(np.float64), minlength=n * c)
    best = histogram.argmax(1)
    out: list[ObjectLabel | None] = []
    for i, (size, cls) in enumerate(zip(counts.tolist(), best.tolist(), strict=True)):
        if size == 0:
            out.append(None)
            continue
        votes = int(histogram[i, cls])
        out.append(ObjectLabel(cls, votes / size, float(sums[i * c + cls]) / votes, size))
    return out


def load_dense_task(path: str | Path, map_location: str = "cpu") -> Any:
    """A :class:`~matbench.tasks.dense.DenseMaterialTask` from its checkpoint, in eval mode;
    a checkpoint of another task is a :class:`~matbench.errors.CheckpointError`."""
    from matbench.tasks.base import read_checkpoint
    from matbench.tasks.dense import DenseMaterialTask

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    data = read_checkpoint(path)
    if data is None:
        raise CheckpointError(path, "not a Lightning checkpoint of a matbench task")
    hparams = dict(data.get("hyper_parameters") or {})
    class_path = str(hparams.get("_class_path") or "")
    if class_path.rsplit(".", 1)[-1] != "DenseMaterialTask" and not (
        not class_path and "inference" in hparams and "num_classes" in hparams
    ):
        other = class_path.rsplit(".", 1)[-1] or "another task"
        raise CheckpointError(
            path,
            f"a checkpoint of {other}, not of DenseMaterialTask: labelling needs a dense "
            "material segmenter (matbench fit --config configs/dense/...)",
        )
    overrides: dict[str, Any] = {}
    if hparams.get("model") != "mask2former":
        overrides["weights"] = None  # encoder weights: the checkpoint holds them all
    task = DenseMaterialTask.load_from_checkpoint(path, map_location=map_location, **overrides)
    if not task.class_names:
        raise CheckpointError(path, "holds no class names (matbench_class_names)")
    return task.eval()


#: Progress records are made durable at most this often (an fsync per image costs a few ms,
#: tens on a busy disk); an interrupted run loses at most this much work.
FLUSH_SECONDS = 5.0


class ImageObjects(Dataset):
    """The labeller's input, one image per item, made where the loader runs (its workers, if
    any, while the model segments the previous image): the decoded image and the pixels of
    its objects' masks (:func:`mask_pixels`).

    A bad image or polygon comes back as ``{"image_id", "error": (path, problem)}``, which the
    labeller raises as a :class:`~matbench.errors.DatasetFormatError`: an exception raised in
    a worker would reach the main process as a bare traceback.

    Args:
        image_ids: The images to load, in order.
        images: Image records by id (``height``, ``width``, ``path`` under ``image_root``).
        objects: ``(annotation id, segmentation)`` of each image's objects, by image id.
        image_root: The COCO image folder.
        lvis_path: The annotation file (named in errors).
    """

    def __init__(
        self,
        image_ids: list[int],
        images: dict[int, dict[str, Any]],
        objects: dict[int, list[tuple[int, Any]]],
        image_root: Path,
        lvis_path: Path,
    ) -> None:
        self.image_ids = image_ids
        self.images = images
        self.objects = objects
        self.image_root = image_root
        self.lvis_path = lvis_path

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        try:
            return self._load(image_id)
        except DatasetFormatError as err:
            return {"image_id": image_id, "error": (str(err.path), err.problem)}

    def _load(self, image_id: int) -> dict[str, Any]:
        from matbench.datasets.lvis_materials import decode_polygons, load_image, parse_polygons

        info = self.images[image_id]
        height, width = info["height"], info["width"]
        path = self.image_root / info["path"]
        image = load_image(path)
        if tuple(image.shape[-2:]) != (height, width):
            raise DatasetFormatError(
                path,
                f"is {image.shape[2]}x{image.shape[1]} but {self.lvis_path} says {width}x{height}",
            )
        masks = []
        for ann_id, segmentation in self.objects[image_id]:
            polygons = parse_polygons(segmentation, ann_id, width, height, self.lvis_path)
            masks.append(
                decode_polygons(polygons, height, width) if polygons else np.zeros(0, bool)
            )
        pixels, counts = mask_pixels(masks)
        return {"image_id": image_id, "image": image, "pixels": pixels, "counts": counts}


def _as_is(item: Any) -> Any:
    return item


class LVISLabeller:
    """``materials label`` in its three phases, so that each can be timed: the constructor
    reads and checks the LVIS file, loads the segmenter and opens the progress file;
    :meth:`run` labels the images not labelled yet; :meth:`write` writes the predictions
    file. :func:`label_lvis` runs them in turn.

    Args:
        lvis_path: The LVIS annotation JSON.
        image_root: The COCO image folder (``train2017/``, ``val2017/``).
        checkpoint: A :class:`~matbench.tasks.dense.DenseMaterialTask` checkpoint.
        out: The predictions JSON to write (its progress file is ``<out>.progress.jsonl``).
        min_share: Smallest share of the mask for the majority class; below: unknown.
        min_confidence: Smallest mean confidence of the majority class; below: unknown.
        class_map: JSON ``{class name: material or null}`` for classes the vocabulary lacks.
        device: Torch device of the segmenter.
        workers: Loader processes that decode images and rasterise masks while the model
            runs (0: in the main process).
    """

    def __init__(
        self,
        lvis_path: str | Path,
        image_root: str | Path,
        checkpoint: str | Path,
        out: str | Path,
        min_share: float = 0.5,
        min_confidence: float = 0.0,
        class_map: str | Path | None = None,
        device: str = "cpu",
        workers: int = 0,
    ) -> None:
        from matbench.datasets.lvis_materials import (
            find_image_files,
            index_image_records,
            parse_annotation,
            read_lvis_json,
        )
        from matbench.datasets.utils import file_digest
        from matbench.vlm.store import AnswerStore

        if not 0.0 <= min_share <= 1.0 or not 0.0 <= min_confidence <= 1.0:
            raise ConfigError("min_share and min_confidence must be in [0, 1]")
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.lvis_path, self.image_root, self.out = Path(lvis_path), Path(image_root), Path(out)
        self.checkpoint, self.device, self.workers = checkpoint, device, workers
        self.min_share, self.min_confidence = min_share, min_confidence
        if not self.lvis_path.is_file():
            raise FileNotFoundError(f"LVIS annotation file '{lvis_path}' does not exist")
        self.lvis = read_lvis_json(self.lvis_path, "an LVIS annotation file")
        self.task = load_dense_task(checkpoint).to(device)
        self.names = list(self.task.class_names)
        overrides = None
        if class_map is not None:
            overrides = json.loads(Path(class_map).read_text(encoding="utf-8"))
            if not isinstance(overrides, dict):
                raise DatasetFormatError(class_map, "expected {class name: material or null}")
        try:
            self.materials = class_materials(self.names, overrides)
        except KeyError as err:
            raise DatasetFormatError(class_map or checkpoint, str(err)) from err

        self.images = index_image_records(self.lvis["images"], self.lvis_path)
        self.objects: dict[int, list[tuple[int, Any]]] = {}
        for i, raw in enumerate(self.lvis["annotations"]):
            ann_id, image_id, _, segmentation, _ = parse_annotation(raw, i, self.lvis_path)
            if image_id not in self.images:
                raise DatasetFormatError(
                    self.lvis_path, f"annotation {ann_id}: unknown image {image_id}"
                )
            self.objects.setdefault(image_id, []).append((ann_id, segmentation))
        self.order = sorted(self.objects)
        find_image_files(
            self.images, self.order, self.image_root, "LVIS", f"listed in {lvis_path} are missing"
        )
        settings = [file_digest(Path(checkpoint)), min_share, min_confidence]
        self.settings = "|".join(map(str, settings)) + "|" + json.dumps(overrides, sort_keys=True)
        self.store = AnswerStore(self.out.with_name(self.out.name + ".progress.jsonl"))

    def key(self, image_id: int) -> str:
        """The progress record id of an image: the checkpoint, thresholds and image."""
        return hashlib.sha256(f"{self.settings}|{image_id}".encode()).hexdigest()

    def run(self, progress: bool = True, on_image: Callable[[int], None] | None = None) -> None:
        """Label every image without a progress record; ``on_image`` is called after each
        image with its number of objects."""
        from matbench.utils.progress import progress_bar

        todo = [i for i in self.order if self.store.get(self.key(i)) is None]
        total = sum(len(self.objects[i]) for i in self.order)
        bar = progress_bar(total, "label", "object", progress)
        bar.update(total - sum(len(self.objects[i]) for i in todo))
        dataset = ImageObjects(todo, self.images, self.objects, self.image_root, self.lvis_path)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.workers, collate_fn=_as_is)
        pending: list[dict[str, Any]] = []
        flushed = time.monotonic()
        try:
            for item in loader:
                if "error" in item:
                    raise DatasetFormatError(*item["error"])
                pending.append(self._label_image(item))
                if time.monotonic() - flushed >= FLUSH_SECONDS:
                    self.store.append(pending)
                    pending, flushed = [], time.monotonic()
                bar.update(len(item["counts"]))
                if on_image is not None:
                    on_image(len(item["counts"]))
        finally:  # the images labelled so far are kept, whatever stopped the run
            self.store.append(pending)
            bar.close()

    def _label_image(self, item: dict[str, Any]) -> dict[str, Any]:
        image_id = item["image_id"]
        with torch.inference_mode():
            image = item["image"].to(self.device).unsqueeze(0)
            probabilities = self.task.probabilities(image)[0]
            verdicts = label_objects(probabilities, item["pixels"], item["counts"])
        if any(v is not None and not math.isfinite(v.confidence) for v in verdicts):
            raise CheckpointError(
                self.checkpoint,
                f"the segmenter's probabilities are not finite (NaN/inf) on image {image_id} "
                f"({self.images[image_id]['path']})",
            )
        record: dict[str, Any] = {"id": self.key(image_id), "image_id": image_id, "objects": {}}
        for (ann_id, _), verdict in zip(self.objects[image_id], verdicts, strict=True):
            record["objects"][str(ann_id)] = _entry(
                verdict, self.names, self.materials, self.min_share, self.min_confidence
            )
        return record

    def write(self) -> dict[str, Any]:
        """Write and return the predictions record (every image must be labelled)."""
        labelled: dict[str, Any] = {}
        unknown: dict[str, Any] = {}
        reasons: Counter[str] = Counter()
        for image_id in self.order:
            for ann_id, entry in self.store.get(self.key(image_id))["objects"].items():  # type: ignore[index]
                if "reason" in entry:
                    unknown[ann_id] = entry
                    reasons[entry["reason"]] += 1
                else:
                    labelled[ann_id] = entry
        result = {
            "version": LABELS_VERSION,
            "kind": LABELS_KIND,
            "lvis": lvis_identity(self.lvis, self.lvis_path),
            "model": {
                "checkpoint": str(self.checkpoint),
                "class_names": self.names,
                "class_materials": self.materials,
                **self.task.protocol(),
            },
            "thresholds": {"min_share": self.min_share, "min_confidence": self.min_confidence},
            "annotations": dict(sorted(labelled.items(), key=lambda kv: int(kv[0]))),
            "unknown": dict(sorted(unknown.items(), key=lambda kv: int(kv[0]))),
            "counts": {
                "objects": len(labelled) + len(unknown),
                "labelled": len(labelled),
                "unknown": dict(sorted(reasons.items())),
            },
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        return result


def label_lvis(
    lvis_path: str | Path,
    image_root: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Label every object of an LVIS annotation file with a dense segmenter; write and return
    the predictions record (see the module docstring). ``options``: those of
    :class:`LVISLabeller`; ``progress`` shows a progress bar."""
    labeller = LVISLabeller(lvis_path, image_root, checkpoint, out, **options)
    labeller.run(progress)
    return labeller.write()


def _entry(
    verdict: ObjectLabel | None,
    names: list[str],
    materials: list[str | None],
    min_share: float,
    min_confidence: float,
) -> dict[str, Any]:
    if verdict is None:
        return {"reason": "empty mask"}
    entry: dict[str, Any] = {
        "class": names[verdict.class_id],
        "share": round(verdict.share, 6),
        "confidence": round(verdict.confidence, 6),
        "pixels": verdict.pixels,
    }
    material = materials[verdict.class_id]
    if material is None:
        return {"reason": "not a material", **entry}
    if verdict.share < min_share:
        return {"reason": "share", **entry}
    if verdict.confidence < min_confidence:
        return {"reason": "confidence", **entry}
    return {"materials": [material], **entry}
