"""Offline example data for the leaderboard: nothing is downloaded.

- ``matseg/``: a MatSeg triplet benchmark generated like the demo's (:mod:`matbench.synth`,
  illumination mode, its own seed stream);
- ``textures/``: a material folder (``image/<class>/...``) of crops of the material
  photographs bundled with scikit-image (``brick``, ``grass``, ``gravel``): random crops,
  flips and rotations, tinted and shaded, so that the classes are real photographs of
  materials, not colour codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Class folder → scikit-image photograph.
TEXTURES = {"brick": "brick", "foliage": "grass", "stone": "gravel"}


def write_texture_folder(root: Path, per_class: int = 24, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/image/<class>/<class>_<i>.png`` crops of scikit-image's texture photos."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls, photo in TEXTURES.items():
        source = np.asarray(getattr(skimage.data, photo)(), dtype=np.float32) / 255.0
        folder = root / "image" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(size, 3 * size))
            y, x = rng.integers(0, source.shape[0] - side), rng.integers(0, source.shape[1] - side)
            crop = np.rot90(source[y : y + side, x : x + side], k=int(rng.integers(4)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            tint = rng.uniform(0.6, 1.0, size=3)
            shade = rng.uniform(0.7, 1.2)
            rgb = np.clip(crop[..., None] * tint * shade, 0, 1)
            image = Image.fromarray((rgb * 255).astype(np.uint8)).resize((size, size))
            image.save(folder / f"{cls}_{i:03d}.png")
    return root


def write_example_data(out: Path, bench_images: int = 6, per_class: int = 24) -> dict[str, Path]:
    """The example's data roots: ``{"matseg": ..., "folder": ...}`` (reused when present)."""
    from matbench.synth import write_benchmark

    out = Path(out)
    matseg, folder = out / "matseg", out / "textures"
    if not (matseg / "images").is_dir():
        write_benchmark(
            matseg,
            bench_images,
            1,
            min_size=96,
            max_size=160,
            workers=1,
            overwrite=True,
            mode="illumination",
        )
    if not (folder / "image").is_dir():
        write_texture_folder(folder, per_class=per_class)
    return {"matseg": matseg, "folder": folder}
