"""Write a tiny fake DMS_v1 copy in the official layout.

``info.json.gz``, ``taxonomy.json`` (57 made-up names in the real structure),
``labels/<split>/<stem>.png`` (single channel, taxonomy indices) and
``images/<split>/<stem>.jpg``. Each label map holds a few rectangles: DMS46 materials, a
DMS46-dropped material (14, Fiberglass wool in the real taxonomy), "I cannot tell" (22) and
unlabelled pixels (0).

Run as a script: ``python tests/data/dms/data.py <root>``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

NON_MATERIAL = (0, 22, 28, 54, 55)
#: Taxonomy values used in the fake label maps (13, 16, 20, 26, 52 are DMS46 materials).
MATERIALS = (13, 16, 20, 26, 52)


def taxonomy() -> dict:
    names = ["No label"] + [f"material {i:02d}" for i in range(1, 57)]
    for i, name in {22: "I cannot tell", 28: "Not on list", 54: "Bad polygon"}.items():
        names[i] = name
    names[55] = "Multiple materials"
    return {
        "names": names,
        "shortnames": [n.split(" ")[0][:8] for n in names],
        "colormap": [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(57)],
        "srgb_colormap": [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(57)],
        "semantic_labels": [i for i in range(57) if i not in NON_MATERIAL],
    }


def make(
    root: Path,
    per_split: int = 3,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """Write the fake copy into ``root`` (the ``DMS_v1`` folder) and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    info = []
    root.mkdir(parents=True, exist_ok=True)
    (root / "taxonomy.json").write_text(json.dumps(taxonomy()))
    for split in ("train", "validation", "test"):
        for n in range(per_split):
            stem = f"{split[:2]}{n:04d}{rng.integers(0, 16**6):06x}"
            label = np.zeros((height, width), dtype=np.uint8)
            image = rng.integers(0, 50, size=(height, width, 3)).astype(np.uint8)
            # three material blocks (left, middle, right) and small non-DMS46 patches
            picks = rng.choice(MATERIALS, size=3, replace=False)
            for j, value in enumerate(picks):
                x0, x1 = j * width // 3, (j + 1) * width // 3
                label[4 : height - 4, x0:x1] = value
                colour = np.array([(47 * value) % 256, (97 * value) % 256, (151 * value) % 256])
                image[4 : height - 4, x0:x1] = colour.astype(np.uint8)
            label[:4, : width // 2] = 14  # dropped by DMS46
            label[:4, width // 2 :] = 22  # "I cannot tell"
            image_rel = f"images/{split}/{stem}.jpg"
            label_rel = f"labels/{split}/{stem}.png"
            for rel, array in ((image_rel, image), (label_rel, label)):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / rel)
            info.append(
                {
                    "image_path": image_rel,
                    "label_path": label_rel,
                    "height": height,
                    "width": width,
                    "rotation_descriptor": 0,
                    "openimages_metadata": {"ImageID": stem},
                }
            )
    with gzip.open(root / "info.json.gz", "wt", encoding="utf-8") as f:
        json.dump(info, f)
    return root


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else "DMS_v1")))
