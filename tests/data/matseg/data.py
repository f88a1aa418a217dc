"""Write tiny fake copies of the MatSeg layouts: the point benchmark and training scenes.

Run as a script to write both into ``tests/data/matseg/{benchmark,scenes}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: Orientation tag value meaning "rotate 90° clockwise to display".
EXIF_ROTATE_90_CW = 6


def _two_region_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Left half reddish, right half bluish, with a little noise."""
    image = np.zeros((height, width, 3), dtype=np.float32)
    image[:, : width // 2] = (200, 60, 50)
    image[:, width // 2 :] = (40, 70, 190)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_benchmark(root: Path, seed: int = 0) -> Path:
    """Write a 3-image benchmark in the official layout under ``root``.

    - ``a.jpg`` (stored 40 wide × 30 high with EXIF orientation 6, so it displays 30 × 40): two
      groups, left and right in the displayed frame; a relations file ``[1,2]``.
    - ``b.PNG``: 60 × 20 (upper-case extension), three groups, relations with spaces and a blank
      line, where a later line overrides an earlier one.
    - ``c.jpeg``: 24 × 24, one group only, no relations file.
    """
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)

    # a: displayed frame is 30 wide × 40 high; stored frame is its 90° counter-clockwise turn.
    shown = _two_region_image(rng, 40, 30)
    stored = np.rot90(shown, k=1)  # displayed = stored rotated 90° clockwise (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_90_CW
    Image.fromarray(np.ascontiguousarray(stored)).save(images / "a.jpg", exif=exif, quality=95)
    _write_points(root, "a", {"1": [[4, 5, 2], [6, 30, 2]], "2": [[22, 8, 2], [25, 35, 3]]})
    (root / "data" / "a" / "group_relations.txt").write_text("[1,2]\n")

    Image.fromarray(_two_region_image(rng, 20, 60)).save(images / "b.PNG")
    _write_points(
        root,
        "b",
        {"1": [[5, 5, 2], [10, 12, 1]], "2": [[45, 5, 2], [50, 14, 2]], "3": [[30, 10, 1]]},
    )
    (root / "data" / "b" / "group_relations.txt").write_text("( 1, 3 )\n\n[1 ,2]\n  (1,2)  \n")

    Image.fromarray(_two_region_image(rng, 24, 24)).save(images / "c.jpeg")
    _write_points(root, "c", {"7": [[3, 3, 1], [20, 20, 1], [12, 3, 2]]})
    return root


def _write_points(root: Path, stem: str, groups: dict[str, list[list[int]]]) -> None:
    folder = root / "data" / stem
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        gid: {"pt_im": pts, "pt_pg": [[x // 4, y // 4, max(1, r // 4)] for x, y, r in pts]}
        for gid, pts in groups.items()
    }
    (folder / "data.json").write_text(json.dumps(data))


def make_scenes(root: Path, seed: int = 0, size: int = 48) -> Path:
    """Write training scenes under ``root``.

    - ``s2d``: 2D naming ``mask0.png, mask1.png, … mask10.png`` (numeric order matters), left/right
      materials plus a soft transition band, and mostly-empty masks; ``Finished.txt``.
    - ``s3d``: 3D naming ``mask001.png …``, a background outside the region of interest (all masks
      zero); ``Finished.txt``.
    - ``unfinished``: no ``Finished.txt``: must be ignored.
    """
    rng = np.random.default_rng(seed)
    h = w = size

    s2d = root / "s2d"
    s2d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_two_region_image(rng, h, w)).save(s2d / "RGB__RGB.jpg", quality=95)
    left = np.zeros((h, w), np.uint8)
    left[:, : w // 2] = 255
    right = 255 - left
    masks = [np.zeros((h, w), np.uint8) for _ in range(11)]
    masks[0] = left
    masks[10] = right  # sorted numerically, mask10 is the last one (lexically it would be 2nd)
    masks[3][:, w // 2 - 2 : w // 2 + 2] = 120  # a weak material that never dominates
    for i, mask in enumerate(masks):
        Image.fromarray(mask).save(s2d / f"mask{i}.png")
    (s2d / "Finished.txt").write_text("")

    s3d = root / "s3d"
    s3d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_two_region_image(rng, h, w)).save(s3d / "RGB__RGB.jpg", quality=95)
    top = np.zeros((h, w), np.uint8)
    top[: h // 2, 4:-4] = 255
    bottom = np.zeros((h, w), np.uint8)
    bottom[h // 2 :, 4:-4] = 200
    for i, mask in enumerate([top, bottom, np.zeros((h, w), np.uint8)], start=1):
        Image.fromarray(mask).save(s3d / f"mask{i:03d}.png")
    (s3d / "Finished.txt").write_text("")
    Image.fromarray(np.full((h, w), 255, np.uint8)).save(s3d / "ObjectMaskOcluded.png")

    unfinished = root / "unfinished"
    unfinished.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_two_region_image(rng, h, w)).save(unfinished / "RGB__RGB.jpg")
    Image.fromarray(left).save(unfinished / "mask0.png")
    return root


def make(root: Path, seed: int = 0) -> Path:
    """Write ``root/benchmark`` and ``root/scenes``; return ``root``."""
    make_benchmark(root / "benchmark", seed)
    make_scenes(root / "scenes", seed)
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    print(make(out))
