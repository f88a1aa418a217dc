"""Point-prompt IoU over ground-truth regions (the MatSeg paper's second table), DDP-exact.

For every ground-truth region of an image, a model prompted inside the region predicts a mask:
a prompted segmenter returns it; a descriptor model gives a similarity map that is thresholded.
The IoU of each region's mask is aggregated three ways: the mean over images of the per-image
mean over regions (``iou``, the headline), the mean over regions (``iou_region``) and the
pooled ratio of summed intersections to summed unions (``iou_pooled``).

Thresholds: with a grid of thresholds (descriptor models), every threshold's IoU is counted at
once, on the validation images and on the test images separately; the threshold with the best
validation ``iou`` (the lowest on ties) is chosen and recorded, and the test values are those at
it. With a single fixed threshold, or for masks, that one is used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

#: Default threshold grid for cosine similarity maps: -1 to 1 in steps of 0.01.
DEFAULT_THRESHOLDS = tuple(round(-1 + 0.01 * i, 2) for i in range(201))
SPLITS = ("val", "test")


def region_iou_counts(
    scores: Tensor, regions: Tensor, thresholds: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Intersections and unions of every region's predicted mask, at every threshold.

    Args:
        scores: (R, H, W) similarity maps (predicted mask: ``score >= threshold``), or (R, H, W)
            bool masks when ``thresholds`` is None.
        regions: (R, H, W) bool ground-truth regions.
        thresholds: (T,) ascending thresholds, or None for bool masks.

    Returns:
        ``intersection`` and ``union``, (R, T) int64 (T = 1 for masks).
    """
    if scores.shape != regions.shape or scores.ndim != 3:
        raise ValueError(
            f"scores and regions must both be (R, H, W), got {tuple(scores.shape)} and "
            f"{tuple(regions.shape)}"
        )
    regions = regions.bool()
    area = regions.flatten(1).sum(1)
    if thresholds is None:
        masks = scores.bool()
        inter = (masks & regions).flatten(1).sum(1)
        union = (masks | regions).flatten(1).sum(1)
        return inter[:, None], union[:, None]
    count = thresholds.numel()
    # bucket b = number of thresholds <= score: the pixel is predicted at thresholds 0..b-1
    bucket = torch.bucketize(scores.float().contiguous(), thresholds.float(), right=True)
    offset = torch.arange(regions.shape[0], device=scores.device)[:, None] * (count + 1)
    flat = (bucket.flatten(1) + offset).flatten()
    per_bucket = torch.bincount(flat, minlength=regions.shape[0] * (count + 1))
    inside = torch.bincount(flat[regions.flatten()], minlength=regions.shape[0] * (count + 1))

    def at_or_above(counts: Tensor) -> Tensor:  # (R, T): pixels in buckets > j
        counts = counts.view(regions.shape[0], count + 1)
        return counts.flip(1).cumsum(1).flip(1)[:, 1:]

    inter = at_or_above(inside)
    predicted = at_or_above(per_bucket)
    return inter, predicted + area[:, None] - inter


class RegionIoU(Metric):
    """Point-prompt region IoU with a threshold chosen on validation images (module docstring).

    Call :meth:`update` once per image. All states are sums, so the result is exact under DDP.

    Args:
        thresholds: Threshold grid for similarity maps (ascending); a single value = a fixed
            threshold; None = the inputs are masks.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, thresholds: tuple[float, ...] | None = DEFAULT_THRESHOLDS, **kwargs: Any):
        super().__init__(**kwargs)
        if thresholds is not None:
            values = torch.tensor(thresholds, dtype=torch.float64)
            if values.ndim != 1 or values.numel() == 0 or bool((values.diff() <= 0).any()):
                raise ValueError("thresholds must be a non-empty ascending sequence")
            self.register_buffer("thresholds", values.float(), persistent=False)
        else:
            self.thresholds = None
        size = 1 if thresholds is None else len(thresholds)
        for split in SPLITS:
            for name in ("image_iou", "region_iou"):
                self.add_state(f"{split}_{name}", torch.zeros(size, dtype=torch.float64), "sum")
            for name in ("inter", "union"):
                self.add_state(f"{split}_{name}", torch.zeros(size, dtype=torch.long), "sum")
            for name in ("images", "regions"):
                self.add_state(f"{split}_{name}", torch.zeros((), dtype=torch.long), "sum")

    def update(self, scores: Tensor, regions: Tensor, split: str = "test") -> None:
        """Add one image: its regions' similarity maps (or masks) and ground-truth regions.

        Args:
            scores: (R, H, W) similarity maps, or bool masks when the metric has no thresholds.
            regions: (R, H, W) bool ground-truth regions (an image with R = 0 is skipped).
            split: ``val`` (threshold selection) or ``test``.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if regions.shape[0] == 0:
            return
        inter, union = region_iou_counts(scores, regions, self.thresholds)
        iou = inter.double() / union.double()
        setattr(self, f"{split}_image_iou", getattr(self, f"{split}_image_iou") + iou.mean(0))
        setattr(self, f"{split}_region_iou", getattr(self, f"{split}_region_iou") + iou.sum(0))
        setattr(self, f"{split}_inter", getattr(self, f"{split}_inter") + inter.sum(0))
        setattr(self, f"{split}_union", getattr(self, f"{split}_union") + union.sum(0))
        setattr(self, f"{split}_images", getattr(self, f"{split}_images") + 1)
        setattr(self, f"{split}_regions", getattr(self, f"{split}_regions") + iou.shape[0])

    def _choice(self) -> int | None:
        size = self.test_image_iou.numel()
        if size == 1:
            return 0
        if int(self.val_images) == 0:
            return None
        return int(torch.argmax(self.val_image_iou))  # first maximum: the lowest threshold

    def compute(self) -> dict[str, float | int]:
        """``iou``, ``iou_region``, ``iou_pooled`` on the test images at the chosen threshold,
        ``threshold`` (NaN for masks), ``val_iou``, and the image and region counts."""
        j = self._choice()
        nan = math.nan

        def mean(total: Tensor, count: Tensor) -> float:
            return float(total[j] / count) if j is not None and int(count) > 0 else nan

        threshold = nan
        if self.thresholds is not None and j is not None:
            threshold = round(float(self.thresholds[j]), 6)
        pooled = nan
        if j is not None and int(self.test_union[j]) > 0:
            pooled = float(self.test_inter[j].double() / self.test_union[j].double())
        return {
            "iou": mean(self.test_image_iou, self.test_images),
            "iou_region": mean(self.test_region_iou, self.test_regions),
            "iou_pooled": pooled,
            "threshold": threshold,
            "val_iou": mean(self.val_image_iou, self.val_images),
            "num_images": int(self.test_images),
            "num_regions": int(self.test_regions),
            "val_num_images": int(self.val_images),
        }
