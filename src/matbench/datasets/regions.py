"""Labelled images as ground-truth regions, for the point-prompt IoU protocol.

Two layouts (``docs/datasets/regions.md``), the image stems matching:

- ``masks``: ``<root>/images/<stem>.<ext>`` and ``<root>/masks/<stem>/<region>.png``, one binary
  mask per region (non-zero = inside; JPEG masks: > 127);
- ``labels``: ``<root>/images/<stem>.<ext>`` and ``<root>/labels/<stem>.png``, one single-channel
  instance label map (8- or 16-bit) per image: every value other than 0 is one region, 0 is
  unlabelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.utils import (
    list_images,
    load_rgb,
    oriented_size,
    resized_size,
    to_tensor,
)

RegionLayout = Literal["auto", "masks", "labels"]
_MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def _read_single_channel(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                raise DatasetFormatError(
                    path, f"expected a single-channel image, got mode {im.mode}"
                )
            return np.asarray(im.convert("I") if im.mode in ("I;16", "I;16B") else im)
    except DatasetFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise DatasetFormatError(path, f"cannot be decoded as an image ({err})") from err


def _read_gray(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except Exception as err:  # noqa: BLE001
        raise DatasetFormatError(path, f"cannot be decoded as an image ({err})") from err


class RegionDataset(Dataset):
    """Images and their ground-truth regions (``masks`` or ``labels`` layout).

    Sample keys: ``image`` (3, h, w) float in [0, 1], resized (bilinear) so that the longest side
    is at most ``max_size``; ``regions`` (R, h, w) bool, resized (nearest), regions that vanish
    by resizing dropped; ``region_names`` (mask file stems, or label values as strings);
    ``key`` (image stem); ``index``.

    Args:
        root: Dataset folder.
        layout: ``masks``, ``labels`` or ``auto`` (whichever folder exists).
        max_size: Longest image side after resizing; None = keep.
    """

    def __init__(
        self, root: str | Path, layout: RegionLayout = "auto", max_size: int | None = 700
    ) -> None:
        self.root = Path(root)
        self.max_size = max_size
        expected = ["images/<stem>.jpg", "masks/<stem>/<region>.png or labels/<stem>.png"]
        images_dir = self.root / "images"
        if not images_dir.is_dir():
            raise DatasetNotFoundError(type(self).__name__, self.root, expected)
        if layout == "auto":
            found = [n for n in ("masks", "labels") if (self.root / n).is_dir()]
            if len(found) != 1:
                raise DatasetFormatError(
                    self.root,
                    "expected exactly one of masks/ and labels/ (or set layout), found "
                    f"{found or 'neither'}",
                )
            layout = found[0]  # type: ignore[assignment]
        if layout not in ("masks", "labels"):
            raise ValueError(f"layout must be 'auto', 'masks' or 'labels', got {layout!r}")
        self.layout = layout
        files = list_images(images_dir)
        if not files:
            raise DatasetNotFoundError(type(self).__name__, self.root, expected)
        self.records = [self._index(p) for p in files]

    def _index(self, image: Path) -> dict[str, Any]:
        stem = image.stem
        if self.layout == "masks":
            folder = self.root / "masks" / stem
            if not folder.is_dir():
                raise DatasetFormatError(image, f"no mask folder {folder}")
            masks = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _MASK_EXTENSIONS
            )
            if not masks:
                raise DatasetFormatError(folder, "holds no mask image")
            return {"image": image, "key": stem, "masks": masks}
        label = self.root / "labels" / f"{stem}.png"
        if not label.is_file():
            raise DatasetFormatError(image, f"no label map {label}")
        return {"image": image, "key": stem, "label": label}

    def __len__(self) -> int:
        return len(self.records)

    def _regions(self, rec: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, list]:
        if self.layout == "masks":
            regions, names = [], []
            for path in rec["masks"]:
                if path.suffix.lower() in (".jpg", ".jpeg"):  # lossy: binarise at half range
                    mask = _read_gray(path) > 127
                else:
                    mask = _read_single_channel(path) > 0
                if mask.shape != shape:
                    raise DatasetFormatError(
                        path, f"mask size {mask.shape} differs from the image's {shape}"
                    )
                regions.append(mask)
                names.append(path.stem)
            return np.stack(regions), names
        labels = _read_single_channel(rec["label"])
        if labels.ndim != 2 or labels.shape != shape:
            raise DatasetFormatError(
                rec["label"], f"label map size {labels.shape} differs from the image's {shape}"
            )
        values = [v for v in np.unique(labels).tolist() if v != 0]
        if not values:
            return np.zeros((0, *shape), dtype=bool), []
        return np.stack([labels == v for v in values]), [str(v) for v in values]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        width, height = oriented_size(rec["image"])
        regions, names = self._regions(rec, (height, width))
        new_w, new_h = resized_size(width, height, self.max_size)
        image = load_rgb(rec["image"], self.max_size if (new_w, new_h) != (width, height) else None)
        if image.size != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        region_tensor = torch.from_numpy(regions)
        if (new_w, new_h) != (width, height) and len(regions):
            region_tensor = torch.nn.functional.interpolate(
                region_tensor[:, None].float(), size=(new_h, new_w), mode="nearest"
            )[:, 0].bool()
        keep = region_tensor.flatten(1).any(1)
        return {
            "image": to_tensor(np.asarray(image)),
            "regions": region_tensor[keep],
            "region_names": [n for n, k in zip(names, keep.tolist(), strict=True) if k],
            "key": rec["key"],
            "index": index,
        }
