"""Write a tiny, deterministic fake LVIS-materials copy in the real layout.

``make(root)`` writes::

    root/coco/train2017/<12-digit id>.jpg, root/coco/val2017/<12-digit id>.jpg
    root/lvis/lvis_v1_train.json, root/lvis/lvis_v1_val.json       (v1 schema, or v0.5)
    root/lvis/lvis_v1_train_materials.json, ..._val_materials.json (materials sidecars)

Each image has a few polygon objects; every material has its own colour and texture so that
a model can learn it. Run as a script: ``python tests/data/lvis_materials/data.py OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MATERIALS = ("metal", "wood", "glass", "fabric")
COLOURS = {
    "metal": (150, 150, 160),
    "wood": (140, 90, 40),
    "glass": (120, 200, 220),
    "fabric": (200, 40, 60),
}
CATEGORIES = [
    {
        "id": 1,
        "name": "aerosol_can",
        "synset": "aerosol.n.02",
        "synonyms": ["aerosol_can"],
        "def": "a dispenser",
        "frequency": "c",
    },
    {
        "id": 2,
        "name": "table",
        "synset": "table.n.02",
        "synonyms": ["table"],
        "def": "furniture",
        "frequency": "f",
    },
    {
        "id": 3,
        "name": "wineglass",
        "synset": "wineglass.n.01",
        "synonyms": ["wineglass"],
        "def": "a glass",
        "frequency": "f",
    },
    {
        "id": 4,
        "name": "curtain",
        "synset": "curtain.n.01",
        "synonyms": ["curtain"],
        "def": "hanging cloth",
        "frequency": "f",
    },
]


def _polygon(rng: np.random.Generator, width: int, height: int) -> list[float]:
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    rx, ry = rng.uniform(6, width / 4), rng.uniform(6, height / 4)
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(4, 7))))
    pts = []
    for a in angles:
        pts += [round(float(np.clip(cx + rx * np.cos(a), 0, width - 1)), 2)]
        pts += [round(float(np.clip(cy + ry * np.sin(a), 0, height - 1)), 2)]
    return pts


def _split(
    root: Path,
    split: str,
    num_images: int,
    first_image_id: int,
    first_ann_id: int,
    rng: np.random.Generator,
    version: str,
    size: tuple[int, int],
    objects: int | None,
) -> None:
    width, height = size
    images, annotations, sidecar = [], [], {}
    ann_id = first_ann_id
    (root / "coco" / f"{split}2017").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        image_id = first_image_id + i
        name = f"{image_id:012d}.jpg"
        background = rng.integers(60, 200, size=(height, width, 3)).astype(np.uint8)
        canvas = Image.fromarray(background)
        draw = ImageDraw.Draw(canvas)
        for j in range(2 + i % 2 if objects is None else objects):
            material_id = (i + j) % len(MATERIALS)
            material = MATERIALS[material_id]
            poly = _polygon(rng, width, height)
            parts = [poly]
            if j == 1 and i % 3 == 0:  # an object in two parts
                parts.append(_polygon(rng, width, height))
            for part in parts:
                draw.polygon(part, fill=COLOURS[material])
            xs = [v for p in parts for v in p[0::2]]
            ys = [v for p in parts for v in p[1::2]]
            bbox = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": material_id + 1,
                    "segmentation": parts,
                    "area": round(bbox[2] * bbox[3] / 2, 2),
                    "bbox": bbox,
                }
            )
            entry = {"materials": [material], "source": "prior"}
            if ann_id % 5 == 0:
                entry["caption"] = f"a {material} object"
            sidecar[str(ann_id)] = entry
            ann_id += 1
        canvas.save(root / "coco" / f"{split}2017" / name, quality=95)
        record = {
            "id": image_id,
            "width": width,
            "height": height,
            "coco_url": f"http://images.cocodataset.org/{split}2017/{name}",
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        }
        if version == "v0.5":
            record["file_name"] = f"COCO_{split}2014_{name}"
        images.append(record)
    data = {
        "info": {"description": "fake LVIS for matbench tests", "version": version},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
        "licenses": [],
    }
    (root / "lvis").mkdir(parents=True, exist_ok=True)
    (root / "lvis" / f"lvis_v1_{split}.json").write_text(json.dumps(data))
    side = {"version": 1, "vocabulary": sorted(MATERIALS), "annotations": sidecar}
    (root / "lvis" / f"lvis_v1_{split}_materials.json").write_text(json.dumps(side))


def make(
    root: str | Path,
    num_train: int = 8,
    num_val: int = 4,
    version: str = "v1",
    size: tuple[int, int] = (96, 72),
    seed: int = 0,
    objects: int | None = None,
) -> Path:
    """Write the fake copy into ``root`` and return ``root``; ``objects`` per image (default
    2 or 3; LVIS v1 train has 12.7 on average)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    _split(root, "train", num_train, 1000, 1, rng, version, size, objects)
    first_val_ann = max(500, 1 + num_train * (objects or 3))  # ids unique across the splits
    _split(root, "val", num_val, 2000, first_val_ann, rng, version, size, objects)
    return root


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else "lvis_materials_fake"))
