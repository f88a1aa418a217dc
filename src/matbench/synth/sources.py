"""Natural images for pattern infusion: scikit-image's bundled photographs or a user folder."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from matbench.decoding import IMAGE_EXTENSIONS, open_rgb  # torch-free, like this module

#: Photographs and real textures shipped inside the scikit-image wheel (no download needed).
#: Synthetic drawings (chessboard, logo, text, page, horse, phantom, colour chart) are left out.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)


#: Longest side images are reduced to on loading (bounds memory and time per scene).
MAX_SIDE = 1024
#: Shortest side an image must have to be usable.
MIN_SIDE = 32


@dataclass(frozen=True)
class NaturalImages:
    """A fixed, ordered set of RGB images that maps and textures are drawn from.

    Args:
        names: Where each image came from (file path), same order as ``images``.
        images: ``uint8`` arrays of shape (H, W, 3).
    """

    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.images)

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """One image, chosen uniformly with ``rng``."""
        return self.images[int(rng.integers(len(self.images)))]


def _format_error(path: Path, problem: str) -> Exception:
    # Imported on demand: ``matbench.datasets`` pulls in torch, which worker processes of the
    # generator never need.
    from matbench.datasets.errors import DatasetFormatError

    return DatasetFormatError(path, problem)


def _not_found(root: Path, expected: list[str], hint: str) -> Exception:
    from matbench.datasets.errors import DatasetNotFoundError

    return DatasetNotFoundError("synth images", root, expected, hint)


def skimage_data_dir() -> Path:
    """The folder holding scikit-image's bundled sample images."""
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def _read_rgb(path: Path) -> np.ndarray:
    im = open_rgb(path)[0]
    if max(im.size) > MAX_SIDE:
        scale = MAX_SIDE / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(im, dtype=np.uint8).copy()
    if min(array.shape[:2]) < MIN_SIDE:
        raise _format_error(
            path,
            f"image is {array.shape[1]}x{array.shape[0]} px; at least {MIN_SIDE} px per side needed",
        )
    return array


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises:
        DatasetNotFoundError: If the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    expected = [f"*{ext}" for ext in sorted(IMAGE_EXTENSIONS)]
    if not folder.is_dir():
        raise _not_found(folder, expected, "The folder does not exist (--images DIR).")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise _not_found(folder, expected, "The folder holds no image file (--images DIR).")
    return files


def load_images(images_dir: str | Path | None = None) -> NaturalImages:
    """Load the natural images that scenes are made from.

    Args:
        images_dir: A folder of photographs; ``None`` uses scikit-image's bundled photographs
            and textures (``astronaut``, ``coffee``, ``brick``, ``grass``, ``gravel``, ...).

    Raises:
        DatasetNotFoundError: If the folder is missing or empty (or, for ``None``, if the
            scikit-image install holds none of its sample photographs).
        DatasetFormatError: If a file cannot be decoded or is too small; names the file.
    """
    if images_dir is None:
        root = skimage_data_dir()
        files = [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]
        if not files:
            raise _not_found(
                root,
                list(SKIMAGE_PHOTOS),
                "This scikit-image install has no bundled sample photographs; pass --images DIR.",
            )
    else:
        files = list_image_files(images_dir)
    arrays = tuple(_read_rgb(path) for path in files)
    return NaturalImages(names=tuple(str(p) for p in files), images=arrays)


def folder_signature(images_dir: str | None) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the image files (changes invalidate the cache)."""
    if images_dir is None:
        return ()
    files = list_image_files(images_dir)
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


@functools.lru_cache(maxsize=4)
def _cached(images_dir: str | None, signature: tuple[tuple[str, int, int], ...]) -> NaturalImages:
    return load_images(images_dir)


def cached_images(images_dir: str | None) -> NaturalImages:
    """:func:`load_images`, loaded once per process while the folder is unchanged."""
    return _cached(images_dir, folder_signature(images_dir))
