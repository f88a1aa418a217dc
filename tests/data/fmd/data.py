"""Write a tiny fake Flickr Material Database in the official layout.

``image/<class>/<name>.jpg`` and ``mask/<class>/<name>.jpg`` (JPEG masks, white = material),
plus the stray files of the real release (``fabric/normalizeImage.m``, ``foliage/Thumbs.db``).
Each class has its own colour inside the mask, so that a classifier can learn something.

Run as a script: ``python tests/data/fmd/data.py <root>``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = (
    "fabric",
    "foliage",
    "glass",
    "leather",
    "metal",
    "paper",
    "plastic",
    "stone",
    "water",
    "wood",
)


def default_names(per_class: int) -> list[str]:
    """``<class>/<class>_moderate_00i_new.jpg`` and ``…_object_00i_new.jpg``, alternating."""
    names = []
    for name in CLASSES:
        for i in range(per_class):
            kind = "moderate" if i % 2 == 0 else "object"
            names.append(f"{name}/{name}_{kind}_{i // 2 + 1:03d}_new.jpg")
    return names


def make(
    root: Path,
    per_class: int = 4,
    names: Sequence[str] | None = None,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """Write the fake copy into ``root`` and return ``root``.

    Args:
        root: Output folder (created).
        per_class: Images per class when ``names`` is None.
        names: Relative names ``<class>/<file>.jpg`` to write (e.g. the real 1000-name list).
        size: Image width and height.
        seed: Seed of the pixel noise.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    names = list(names) if names is not None else default_names(per_class)
    yy, xx = np.mgrid[0:height, 0:width]
    for rel in names:
        cls = rel.split("/")[0]
        label = CLASSES.index(cls)
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        rx, ry = rng.uniform(0.15, 0.3) * width, rng.uniform(0.15, 0.3) * height
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        image = rng.integers(0, 60, size=(height, width, 3)).astype(np.uint8)
        colour = np.array([25 * label, 255 - 20 * label, 120 + 13 * label], dtype=np.int64).clip(
            0, 255
        )
        image[inside] = (colour + rng.integers(-10, 10, size=3)).clip(0, 255).astype(np.uint8)
        for kind, array in (("image", image), ("mask", inside.astype(np.uint8) * 255)):
            path = root / kind / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, quality=90)
    (root / "image" / "fabric").mkdir(parents=True, exist_ok=True)
    (root / "image" / "fabric" / "normalizeImage.m").write_text("% stray MATLAB file\n")
    (root / "image" / "fabric" / "normalizeImage.asv").write_text("% stray backup\n")
    (root / "image" / "foliage").mkdir(parents=True, exist_ok=True)
    (root / "image" / "foliage" / "Thumbs.db").write_bytes(b"\x00\x01stray")
    return root


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else "fmd")))
