"""Natural-image sources: bundled scikit-image photographs and user folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.synth.sources import MAX_SIDE, SKIMAGE_PHOTOS, load_images, skimage_data_dir


def test_bundled_photographs_are_offline_and_rgb() -> None:
    present = [name for name in SKIMAGE_PHOTOS if (skimage_data_dir() / name).is_file()]
    assert present, "scikit-image ships none of its sample photographs"
    images = load_images(None)
    assert len(images) == len(present)
    names = {Path(n).name for n in images.names}
    assert {"brick.png", "grass.png", "gravel.png"} <= names  # the real textures
    for image in images.images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert max(image.shape[:2]) <= MAX_SIDE


def test_folder_modes_orientation_and_errors(tmp_path: Path) -> None:
    deep = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 12).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "a_16bit.png")
    rgba = np.zeros((40, 50, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "b_rgba.png")
    # Stored 60 wide x 40 high with EXIF orientation 6 (rotate 90 degrees clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(
        tmp_path / "c_rotated.JPG", exif=exif
    )
    images = load_images(tmp_path)
    assert [Path(n).name for n in images.names] == ["a_16bit.png", "b_rgba.png", "c_rotated.JPG"]
    deep8, rgb, rotated = images.images
    # 16-bit grey is scaled by its bit depth (not stretched to its own maximum)
    expected = np.rint(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert deep8.shape == (64, 80, 3) and (deep8 == expected[..., None]).all()
    assert (rgb[:, :25] == (200, 0, 0)).all() and (rgb[:, 25:] == 255).all()  # on white
    assert rotated.shape == (60, 40, 3)

    Image.fromarray(np.zeros((10, 300, 3), dtype=np.uint8)).save(tmp_path / "d_thin.png")
    with pytest.raises(DatasetFormatError, match="d_thin.png.*at least"):
        load_images(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="nothing_here"):
        load_images(tmp_path / "nothing_here")
