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

Work is resumable: each image's labels are appended to ``<out>.progress.jsonl`` (keyed by the
checkpoint, the image and the thresholds) before the next image starts; a rerun skips the
images already there.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from matbench.errors import CheckpointError, ConfigError, DatasetFormatError
from matbench.materials.sidecar import lvis_identity
from matbench.materials.vocabulary import canonical, is_material

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


def label_objects(probabilities: Tensor, masks: Tensor) -> list[ObjectLabel | None]:
    """Majority class, its share and mean confidence inside each mask.

    Args:
        probabilities: (C, H, W) class probabilities of one image.
        masks: (N, H, W) bool object masks.

    Returns:
        One :class:`ObjectLabel` per mask (None for an empty mask).
    """
    confidence, predicted = probabilities.max(0)
    c = probabilities.shape[0]
    out: list[ObjectLabel | None] = []
    for mask in masks:
        # per mask, work in proportion to its pixels: a class histogram and confidence sums
        classes = predicted[mask]
        if classes.numel() == 0:
            out.append(None)
            continue
        counts = torch.bincount(classes, minlength=c)
        sums = torch.bincount(classes, weights=confidence[mask].double(), minlength=c)
        best = int(counts.argmax())
        n = int(counts[best])
        out.append(ObjectLabel(best, n / classes.numel(), float(sums[best]) / n, classes.numel()))
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


def label_lvis(
    lvis_path: str | Path,
    image_root: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    min_share: float = 0.5,
    min_confidence: float = 0.0,
    class_map: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Label every object of an LVIS annotation file with a dense segmenter; write and return
    the predictions record (see the module docstring)."""
    from matbench.datasets.lvis_materials import (
        decode_polygons,
        find_image_files,
        index_image_records,
        load_image,
        parse_annotation,
        parse_polygons,
        read_lvis_json,
    )
    from matbench.utils.progress import progress_bar
    from matbench.vlm.store import AnswerStore

    if not 0.0 <= min_share <= 1.0 or not 0.0 <= min_confidence <= 1.0:
        raise ConfigError("min_share and min_confidence must be in [0, 1]")
    lvis_path, image_root, out = Path(lvis_path), Path(image_root), Path(out)
    if not lvis_path.is_file():
        raise FileNotFoundError(f"LVIS annotation file '{lvis_path}' does not exist")
    lvis = read_lvis_json(lvis_path, "an LVIS annotation file")
    task = load_dense_task(checkpoint).to(device)
    names = list(task.class_names)
    overrides = None
    if class_map is not None:
        overrides = json.loads(Path(class_map).read_text(encoding="utf-8"))
        if not isinstance(overrides, dict):
            raise DatasetFormatError(class_map, "expected {class name: material or null}")
    try:
        materials = class_materials(names, overrides)
    except KeyError as err:
        raise DatasetFormatError(class_map or checkpoint, str(err)) from err

    images = index_image_records(lvis["images"], lvis_path)
    objects: dict[int, list[tuple[int, Any]]] = {}
    for i, raw in enumerate(lvis["annotations"]):
        ann_id, image_id, _, segmentation, _ = parse_annotation(raw, i, lvis_path)
        if image_id not in images:
            raise DatasetFormatError(lvis_path, f"annotation {ann_id}: unknown image {image_id}")
        objects.setdefault(image_id, []).append((ann_id, segmentation))
    order = sorted(objects)
    find_image_files(images, order, image_root, "LVIS", f"listed in {lvis_path} are missing")

    ckpt_digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]
    settings = f"{ckpt_digest}|{min_share}|{min_confidence}|{json.dumps(overrides, sort_keys=True)}"
    store = AnswerStore(out.with_name(out.name + ".progress.jsonl"))
    bar = progress_bar(sum(len(objects[i]) for i in order), "label", "object", progress)
    for image_id in order:
        key = hashlib.sha256(f"{settings}|{image_id}".encode()).hexdigest()
        if store.get(key) is not None:
            bar.update(len(objects[image_id]))
            continue
        info = images[image_id]
        height, width = info["height"], info["width"]
        image = load_image(image_root / info["path"])
        if tuple(image.shape[-2:]) != (height, width):
            raise DatasetFormatError(
                image_root / info["path"],
                f"is {image.shape[2]}x{image.shape[1]} but {lvis_path} says {width}x{height}",
            )
        masks = []
        for ann_id, segmentation in objects[image_id]:
            polygons = parse_polygons(segmentation, ann_id, width, height, lvis_path)
            mask = decode_polygons(polygons, height, width) if polygons else None
            masks.append(
                torch.zeros(height, width, dtype=torch.bool)
                if mask is None
                else torch.from_numpy(mask)
            )
        with torch.inference_mode():
            probabilities = task.probabilities(image.to(device).unsqueeze(0))[0]
        verdicts = label_objects(probabilities, torch.stack(masks).to(device))
        record = {"id": key, "image_id": image_id, "objects": {}}
        for (ann_id, _), verdict in zip(objects[image_id], verdicts, strict=True):
            record["objects"][str(ann_id)] = _entry(
                verdict, names, materials, min_share, min_confidence
            )
        store.append([record])
        bar.update(len(verdicts))
    bar.close()

    labelled: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    reasons: Counter[str] = Counter()
    for image_id in order:
        key = hashlib.sha256(f"{settings}|{image_id}".encode()).hexdigest()
        for ann_id, entry in store.get(key)["objects"].items():  # type: ignore[index]
            if "reason" in entry:
                unknown[ann_id] = entry
                reasons[entry["reason"]] += 1
            else:
                labelled[ann_id] = entry
    result = {
        "version": LABELS_VERSION,
        "kind": LABELS_KIND,
        "lvis": lvis_identity(lvis, lvis_path),
        "model": {
            "checkpoint": str(checkpoint),
            "class_names": names,
            "class_materials": materials,
            **task.protocol(),
        },
        "thresholds": {"min_share": min_share, "min_confidence": min_confidence},
        "annotations": dict(sorted(labelled.items(), key=lambda kv: int(kv[0]))),
        "unknown": dict(sorted(unknown.items(), key=lambda kv: int(kv[0]))),
        "counts": {
            "objects": len(labelled) + len(unknown),
            "labelled": len(labelled),
            "unknown": dict(sorted(reasons.items())),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


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
