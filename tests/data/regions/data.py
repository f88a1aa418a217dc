"""Write tiny fake copies of the two region layouts of the point-prompt IoU protocol.

Run as a script to write both into ``tests/data/regions/{masks,labels}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: (stem, height, width) of the fake images; a, b and c have regions, d has none (labels).
IMAGES = (("a", 24, 32), ("b", 30, 20), ("c", 16, 16), ("d", 20, 28))


def _scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with three colour regions and its instance label map (1 left, 2 top right,
    3 bottom right; values 0 nowhere)."""
    labels = np.ones((height, width), dtype=np.uint16)
    labels[: height // 2, width // 2 :] = 2
    labels[height // 2 :, width // 2 :] = 3
    colours = np.array([[0, 0, 0], [200, 60, 50], [40, 70, 190], [60, 180, 70]], dtype=np.float32)
    image = colours[labels] + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def make_masks(root: Path, seed: int = 0) -> Path:
    """``images/<stem>.png`` and ``masks/<stem>/<region>.png`` (0/255 PNG masks; image ``b`` has
    0/1 masks, ``c`` a JPEG image)."""
    rng = np.random.default_rng(seed)
    for stem, height, width in IMAGES[:3]:
        image, labels = _scene(rng, height, width)
        ext = ".jpg" if stem == "c" else ".png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{stem}{ext}", quality=95)
        folder = root / "masks" / stem
        folder.mkdir(parents=True, exist_ok=True)
        for value, name in ((1, "1_left"), (2, "2_top_right"), (3, "3_bottom_right")):
            scale = 1 if stem == "b" else 255
            mask = ((labels == value) * scale).astype(np.uint8)
            Image.fromarray(mask).save(folder / f"{name}.png")
    return root


def make_labels(root: Path, seed: int = 0) -> Path:
    """``images/<stem>.png`` and ``labels/<stem>.png`` (16-bit for ``a``, 8-bit otherwise; ``d``
    is all 0: no region)."""
    rng = np.random.default_rng(seed)
    for stem, height, width in IMAGES:
        image, labels = _scene(rng, height, width)
        if stem == "a":
            labels = labels * 1000  # 16-bit values
        if stem == "d":
            labels[:] = 0
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        mode_labels = labels if stem == "a" else labels.astype(np.uint8)
        Image.fromarray(mode_labels).save(root / "labels" / f"{stem}.png")
    return root


if __name__ == "__main__":
    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    print(make_masks(here / "masks"), make_labels(here / "labels"))
