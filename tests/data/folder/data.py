"""Write a tiny fake image folder in the ``MaterialFolder`` layout (a Google-test-like set).

``image/<class>/<class>_<i>.jpg``, and with ``masks`` also ``mask/<class>/<same stem>.png``
(white = material). Each class has its own colour inside an ellipse, so a classifier can
learn something. Run as a script: ``python tests/data/folder/data.py <root> <class> …``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def make(
    root: Path,
    classes: Sequence[str],
    per_class: int = 2,
    size: tuple[int, int] = (48, 40),
    masks: bool = True,
    seed: int = 0,
) -> Path:
    """Write the fake folder into ``root`` and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    for label, name in enumerate(classes):
        colour = np.array([(53 * label) % 256, (101 * label + 80) % 256, (29 * label + 160) % 256])
        for i in range(per_class):
            cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
            inside = ((xx - cx) / (0.25 * width)) ** 2 + ((yy - cy) / (0.25 * height)) ** 2 <= 1
            image = rng.integers(0, 60, size=(height, width, 3)).astype(np.uint8)
            image[inside] = colour.astype(np.uint8)
            path = root / "image" / name / f"{name}_{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=90)
            if masks:
                mask_path = root / "mask" / name / f"{name}_{i:03d}.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(inside.astype(np.uint8) * 255).save(mask_path)
    return root


if __name__ == "__main__":
    make(Path(sys.argv[1]), sys.argv[2:])
