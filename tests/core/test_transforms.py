"""The object crop: each side at least 50 px, blur outside the mask only, resize."""

from __future__ import annotations

import pytest
import torch

from matbench.transforms import (
    ObjectCrop,
    blur_outside,
    crop_object,
    expand_box,
    gaussian_blur,
    mask_box,
)


def _image(h: int = 120, w: int = 160) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))


def test_mask_box_and_empty() -> None:
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[5:9, 10:21] = True
    assert mask_box(mask) == (10, 5, 21, 9)
    with pytest.raises(ValueError, match="empty"):
        mask_box(torch.zeros(4, 4, dtype=torch.bool))


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((70, 50, 80, 60), (50, 30, 100, 80)),  # 10x10 centred → 50x50
        ((0, 0, 10, 10), (0, 0, 50, 50)),  # at the corner: shifted inside
        ((150, 110, 160, 120), (110, 70, 160, 120)),  # opposite corner
        ((10, 20, 130, 30), (10, 0, 130, 50)),  # wide: only the height grows
    ],
)
def test_expand_box_min_size(box: tuple, expected: tuple) -> None:
    out = expand_box(box, (120, 160), min_size=50)
    assert out == expected
    x0, y0, x1, y1 = out
    assert x1 - x0 >= 50 and y1 - y0 >= 50
    assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]


def test_expand_box_image_smaller_than_min_size() -> None:
    assert expand_box((5, 5, 10, 10), (30, 40), min_size=50) == (0, 0, 40, 30)


def test_expand_box_square_and_context() -> None:
    x0, y0, x1, y1 = expand_box((40, 40, 100, 60), (120, 160), min_size=10, square=True)
    assert x1 - x0 == y1 - y0 == 60
    x0, y0, x1, y1 = expand_box((40, 40, 100, 100), (120, 160), min_size=10, context=0.5)
    assert (x1 - x0, y1 - y0) == (90, 90)


def test_blur_changes_outside_only() -> None:
    image = _image()
    mask = torch.zeros(120, 160, dtype=torch.bool)
    mask[30:90, 40:120] = True
    out = blur_outside(image, mask, sigma=2.0)
    assert torch.equal(out[:, mask], image[:, mask])
    outside = ~mask
    assert (out[:, outside] - image[:, outside]).abs().mean() > 0.05
    assert torch.equal(blur_outside(image, mask, 0.0), image)
    # A blurred constant image stays constant (normalised kernel, replicated edges).
    flat = torch.full((3, 10, 10), 0.3)
    assert torch.allclose(gaussian_blur(flat, 3.0), flat)


def test_crop_object_shapes_and_content() -> None:
    image = _image()
    mask = torch.zeros(120, 160, dtype=torch.bool)
    mask[50:60, 70:80] = True
    crop, crop_mask, box = crop_object(image, mask, size=None, blur_sigma=0.0)
    assert box == (50, 30, 100, 80)
    assert crop.shape == (3, 50, 50) and crop_mask.sum() == 100
    assert torch.equal(crop, image[:, 30:80, 50:100])
    crop, crop_mask, _ = crop_object(image, mask, size=32, blur_sigma=1.5)
    assert crop.shape == (3, 32, 32) and crop_mask.shape == (32, 32)
    assert crop.dtype == torch.float32 and 0.0 <= crop.min() and crop.max() <= 1.0
    with pytest.raises(ValueError, match="does not match"):
        crop_object(image, mask[:10], size=32)


def test_object_crop_transform_uses_box_for_empty_mask() -> None:
    sample = {
        "image": _image(),
        "mask": torch.zeros(120, 160, dtype=torch.bool),
        "box": (10, 10, 20, 30),
        "key": "a",
    }
    out = ObjectCrop(size=24, blur_sigma=1.0)(sample)
    assert out["image"].shape == (3, 24, 24) and out["key"] == "a"
    assert out["box"].tolist() == [0, 0, 50, 50]
    with pytest.raises(ValueError, match="blur_sigma"):
        ObjectCrop(blur_sigma=-1)


def test_large_blur_is_close_to_the_exact_blur() -> None:
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 24, 24, generator=g), size=(96, 96), mode="bilinear"
    )[0]
    fast, exact = gaussian_blur(smooth, 6.0), gaussian_blur(smooth, 6.0, exact=True)
    assert fast.shape == exact.shape
    diff = (fast - exact).abs()
    assert diff.mean() < 0.01
    assert diff[:, 8:-8, 8:-8].max() < 0.03  # away from the replicated borders
    # It still blurs: far from the input.
    assert (exact - smooth).abs().mean() > 5 * (fast - exact).abs().mean()
