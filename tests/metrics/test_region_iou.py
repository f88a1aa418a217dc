"""Point-prompt region IoU against a plainly written reference."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics.region_iou import RegionIoU, region_iou_counts


def reference_iou(score: torch.Tensor, region: torch.Tensor, threshold: float) -> float:
    predicted = score >= threshold
    inter = int((predicted & region).sum())
    union = int((predicted | region).sum())
    return inter / union


def test_counts_equal_the_reference_at_every_threshold() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 9, 11, generator=gen) * 2 - 1
    scores[0, 0, :4] = 0.5  # exactly on a threshold
    regions = torch.rand(3, 9, 11, generator=gen) > 0.6
    thresholds = torch.linspace(-1, 1, 21)
    inter, union = region_iou_counts(scores, regions, thresholds)
    for r in range(3):
        for j, t in enumerate(thresholds.tolist()):
            assert inter[r, j] / union[r, j] == pytest.approx(
                reference_iou(scores[r], regions[r], t)
            )
    masks = scores > 0
    inter, union = region_iou_counts(masks, regions, None)
    assert inter[:, 0].tolist() == [int((m & g).sum()) for m, g in zip(masks, regions, strict=True)]
    assert union[:, 0].tolist() == [int((m | g).sum()) for m, g in zip(masks, regions, strict=True)]


def test_threshold_is_chosen_on_validation_images() -> None:
    metric = RegionIoU((0.0, 0.5, 0.9))
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, :2] = True
    val_scores = torch.full((1, 4, 4), 0.6)
    val_scores[0, :2] = 0.95  # only threshold 0.9 separates it: IoU 1 there
    metric.update(val_scores, region, "val")
    test_scores = torch.full((1, 4, 4), 0.7)
    test_scores[0, :2] = 0.8  # at 0.9 nothing is predicted: IoU 0 on test
    metric.update(test_scores, region, "test")
    metric.update(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool), "test")
    out = metric.compute()
    assert out["threshold"] == 0.9 and out["val_iou"] == 1.0
    assert out["iou"] == 0.0 and out["num_images"] == 1 and out["val_num_images"] == 1


def test_aggregates_and_masks() -> None:
    metric = RegionIoU(None)
    regions = torch.zeros(2, 2, 4, dtype=torch.bool)
    regions[0, :, :2] = True
    regions[1, :, 2:] = True
    masks = torch.zeros(2, 2, 4, dtype=torch.bool)
    masks[0, :, :1] = True  # IoU 2/4
    masks[1, :, :] = True  # IoU 4/8
    metric.update(masks, regions)
    metric.update(regions[:1], regions[:1])  # IoU 1
    out = metric.compute()
    assert out["iou"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["iou_region"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert out["iou_pooled"] == pytest.approx((2 + 4 + 4) / (4 + 8 + 4))
    assert math.isnan(out["threshold"]) and out["num_regions"] == 3
    with pytest.raises(ValueError, match="split"):
        metric.update(masks, regions, "train")
    empty = RegionIoU()
    empty.update(torch.zeros(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), "test")
    assert math.isnan(empty.compute()["iou"])  # no validation image: no threshold
