"""Write a tiny, deterministic fake FG-OVD copy in the real layout.

``make(root)`` writes::

    root/benchmarks/{1_attributes,2_attributes,3_attributes,shuffle_negatives,color,material,
                     pattern,transparency}.json
    root/training_sets/1_attributes.json, root/validation_sets/1_attributes.json
    root/coco/train2017/<12-digit id>.jpg, root/coco/val2017/<12-digit id>.jpg

The json files have FG-OVD's fields: images with ``file_name`` (``val2017/<id>.jpg``),
``coco_url`` and LVIS's own image-level ``neg_category_ids`` (not the hard negatives),
annotations with ``bbox``, polygon ``segmentation``, ``category_id`` (the positive sentence)
and ``neg_category_ids`` (its hard negatives, in order), and sentence ``categories`` (with a
repeated sentence, as in the real files). Every object is a rectangle whose colour is its
material's, on a noisy background; its sentences differ only in the material word, one of
PACO's 14 materials. The benchmark files share the objects and differ in how many negatives
they give (transparency 2, pattern 7, material a mix of 3 to 10, the others 10); one image is
greyscale. Run as a script: ``python tests/data/fgovd/data.py OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: PACO's 14 materials.
MATERIALS = (
    "plastic",
    "wood",
    "metal",
    "glass",
    "fabric",
    "ceramic",
    "paper",
    "leather",
    "rubber",
    "stone",
    "cardboard",
    "wicker",
    "textile",
    "foam",
)
OBJECTS = ("cup", "chair", "bottle", "bag")
BENCHMARK_NEGATIVES = {
    "1_attributes": 10,
    "2_attributes": 10,
    "3_attributes": 10,
    "shuffle_negatives": 10,
    "color": 10,
    "material": None,  # a mix: 10, 3, 7, ...
    "pattern": 7,
    "transparency": 2,
}


def colour(material: str) -> tuple[int, int, int]:
    i = MATERIALS.index(material)
    return (40 + 15 * i, 230 - 13 * i, (97 * i) % 256)


def sentence(obj: str, material: str) -> str:
    return f"A {material} {obj} with a dark grey handle."


def _write_split(
    root: Path,
    rel: str,
    split: str,
    num_images: int,
    size: tuple[int, int],
    negatives: int | None,
    seed: int,
    short: int = 0,
) -> None:
    """One json file; ``short`` objects get only 5 negatives (dropped by training)."""
    rng = np.random.default_rng(seed)
    width, height = size
    images, annotations, categories = [], [], []
    sentence_ids: dict[str, int] = {}

    def category(text: str) -> int:
        if text not in sentence_ids:
            sentence_ids[text] = 100 + len(categories)
            categories.append(
                {
                    "name": text,
                    "id": sentence_ids[text],
                    "synset": "",
                    "synonyms": [],
                    "def": "",
                    "frequency": "f",
                    "instance_count": 1,
                    "image_count": 1,
                }
            )
        return sentence_ids[text]

    ann_id = 1
    for k in range(num_images):
        image_id = 1000 * (seed + 1) + k
        name = f"{image_id:012d}.jpg"
        pixels = rng.integers(90, 160, size=(height, width, 3)).astype(np.uint8)
        num_objects = 1 + k % 3
        for j in range(num_objects):
            material = MATERIALS[(3 * k + 5 * j) % len(MATERIALS)]
            obj = OBJECTS[(k + j) % len(OBJECTS)]
            x = 2 + j * (width // num_objects)
            y = 3 + (k + j) % 5
            w = max(6, width // num_objects - 6)
            h = height - y - 4 - (j % 2) * 8
            pixels[y : y + h, x : x + w] = colour(material)
            others = [m for m in MATERIALS if m != material]
            rng.shuffle(others)
            count = negatives if negatives is not None else (10, 3, 7)[(k + j) % 3]
            if short and ann_id <= short:
                count = 5
            # a sentence used under two category ids, as in the real files
            pos_id = category(sentence(obj, material))
            if k == 0 and j == 0:
                categories.append(dict(categories[-1], id=99))
                pos_id = 99
            annotations.append(
                {
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "segmentation": [
                        [x, y, x + w, y, x + w, y + h - 2.5, x + w / 2, y + h, x, y + h]
                    ],
                    "category_id": pos_id,
                    "neg_category_ids": [category(sentence(obj, m)) for m in others[:count]],
                    "image_id": image_id,
                    "needs_revision": False,
                    "id": ann_id,
                }
            )
            ann_id += 1
        img = Image.fromarray(pixels)
        if k == 1:
            img = img.convert("L")  # COCO has greyscale images
        folder = root / "coco" / split
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / name, quality=95)
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "license": 1,
                "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                "flickr_url": "http://farm1.staticflickr.com/x.jpg",
                "file_name": f"{split}/{name}",
                "neg_category_ids": [1, 2, 3],  # LVIS image-level negatives, not hard negatives
                "not_exhaustive_category_ids": [],
                "checked": True,
            }
        )
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))


def make(root: str | Path, num_images: int = 6, size: tuple[int, int] = (96, 72)) -> Path:
    """Write the fake copy under ``root``; returns ``root``."""
    root = Path(root)
    for name, negatives in BENCHMARK_NEGATIVES.items():
        _write_split(root, f"benchmarks/{name}.json", "val2017", num_images, size, negatives, 0)
    _write_split(
        root, "training_sets/1_attributes.json", "train2017", num_images, size, 10, 1, short=2
    )
    _write_split(root, "validation_sets/1_attributes.json", "train2017", 3, size, 10, 2)
    return root


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else "fake_fgovd"))
