"""The fast CPU object path: polygon masks expanded only where the object is, and the blur
outside the mask through OpenCV; each against the reference it replaces."""

from __future__ import annotations

import numpy as np
import torch

from matbench.datasets.lvis_materials import decode_polygons
from matbench.datasets.rle import polygon_region, rle_counts
from matbench.transforms import finish_crop, finish_crop_cpu, finish_crop_torch, mask_box


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
