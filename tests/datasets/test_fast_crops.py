"""The fast CPU object path: polygon masks expanded only where the object is (a batch's
together), region masks instead of whole-image masks, the mask resized by indexing and the
blur outside the mask through OpenCV; each against the reference it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from matbench.datasets.lvis_materials import decode_polygons
from matbench.datasets.rle import polygon_region, polygon_regions, rle_counts, rle_counts_many
from matbench.transforms import (
    ObjectCrop,
    RegionMask,
    _nearest_indices,
    crop_region,
    finish_crop,
    finish_crop_cpu,
    finish_crop_torch,
    mask_box,
)


def _random_polygons(rng: np.random.Generator, height: int, width: int) -> list[list[float]]:
    polygons = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(3, 16))
        cx, cy = rng.uniform(-20, width + 20), rng.uniform(-20, height + 20)
        radius = rng.uniform(0.3, 1.2 * max(height, width))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        # one- and two-decimal coordinates, as in LVIS files (5x + 0.5 lands on ties)
        xs = np.round(cx + radius * np.cos(angles), int(rng.integers(0, 3)))
        ys = np.round(cy + radius * np.sin(angles), 2)
        polygons.append(np.stack([xs, ys], 1).ravel().tolist())
    return polygons


def test_polygon_region_equals_pycocotools_full_decode() -> None:
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(400):
        height, width = int(rng.integers(1, 200)), int(rng.integers(1, 200))
        polygons = _random_polygons(rng, height, width)
        full = decode_polygons(polygons, height, width)
        region = polygon_region(polygons, height, width)
        if region is None:
            assert not full.any()
            continue
        box, inside = region
        assert box == mask_box(torch.from_numpy(full))
        rebuilt = np.zeros_like(full)
        rebuilt[box[1] : box[3], box[0] : box[2]] = inside
        assert np.array_equal(rebuilt, full)
        found += 1
    assert found > 300


def test_rle_counts_reads_pycocotools_strings() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    mask = rng.random((37, 23)) < 0.3  # many short runs: multi-byte and negative deltas
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle_counts(rle["counts"])
    assert counts.sum() == mask.size
    values = np.repeat((np.arange(len(counts)) % 2).astype(bool), counts)
    assert np.array_equal(values.reshape(23, 37).T, mask)


def test_cpu_finish_equals_the_torch_finish() -> None:
    g = torch.Generator().manual_seed(3)
    for trial in range(12):
        height, width = (int(v) for v in torch.randint(1, 260, (2,), generator=g))
        crop = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
        if trial % 4 == 0:  # a channels-first view of (H, W, 3) pixels, as the readers give
            crop = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        if trial % 5 == 0:
            crop = crop.float() / 255
        mask = torch.rand(height, width, generator=g) > 0.5
        size = [224, (96, 150), 64][trial % 3]
        sigma = [4.0, 0.0, 2.0, 6.0, 1.5][trial % 5]
        ref_image, ref_mask = finish_crop_torch(crop, mask, size, sigma)
        image, out_mask = finish_crop_cpu(crop, mask, size, sigma)
        assert torch.equal(out_mask, ref_mask)
        assert image.is_contiguous() and image.shape == ref_image.shape
        assert (image - ref_image).abs().max() < 1e-6, (height, width, size, sigma)
        # the resize is PyTorch's own: the object's pixels (not blurred) are bit-equal
        assert torch.equal(image[:, out_mask], ref_image[:, out_mask])
        # the dispatcher takes the CPU path on the CPU
        assert torch.equal(finish_crop(crop, mask, size, sigma)[0], image)


def test_polygon_regions_of_a_batch_equal_one_object_at_a_time() -> None:
    rng = np.random.default_rng(2)
    objects, heights, widths = [], [], []
    for _ in range(300):  # images of several sizes in one batch, as a batch of LVIS objects
        height, width = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        objects.append(_random_polygons(rng, height, width))
        heights.append(height)
        widths.append(width)
    found = 0
    for start in range(0, 300, 37):
        part = slice(start, start + 37)
        batched = polygon_regions(objects[part], heights[part], widths[part])
        for polygons, h, w, region in zip(
            objects[part], heights[part], widths[part], batched, strict=True
        ):
            single = polygon_region(polygons, h, w)
            assert (single is None) == (region is None)
            if region is not None:
                assert region[0] == single[0] and np.array_equal(region[1], single[1])
                found += 1
    assert found > 200
    assert polygon_regions([], [], []) == []


def test_rle_counts_of_many_strings_equal_one_at_a_time() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(4)
    strings = []
    for k in range(20):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < 0.1 * (k % 9)
        strings.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"])
    counts, offsets = rle_counts_many(strings)
    for k, string in enumerate(strings):
        assert np.array_equal(counts[offsets[k] : offsets[k + 1]], rle_counts(string))


def test_nearest_mask_resize_equals_pytorchs() -> None:
    import torch.nn.functional as F

    for size_in in [*range(1, 260), 479, 480, 639, 640, 1281]:
        for size_out in (224, 32, 150, 336, 2 * size_in, size_in, max(1, size_in // 3)):
            ramp = torch.arange(size_in, dtype=torch.float32)[None, None, :, None]
            expected = F.interpolate(ramp, size=(size_out, 1), mode="nearest")[0, 0, :, 0]
            assert np.array_equal(_nearest_indices(size_in, size_out), expected.long().numpy())


def test_region_masks_crop_as_whole_masks() -> None:
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (60, 80, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)
    cases = [((10, 20, 30, 28), True), ((0, 0, 80, 60), True), ((70, 50, 80, 60), True)]
    cases += [((35, 5, 36, 6), True), ((0, 0, 1, 1), False), (None, False)]
    for box, filled in cases:
        full = torch.zeros(60, 80, dtype=torch.bool)
        inside = None
        if box is not None:
            x0, y0, x1, y1 = box
            inside = torch.rand(y1 - y0, x1 - x0, generator=g) > 0.4
            inside[0, 0] = inside[-1, -1] = filled
            full[y0:y1, x0:x1] = inside
            inside = inside.numpy()
        region = RegionMask((60, 80), box, inside)
        assert region.any() == bool(full.any()) and torch.equal(region.full(), full)
        sample = {"image": image, "box": torch.tensor([30, 40, 34, 44])}
        for crop in (
            ObjectCrop(size=32, min_size=24, square=True),
            ObjectCrop(size=32, min_size=8, context=0.3, finish_on_device=True),
            ObjectCrop(size=32, min_size=8, keep_size=True),
        ):
            ref = crop({**sample, "mask": full})
            out = crop({**sample, "mask": region})
            for key in ("image", "mask", "box"):
                assert torch.equal(out[key], ref[key]), (box, crop, key)
    with pytest.raises(ValueError, match="empty"):
        crop_region(image, RegionMask((60, 80)))


def test_lvis_samples_with_region_masks_equal_whole_mask_samples(tmp_path: Path) -> None:
    from matbench.datasets.lvis_materials import LVISMaterials
    from tests.data.lvis_materials.data import make

    class WholeMasks:  # the same crop, given whole-image masks (no accepts_region_masks)
        def __init__(self, crop: ObjectCrop) -> None:
            self.crop = crop

        def __call__(self, sample: dict) -> dict:
            assert isinstance(sample["mask"], torch.Tensor)
            return self.crop(sample)

    root = make(tmp_path / "lvis")
    for crop in (ObjectCrop(size=24, min_size=8), ObjectCrop(size=24, finish_on_device=True)):
        args = (root / "lvis/lvis_v1_train.json", root / "coco")
        regions = LVISMaterials(*args, transforms=crop, uint8_images=True)
        whole = LVISMaterials(*args, transforms=WholeMasks(crop), uint8_images=True)
        indices = list(range(len(regions)))[::-1]
        for a, b, c in zip(
            regions.__getitems__(indices),
            whole.__getitems__(indices),
            map(whole.__getitem__, indices),
            strict=True,
        ):
            for key in ("image", "mask", "box", "label"):
                assert torch.equal(a[key], b[key]) and torch.equal(b[key], c[key]), key
    sample = LVISMaterials(*args)[0]  # no transform: the whole mask, as before
    assert sample["mask"].shape == sample["image"].shape[-2:] and "mask_box" in sample


def test_a_polygon_pycocotools_refuses_is_named(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import matbench.datasets.lvis_materials as lvis
    from matbench.datasets.errors import DatasetFormatError
    from tests.data.lvis_materials.data import make

    root = make(tmp_path / "lvis")
    dataset = lvis.LVISMaterials(root / "lvis/lvis_v1_train.json", root / "coco")
    bad = float(dataset._polygons(3)[0][0])

    def refuse(polygons, height, width):  # noqa: ANN001, ANN202 - pycocotools' bare errors
        if any(float(p[0]) == bad for p in polygons):
            raise Exception("bad polygon")  # noqa: TRY002
        return polygon_region(polygons, height, width)

    monkeypatch.setattr(
        lvis, "polygon_regions", lambda o, h, w: [refuse(*a) for a in zip(o, h, w, strict=True)]
    )
    monkeypatch.setattr(lvis, "polygon_region", refuse)
    with pytest.raises(DatasetFormatError, match=f"annotation {dataset.objects[3]['id']}: cannot"):
        dataset.__getitems__([0, 3, 5])
